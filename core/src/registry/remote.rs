//! Remote plugins in the registry: the ones the configuration names
//! (`[[plugin]] remote = "unix:///…"`) and the ones found by name in the
//! discovery directories, as dockerd finds them.
//!
//! Nothing here touches the network while the registry is built: a remote
//! plugin is activated in the background at start and lazily by its first
//! call, so a plugin that is down never delays the daemon (PL-08).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::{DriverError, DriverResult, Kind};

use super::{AnyDriver, DriverEntry, PluginEntry, State, Transport};
use crate::call::{Driver, Metrics};
use crate::config::{parse_duration, Config, PluginConfig};
use crate::remote::{Discovery, Found, RemoteOptions, RemotePlugin};

/// Extra time the core's deadline gives a remote call beyond the plugin's
/// own per-method timeout, so the socket's timeout fires first and names
/// the method.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// The options of a remote plugin: the `[[plugin]]` table's `timeout`
/// for every call and `timeouts` per method when configured; moby's
/// deadlines otherwise (volume `Create`/`Mount` 2 min, other volume calls
/// 1 min, the rest 30 s).
fn options(p: Option<&PluginConfig>, found: Option<&Found>) -> RemoteOptions {
    let mut opts = RemoteOptions::default();
    if let Some(p) = p {
        opts.timeout = p.timeout.as_deref().and_then(|t| parse_duration(t).ok());
        opts.method_timeouts.extend(Config::method_timeouts(p));
    }
    if let Some(f) = found {
        opts.tls = f.tls.clone();
    }
    opts
}

/// The registry entry of a remote plugin at `address`: one driver per kind,
/// each an adapter over the same [`RemotePlugin`]. Which kinds are real is
/// known after activation; calls of a kind the plugin lacks fail with
/// `unsupported`.
pub(super) fn entry(
    name: &str,
    address: &str,
    p: Option<&PluginConfig>,
    found: Option<&Found>,
) -> PluginEntry {
    let start = Instant::now();
    let opts = options(p, found);
    let mut entry = PluginEntry {
        name: name.to_string(),
        transport: Transport::Remote { address: address.to_string() },
        state: State::Ready,
        manifest: None,
        compat: None,
        describe: serde_json::json!({}),
        timeout: opts.timeout.unwrap_or_else(|| opts.max_timeout()),
        drivers: Vec::new(),
        load_time: Duration::ZERO,
        remote: None,
        source: found.map(|f| f.source.clone()),
    };
    match RemotePlugin::new(name, address, opts) {
        Ok(plugin) => {
            let deadline = plugin.max_timeout() + DEADLINE_MARGIN;
            for kind in Kind::ALL {
                let metrics = Arc::new(Metrics::default());
                let m = Arc::clone(&metrics);
                let driver = match kind {
                    Kind::Storage => {
                        AnyDriver::Storage(Driver::new(plugin.storage(), name, kind, deadline, m))
                    }
                    Kind::Network => {
                        AnyDriver::Network(Driver::new(plugin.network(), name, kind, deadline, m))
                    }
                    Kind::Ipam => AnyDriver::Ipam(Driver::new(plugin.ipam(), name, kind, deadline, m)),
                    Kind::Volume => AnyDriver::Volume(Driver::new(plugin.volume(), name, kind, deadline, m)),
                };
                entry.drivers.push(DriverEntry { kind, state: State::Ready, driver: Some(driver), metrics });
            }
            entry.remote = Some(plugin);
        }
        Err(e) => entry.state = State::Failed(format!("{}: {}", e.kind, e.message)),
    }
    entry.load_time = start.elapsed();
    entry
}

/// Activates `plugins` in the background, one thread each, so their kinds
/// are known early; failures stay visible in `berth plugin ls`.
pub(super) fn activate_in_background(plugins: Vec<Arc<RemotePlugin>>) {
    for plugin in plugins {
        let spawned = std::thread::Builder::new().name(format!("activate-{}", plugin.name())).spawn(move || {
            if let Err(e) = plugin.activate() {
                tracing::warn!(plugin = plugin.name(), error = %e.message, "remote plugin not activated yet");
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to activate a remote plugin");
        }
    }
}

/// The kinds a remote plugin is known to implement (from its last
/// activation; empty before the first).
pub(super) fn known_kinds(plugin: &RemotePlugin) -> Vec<Kind> {
    let mut kinds: Vec<Kind> =
        plugin.status().implements.iter().filter_map(|s| Subsystem::parse(s)).map(Subsystem::kind).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Whether a remote plugin is known to lack `kind`: activated, and
/// `Implements` does not list it.
pub(super) fn lacks(plugin: &RemotePlugin, kind: Kind) -> Option<DriverError> {
    let status = plugin.status();
    if status.activations == 0 {
        return None;
    }
    let subsystem = Subsystem::of(kind);
    if status.implements.iter().any(|s| s == subsystem.as_str()) {
        return None;
    }
    Some(DriverError::unsupported(format!(
        "plugin {:?} does not implement {subsystem} (it implements {:?})",
        plugin.name(),
        status.implements
    )))
}

/// The discovery directories of `config`.
pub(super) fn discovery(config: &Config) -> Discovery {
    Discovery::new(config.daemon.plugin_socket_dirs.clone(), config.daemon.plugin_spec_dirs.clone())
}

/// Finds plugin `name` in the discovery directories, waiting up to
/// `wait` for it to appear.
pub(super) fn lookup(discovery: &Discovery, name: &str, wait: Duration) -> DriverResult<Option<Found>> {
    if !crate::config::valid_name(name) {
        return Ok(None);
    }
    discovery.wait_for(name, wait)
}

/// Where a discovered plugin came from, for the view.
pub(super) fn source_label(source: &Option<PathBuf>) -> Option<String> {
    source.as_ref().map(|s| s.display().to_string())
}
