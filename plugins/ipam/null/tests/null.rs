//! The null IPAM driver through the real ABI, linked in-process exactly as
//! the daemon builds a `.so`.

use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::ipam::*;
use berth_plugin_api::{ErrorKind, Init, InitRequest, IpamDriver, Kind};

fn module() -> PluginModule {
    PluginModule::linked(berth_ipam_null::export::berth_plugin_root())
}

fn open() -> Arc<dyn IpamDriver> {
    match module().new_ipam(&InitRequest::new("null", "", "")).unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("declined: {why}"),
    }
}

fn pool_req(space: &str, pool: &str, sub_pool: &str, v6: bool) -> RequestPoolRequest {
    let mut req = RequestPoolRequest::new(space, pool);
    req.sub_pool = sub_pool.into();
    req.v6 = v6;
    req
}

#[test]
fn it_names_itself_and_its_one_space() {
    let m = module().manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), ("null", &[Kind::Ipam][..]));
    let d = open();
    let spaces = d.default_address_spaces(AddressSpacesRequest::default()).unwrap();
    assert_eq!((spaces.local.as_str(), spaces.global.as_str()), ("null", "null"));
    assert_eq!(d.capabilities(IpamCapabilitiesRequest::default()).unwrap(), IpamCapabilities::default());
    let mut init = InitRequest::new("null", "", "");
    init.options = serde_json::json!({ "pools": 1 });
    let e = module().new_ipam(&init).map(|_| ()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("unknown field"), "{}", e.message);
}

#[test]
fn every_pool_is_the_whole_space_and_no_address_is_handed_out() {
    let d = open();
    for space in ["null", ""] {
        let r = d.request_pool(pool_req(space, "", "", false)).unwrap();
        assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("null/0.0.0.0/0", "0.0.0.0/0"));
        assert!(r.data.is_empty());
        let r = d.request_pool(pool_req(space, "", "", true)).unwrap();
        assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("null/::/0", "::/0"));
    }
    for id in ["null/0.0.0.0/0", "null/::/0"] {
        let mut gw = RequestAddressRequest::new(id);
        gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
        assert_eq!(d.request_address(gw).unwrap(), RequestAddressResponse::default());
        let mut specific = RequestAddressRequest::new(id);
        specific.address = "10.0.0.1".into();
        assert_eq!(d.request_address(specific).unwrap().address, "");
        for _ in 0..3 {
            d.release_address(ReleaseAddressRequest::new(id, "10.0.0.1")).unwrap();
            d.release_pool(ReleasePoolRequest::new(id)).unwrap();
        }
    }
    d.release_pool(ReleasePoolRequest::new("anything")).unwrap();
}

#[test]
fn specific_pools_spaces_and_ids_are_refused() {
    let d = open();
    let bad = |req: RequestPoolRequest, text: &str| {
        let e = d.request_pool(req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{}", e.message);
        assert!(e.message.contains(text), "{:?} lacks {text:?}", e.message);
    };
    bad(pool_req("local", "", "", false), "unknown address space \"local\"");
    bad(pool_req("null", "10.0.0.0/24", "", false), "specific pool");
    bad(pool_req("null", "0.0.0.0/0", "", false), "specific pool");
    bad(pool_req("null", "", "10.0.0.0/25", false), "specific sub-pool");
    let e = d.request_address(RequestAddressRequest::new("local/10.0.0.0/24")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("unknown pool id"), "{}", e.message);
    let e = d.release_address(ReleaseAddressRequest::new("x", "10.0.0.1")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
}
