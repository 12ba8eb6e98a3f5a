//! The gateway role moving between a sandbox's endpoints as dockerd moves
//! it (see `network::gateway`): on disconnect the next endpoint by
//! dockerd's order takes it over (routes, program, ports); on connect an
//! endpoint ranking first takes it from the current one.

#[path = "network_support/builtins.rs"]
mod builtins;
mod network_support;

use std::path::Path;

use builtins::ServiceExt;

use berth_core::network::{ConnectRequest, CreateSandbox, DisconnectRequest};
use network_support::{routes, subnet_req, VethDriver, World};
use serde_json::json;

fn net(name: &str, subnet: &str, gw: &str, v6: Option<&str>) -> berth_core::CreateNetwork {
    let mut r = subnet_req(name, "veth", subnet, gw, v6);
    r.options.insert("veth.routes".into(), "none".into());
    r
}

fn connect(svc: &berth_core::NetworkService, net: &str, sb: &str) -> berth_core::network::EndpointRecord {
    svc.connect(net, ConnectRequest { container: sb.into(), ..Default::default() }).unwrap()
}

fn disconnect(svc: &berth_core::NetworkService, net: &str, sb: &str) {
    svc.disconnect(net, DisconnectRequest { container: sb.into(), force: false }).unwrap()
}

fn defaults(key: &Path, family: &str) -> Vec<String> {
    routes(key, family).into_iter().filter(|r| r.starts_with("default")).collect()
}

#[test]
fn network_gateway_moves_to_the_next_endpoint_on_disconnect_with_the_ports() {
    let w = World::new(7);
    let (svc, _) = w.service(None);
    svc.create(net("aaa", "10.254.71.0/24", "10.254.71.1", None)).unwrap();
    svc.create(net("bbb", "10.254.72.0/24", "10.254.72.1", None)).unwrap();
    let req: CreateSandbox = serde_json::from_value(json!({
        "Name": "web", "PortBindings": {"80": [{"HostIp": "", "HostPort": ""}]},
    }))
    .unwrap();
    let sb = svc.create_sandbox(req).unwrap();
    let key = Path::new(&sb.key);
    let a = connect(&svc, "aaa", "web");
    assert!(a.gateway);
    assert_eq!((a.join_gateway.as_str(), a.join_gateway6.as_str()), ("10.254.71.1", ""));
    w.calls();
    // Both single-stack: "aaa" sorts first, so it keeps the role.
    let b = connect(&svc, "bbb", "web");
    assert!(!b.gateway && b.ports.is_empty());
    assert_eq!(b.join_gateway, "10.254.72.1", "kept for a later takeover");
    assert_eq!(
        w.calls(),
        ["ipam.request_address", "net.create_endpoint", "net.join"],
        "no program for a second endpoint"
    );
    assert_eq!(defaults(key, "-4"), ["default via 10.254.71.1 dev eth0"]);

    // dockerd's sbLeave: revoke (old), Leave, then the new gateway
    // endpoint's routes and program, then the old DeleteEndpoint.
    disconnect(&svc, "aaa", "web");
    assert_eq!(
        w.calls(),
        [
            "net.revoke_external_connectivity",
            "net.leave",
            "net.program_external_connectivity",
            "net.delete_endpoint",
            "ipam.release_address"
        ]
    );
    assert_eq!(defaults(key, "-4"), ["default via 10.254.72.1 dev eth1"]);
    let o = VethDriver::options_of(&w.dir, &b.id, "program_external_connectivity").expect("programmed");
    assert_eq!(o["com.docker.network.portmap"][0]["Port"], 80, "the sandbox's ports, as connect sends them");
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(view[0]["Ports"]["80/tcp"], json!([{"HostIp": "0.0.0.0", "HostPort": "49153"}]));

    // The new role is recorded: after a restart its disconnect revokes.
    drop(svc);
    let (svc, _) = w.service(None);
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(view[0]["Ports"]["80/tcp"], json!([{"HostIp": "0.0.0.0", "HostPort": "49153"}]));
    w.calls();
    disconnect(&svc, "bbb", "web");
    assert_eq!(
        w.calls(),
        ["net.revoke_external_connectivity", "net.leave", "net.delete_endpoint", "ipam.release_address"],
        "nothing left to take over"
    );
    assert!(defaults(key, "-4").is_empty());

    // Removing a sandbox disconnects its endpoints one by one (the role
    // moving when its holder goes first): every program is revoked, and
    // nothing is left.
    connect(&svc, "aaa", "web");
    connect(&svc, "bbb", "web");
    w.calls();
    svc.remove_sandbox("web").unwrap();
    let calls = w.calls();
    let count = |m: &str| calls.iter().filter(|c| *c == m).count();
    assert_eq!(
        count("net.revoke_external_connectivity"),
        1 + count("net.program_external_connectivity"),
        "{calls:?}"
    );
    for n in ["aaa", "bbb"] {
        svc.delete(n).unwrap();
    }
    assert!(w.links().is_empty() && w.namespaces().is_empty());
}

#[test]
fn network_gateway_moves_to_a_connecting_endpoint_that_ranks_first() {
    let w = World::new(8);
    let (svc, _) = w.service(None);
    svc.create(net("zzz", "10.254.81.0/24", "10.254.81.1", None)).unwrap();
    svc.create(net("mmm", "10.254.82.0/24", "10.254.82.1", Some("fd00:b9:82::/64"))).unwrap();
    svc.create(net("aaa", "10.254.83.0/24", "10.254.83.1", None)).unwrap();
    let s1 = svc.create_sandbox(CreateSandbox { name: "s1".into(), ..Default::default() }).unwrap();
    let s2 = svc.create_sandbox(CreateSandbox { name: "s2".into(), ..Default::default() }).unwrap();
    let (k1, k2) = (Path::new(&s1.key), Path::new(&s2.key));

    // A dual-stack gateway ranks before a single-stack one, whatever the
    // names: the old routes go, the old endpoint is revoked, the new one
    // programmed (dockerd's sbJoin).
    let z = connect(&svc, "zzz", "s1");
    assert!(z.gateway);
    w.calls();
    let m = connect(&svc, "mmm", "s1");
    assert!(m.gateway);
    assert_eq!(
        w.calls(),
        [
            "ipam.request_address",
            "ipam.request_address",
            "net.create_endpoint",
            "net.join",
            "net.revoke_external_connectivity",
            "net.program_external_connectivity"
        ]
    );
    assert_eq!(defaults(k1, "-4"), ["default via 10.254.82.1 dev eth1"]);
    assert_eq!(defaults(k1, "-6"), ["default via fd00:b9:82::1 dev eth1"]);
    // A single-stack one never takes it from a dual-stack one.
    assert!(!connect(&svc, "aaa", "s1").gateway);
    assert_eq!(defaults(k1, "-4"), ["default via 10.254.82.1 dev eth1"]);

    // Between equals, the network name decides.
    assert!(connect(&svc, "zzz", "s2").gateway);
    assert!(connect(&svc, "aaa", "s2").gateway);
    assert_eq!(defaults(k2, "-4"), ["default via 10.254.83.1 dev eth1"]);

    // The demoted records were written: after a restart, disconnecting
    // them revokes nothing; and the role comes back to zzz when the
    // others go.
    drop(svc);
    let (svc, _) = w.service(None);
    w.calls();
    disconnect(&svc, "zzz", "s1");
    disconnect(&svc, "zzz", "s2");
    assert!(!w.calls().iter().any(|c| c.contains("external_connectivity")));
    disconnect(&svc, "aaa", "s1");
    assert!(!w.calls().iter().any(|c| c.contains("external_connectivity")));
    connect(&svc, "zzz", "s2");
    w.calls();
    disconnect(&svc, "aaa", "s2");
    assert!(w.calls().contains(&"net.program_external_connectivity".to_string()));
    assert_eq!(defaults(k2, "-4"), ["default via 10.254.81.1 dev eth0"]);
    for s in ["s1", "s2"] {
        svc.remove_sandbox(s).unwrap();
    }
    for n in ["zzz", "mmm", "aaa"] {
        svc.delete(n).unwrap();
    }
    assert!(w.links().is_empty() && w.namespaces().is_empty());
}

const CHILD: &str = "BERTH_GW_CRASH_CHILD";

/// Runs in a child process only: the operation of the scenario, which
/// aborts at the crash point.
#[test]
fn network_gateway_crash_child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let mut parts = spec.split('|');
    let (dir, prefix, scenario) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let w = World::at(Path::new(dir), prefix);
    let (svc, _) = w.service(std::env::var("BERTH_CRASH_AT").ok());
    let _ = match scenario {
        "disconnect" => svc.disconnect("aaa", DisconnectRequest { container: "web".into(), force: false }),
        "connect" => {
            svc.connect("mmm", ConnectRequest { container: "web".into(), ..Default::default() }).map(drop)
        }
        other => panic!("unknown scenario {other}"),
    };
    panic!("the crash point was not reached");
}

/// Sandbox `web` on aaa (the gateway) and bbb, or (`connect`) on zzz with
/// dual-stack mmm about to take over; a child crashes at `point`; the
/// parent reconciles and checks where the role is.
fn crash(tag: u32, scenario: &str, point: &str) {
    let w = World::new(tag);
    let key = {
        let (svc, _) = w.service(None);
        let req: CreateSandbox = serde_json::from_value(json!({
            "Name": "web", "PortBindings": {"80": [{"HostIp": "", "HostPort": ""}]},
        }))
        .unwrap();
        let sb = svc.create_sandbox(req).unwrap();
        if scenario == "disconnect" {
            svc.create(net("aaa", "10.254.91.0/24", "10.254.91.1", None)).unwrap();
            svc.create(net("bbb", "10.254.92.0/24", "10.254.92.1", None)).unwrap();
            assert!(connect(&svc, "aaa", "web").gateway);
            connect(&svc, "bbb", "web");
        } else {
            svc.create(net("zzz", "10.254.93.0/24", "10.254.93.1", None)).unwrap();
            svc.create(net("mmm", "10.254.94.0/24", "10.254.94.1", Some("fd00:b9:94::/64"))).unwrap();
            assert!(connect(&svc, "zzz", "web").gateway);
        }
        sb.key
    };
    let key = Path::new(&key);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "network_gateway_crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{}|{scenario}", w.dir.display(), w.prefix))
        .env("BERTH_CRASH_AT", point)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{point}: the child should have aborted");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("crash point was not reached"),
        "{point} not reached:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (svc, store) = w.service(None);
    w.calls();
    let pending = store.pending().unwrap();
    for outcome in svc.reconcile(&pending) {
        assert!(outcome.is_ok(), "{point}: {outcome:?}");
    }
    assert!(store.pending().unwrap().is_empty(), "{point}");
    let calls = w.calls();
    let (holder, gw, dev) = if scenario == "disconnect" {
        // Finished: bbb holds the role, programmed after a revoke.
        assert!(svc.inspect("aaa").unwrap().containers.is_empty(), "{point}");
        ("bbb", "10.254.92.1", "eth1")
    } else {
        // Rolled back: zzz holds the role again, re-programmed.
        assert!(svc.inspect("mmm").unwrap().containers.is_empty(), "{point}");
        assert!(defaults(key, "-6").is_empty(), "{point}");
        ("zzz", "10.254.93.1", "eth0")
    };
    assert_eq!(defaults(key, "-4"), [format!("default via {gw} dev {dev}")], "{point}");
    let programs = calls.iter().filter(|c| *c == "net.program_external_connectivity").count();
    assert_eq!(programs, 1, "{point}: {calls:?}");
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(view[0]["Ports"]["80/tcp"], json!([{"HostIp": "0.0.0.0", "HostPort": "49153"}]), "{point}");
    // The holder's record says so: its disconnect revokes.
    svc.disconnect(holder, DisconnectRequest { container: "web".into(), force: false }).unwrap();
    assert_eq!(w.calls()[0], "net.revoke_external_connectivity", "{point}");
    svc.remove_sandbox("web").unwrap();
    for n in svc.list(&berth_core::Filters::none()).unwrap() {
        svc.delete(&n.name).unwrap();
    }
    assert!(w.links().is_empty() && w.namespaces().is_empty(), "{point}: cleanup");
}

#[test]
fn network_gateway_crash_disconnect_before_takeover() {
    crash(30, "disconnect", "endpoint.disconnect:before-takeover");
}

#[test]
fn network_gateway_crash_disconnect_after_takeover() {
    crash(31, "disconnect", "endpoint.disconnect:after-takeover");
}

#[test]
fn network_gateway_crash_connect_after_move() {
    crash(32, "connect", "endpoint.connect:after-move");
}

#[test]
fn network_gateway_crash_connect_after_program() {
    crash(33, "connect", "endpoint.connect:after-program");
}
