//! Helpers shared by the ABI tests: the driver is built through the real
//! plugin root, linked in-process, exactly as the daemon builds a `.so`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, VolumeDriver};

pub type Volumes = Arc<dyn VolumeDriver>;

pub fn module() -> PluginModule {
    PluginModule::linked(berth_volume_local::export::berth_plugin_root())
}

pub fn try_open(root: &Path, options: serde_json::Value) -> DriverResult<Volumes> {
    let mut init = InitRequest::new("local", root.to_str().unwrap(), root.join("run").to_str().unwrap());
    init.options = options;
    match module().new_volume(&init)? {
        Init::Ready(d) => Ok(d),
        Init::Skipped(why) => panic!("the local volume driver declined: {why}"),
    }
}

pub fn open(root: &Path) -> Volumes {
    try_open(root, serde_json::Value::Null).unwrap()
}

pub fn create(d: &Volumes, name: &str) -> DriverResult<()> {
    d.create(VolumeCreateRequest::new(name))
}

pub fn create_with(d: &Volumes, name: &str, opts: &[(&str, &str)]) -> DriverResult<()> {
    let mut req = VolumeCreateRequest::new(name);
    req.options = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.create(req)
}

pub fn remove(d: &Volumes, name: &str) -> DriverResult<()> {
    let mut req = VolumeRemoveRequest::default();
    req.name = name.into();
    d.remove(req)
}

pub fn mount(d: &Volumes, name: &str, id: &str) -> DriverResult<String> {
    let mut req = VolumeMountRequest::default();
    req.name = name.into();
    req.id = id.into();
    d.mount(req).map(|r| r.mountpoint)
}

pub fn unmount(d: &Volumes, name: &str, id: &str) -> DriverResult<()> {
    let mut req = VolumeUnmountRequest::default();
    req.name = name.into();
    req.id = id.into();
    d.unmount(req)
}

pub fn path(d: &Volumes, name: &str) -> DriverResult<String> {
    let mut req = VolumePathRequest::default();
    req.name = name.into();
    d.path(req).map(|r| r.mountpoint)
}

pub fn get(d: &Volumes, name: &str) -> DriverResult<VolumeInfo> {
    let mut req = VolumeGetRequest::default();
    req.name = name.into();
    d.get(req)
}

pub fn list(d: &Volumes) -> Vec<VolumeInfo> {
    d.list(VolumeListRequest::default()).unwrap()
}

pub fn names(d: &Volumes) -> Vec<String> {
    list(d).into_iter().map(|v| v.name).collect()
}

/// A 64-hex mount id, as the core makes them.
pub fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Asserts `result` failed with `kind` and a message containing `text`.
#[track_caller]
pub fn assert_err<T>(result: DriverResult<T>, kind: ErrorKind, text: &str) -> DriverError {
    let Err(err) = result else { panic!("expected a {kind} error containing {text:?}, got success") };
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.contains(text), "{:?} does not contain {text:?}", err.message);
    err
}
