//! `/_ping`, `/version` and `/info`, in Docker's shapes (as far as they map)
//! plus berth's own facts.

use std::sync::Arc;

use berth_core::{Info, Kind};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{AppState, Reply, API_VERSION, MIN_API_VERSION};
use crate::host::{self, HostFacts};

/// `OK` (no body for HEAD), as Docker answers it.
pub fn ping(head: bool) -> Reply {
    let body = if head { Bytes::new() } else { Bytes::from_static(b"OK") };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    resp
}

/// The daemon's version, as `docker version` reads it.
pub fn version(host: &HostFacts) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "Platform": { "Name": "berth" },
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "PluginApiVersion": berth_plugin_api::API_VERSION,
        "GitCommit": "",
        "Os": std::env::consts::OS,
        "Arch": host::go_arch(),
        "KernelVersion": host.kernel_version,
        "BuildTime": host.build_time,
        "Components": [{
            "Name": "Engine",
            "Version": version,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "PluginApiVersion": berth_plugin_api::API_VERSION,
                "Os": std::env::consts::OS,
                "Arch": host::go_arch(),
                "KernelVersion": host.kernel_version,
                "BuildTime": host.build_time,
            }
        }]
    })
}

fn ready(info: &Info, kind: Kind) -> Vec<String> {
    info.drivers.iter().find(|(k, _)| *k == kind).map(|(_, names)| names.clone()).unwrap_or_default()
}

/// System-wide facts, as `docker info` reads them, plus a `Berth` object.
pub fn info(state: &Arc<AppState>, info: Info) -> Value {
    let h = &state.host;
    let (ready_n, skipped_n, failed_n) = info.plugin_counts;
    json!({
        "ID": state.engine_id,
        "Name": host::hostname(),
        "ServerVersion": info.version,
        "Driver": info.storage_driver,
        "DriverStatus": info.storage_status.iter().map(|(k, v)| [k, v]).collect::<Vec<_>>(),
        "Plugins": {
            "Volume": ready(&info, Kind::Volume),
            "Network": ready(&info, Kind::Network),
            "Authorization": null,
            "Log": [],
        },
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "DockerRootDir": info.root,
        "KernelVersion": h.kernel_version,
        "OperatingSystem": h.operating_system,
        "OSType": std::env::consts::OS,
        "Architecture": std::env::consts::ARCH,
        "NCPU": h.ncpu,
        "MemTotal": h.mem_total,
        "SystemTime": berth_plugin_api::util::rfc3339(std::time::SystemTime::now()),
        "Debug": tracing::enabled!(tracing::Level::DEBUG),
        "Berth": {
            "ApiVersion": info.api_version,
            "StorageDriver": info.storage_driver,
            "DefaultNetworkDriver": info.network_driver,
            "IpamDriver": info.ipam_driver,
            "DefaultVolumeDriver": info.volume_driver,
            "Drivers": {
                "Storage": ready(&info, Kind::Storage),
                "Network": ready(&info, Kind::Network),
                "Ipam": ready(&info, Kind::Ipam),
                "Volume": ready(&info, Kind::Volume),
            },
            "Plugins": { "Ready": ready_n, "Skipped": skipped_n, "Failed": failed_n },
            "ExecRoot": info.exec_root,
            "ConfigSource": info.config_source,
            "Volumes": info.volumes,
            "Reconcile": {
                "Resolved": info.reconcile.resolved,
                "Unresolved": info.reconcile.unresolved,
            },
            // Engine start (store, plugins, reconcile), then process start
            // to listening on the socket.
            "StartupUs": info.startup_us,
            "ListenUs": state.listen_us.get().copied(),
        },
    })
}
