//! The registry with remote plugins: configured ones (built while the
//! plugin is down, used once it is up), discovered ones (found by name in
//! the discovery directories), and kinds a plugin does not implement.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Config, Registry};
use berth_plugin_api::network::Scope;
use berth_plugin_api::remote::{Handlers, Listen, Server, ServerHandle};
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind, VolumeDriver};

/// A volume driver keeping names in memory.
#[derive(Debug, Default)]
struct Names(Mutex<BTreeMap<String, String>>);

impl VolumeDriver for Names {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        self.0.lock().unwrap().insert(req.name.clone(), format!("/data/{}", req.name));
        Ok(())
    }
    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        self.0.lock().unwrap().remove(&req.name);
        Ok(())
    }
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        Ok(VolumeMountResponse::new(format!("/data/{}", req.name)))
    }
    fn unmount(&self, _req: VolumeUnmountRequest) -> DriverResult<()> {
        Ok(())
    }
    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        Ok(VolumePathResponse::new(format!("/data/{}", req.name)))
    }
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        match self.0.lock().unwrap().get(&req.name) {
            Some(m) => Ok(VolumeInfo::new(&req.name, m.as_str())),
            None => Err(DriverError::not_found(format!("volume {:?} not found", req.name))),
        }
    }
    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        Ok(self.0.lock().unwrap().iter().map(|(n, m)| VolumeInfo::new(n, m.as_str())).collect())
    }
    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}

fn serve(socket: &std::path::Path) -> ServerHandle {
    let handlers = Handlers { volume: Some(Arc::new(Names::default())), ..Handlers::default() };
    Server::bind(&Listen::Unix(socket.to_path_buf()), handlers).unwrap().spawn().unwrap()
}

fn config(dir: &std::path::Path) -> Config {
    let sockets = dir.join("sockets");
    let specs = dir.join("specs");
    std::fs::create_dir_all(&sockets).unwrap();
    std::fs::create_dir_all(&specs).unwrap();
    let text = format!(
        r#"[daemon]
root = "{root}"
exec_root = "{run}"
plugin_dirs = []
plugin_socket_dirs = ["{sockets}"]
plugin_spec_dirs = ["{specs}"]
plugin_wait = "1s"

[[plugin]]
name = "configured"
remote = "unix://{dir}/configured.sock"
timeout = "2s"
"#,
        root = dir.join("root").display(),
        run = dir.join("run").display(),
        sockets = sockets.display(),
        specs = specs.display(),
        dir = dir.display(),
    );
    Config::parse(&text, "registry_remote.toml").unwrap()
}

#[test]
fn a_configured_remote_plugin_that_is_down_does_not_delay_the_registry_and_is_used_once_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let start = Instant::now();
    let registry = Registry::build(&config).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "built in {:?} while the plugin is down",
        start.elapsed()
    );
    let view = registry.views().into_iter().find(|v| v.name == "configured").unwrap();
    assert_eq!(view.transport, "remote");
    assert_ne!(view.status, "active");

    let _server = serve(&dir.path().join("configured.sock"));
    let volumes = registry.volume("configured").unwrap();
    volumes.call("create", |d| d.create(VolumeCreateRequest::new("v1"))).unwrap();
    let got = volumes.call("get", |d| d.get(VolumeGetRequest::new("v1"))).unwrap();
    assert_eq!(got.mountpoint, "/data/v1");
    let view = registry.views().into_iter().find(|v| v.name == "configured").unwrap();
    assert_eq!(view.status, "active", "{view:?}");
    assert_eq!(view.kinds, [Kind::Volume]);
    assert_eq!(view.remote.as_ref().unwrap().implements, ["VolumeDriver"]);
    assert_eq!(registry.ready(Kind::Volume), ["configured"]);

    // A kind it does not implement is a typed error naming what it does.
    let err = registry.network("configured").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err:?}");
    assert!(err.message.contains("does not implement NetworkDriver"), "{}", err.message);
}

#[test]
fn a_plugin_in_the_discovery_directories_is_found_by_name_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let registry = Registry::build(&config).unwrap();
    let _server = serve(&dir.path().join("sockets/found.sock"));
    let volumes = registry.volume("found").unwrap();
    volumes.call("create", |d| d.create(VolumeCreateRequest::new("a"))).unwrap();
    let view =
        registry.views().into_iter().find(|v| v.name == "found").expect("the discovered plugin is listed");
    assert!(view.source.as_deref().unwrap().ends_with("sockets/found.sock"), "{view:?}");
    assert_eq!(view.status, "active");
    assert!(registry.ready(Kind::Volume).contains(&"found".to_string()));

    // A name nothing answers to is not-found after the configured wait.
    let start = Instant::now();
    let err = registry.volume("nobody").unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(900), "waited plugin_wait for it to appear");
    assert!(err.message.contains("configured or discovered"), "{}", err.message);
}
