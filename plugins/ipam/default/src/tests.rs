//! Driver tests inside the crate: the allocator's speed and the lock
//! without the disk, and the journal (replay, compaction, failures).
//! Everything else goes through the ABI in `tests/`.

use super::*;
use berth_plugin_api::ErrorKind;

fn driver() -> DefaultIpamDriver {
    DefaultIpamDriver::in_memory(&Opts::default()).unwrap()
}

fn on_disk(root: &std::path::Path) -> DefaultIpamDriver {
    let init = InitRequest::new("default", root.to_str().unwrap(), "");
    match DefaultIpamDriver::new(init).unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("declined: {why}"),
    }
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

#[test]
fn in_memory_state_asks_for_replay_and_disk_state_does_not() {
    let caps = driver().capabilities(IpamCapabilitiesRequest::default()).unwrap();
    assert!(caps.requires_request_replay);
    let dir = tempfile::tempdir().unwrap();
    let caps = on_disk(dir.path()).capabilities(IpamCapabilitiesRequest::default()).unwrap();
    assert!(!caps.requires_request_replay);
}

#[test]
fn address_changes_go_to_the_journal_and_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let id;
    {
        let d = on_disk(dir.path());
        id = pool(&d, "10.1.0.0/24");
        let mut gw = addr_req(&id, "");
        gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
        assert_eq!(d.request_address(gw).unwrap().address, "10.1.0.1/24");
        assert_eq!(any(&d, &id).unwrap(), "10.1.0.2/24");
        assert_eq!(any(&d, &id).unwrap(), "10.1.0.3/24");
        release(&d, &id, "10.1.0.2");
        let lines = std::fs::read_to_string(&journal).unwrap();
        assert_eq!(lines.lines().count(), 4, "{lines}");
        assert!(lines.contains(r#""op":"gateway","addr":"10.1.0.1""#), "{lines}");
        // The snapshot has the pool but none of the addresses yet.
        let snap = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(!snap.contains("10.1.0.3"), "{snap}");
    }
    let d = on_disk(dir.path());
    // Replayed, and folded into a new snapshot at once.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    let snap = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    assert!(snap.contains(r#""gateway": "10.1.0.1""#) && snap.contains("10.1.0.3"), "{snap}");
    assert_eq!(any(&d, &id).unwrap(), "10.1.0.2/24");
    assert_eq!(any(&d, &id).unwrap(), "10.1.0.4/24");
    let mut gw = addr_req(&id, "10.1.0.9");
    gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    let e = d.request_address(gw).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("already has gateway 10.1.0.1"), "{}", e.message);
}

#[test]
fn a_torn_last_record_is_dropped_and_stale_generations_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let id = {
        let d = on_disk(dir.path());
        let id = pool(&d, "10.2.0.0/24");
        any(&d, &id).unwrap();
        id
    };
    let snap = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
    let generation: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let g = generation["generation"].as_u64().unwrap();
    let mut text = std::fs::read_to_string(&journal).unwrap();
    // A record of an older generation (already in the snapshot, or not):
    // ignored. A record cut short by a crash: ignored.
    text.push_str(&format!("{{\"g\":{},\"pool\":\"{id}\",\"op\":\"take\",\"addr\":\"10.2.0.50\"}}\n", g - 1));
    text.push_str(&format!("{{\"g\":{g},\"pool\":\"{id}\",\"op\":\"take\",\"addr\":\"10.2.0.60\"}}\n"));
    text.push_str(&format!("{{\"g\":{g},\"pool\":\"{id}\",\"op\":\"ta"));
    std::fs::write(&journal, text).unwrap();
    let d = on_disk(dir.path());
    let taken = |a: &str| d.request_address(addr_req(&id, a)).is_err();
    assert!(taken("10.2.0.1"));
    assert!(taken("10.2.0.60"));
    assert!(!taken("10.2.0.50"));
    // A bad line that is not the last one is corruption.
    drop(d);
    std::fs::write(&journal, format!("nonsense\n{{\"g\":{g}}}\n")).unwrap();
    let init = InitRequest::new("default", dir.path().to_str().unwrap(), "");
    let e = DefaultIpamDriver::new(init).unwrap_err();
    assert!(e.message.contains("corrupt IPAM journal") && e.message.contains("line 1"), "{}", e.message);
}

#[test]
fn an_address_change_that_cannot_be_journaled_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let d = on_disk(dir.path());
    let id = pool(&d, "10.3.0.0/29");
    assert_eq!(any(&d, &id).unwrap(), "10.3.0.1/29");
    d.fail_writes(true);
    let e = any(&d, &id).unwrap_err();
    assert!(e.message.contains("ipam-journal"), "{}", e.message);
    let mut gw = addr_req(&id, "");
    gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    assert!(d.request_address(gw.clone()).is_err());
    let mut rel = ReleaseAddressRequest::default();
    rel.pool_id = id.clone();
    rel.address = "10.3.0.1".into();
    assert!(d.release_address(rel).is_err());
    d.fail_writes(false);
    // Nothing changed: .1 still taken, .2 next, no gateway recorded.
    assert_eq!(d.request_address(addr_req(&id, "10.3.0.1")).unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(any(&d, &id).unwrap(), "10.3.0.2/29");
    let mut gw = addr_req(&id, "10.3.0.6");
    gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    assert_eq!(d.request_address(gw).unwrap().address, "10.3.0.6/29");
    drop(d);
    let d = on_disk(dir.path());
    assert_eq!(any(&d, &id).unwrap(), "10.3.0.3/29");
}

#[test]
fn the_journal_is_compacted_after_many_records() {
    // tmpfs when there is one: 16,389 fdatasyncs cost seconds on a disk.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let d = on_disk(dir.path());
    let id = pool(&d, "10.4.0.0/16");
    for _ in 0..COMPACT_AFTER + 5 {
        any(&d, &id).unwrap();
    }
    let lines = std::fs::read_to_string(&journal).unwrap().lines().count() as u64;
    assert_eq!(lines, 5);
    drop(d);
    let d = on_disk(dir.path());
    let want = format!("10.4.{}.{}/16", (COMPACT_AFTER + 6) / 256, (COMPACT_AFTER + 6) % 256);
    assert_eq!(any(&d, &id).unwrap(), want);
}

#[test]
fn parallel_callers_on_disk_share_syncs_and_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let d = std::sync::Arc::new(on_disk(dir.path()));
    let id = pool(&d, "10.5.0.0/22");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (d, id) = (d.clone(), id.clone());
            std::thread::spawn(move || (0..60).map(|_| any(&d, &id).unwrap()).collect::<Vec<_>>())
        })
        .collect();
    let mut all = std::collections::HashSet::new();
    for h in handles {
        for a in h.join().unwrap() {
            assert!(all.insert(a.clone()), "{a} handed out twice");
        }
    }
    drop(d);
    let d = on_disk(dir.path());
    assert_eq!(any(&d, &id).unwrap(), "10.5.1.105/22", "360 taken before the restart");
}
