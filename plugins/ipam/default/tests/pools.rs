//! Pools through the ABI: spaces, overlap, ids, validation, dynamic pools.

mod common;

use berth_plugin_api::ipam::*;
use berth_plugin_api::{ErrorKind, Kind};
use common::*;
use serde_json::json;

#[test]
fn the_plugin_names_itself_and_its_spaces() {
    let m = module().manifest();
    assert_eq!(m.name, "default");
    assert_eq!(m.kinds, vec![Kind::Ipam]);
    assert!(module().describe()["description"].as_str().unwrap().contains("IPAM"));
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let spaces = d.default_address_spaces(AddressSpacesRequest::default()).unwrap();
    assert_eq!((spaces.local.as_str(), spaces.global.as_str()), ("local", "global"));
    let caps = d.capabilities(IpamCapabilitiesRequest::default()).unwrap();
    assert!(!caps.requires_mac_address && !caps.requires_request_replay);
    // The other kinds are not offered.
    let init = berth_plugin_api::InitRequest::new("default", dir.path().to_str().unwrap(), "");
    assert_err(module().new_volume(&init), ErrorKind::Unsupported, "does not provide");
}

#[test]
fn pool_ids_are_stable_and_echo_space_pool_and_sub_pool() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let r = request_pool(&d, "", "10.1.0.0/16", "").unwrap();
    assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("local/10.1.0.0/16", "10.1.0.0/16"));
    let r = request_pool(&d, "global", "10.1.0.0/16", "10.1.2.0/24").unwrap();
    assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("global/10.1.0.0/16/10.1.2.0/24", "10.1.0.0/16"));
    let r = request_pool(&d, "local", "fd00:1::/64", "").unwrap();
    assert_eq!(r.pool_id, "local/fd00:1::/64");
}

#[test]
fn overlapping_pools_in_one_space_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    for (live, other) in [("10.1.0.0/16", "10.1.0.0/24"), ("fd00:1::/48", "fd00:1:0:5::/64")] {
        let id = request_pool(&d, "local", live, "").unwrap().pool_id;
        // exact (also with a sub-pool), subset, superset
        let e = assert_err(request_pool(&d, "local", live, ""), ErrorKind::Conflict, "already live");
        assert!(e.message.contains(&id), "{}", e.message);
        assert_err(request_pool(&d, "", live, other), ErrorKind::Conflict, "already live");
        assert_err(request_pool(&d, "local", other, ""), ErrorKind::Conflict, "overlaps live pool");
        let superset = if live.contains(':') { "fd00::/16" } else { "10.0.0.0/8" };
        assert_err(request_pool(&d, "local", superset, ""), ErrorKind::Conflict, "overlaps live pool");
        // The same prefix in the other space is fine, once.
        request_pool(&d, "global", live, "").unwrap();
        assert_err(request_pool(&d, "global", other, ""), ErrorKind::Conflict, "overlaps");
        // Neighbours are fine.
        let neighbour = if live.contains(':') { "fd00:2::/48" } else { "10.2.0.0/16" };
        request_pool(&d, "local", neighbour, "").unwrap();
    }
}

#[test]
fn bad_pool_requests_are_invalid_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let bad = |space: &str, pool: &str, sub: &str, text: &str| {
        assert_err(request_pool(&d, space, pool, sub), ErrorKind::InvalidArgument, text);
    };
    bad("", "10.1.0.0", "", "not a CIDR prefix");
    bad("", "10.1.0.0/33", "", "not a CIDR prefix");
    bad("", "ten/8", "", "not a CIDR prefix");
    bad("", "10.1.0.1/16", "", "host bits");
    bad("", "fd00::1/64", "", "host bits");
    bad("", "", "10.1.2.0/24", "without a pool");
    bad("", "10.1.0.0/16", "10.2.0.0/24", "outside pool");
    bad("", "10.1.0.0/16", "10.0.0.0/8", "outside pool");
    bad("", "10.1.0.0/16", "10.1.2.1/24", "host bits");
    bad("", "10.1.0.0/16", "fd00::/64", "outside pool");
    bad("swarm", "10.1.0.0/16", "", "unknown address space");
    // The V6 flag must match the family of the pool named.
    let mut req = pool_req("", "10.1.0.0/16", "");
    req.v6 = true;
    assert_err(d.request_pool(req), ErrorKind::InvalidArgument, "V6=true");
    // Nothing was reserved by the failures.
    request_pool(&d, "", "10.1.0.0/16", "").unwrap();
}

#[test]
fn a_released_pool_can_be_requested_again_and_not_released_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.5.0.0/24");
    assert_eq!(any(&d, &id).unwrap(), "10.5.0.1/24");
    release_pool(&d, &id).unwrap();
    assert_err(release_pool(&d, &id), ErrorKind::NotFound, "not live");
    assert_err(release_pool(&d, "local/10.99.0.0/16"), ErrorKind::NotFound, "not live");
    assert_err(any(&d, &id), ErrorKind::NotFound, "not live");
    assert_err(release(&d, &id, "10.5.0.1"), ErrorKind::NotFound, "not live");
    // Again, with every address free once more.
    assert_eq!(pool(&d, "10.5.0.0/24"), id);
    assert_eq!(any(&d, &id).unwrap(), "10.5.0.1/24");
    // A superset is possible once the pool is gone.
    release_pool(&d, &id).unwrap();
    pool(&d, "10.5.0.0/16");
}

#[test]
fn dynamic_pools_come_from_the_default_pools_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    assert_eq!(dynamic(&d, "", false).unwrap().pool, "172.17.0.0/16");
    // A pool named explicitly is skipped by the dynamic pick.
    pool(&d, "172.18.0.0/24");
    let r = dynamic(&d, "local", false).unwrap();
    assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("local/172.19.0.0/16", "172.19.0.0/16"));
    // Spaces are independent.
    assert_eq!(dynamic(&d, "global", false).unwrap().pool, "172.17.0.0/16");
    assert_eq!(dynamic(&d, "", true).unwrap().pool, "fd00:b347::/64");
    assert_eq!(dynamic(&d, "", true).unwrap().pool, "fd00:b347:0:1::/64");
    // A freed dynamic pool is the first picked again.
    release_pool(&d, "local/172.17.0.0/16").unwrap();
    assert_eq!(dynamic(&d, "", false).unwrap().pool, "172.17.0.0/16");
}

#[test]
fn configured_default_pools_are_used_and_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let opts = json!({
        "default_address_pools": [{ "base": "10.10.0.0/23", "size": 24 }],
        "default_address_pools_v6": [{ "base": "fd00:aa::/63", "size": 64 }]
    });
    let d = try_open(dir.path(), opts).unwrap();
    assert_eq!(dynamic(&d, "", false).unwrap().pool, "10.10.0.0/24");
    assert_eq!(dynamic(&d, "", false).unwrap().pool, "10.10.1.0/24");
    assert_err(dynamic(&d, "", false), ErrorKind::ResourceExhausted, "no free IPv4 subnet");
    assert_eq!(dynamic(&d, "", true).unwrap().pool, "fd00:aa::/64");
    assert_eq!(dynamic(&d, "", true).unwrap().pool, "fd00:aa:0:1::/64");
    assert_err(dynamic(&d, "", true), ErrorKind::ResourceExhausted, "no free IPv6 subnet");
    assert_eq!(dynamic(&d, "global", true).unwrap().pool, "fd00:aa::/64");
}

#[test]
fn bad_options_are_refused_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |opts: serde_json::Value, text: &str| {
        assert_err(try_open(dir.path(), opts), ErrorKind::InvalidArgument, text);
    };
    bad(json!({ "default_pools": [] }), "unknown field");
    bad(
        json!({ "default_address_pools": [{ "base": "10.0.0.0/8", "size": 24, "gateway": "x" }] }),
        "unknown field",
    );
    bad(json!({ "default_address_pools": [{ "base": "10.0.0.0/8" }] }), "size");
    bad(json!({ "default_address_pools": [{ "base": "10.0.0.1/8", "size": 24 }] }), "host bits");
    bad(json!({ "default_address_pools": [{ "base": "10.0.0.0/16", "size": 8 }] }), "must lie between");
    bad(json!({ "default_address_pools": [{ "base": "fd00::/48", "size": 64 }] }), "not an IPv4 prefix");
    bad(json!({ "default_address_pools_v6": [{ "base": "fd00::/48", "size": 129 }] }), "must lie between");
    // An empty root is refused too.
    let init = berth_plugin_api::InitRequest::new("default", "", "");
    assert_err(module().new_ipam(&init).map(|_| ()), ErrorKind::InvalidArgument, "root");
}

#[test]
fn the_unspecified_address_asks_for_a_dynamic_pool_of_that_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let r = request_pool(&d, "", "0.0.0.0/24", "").unwrap();
    assert_eq!((r.pool_id.as_str(), r.pool.as_str()), ("local/172.17.0.0/24", "172.17.0.0/24"));
    assert_eq!(request_pool(&d, "", "0.0.0.0/24", "").unwrap().pool, "172.17.1.0/24");
    // The default size still skips what is live.
    assert_eq!(dynamic(&d, "", false).unwrap().pool, "172.18.0.0/16");
    assert_eq!(request_pool(&d, "", "::/80", "").unwrap().pool, "fd00:b347::/80");
    assert_err(request_pool(&d, "", "0.0.0.0/12", ""), ErrorKind::InvalidArgument, "ask for /16 or longer");
    assert_err(request_pool(&d, "", "0.0.0.0/0", ""), ErrorKind::InvalidArgument, "bigger than every");
    assert_err(request_pool(&d, "", "0.0.0.0/33", ""), ErrorKind::InvalidArgument, "not a CIDR prefix");
    assert_err(request_pool(&d, "", "::/129", ""), ErrorKind::InvalidArgument, "not a CIDR prefix");
    assert_err(request_pool(&d, "", "0.0.0.0/24", "0.0.0.0/25"), ErrorKind::InvalidArgument, "sub-pool");
    let mut req = pool_req("", "0.0.0.0/24", "");
    req.v6 = true;
    assert_err(d.request_pool(req), ErrorKind::InvalidArgument, "V6=true");
}
