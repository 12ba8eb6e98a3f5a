//! Helpers shared by the ABI tests: the driver is built through the real
//! plugin root, linked in-process, exactly as the daemon builds a `.so`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, IpamDriver};

pub type Ipam = Arc<dyn IpamDriver>;

pub fn module() -> PluginModule {
    PluginModule::linked(berth_ipam_default::export::berth_plugin_root())
}

/// A driver rooted at `root` with `options` (JSON; `null` for none).
pub fn try_open(root: &Path, options: serde_json::Value) -> DriverResult<Ipam> {
    let mut init = InitRequest::new("default", root.to_str().unwrap(), root.join("run").to_str().unwrap());
    init.options = options;
    match module().new_ipam(&init)? {
        Init::Ready(d) => Ok(d),
        Init::Skipped(why) => panic!("the default IPAM driver declined: {why}"),
    }
}

pub fn open(root: &Path) -> Ipam {
    try_open(root, serde_json::Value::Null).unwrap()
}

pub fn pool_req(space: &str, pool: &str, sub_pool: &str) -> RequestPoolRequest {
    let mut req = RequestPoolRequest::default();
    req.address_space = space.into();
    req.pool = pool.into();
    req.sub_pool = sub_pool.into();
    req.v6 = pool.contains(':');
    req
}

pub fn request_pool(d: &Ipam, space: &str, pool: &str, sub_pool: &str) -> DriverResult<RequestPoolResponse> {
    d.request_pool(pool_req(space, pool, sub_pool))
}

/// A live pool's id.
pub fn pool(d: &Ipam, pool: &str) -> String {
    request_pool(d, "", pool, "").unwrap().pool_id
}

pub fn serial_pool(d: &Ipam, pool: &str) -> String {
    let mut req = pool_req("", pool, "");
    req.options.insert("com.docker.network.ipam.serial".into(), "true".into());
    d.request_pool(req).unwrap().pool_id
}

pub fn dynamic(d: &Ipam, space: &str, v6: bool) -> DriverResult<RequestPoolResponse> {
    let mut req = RequestPoolRequest::default();
    req.address_space = space.into();
    req.v6 = v6;
    d.request_pool(req)
}

pub fn release_pool(d: &Ipam, id: &str) -> DriverResult<()> {
    let mut req = ReleasePoolRequest::default();
    req.pool_id = id.into();
    d.release_pool(req)
}

/// Requests `address` ("" for any) from pool `id`; answers the CIDR.
pub fn address(d: &Ipam, id: &str, address: &str) -> DriverResult<String> {
    let mut req = RequestAddressRequest::default();
    req.pool_id = id.into();
    req.address = address.into();
    d.request_address(req).map(|r| r.address)
}

pub fn any(d: &Ipam, id: &str) -> DriverResult<String> {
    address(d, id, "")
}

pub fn gateway(d: &Ipam, id: &str, address: &str) -> DriverResult<String> {
    let mut req = RequestAddressRequest::default();
    req.pool_id = id.into();
    req.address = address.into();
    req.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    d.request_address(req).map(|r| r.address)
}

pub fn release(d: &Ipam, id: &str, address: &str) -> DriverResult<()> {
    let mut req = ReleaseAddressRequest::default();
    req.pool_id = id.into();
    req.address = address.into();
    d.release_address(req)
}

/// Asserts `result` failed with `kind` and a message containing `text`.
#[track_caller]
pub fn assert_err<T>(result: DriverResult<T>, kind: ErrorKind, text: &str) -> DriverError {
    let Err(err) = result else { panic!("expected a {kind} error containing {text:?}, got success") };
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.contains(text), "{:?} does not contain {text:?}", err.message);
    err
}

/// The bare IP of a CIDR answer.
pub fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap()
}
