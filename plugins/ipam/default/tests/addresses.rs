//! Addresses through the ABI: ranges, reserved addresses, gateways,
//! sub-pools, conflicts, exhaustion and the reuse policies.

mod common;

use std::collections::HashSet;

use berth_plugin_api::ipam::RequestAddressRequest;
use berth_plugin_api::ErrorKind;
use common::*;

#[test]
fn a_slash_24_yields_254_addresses_then_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.3.0.0/24");
    let got: Vec<String> = (0..254).map(|_| any(&d, &id).unwrap()).collect();
    let want: Vec<String> = (1..=254).map(|i| format!("10.3.0.{i}/24")).collect();
    assert_eq!(got, want);
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses in pool 10.3.0.0/24");
    assert_err(gateway(&d, &id, ""), ErrorKind::Conflict, "already in use");
    // Releasing one makes exactly that one available.
    release(&d, &id, "10.3.0.77").unwrap();
    assert_eq!(any(&d, &id).unwrap(), "10.3.0.77/24");
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
}

#[test]
fn small_prefixes_hand_out_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.4.0.0/31");
    assert_eq!(any(&d, &id).unwrap(), "10.4.0.0/31");
    assert_eq!(any(&d, &id).unwrap(), "10.4.0.1/31");
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
    let id = pool(&d, "10.4.0.9/32");
    assert_eq!(gateway(&d, &id, "").unwrap(), "10.4.0.9/32");
    let id = pool(&d, "10.4.0.4/30");
    assert_eq!(any(&d, &id).unwrap(), "10.4.0.5/30");
    assert_eq!(any(&d, &id).unwrap(), "10.4.0.6/30");
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
    let id = pool(&d, "fd00:4::/127");
    assert_eq!(any(&d, &id).unwrap(), "fd00:4::/127");
    assert_eq!(any(&d, &id).unwrap(), "fd00:4::1/127");
}

#[test]
fn ipv6_reserves_only_the_subnet_router_anycast_address() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "fd00:6::/64");
    assert_eq!(gateway(&d, &id, "").unwrap(), "fd00:6::1/64");
    assert_eq!(any(&d, &id).unwrap(), "fd00:6::2/64");
    assert_err(address(&d, &id, "fd00:6::"), ErrorKind::InvalidArgument, "subnet-router anycast");
    assert_eq!(address(&d, &id, "fd00:6::ffff:ffff:ffff:ffff").unwrap(), "fd00:6::ffff:ffff:ffff:ffff/64");
    assert_err(address(&d, &id, "fd00:7::1"), ErrorKind::InvalidArgument, "out of range");
    assert_err(address(&d, &id, "10.0.0.1"), ErrorKind::InvalidArgument, "out of range");
}

#[test]
fn specific_addresses_conflict_or_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.8.0.0/24");
    assert_eq!(address(&d, &id, "10.8.0.2").unwrap(), "10.8.0.2/24");
    assert_err(address(&d, &id, "10.8.0.2"), ErrorKind::Conflict, "already in use");
    assert_err(address(&d, &id, "10.8.1.2"), ErrorKind::InvalidArgument, "out of range");
    assert_err(address(&d, &id, "10.8.0.0"), ErrorKind::InvalidArgument, "network address");
    assert_err(address(&d, &id, "10.8.0.255"), ErrorKind::InvalidArgument, "broadcast address");
    assert_err(address(&d, &id, "10.8.0.2/24"), ErrorKind::InvalidArgument, "not an IP address");
    assert_err(address(&d, &id, "ten"), ErrorKind::InvalidArgument, "not an IP address");
    assert_err(address(&d, "local/10.9.0.0/24", ""), ErrorKind::NotFound, "not live");
    // Mixed requests never duplicate: "any" steps around the specific one.
    assert_eq!(any(&d, &id).unwrap(), "10.8.0.1/24");
    assert_eq!(any(&d, &id).unwrap(), "10.8.0.3/24");
    assert_err(address(&d, &id, "10.8.0.3"), ErrorKind::Conflict, "already in use");
}

#[test]
fn the_gateway_is_the_first_host_address_or_the_one_given() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.11.0.0/16");
    assert_eq!(gateway(&d, &id, "").unwrap(), "10.11.0.1/16");
    // One gateway per pool.
    assert_err(gateway(&d, &id, ""), ErrorKind::Conflict, "already has gateway 10.11.0.1");
    assert_err(gateway(&d, &id, "10.11.9.9"), ErrorKind::Conflict, "already has gateway 10.11.0.1");
    assert_eq!(any(&d, &id).unwrap(), "10.11.0.2/16");
    // Releasing the gateway's address clears it.
    release(&d, &id, "10.11.0.1").unwrap();
    assert_eq!(gateway(&d, &id, "10.11.9.9").unwrap(), "10.11.9.9/16");
    let id = pool(&d, "10.12.0.0/16");
    assert_eq!(gateway(&d, &id, "10.12.255.254").unwrap(), "10.12.255.254/16");
    assert_err(gateway(&d, &id, "10.12.255.254"), ErrorKind::Conflict, "already has gateway");
    assert_eq!(any(&d, &id).unwrap(), "10.12.0.1/16");
    let id = pool(&d, "10.13.0.0/16");
    assert_err(gateway(&d, &id, "10.14.0.1"), ErrorKind::InvalidArgument, "out of range");
    // The first host address taken by someone else: a specific one is needed.
    assert_eq!(any(&d, &id).unwrap(), "10.13.0.1/16");
    assert_err(gateway(&d, &id, ""), ErrorKind::Conflict, "first host address");
    assert_eq!(gateway(&d, &id, "10.13.0.254").unwrap(), "10.13.0.254/16");
}

#[test]
fn a_sub_pool_hands_out_only_its_own_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = request_pool(&d, "", "10.20.0.0/16", "10.20.5.0/30").unwrap().pool_id;
    // Its network and broadcast addresses are ordinary addresses of the pool.
    assert_eq!(gateway(&d, &id, "").unwrap(), "10.20.5.0/16");
    assert_eq!(any(&d, &id).unwrap(), "10.20.5.1/16");
    assert_eq!(address(&d, &id, "10.20.5.3").unwrap(), "10.20.5.3/16");
    // A specific address may lie outside the sub-pool (Docker's static
    // addresses outside --ip-range), not outside the pool.
    assert_eq!(address(&d, &id, "10.20.6.1").unwrap(), "10.20.6.1/16");
    assert_err(address(&d, &id, "10.20.6.1"), ErrorKind::Conflict, "already in use");
    assert_err(
        address(&d, &id, "10.21.0.1"),
        ErrorKind::InvalidArgument,
        "out of range of pool 10.20.0.0/16 (sub-pool 10.20.5.0/30)",
    );
    assert_eq!(any(&d, &id).unwrap(), "10.20.5.2/16");
    assert_err(
        any(&d, &id),
        ErrorKind::ResourceExhausted,
        "no available addresses in pool 10.20.0.0/16 (sub-pool 10.20.5.0/30)",
    );

    // Edges: a sub-pool at the start or end of the pool loses the pool's
    // network or broadcast address.
    let id = request_pool(&d, "", "10.21.0.0/24", "10.21.0.0/30").unwrap().pool_id;
    assert_eq!(gateway(&d, &id, "").unwrap(), "10.21.0.1/24");
    assert_err(address(&d, &id, "10.21.0.0"), ErrorKind::InvalidArgument, "network address");
    let id = request_pool(&d, "", "10.22.0.0/24", "10.22.0.252/30").unwrap().pool_id;
    let got: Vec<String> = (0..3).map(|_| any(&d, &id).unwrap()).collect();
    assert_eq!(got, ["10.22.0.252/24", "10.22.0.253/24", "10.22.0.254/24"]);
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
    // A sub-pool holding only a reserved address has nothing to give.
    let id = request_pool(&d, "", "10.23.0.0/24", "10.23.0.255/32").unwrap().pool_id;
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
    assert_err(gateway(&d, &id, ""), ErrorKind::ResourceExhausted, "no available addresses");
}

#[test]
fn releasing_is_idempotent_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.30.0.0/24");
    let a = any(&d, &id).unwrap();
    for _ in 0..10 {
        release(&d, &id, bare(&a)).unwrap();
    }
    release(&d, &id, "10.30.0.200").unwrap(); // never allocated
    release(&d, &id, "10.30.0.0").unwrap(); // reserved
    assert_err(release(&d, &id, "10.31.0.1"), ErrorKind::InvalidArgument, "out of range");
    assert_err(release(&d, &id, "nope"), ErrorKind::InvalidArgument, "not an IP address");
    assert_eq!(any(&d, &id).unwrap(), a);
}

#[test]
fn first_free_reuses_the_lowest_address_and_serial_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let first_free = pool(&d, "10.40.0.0/29");
    let serial = serial_pool(&d, "10.41.0.0/29");
    for id in [&first_free, &serial] {
        for _ in 0..4 {
            any(&d, id).unwrap(); // .1 .. .4
        }
        release(&d, id, &id.replace("local/", "").replace("0/29", "2")).unwrap();
    }
    assert_eq!(any(&d, &first_free).unwrap(), "10.40.0.2/29");
    assert_eq!(any(&d, &first_free).unwrap(), "10.40.0.5/29");
    let got: Vec<String> = (0..3).map(|_| any(&d, &serial).unwrap()).collect();
    // .5 .6, then wraps around to the released .2.
    assert_eq!(got, ["10.41.0.5/29", "10.41.0.6/29", "10.41.0.2/29"]);
    assert_err(any(&d, &serial), ErrorKind::ResourceExhausted, "no available addresses");

    // Docker passes the option with each address request instead.
    let id = pool(&d, "10.42.0.0/29");
    let with = |serial: &str| {
        let mut req = RequestAddressRequest::default();
        req.pool_id = id.clone();
        req.options.insert("com.docker.network.ipam.serial".into(), serial.into());
        d.request_address(req).map(|r| r.address)
    };
    for _ in 0..3 {
        with("true").unwrap(); // .1 .2 .3
    }
    release(&d, &id, "10.42.0.2").unwrap();
    assert_eq!(with("true").unwrap(), "10.42.0.4/29");
    assert_eq!(any(&d, &id).unwrap(), "10.42.0.2/29", "the pool's own policy is first free");
    assert_err(with("maybe"), ErrorKind::InvalidArgument, "expected \"true\" or \"false\"");
}

#[test]
fn interleaved_requests_and_releases_never_hand_out_an_address_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.50.0.0/26"); // 62 addresses: plenty of reuse
    let serial = serial_pool(&d, "10.51.0.0/26");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (d, id, serial) = (d.clone(), id.clone(), serial.clone());
            std::thread::spawn(move || {
                let mut held: Vec<(String, String)> = Vec::new();
                let mut log = Vec::new();
                for i in 0..300usize {
                    let p = if (i + t) % 2 == 0 { &id } else { &serial };
                    if held.len() >= 10 || (i * 7 + t) % 3 == 0 {
                        if let Some((p, a)) = held.pop() {
                            release(&d, &p, bare(&a)).unwrap();
                            log.push((false, a));
                        }
                        continue;
                    }
                    let a = any(&d, p).unwrap();
                    log.push((true, a.clone()));
                    held.push((p.clone(), a));
                }
                (held, log)
            })
        })
        .collect();
    let mut live = HashSet::new();
    for t in threads {
        let (held, _) = t.join().unwrap();
        for (_, a) in held {
            assert!(live.insert(a.clone()), "{a} is held twice");
        }
    }
    // Whatever is held is exactly what is taken: every other address is free.
    for (p, prefix) in [(&id, "10.50.0"), (&serial, "10.51.0")] {
        for host in 1..=62 {
            let a = format!("{prefix}.{host}");
            let held = live.contains(&format!("{a}/26"));
            let r = address(&d, p, &a);
            assert_eq!(r.is_err(), held, "{a}: {r:?}");
        }
    }
}

#[test]
fn exhausting_a_slash_22_through_the_abi_with_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.60.0.0/22");
    let mut seen = HashSet::new();
    for _ in 0..1022 {
        assert!(seen.insert(any(&d, &id).unwrap()));
    }
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses in pool 10.60.0.0/22");
    let journal = std::fs::read_to_string(dir.path().join("ipam-journal")).unwrap();
    assert_eq!(journal.lines().count(), 1022);
    assert!(journal.contains("10.60.0.1\"") && journal.contains("10.60.3.254\""), "{journal}");
    drop(d);
    let d = open(dir.path());
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses in pool 10.60.0.0/22");
    // Folded into the snapshot at load: one run.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ipam-state.json")).unwrap()).unwrap();
    assert_eq!(state["pools"][0]["allocated"], serde_json::json!([["10.60.0.1", "10.60.3.254"]]));
}

/// Slow on a real disk: one fdatasync per address (65,534 of them, about
/// 0.5 ms each on an ordinary SSD). The same allocation in memory runs in
/// the crate's unit tests; `benches/alloc.rs` measures both.
#[test]
#[ignore = "65,534 fdatasyncs; run with --ignored"]
fn exhausting_a_slash_16_through_the_abi_with_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.61.0.0/16");
    let start = std::time::Instant::now();
    for _ in 0..65_534 {
        any(&d, &id).unwrap();
    }
    eprintln!("allocated a /16 through the ABI with persistence in {:?}", start.elapsed());
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses in pool 10.61.0.0/16");
    drop(d);
    let d = open(dir.path());
    assert_err(any(&d, &id), ErrorKind::ResourceExhausted, "no available addresses");
}
