//! Driver tests that bypass the disk: the allocator's speed and the lock,
//! not the fsync. Everything else goes through the ABI in `tests/`.

use super::*;
use berth_plugin_api::ErrorKind;

fn driver() -> DefaultIpamDriver {
    let defaults = DefaultPools::from_options(&Opts::default()).unwrap();
    DefaultIpamDriver::with_store(defaults, Store::Memory).unwrap()
}

fn pool_req(cidr: &str) -> RequestPoolRequest {
    let mut req = RequestPoolRequest::default();
    req.pool = cidr.into();
    req.v6 = cidr.contains(':');
    req
}

fn pool(d: &DefaultIpamDriver, cidr: &str) -> String {
    d.request_pool(pool_req(cidr)).unwrap().pool_id
}

fn addr_req(id: &str, address: &str) -> RequestAddressRequest {
    let mut req = RequestAddressRequest::default();
    req.pool_id = id.into();
    req.address = address.into();
    req
}

fn any(d: &DefaultIpamDriver, id: &str) -> DriverResult<String> {
    d.request_address(addr_req(id, "")).map(|r| r.address)
}

fn release(d: &DefaultIpamDriver, id: &str, address: &str) {
    let mut req = ReleaseAddressRequest::default();
    req.pool_id = id.into();
    req.address = address.into();
    d.release_address(req).unwrap();
}

#[test]
fn a_slash_16_is_allocated_whole_then_exhausted() {
    let d = driver();
    let id = pool(&d, "10.7.0.0/16");
    let start = std::time::Instant::now();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..65_534 {
        let a = any(&d, &id).unwrap();
        assert!(seen.insert(a));
    }
    let took = start.elapsed();
    assert!(seen.contains("10.7.0.1/16") && seen.contains("10.7.255.254/16"));
    assert!(!seen.contains("10.7.0.0/16") && !seen.contains("10.7.255.255/16"));
    let e = any(&d, &id).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.contains("no available addresses in pool 10.7.0.0/16"), "{}", e.message);
    // Releasing one makes exactly that one available.
    release(&d, &id, "10.7.128.9");
    assert_eq!(any(&d, &id).unwrap(), "10.7.128.9/16");
    assert_eq!(any(&d, &id).unwrap_err().kind, ErrorKind::ResourceExhausted);
    eprintln!("allocated a /16 in {took:?} (in memory)");
}

#[test]
fn a_slash_64_hands_out_sparse_addresses() {
    let d = driver();
    let id = pool(&d, "fd00:1::/64");
    assert_eq!(any(&d, &id).unwrap(), "fd00:1::1/64");
    assert_eq!(any(&d, &id).unwrap(), "fd00:1::2/64");
    let req = addr_req(&id, "fd00:1::ffff:ffff:ffff:ffff");
    assert_eq!(d.request_address(req).unwrap().address, "fd00:1::ffff:ffff:ffff:ffff/64");
    assert_eq!(any(&d, &id).unwrap(), "fd00:1::3/64");
}

#[test]
fn parallel_requests_never_share_an_address_or_a_pool() {
    let d = std::sync::Arc::new(driver());
    let id = pool(&d, "10.9.0.0/20");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (d, id) = (d.clone(), id.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..400 {
                    let a = any(&d, &id).unwrap();
                    if i % 3 == 0 {
                        release(&d, &id, a.split('/').next().unwrap());
                    } else {
                        got.push(a);
                    }
                }
                let dynamic = d.request_pool(RequestPoolRequest::default()).unwrap();
                (got, dynamic.pool)
            })
        })
        .collect();
    let mut addresses = std::collections::HashSet::new();
    let mut subnets = std::collections::HashSet::new();
    for h in handles {
        let (got, subnet) = h.join().unwrap();
        for a in got {
            assert!(addresses.insert(a.clone()), "{a} handed out twice");
        }
        assert!(subnets.insert(subnet.clone()), "{subnet} handed out twice");
    }
    assert_eq!(subnets.len(), 8);
}

#[test]
fn the_serial_option_must_be_a_boolean() {
    let d = driver();
    let mut req = pool_req("10.1.0.0/24");
    req.options.insert(SERIAL_OPTION.into(), "sometimes".into());
    assert_eq!(d.request_pool(req.clone()).unwrap_err().kind, ErrorKind::InvalidArgument);
    req.options.insert(SERIAL_OPTION.into(), "FALSE".into());
    d.request_pool(req).unwrap();
}

#[test]
fn the_abi_path_keeps_answers_and_error_kinds() {
    use berth_plugin_api::ffi::PluginModule;
    let dir = tempfile::tempdir().unwrap();
    let init = InitRequest::new("default", dir.path().to_str().unwrap(), "");
    let Init::Ready(d) = PluginModule::linked(crate::export::berth_plugin_root()).new_ipam(&init).unwrap()
    else {
        panic!("declined")
    };
    let id = d.request_pool(pool_req("10.0.0.0/30")).unwrap().pool_id;
    assert_eq!(id, "local/10.0.0.0/30");
    let mut gw = addr_req(&id, "");
    gw.options.insert(berth_plugin_api::ipam::REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    assert_eq!(d.request_address(gw).unwrap().address, "10.0.0.1/30");
    assert_eq!(d.request_address(addr_req(&id, "")).unwrap().address, "10.0.0.2/30");
    let kind = |r: DriverResult<RequestAddressResponse>| r.unwrap_err().kind;
    assert_eq!(kind(d.request_address(addr_req(&id, ""))), ErrorKind::ResourceExhausted);
    assert_eq!(kind(d.request_address(addr_req(&id, "10.0.0.2"))), ErrorKind::Conflict);
    assert_eq!(kind(d.request_address(addr_req(&id, "10.0.1.1"))), ErrorKind::InvalidArgument);
    assert_eq!(kind(d.request_address(addr_req("local/10.9.0.0/30", ""))), ErrorKind::NotFound);
    assert!(dir.path().join(STATE_FILE).is_file());
}
