//! The engine: everything the daemon serves, as typed commands with typed
//! answers. HTTP stays in the daemon; the engine knows nothing of it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_plugin_api::storage::{CleanupRequest, StatusRequest};
use berth_plugin_api::{DriverError, DriverResult, Kind};
use serde::Serialize;

use crate::config::Config;
use crate::images::{images_dir, ImageService, StorageDrivers};
use crate::network::{NetworkDrivers, NetworkService, NetworkSettings};
use crate::registry::{PluginView, Registry};
use crate::store::Store;
use crate::volumes::VolumeService;

/// What reconcile did at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Interrupted operations that were finished or rolled back.
    pub resolved: Vec<String>,
    /// Interrupted operations that could not be resolved yet (their driver
    /// is not ready); they are retried at the next start.
    pub unresolved: Vec<String>,
}

/// Facts for `GET /info`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// berthd's version.
    pub version: String,
    /// The plugin-api version the daemon speaks.
    pub api_version: String,
    /// The selected storage driver.
    pub storage_driver: String,
    /// Its status pairs (empty when it is not ready).
    pub storage_status: Vec<(String, String)>,
    /// The default network driver.
    pub network_driver: String,
    /// The default IPAM driver.
    pub ipam_driver: String,
    /// The default volume driver.
    pub volume_driver: String,
    /// Ready drivers by kind.
    pub drivers: Vec<(Kind, Vec<String>)>,
    /// Plugins by state: ready, skipped, failed.
    pub plugin_counts: (usize, usize, usize),
    /// Persistent root.
    pub root: PathBuf,
    /// Runtime root.
    pub exec_root: PathBuf,
    /// Where the configuration came from.
    pub config_source: String,
    /// Volumes the daemon holds.
    pub volumes: usize,
    /// Images the daemon holds.
    pub images: usize,
    /// Networks the daemon holds.
    pub networks: usize,
    /// What reconcile did at start.
    pub reconcile: ReconcileReport,
    /// How long start-up took, in microseconds.
    pub startup_us: u64,
}

/// The running engine.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    registry: Arc<Registry>,
    store: Arc<Store>,
    volumes: VolumeService,
    images: ImageService,
    networks: NetworkService,
    reconcile: ReconcileReport,
    startup: Duration,
}

impl Engine {
    /// Opens the state store, loads every plugin, reconciles the ledger and
    /// replays IPAM requests to drivers that ask for it.
    /// A plugin that fails does not stop the engine; a store that cannot be
    /// opened or a name collision does.
    pub fn start(config: Config) -> DriverResult<Engine> {
        let t0 = Instant::now();
        for dir in [&config.daemon.root, &config.daemon.exec_root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| DriverError::io(format!("create {}", dir.display()), &e))?;
        }
        let store = Arc::new(Store::open(&config.daemon.root)?);
        let registry =
            Arc::new(Registry::build(&config).map_err(|e| DriverError::invalid_argument(e.to_string()))?);
        let crash_at = std::env::var("BERTH_CRASH_AT").ok().filter(|s| !s.is_empty());
        let volumes = VolumeService::new(
            Arc::clone(&registry) as Arc<dyn crate::volumes::VolumeDrivers>,
            Arc::clone(&store),
            config.volume.default.clone(),
            crash_at.clone(),
        )?;
        let images = ImageService::new(
            Arc::clone(&registry) as Arc<dyn StorageDrivers>,
            config.storage.driver.clone(),
            Arc::clone(&store),
            &images_dir(&config.daemon.root),
            crash_at.clone(),
        )?;
        let networks = NetworkService::new(
            Arc::clone(&registry) as Arc<dyn NetworkDrivers>,
            Arc::clone(&store),
            NetworkSettings {
                exec_root: config.daemon.exec_root.clone(),
                default_driver: config.network.default.clone(),
                default_ipam: config.network.ipam.clone(),
                crash_at,
            },
        )?;
        let mut engine = Engine {
            config,
            registry,
            store,
            volumes,
            images,
            networks,
            reconcile: ReconcileReport::default(),
            startup: Duration::ZERO,
        };
        engine.reconcile = engine.reconcile_ledger()?;
        // After reconcile: IPAM drivers that keep no state get back what
        // the records hold (logged; never stops the start).
        engine.networks.replay();
        engine.startup = t0.elapsed();
        Ok(engine)
    }

    fn reconcile_ledger(&self) -> DriverResult<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let (network_ops, others): (Vec<_>, Vec<_>) =
            self.store.pending()?.into_iter().partition(|(_, i)| crate::network::owns(&i.op));
        // Network operations go together: a step's notes belong to its
        // operation.
        for outcome in self.networks.reconcile(&network_ops) {
            match outcome {
                Ok(done) => {
                    tracing::info!("ledger: {done}");
                    report.resolved.push(done);
                }
                Err(line) => {
                    tracing::warn!("ledger: unresolved {line}");
                    report.unresolved.push(line);
                }
            }
        }
        for (seq, intent) in others {
            let outcome = match intent.op.as_str() {
                op if op.starts_with("volume.") => self.volumes.reconcile(seq, &intent),
                op if op.starts_with("image.") || op.starts_with("layer.") => {
                    self.images.reconcile(seq, &intent)
                }
                other => Err(DriverError::internal(format!("unknown operation {other:?}"))),
            };
            match outcome {
                Ok(done) => {
                    tracing::info!(seq, op = %intent.op, key = %intent.key, "ledger: {done}");
                    report.resolved.push(done);
                }
                Err(e) => {
                    let line = format!("{} of {} (driver {:?}): {}", intent.op, intent.key, intent.driver, e);
                    tracing::warn!(seq, "ledger: unresolved {line}");
                    report.unresolved.push(line);
                }
            }
        }
        // What interrupted loads and removals left unused (layers, blobs).
        match self.images.sweep() {
            Ok(done) => {
                for line in done {
                    tracing::info!("images: {line}");
                    report.resolved.push(line);
                }
            }
            Err(e) => {
                tracing::warn!("images: sweep unresolved: {e}");
                report.unresolved.push(format!("image sweep: {e}"));
            }
        }
        Ok(report)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Named volumes.
    pub fn volumes(&self) -> &VolumeService {
        &self.volumes
    }

    /// Images and their layers.
    pub fn images(&self) -> &ImageService {
        &self.images
    }

    /// Networks, endpoints and sandboxes.
    pub fn networks(&self) -> &NetworkService {
        &self.networks
    }

    /// What reconcile did at start-up.
    pub fn reconcile_report(&self) -> &ReconcileReport {
        &self.reconcile
    }

    /// Every plugin, for `GET /plugins`.
    pub fn plugins(&self) -> Vec<PluginView> {
        self.registry.views()
    }

    /// One plugin by name.
    pub fn plugin(&self, name: &str) -> DriverResult<PluginView> {
        self.registry
            .plugin(name)
            .map(|p| p.view())
            .ok_or_else(|| DriverError::not_found(format!("no plugin named {name:?}")))
    }

    /// Facts for `GET /info`.
    pub fn info(&self) -> Info {
        let storage_status = self
            .registry
            .storage(&self.config.storage.driver)
            .and_then(|d| d.call("status", |d| d.status(StatusRequest::default())))
            .map(|s| s.status)
            .unwrap_or_default();
        let views = self.registry.views();
        let count = |states: &[&str]| views.iter().filter(|v| states.contains(&v.status.as_str())).count();
        Info {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: berth_plugin_api::API_VERSION.to_string(),
            storage_driver: self.config.storage.driver.clone(),
            storage_status,
            network_driver: self.config.network.default.clone(),
            ipam_driver: self.config.network.ipam.clone(),
            volume_driver: self.config.volume.default.clone(),
            drivers: Kind::ALL.iter().map(|k| (*k, self.registry.ready(*k))).collect(),
            plugin_counts: (
                count(&["ready", "active", "not_activated"]),
                count(&["skipped"]),
                count(&["failed", "unreachable", "breaker_open"]),
            ),
            root: self.config.daemon.root.clone(),
            exec_root: self.config.daemon.exec_root.clone(),
            config_source: self.config.source.clone(),
            volumes: self.volumes.count(),
            images: self.images.count(),
            networks: self.networks.count(),
            reconcile: self.reconcile.clone(),
            startup_us: self.startup.as_micros() as u64,
        }
    }

    /// Stops cleanly: every storage driver's `cleanup` (which puts every
    /// mount it holds). Tries every step and answers every failure.
    pub fn shutdown(&self) -> Vec<DriverError> {
        let mut errors = Vec::new();
        for p in self.registry.plugins() {
            if !p.provides(Kind::Storage) {
                continue;
            }
            match self.registry.storage(&p.name) {
                Ok(driver) => {
                    if let Err(e) = driver.call("cleanup", |d| d.cleanup(CleanupRequest::default())) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }
}
