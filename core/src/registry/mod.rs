//! The registry: every configured plugin and the drivers it provides, as a
//! value built from the configuration (no global state), in configuration
//! order. A name collision is an error; a plugin that fails to load or a
//! driver that declines is kept with its state and reason so the operator
//! sees it.

mod remote;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plugin_api::{
    DriverError, DriverResult, Init, InitRequest, IpamDriver, Kind, Manifest, NetworkDriver, StorageDriver,
    VolumeDriver,
};
use serde::Serialize;

use crate::call::{on_worker, Driver, Metrics, MetricsSnapshot, Waited};
use crate::config::{parse_duration, Config, PluginConfig};
use crate::loader::{load_library, Compat};
use crate::remote::{Discovery, RemotePlugin, RemoteStatus};

/// How a plugin is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Transport {
    /// Loaded into the daemon from a `.so` file.
    SharedObject {
        /// The file, after search-path resolution (or as configured when
        /// it was not found).
        path: PathBuf,
    },
    /// An out-of-process driver speaking Docker's plugin protocol.
    Remote {
        /// Its address.
        address: String,
    },
}

impl Transport {
    /// `shared-object` or `remote`.
    pub fn label(&self) -> &'static str {
        match self {
            Transport::SharedObject { .. } => "shared-object",
            Transport::Remote { .. } => "remote",
        }
    }
}

/// A driver's (or plugin's) state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum State {
    /// Loaded and usable.
    Ready,
    /// Declined to run on this host, with the reason.
    Skipped(String),
    /// Failed to load or construct, with the reason.
    Failed(String),
}

impl State {
    /// `ready`, `skipped` or `failed`.
    pub fn label(&self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Skipped(_) => "skipped",
            State::Failed(_) => "failed",
        }
    }

    /// The reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Ready => None,
            State::Skipped(r) | State::Failed(r) => Some(r),
        }
    }
}

/// A constructed driver of one of the four kinds.
#[derive(Debug, Clone)]
pub enum AnyDriver {
    /// A storage driver.
    Storage(Driver<dyn StorageDriver>),
    /// A network driver.
    Network(Driver<dyn NetworkDriver>),
    /// An IPAM driver.
    Ipam(Driver<dyn IpamDriver>),
    /// A volume driver.
    Volume(Driver<dyn VolumeDriver>),
}

/// One driver of a plugin.
#[derive(Debug, Clone)]
pub struct DriverEntry {
    /// Its kind.
    pub kind: Kind,
    /// Ready, skipped or failed.
    pub state: State,
    /// The driver, when ready.
    pub driver: Option<AnyDriver>,
    /// Its counters (kept even when it is not ready).
    pub metrics: Arc<Metrics>,
}

/// One configured plugin.
#[derive(Debug, Clone)]
pub struct PluginEntry {
    /// Its registry name (from the configuration).
    pub name: String,
    /// How it is reached.
    pub transport: Transport,
    /// Ready when its library loaded; failed with the reason otherwise.
    pub state: State,
    /// Its manifest, when it loaded.
    pub manifest: Option<Manifest>,
    /// Interface compatibility, for shared objects that loaded.
    pub compat: Option<Compat>,
    /// Free-form facts the plugin gives about itself.
    pub describe: serde_json::Value,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Its drivers, one per kind it provides, in kind order.
    pub drivers: Vec<DriverEntry>,
    /// How long loading and constructing took.
    pub load_time: Duration,
    /// The client of a remote plugin (its live state: activation, breaker,
    /// last error, latency).
    pub remote: Option<Arc<RemotePlugin>>,
    /// The socket or spec file a discovered remote plugin was found by
    /// (`None` for configured plugins).
    pub source: Option<PathBuf>,
}

/// A serializable view of a plugin for the API (`GET /plugins`).
#[derive(Debug, Clone, Serialize)]
pub struct PluginView {
    /// Registry name.
    pub name: String,
    /// Kinds it provides (from its manifest).
    pub kinds: Vec<Kind>,
    /// The plugin's own version.
    pub version: String,
    /// The plugin-api version it was built against.
    pub api_version: String,
    /// `shared-object` or `remote`.
    pub transport: String,
    /// Path or address.
    pub address: String,
    /// Overall state: for a shared object `failed` if the library failed,
    /// else `ready` if any driver is ready, else `skipped`; for a remote
    /// plugin `not_activated`, `active`, `unreachable` or `breaker_open`.
    pub status: String,
    /// Why it is not ready.
    pub reason: Option<String>,
    /// Interface compatibility (`exact`, `older_minor`).
    pub compat: Option<Compat>,
    /// Call deadline in milliseconds.
    pub timeout_ms: u64,
    /// Load time in microseconds.
    pub load_time_us: u64,
    /// Extra facts from the plugin.
    pub describe: serde_json::Value,
    /// Median latency of recent calls across its drivers, in microseconds.
    pub p50_us: u64,
    /// A remote plugin's live state: transport, activation, breaker, last
    /// error.
    pub remote: Option<RemoteStatus>,
    /// Where a discovered remote plugin was found (socket or spec file).
    pub source: Option<String>,
    /// Per-driver state and counters.
    pub drivers: Vec<DriverView>,
}

/// A serializable view of one driver.
#[derive(Debug, Clone, Serialize)]
pub struct DriverView {
    /// Its kind.
    pub kind: Kind,
    /// `ready`, `skipped`, `failed`.
    pub status: String,
    /// Why it is not ready.
    pub reason: Option<String>,
    /// Call counters.
    pub metrics: MetricsSnapshot,
}

/// Registry construction failed as a whole (per-plugin failures do not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two plugins provide a driver of the same kind under the same name.
    #[error("plugin name {0:?} is used twice: names must be unique")]
    Collision(String),
    /// A directory for drivers could not be made.
    #[error("cannot create {path}: {message}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Every plugin and driver: the configured ones in configuration order,
/// then remote plugins discovered by name since the start.
#[derive(Debug)]
pub struct Registry {
    plugins: Vec<PluginEntry>,
    config: Config,
    discovery: Discovery,
    discovered: Mutex<Vec<PluginEntry>>,
}

impl Registry {
    /// Loads every plugin of `config` and constructs its drivers.
    pub fn build(config: &Config) -> Result<Registry, RegistryError> {
        let mut plugins: Vec<PluginEntry> = Vec::with_capacity(config.plugin.len());
        for p in &config.plugin {
            if plugins.iter().any(|e| e.name == p.name) {
                return Err(RegistryError::Collision(p.name.clone()));
            }
            let entry = match &p.remote {
                Some(address) => remote::entry(&p.name, address, Some(p), None),
                None => load_plugin(config, p)?,
            };
            log_entry(&entry);
            plugins.push(entry);
        }
        remote::activate_in_background(plugins.iter().filter_map(|p| p.remote.clone()).collect());
        Ok(Registry {
            plugins,
            discovery: remote::discovery(config),
            config: config.clone(),
            discovered: Mutex::new(Vec::new()),
        })
    }

    /// Every configured plugin, in configuration order.
    pub fn plugins(&self) -> &[PluginEntry] {
        &self.plugins
    }

    /// Activates every configured remote plugin now, waiting at most
    /// `wait` for each (they run in parallel); what happened shows in
    /// their views. For `berthd --check-config`.
    pub fn activate_remotes(&self, wait: Duration) {
        activate_all(self.plugins.iter().filter_map(|p| p.remote.clone()).collect(), wait);
    }

    /// Remote plugins found by name in the discovery directories so far.
    pub fn discovered(&self) -> Vec<PluginEntry> {
        self.discovered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One plugin by name: configured, or discovered already.
    pub fn plugin(&self, name: &str) -> Option<PluginEntry> {
        self.plugins.iter().find(|p| p.name == name).cloned().or_else(|| self.find_discovered(name))
    }

    fn find_discovered(&self, name: &str) -> Option<PluginEntry> {
        self.discovered.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|p| p.name == name).cloned()
    }

    /// API views of every plugin: the configured ones, then every remote
    /// plugin in the discovery directories.
    pub fn views(&self) -> Vec<PluginView> {
        self.refresh_discovered();
        self.plugins
            .iter()
            .map(PluginEntry::view)
            .chain(self.discovered().iter().map(PluginEntry::view))
            .collect()
    }

    /// Adds every plugin in the discovery directories not known yet (as
    /// dockerd's scans do) and activates the new ones, waiting a moment
    /// for each so a listing right after includes it.
    fn refresh_discovered(&self) {
        let found = self.discovery.scan();
        let mut fresh = Vec::new();
        {
            let mut discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
            for f in found {
                if self.plugins.iter().any(|p| p.name == f.name)
                    || discovered.iter().any(|p| p.name == f.name)
                {
                    continue;
                }
                let entry = remote::entry(&f.name, &f.address, None, Some(&f));
                tracing::info!(plugin = %f.name, address = %f.address, source = %f.source.display(), "remote plugin discovered");
                if let Some(r) = &entry.remote {
                    fresh.push(Arc::clone(r));
                }
                discovered.push(entry);
            }
        }
        activate_all(fresh, SCAN_ACTIVATION_WAIT);
    }

    /// Finds plugin `name` by discovery, waiting `[daemon] plugin_wait`
    /// for it to appear, and records it.
    fn discover(&self, name: &str) -> DriverResult<Option<PluginEntry>> {
        let Some(found) = remote::lookup(&self.discovery, name, self.config.plugin_wait())? else {
            return Ok(None);
        };
        let mut discovered = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = discovered.iter().find(|p| p.name == name) {
            return Ok(Some(e.clone()));
        }
        let entry = remote::entry(name, &found.address, None, Some(&found));
        tracing::info!(plugin = name, address = %found.address, source = %found.source.display(), "remote plugin discovered");
        discovered.push(entry.clone());
        Ok(Some(entry))
    }

    fn entry(&self, name: &str, kind: Kind) -> DriverResult<DriverEntry> {
        let plugin = match self.plugin(name) {
            Some(p) => p,
            None => self.discover(name)?.ok_or_else(|| {
                DriverError::not_found(format!("no {kind} driver named {name:?} is configured or discovered"))
            })?,
        };
        if let State::Failed(r) = &plugin.state {
            return Err(DriverError::unavailable(format!("plugin {name:?} failed: {r}")));
        }
        if let Some(e) = plugin.remote.as_deref().and_then(|r| remote::lacks(r, kind)) {
            return Err(e);
        }
        let entry =
            plugin.drivers.iter().find(|d| d.kind == kind).cloned().ok_or_else(|| {
                DriverError::not_found(format!("plugin {name:?} provides no {kind} driver"))
            })?;
        match &entry.state {
            State::Ready => Ok(entry),
            State::Skipped(r) => {
                Err(DriverError::unavailable(format!("{kind} driver {name:?} is skipped on this host: {r}")))
            }
            State::Failed(r) => Err(DriverError::unavailable(format!("{kind} driver {name:?} failed: {r}"))),
        }
    }

    /// The ready storage driver `name`.
    pub fn storage(&self, name: &str) -> DriverResult<Driver<dyn StorageDriver>> {
        match &self.entry(name, Kind::Storage)?.driver {
            Some(AnyDriver::Storage(d)) => Ok(d.clone()),
            _ => Err(DriverError::internal(format!("storage driver {name:?} has no handle"))),
        }
    }

    /// The ready network driver `name`.
    pub fn network(&self, name: &str) -> DriverResult<Driver<dyn NetworkDriver>> {
        match &self.entry(name, Kind::Network)?.driver {
            Some(AnyDriver::Network(d)) => Ok(d.clone()),
            _ => Err(DriverError::internal(format!("network driver {name:?} has no handle"))),
        }
    }

    /// The ready IPAM driver `name`.
    pub fn ipam(&self, name: &str) -> DriverResult<Driver<dyn IpamDriver>> {
        match &self.entry(name, Kind::Ipam)?.driver {
            Some(AnyDriver::Ipam(d)) => Ok(d.clone()),
            _ => Err(DriverError::internal(format!("ipam driver {name:?} has no handle"))),
        }
    }

    /// The ready volume driver `name`.
    pub fn volume(&self, name: &str) -> DriverResult<Driver<dyn VolumeDriver>> {
        match &self.entry(name, Kind::Volume)?.driver {
            Some(AnyDriver::Volume(d)) => Ok(d.clone()),
            _ => Err(DriverError::internal(format!("volume driver {name:?} has no handle"))),
        }
    }

    /// Names of the ready drivers of `kind`: configured ones in
    /// configuration order, then discovered remote plugins. A remote plugin
    /// counts once its activation listed the kind.
    pub fn ready(&self, kind: Kind) -> Vec<String> {
        self.refresh_discovered();
        // A remote plugin never activated yet (down at start, or still
        // coming up) gets a short chance now, so a listing includes it.
        let pending: Vec<Arc<RemotePlugin>> = self
            .plugins
            .iter()
            .chain(self.discovered().iter())
            .filter_map(|p| p.remote.clone())
            .filter(|r| {
                let s = r.status();
                s.activations == 0 && s.state != "breaker_open"
            })
            .collect();
        if !pending.is_empty() {
            activate_all(pending, SCAN_ACTIVATION_WAIT);
        }
        let mut names: Vec<String> =
            self.plugins.iter().filter(|p| p.provides(kind)).map(|p| p.name.clone()).collect();
        names.extend(self.discovered().iter().filter(|p| p.provides(kind)).map(|p| p.name.clone()));
        names
    }
}

/// Activates `plugins` in parallel, waiting at most `wait` for each (an
/// activation that takes longer goes on in the background).
fn activate_all(plugins: Vec<Arc<RemotePlugin>>, wait: Duration) {
    let waits: Vec<_> = plugins
        .into_iter()
        .map(|p| {
            std::thread::spawn(move || {
                let name = format!("activate {}", p.name());
                on_worker(name, wait, move || p.activate().map(|_| ()), || {})
            })
        })
        .collect();
    for w in waits {
        let _ = w.join();
    }
}

/// How long a scan waits for a newly found plugin's activation before it
/// goes on (the activation itself continues in the background).
const SCAN_ACTIVATION_WAIT: Duration = Duration::from_secs(2);

impl PluginEntry {
    /// Whether the plugin has a ready driver of `kind` (for a remote plugin:
    /// its last activation listed the kind).
    pub fn provides(&self, kind: Kind) -> bool {
        match &self.remote {
            Some(r) => remote::known_kinds(r).contains(&kind),
            None => self.drivers.iter().any(|d| d.kind == kind && d.state == State::Ready),
        }
    }

    /// The API view.
    pub fn view(&self) -> PluginView {
        if let Some(r) = &self.remote {
            return self.remote_view(r);
        }
        let status = match (&self.state, self.drivers.iter().any(|d| d.state == State::Ready)) {
            (State::Failed(_), _) => "failed",
            (_, true) => "ready",
            _ if self.drivers.iter().any(|d| matches!(d.state, State::Failed(_))) => "failed",
            _ => "skipped",
        };
        let reason = self.state.reason().map(str::to_string).or_else(|| {
            if status == "ready" {
                None
            } else {
                self.drivers.iter().find_map(|d| d.state.reason().map(str::to_string))
            }
        });
        PluginView {
            name: self.name.clone(),
            kinds: self.manifest.as_ref().map(|m| m.kinds.clone()).unwrap_or_default(),
            version: self.manifest.as_ref().map(|m| m.version.clone()).unwrap_or_default(),
            api_version: self.manifest.as_ref().map(|m| m.api_version.clone()).unwrap_or_default(),
            transport: self.transport.label().to_string(),
            address: match &self.transport {
                Transport::SharedObject { path } => path.display().to_string(),
                Transport::Remote { address } => address.clone(),
            },
            status: status.to_string(),
            reason,
            compat: self.compat,
            timeout_ms: self.timeout.as_millis() as u64,
            load_time_us: self.load_time.as_micros() as u64,
            describe: self.describe.clone(),
            p50_us: self.drivers.iter().map(|d| d.metrics.snapshot().p50_us).max().unwrap_or(0),
            remote: None,
            source: None,
            drivers: self.driver_views(|_| true),
        }
    }

    fn driver_views(&self, keep: impl Fn(Kind) -> bool) -> Vec<DriverView> {
        self.drivers
            .iter()
            .filter(|d| keep(d.kind))
            .map(|d| DriverView {
                kind: d.kind,
                status: d.state.label().to_string(),
                reason: d.state.reason().map(str::to_string),
                metrics: d.metrics.snapshot(),
            })
            .collect()
    }

    fn remote_view(&self, r: &RemotePlugin) -> PluginView {
        let status = r.status();
        let kinds = remote::known_kinds(r);
        PluginView {
            name: self.name.clone(),
            kinds: kinds.clone(),
            version: String::new(),
            api_version: String::new(),
            transport: self.transport.label().to_string(),
            address: r.address().to_string(),
            status: match &self.state {
                State::Failed(_) => "failed".to_string(),
                _ => status.state.clone(),
            },
            reason: self.state.reason().map(str::to_string).or_else(|| status.last_error.clone()),
            compat: None,
            timeout_ms: self.timeout.as_millis() as u64,
            load_time_us: self.load_time.as_micros() as u64,
            describe: self.describe.clone(),
            p50_us: status.p50_us,
            source: remote::source_label(&self.source),
            drivers: self.driver_views(|k| kinds.contains(&k)),
            remote: Some(status),
        }
    }
}

/// Resolves a configured plugin path: absolute as is; relative against each
/// plugin dir, then the directory holding the running executable.
pub fn resolve_plugin_path(config: &Config, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let exe_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    config
        .daemon
        .plugin_dirs
        .iter()
        .cloned()
        .chain(exe_dir)
        .map(|d| d.join(path))
        .find(|p| p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

fn load_plugin(config: &Config, p: &PluginConfig) -> Result<PluginEntry, RegistryError> {
    let start = Instant::now();
    let timeout = p.timeout.as_deref().and_then(|t| parse_duration(t).ok()).unwrap_or(config.call_timeout());
    let mut entry = PluginEntry {
        name: p.name.clone(),
        transport: Transport::SharedObject { path: PathBuf::new() },
        state: State::Ready,
        manifest: None,
        compat: None,
        describe: serde_json::json!({}),
        timeout,
        drivers: Vec::new(),
        load_time: Duration::ZERO,
        remote: None,
        source: None,
    };
    let configured = p.path.clone().unwrap_or_default();
    let path = resolve_plugin_path(config, &configured);
    entry.transport = Transport::SharedObject { path: path.clone() };
    if !path.exists() {
        let dirs: Vec<String> = config.daemon.plugin_dirs.iter().map(|d| d.display().to_string()).collect();
        entry.state = State::Failed(format!(
            "{} not found (searched {} and the directory of berthd)",
            configured.display(),
            dirs.join(", ")
        ));
        entry.load_time = start.elapsed();
        return Ok(entry);
    }
    let lib = match load_library(&path) {
        Ok(lib) => lib,
        Err(e) => {
            entry.state = State::Failed(e.to_string());
            entry.load_time = start.elapsed();
            return Ok(entry);
        }
    };
    entry.compat = Some(lib.compat);
    entry.describe = lib.module.describe();
    for kind in lib.manifest.kinds.clone() {
        let metrics = Arc::new(Metrics::default());
        let (state, driver) = construct(config, p, &lib.module, kind, timeout, &metrics)?;
        entry.drivers.push(DriverEntry { kind, state, driver, metrics });
    }
    entry.manifest = Some(lib.manifest);
    entry.load_time = start.elapsed();
    Ok(entry)
}

fn construct(
    config: &Config,
    p: &PluginConfig,
    module: &berth_plugin_api::ffi::PluginModule,
    kind: Kind,
    timeout: Duration,
    metrics: &Arc<Metrics>,
) -> Result<(State, Option<AnyDriver>), RegistryError> {
    let root = config.daemon.root.join(kind.as_str()).join(&p.name);
    let run_root = config.daemon.exec_root.join(kind.as_str()).join(&p.name);
    for dir in [&root, &run_root] {
        std::fs::create_dir_all(dir)
            .map_err(|e| RegistryError::Dir { path: dir.clone(), message: e.to_string() })?;
    }
    let mut init = InitRequest::new(&p.name, root.display().to_string(), run_root.display().to_string());
    init.options = config.driver_options(p, kind);
    // Construction runs under the plugin's deadline too: a constructor that
    // hangs costs one parked worker and a failed driver, not the daemon.
    let (module, name, m) = (*module, p.name.clone(), Arc::clone(metrics));
    let build = move || -> DriverResult<Init<AnyDriver>> {
        Ok(match kind {
            Kind::Storage => module
                .new_storage(&init)?
                .map(|d| AnyDriver::Storage(Driver::new(d, &name, kind, timeout, m))),
            Kind::Network => module
                .new_network(&init)?
                .map(|d| AnyDriver::Network(Driver::new(d, &name, kind, timeout, m))),
            Kind::Ipam => {
                module.new_ipam(&init)?.map(|d| AnyDriver::Ipam(Driver::new(d, &name, kind, timeout, m)))
            }
            Kind::Volume => {
                module.new_volume(&init)?.map(|d| AnyDriver::Volume(Driver::new(d, &name, kind, timeout, m)))
            }
        })
    };
    let made = match on_worker(format!("new {kind} driver"), timeout, build, || {}) {
        Waited::Answer(made) => made,
        Waited::Late => Err(DriverError::timeout(format!(
            "plugin {:?} did not construct its {kind} driver within {timeout:?}",
            p.name
        ))),
    };
    // A driver that fails is kept, with its error, as a failed entry.
    Ok(match made {
        Ok(Init::Ready(d)) => (State::Ready, Some(d)),
        Ok(Init::Skipped(reason)) => (State::Skipped(reason), None),
        Err(e) => (State::Failed(format!("{}: {}", e.kind, e.message)), None),
    })
}

fn log_entry(e: &PluginEntry) {
    if let (Some(r), State::Ready) = (&e.remote, &e.state) {
        tracing::info!(plugin = %e.name, address = r.address(), "remote plugin configured (activated in the background and on first use)");
        return;
    }
    match &e.state {
        State::Ready => {
            for d in &e.drivers {
                match &d.state {
                    State::Ready => {
                        tracing::info!(plugin = %e.name, kind = %d.kind, transport = e.transport.label(), "driver ready")
                    }
                    State::Skipped(r) => {
                        tracing::warn!(plugin = %e.name, kind = %d.kind, reason = %r, "driver skipped")
                    }
                    State::Failed(r) => {
                        tracing::error!(plugin = %e.name, kind = %d.kind, reason = %r, "driver failed")
                    }
                }
            }
        }
        other => {
            tracing::error!(plugin = %e.name, reason = other.reason().unwrap_or(""), "plugin not loaded")
        }
    }
}
