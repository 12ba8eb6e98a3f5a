//! Sandboxes against the real kernel: namespaces made and removed, a veth
//! end joined (moved, renamed, addressed, routed) and taken out again,
//! from many threads at once, and undone when a step fails. Every test
//! cleans up after itself, also when it fails (guards below).

mod network_support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use berth_core::sandbox::{self, netlink::Netlink, JoinSpec, Route};
use network_support::{addrs, host_links, routes, Ns, Veth};

static N: AtomicU32 = AtomicU32::new(0);

/// A unique short name prefix for this process and call.
fn unique() -> String {
    format!("bs{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst))
}

#[test]
fn sandbox_has_only_loopback_up_and_goes_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new(dir.path().join("netns/a"));
    assert!(sandbox::is_netns(&ns.key));
    let links = sandbox::links(&ns.key).unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].name, "lo");
    assert!(links[0].up, "loopback is up");
    // A second create at the same key is refused and harms nothing.
    assert!(sandbox::create(&ns.key).is_err());
    assert!(sandbox::is_netns(&ns.key));
    sandbox::remove(&ns.key).unwrap();
    assert!(!ns.key.exists());
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(ns.key.to_str().unwrap()));
    // Removing again is done already.
    sandbox::remove(&ns.key).unwrap();
}

fn spec(v: &Veth, n: u8) -> JoinSpec {
    JoinSpec {
        src_name: v.inner.clone(),
        dst_prefix: "eth".into(),
        ipv4: Some(format!("10.251.{n}.2/24").parse().unwrap()),
        ipv6: Some(format!("fd00:b7:{n}::2/64").parse().unwrap()),
        mac: Some([0x02, 0x42, 0x0a, 0xfb, n, 0x02]),
        mtu: Some(1400),
        gateway: Some(format!("10.251.{n}.1").parse().unwrap()),
        gateway6: Some(format!("fd00:b7:{n}::1").parse().unwrap()),
        routes: vec![
            Route { destination: "192.0.2.0/24".parse().unwrap(), next_hop: None },
            Route {
                destination: "198.51.100.0/24".parse().unwrap(),
                next_hop: Some(format!("10.251.{n}.254").parse::<IpAddr>().unwrap()),
            },
        ],
        disable_ipv6: false,
    }
}

#[test]
fn sandbox_join_moves_renames_addresses_and_routes_then_leave_takes_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new(dir.path().join("netns/j"));
    let v = Veth::new(&unique());
    let s = spec(&v, 7);
    let joined = sandbox::join(&ns.key, &s).unwrap();
    assert_eq!((joined.name.as_str(), joined.in_place), ("eth0", false));
    assert!(!host_links().contains(&v.inner), "the inner end left the host namespace");

    let links = sandbox::links(&ns.key).unwrap();
    let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0 in the sandbox");
    assert_eq!((eth0.mac.as_str(), eth0.mtu, eth0.up), ("02:42:0a:fb:07:02", 1400, true));
    let a = addrs(&ns.key);
    assert!(a.contains(&"eth0 inet 10.251.7.2/24".to_string()), "{a:?}");
    assert!(a.contains(&"eth0 inet6 fd00:b7:7::2/64".to_string()), "{a:?}");
    let r4 = routes(&ns.key, "-4");
    for want in [
        "default via 10.251.7.1 dev eth0",
        "192.0.2.0/24 dev eth0",
        "198.51.100.0/24 via 10.251.7.254 dev eth0",
    ] {
        assert!(r4.iter().any(|r| r == want), "{want} not in {r4:?}");
    }
    assert!(routes(&ns.key, "-6").iter().any(|r| r == "default via fd00:b7:7::1 dev eth0"));

    // A second interface gets the next index.
    let w = Veth::new(&unique());
    let mut s2 = spec(&w, 8);
    (s2.gateway, s2.gateway6, s2.routes, s2.mac) = (None, None, Vec::new(), None);
    assert_eq!(sandbox::join(&ns.key, &s2).unwrap().name, "eth1");

    sandbox::leave(&ns.key, "eth0", &v.inner, false).unwrap();
    assert!(host_links().contains(&v.inner), "back in the host namespace under its own name");
    let left: Vec<String> = sandbox::links(&ns.key).unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["lo", "eth1"]);
    // Leaving again is done already.
    sandbox::leave(&ns.key, "eth0", &v.inner, false).unwrap();
    // Removing the sandbox takes eth1 and its host peer with it.
    sandbox::remove(&ns.key).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!host_links().contains(&w.outer), "the peer of a veth deleted with its namespace is gone");
}

#[test]
fn an_interface_the_driver_made_in_the_sandbox_is_configured_in_place_and_left_there() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new(dir.path().join("netns/p"));
    let v = Veth::new_in(&unique(), &ns.key);
    assert!(!host_links().contains(&v.inner), "made in the sandbox");
    let joined = sandbox::join(&ns.key, &spec(&v, 6)).unwrap();
    assert_eq!((joined.name.as_str(), joined.in_place), ("eth0", true));
    let links = sandbox::links(&ns.key).unwrap();
    let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0 in the sandbox");
    assert_eq!((eth0.mac.as_str(), eth0.mtu, eth0.up), ("02:42:0a:fb:06:02", 1400, true));
    assert!(addrs(&ns.key).contains(&"eth0 inet 10.251.6.2/24".to_string()));
    assert!(routes(&ns.key, "-4").iter().any(|r| r == "default via 10.251.6.1 dev eth0"));
    // Leave keeps it in the sandbox, down and under its own name, for the
    // driver to delete; nothing came back to the host.
    sandbox::leave(&ns.key, "eth0", &v.inner, true).unwrap();
    let links = sandbox::links(&ns.key).unwrap();
    let back = links.iter().find(|l| l.name == v.inner).expect("renamed back in the sandbox");
    assert!(!back.up);
    assert!(!host_links().contains(&v.inner));
    sandbox::leave(&ns.key, "eth0", &v.inner, true).unwrap();
    // The driver deleting its host end takes the sandbox end with it.
    network_support::delete_host_link(&v.outer);
    let left: Vec<String> = sandbox::links(&ns.key).unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["lo"]);
    // A failing in-place join leaves it down under its own name.
    let w = Veth::new_in(&unique(), &ns.key);
    let mut bad = spec(&w, 5);
    bad.routes = vec![Route {
        destination: "203.0.113.0/24".parse().unwrap(),
        next_hop: Some("172.31.255.1".parse().unwrap()),
    }];
    let e = sandbox::join(&ns.key, &bad).unwrap_err();
    assert!(e.message.contains("203.0.113.0/24"), "{e}");
    let links = sandbox::links(&ns.key).unwrap();
    assert!(links.iter().any(|l| l.name == w.inner && !l.up), "{links:?}");
}

#[test]
fn sandbox_join_that_fails_leaves_the_interface_in_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Ns::new(dir.path().join("netns/f"));
    let v = Veth::new(&unique());
    let mut s = spec(&v, 9);
    // A next hop on no connected network: the kernel refuses the route.
    s.routes = vec![Route {
        destination: "203.0.113.0/24".parse().unwrap(),
        next_hop: Some("172.31.255.1".parse().unwrap()),
    }];
    let e = sandbox::join(&ns.key, &s).unwrap_err();
    assert!(e.message.contains("203.0.113.0/24"), "{e}");
    assert!(host_links().contains(&v.inner), "undone: back in the host namespace");
    let left: Vec<String> = sandbox::links(&ns.key).unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(left, ["lo"]);
    // An interface that does not exist is a not-found error.
    let mut missing = s.clone();
    missing.src_name = format!("{}x", unique());
    assert_eq!(sandbox::join(&ns.key, &missing).unwrap_err().kind, berth_core::ErrorKind::NotFound);
}

#[test]
fn sandbox_ops_work_from_many_threads_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..6u8)
        .map(|i| {
            let key = dir.path().join(format!("netns/t{i}"));
            std::thread::spawn(move || {
                let ns = Ns::new(key);
                let v = Veth::new(&unique());
                let mut s = spec(&v, 20 + i);
                s.ipv6 = None;
                s.gateway6 = None;
                s.disable_ipv6 = true;
                for _ in 0..3 {
                    assert_eq!(sandbox::join(&ns.key, &s).unwrap().name, "eth0");
                    let a = addrs(&ns.key);
                    assert!(!a.iter().any(|l| l.starts_with("eth0 inet6")), "IPv6 off: {a:?}");
                    sandbox::leave(&ns.key, "eth0", &v.inner, false).unwrap();
                }
                // The host namespace of this thread never changed.
                let mut nl = Netlink::open().unwrap();
                assert!(nl.link(&v.inner).unwrap().is_some());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
