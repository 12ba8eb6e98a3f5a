//! The bridge driver through the ABI, linked in-process, against the real
//! kernel: each test runs in a private network namespace standing in for
//! the host (see `common`), drives the trait as the core will and does the
//! core's part of `join` with `ip`. Needs root, `ip`, `nft` and `ping`.

mod common;

use std::path::Path;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::network::*;
use berth_plugin_api::{ErrorKind, Init, InitRequest, NetworkDriver};
use common::*;
use serde_json::{json, Value};

type Net = Arc<dyn NetworkDriver>;

fn open(root: &Path) -> Net {
    let init = InitRequest::new("bridge", root.to_str().unwrap(), root.join("run").to_str().unwrap());
    match PluginModule::linked(berth_network_bridge::export::berth_plugin_root()).new_network(&init).unwrap()
    {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("the bridge driver declined: {why}"),
    }
}

/// The private host namespace, a state directory and the driver.
fn setup() -> Option<(Host, tempfile::TempDir, Net)> {
    if !can_run() {
        return None;
    }
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    Some((host, dir, d))
}

fn opts(key: &str, v: Value) -> Options {
    let mut o = Options::new();
    o.insert(key.into(), v);
    o
}

fn delete_network(d: &Net, id: &str) {
    for _ in 0..3 {
        d.delete_network(DeleteNetworkRequest::new(id)).expect("delete network");
    }
}

/// Nothing of berth's is left: no link, no table, no recorded network.
#[track_caller]
fn assert_clean(host: &Host, dir: &Path) {
    assert_eq!(host.links(), Vec::<String>::new(), "links left behind");
    let rules = host.ruleset();
    assert!(!rules.contains("berth"), "nftables left behind:\n{rules}");
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("bridge-state.json")).unwrap()).unwrap();
    assert_eq!(state["networks"], json!({}), "state left behind");
}

#[test]
fn endpoints_on_one_network_reach_each_other_and_not_another_network() {
    let Some((host, dir, d)) = setup() else { return };
    d.create_network(network_req("neta", "10.231.1.0/24", "10.231.1.1/24", Value::Null)).unwrap();
    d.create_network(network_req("netb", "10.231.2.0/24", "10.231.2.1/24", Value::Null)).unwrap();
    assert!(host.links().contains(&"br-neta".to_string()));
    {
        let a1 = attach(&*d, "neta", "a1", "10.231.1.2/24");
        let a2 = attach(&*d, "neta", "a2", "10.231.1.3/24");
        let b1 = attach(&*d, "netb", "b1", "10.231.2.2/24");
        let _s2 = a2.echo_server(7000);
        let _sb = b1.echo_server(7000);
        // NW-13: same network, ping and TCP
        assert!(a1.ping("10.231.1.3"), "a1 → a2 ping");
        assert!(a1.tcp("10.231.1.3:7000"), "a1 → a2 tcp");
        // the generated MAC is dockerd's 02:42 + IPv4 (NW-05)
        assert!(a1.ip(&["link", "show", "eth0"]).contains("02:42:0a:e7:01:02"));
        // routing works (the other network's gateway is the host) ...
        assert!(a1.ping("10.231.2.1"), "a1 → host address on netb");
        // ... but the networks are isolated from each other
        assert!(!a1.ping("10.231.2.2"), "a1 → b1 must fail");
        assert!(!a1.tcp("10.231.2.2:7000"), "a1 → b1 tcp must fail");
        assert!(!b1.ping("10.231.1.2"), "b1 → a1 must fail");
        detach(&*d, "neta", "a1");
        detach(&*d, "neta", "a2");
        detach(&*d, "netb", "b1");
    }
    delete_network(&d, "neta");
    delete_network(&d, "netb");
    assert_clean(&host, dir.path());
}

#[test]
fn published_ports_reach_a_sandbox_from_the_host_and_are_released() {
    let Some((host, dir, d)) = setup() else { return };
    d.create_network(network_req("netp", "10.232.1.0/24", "10.232.1.1/24", Value::Null)).unwrap();
    let portmap = json!([
        {"Proto": 6, "IP": "10.232.1.2", "Port": 80, "HostIP": "", "HostPort": 18080, "HostPortEnd": 18080},
        {"Proto": 6, "IP": "10.232.1.2", "Port": 81, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
    ]);
    d.create_endpoint(endpoint_req("netp", "p1", "10.232.1.2/24")).unwrap();
    let sb = Sandbox::new();
    let resp = join(&*d, "netp", "p1", &sb, opts("com.docker.network.portmap", portmap));
    assert_eq!(resp.gateway, "10.232.1.1");
    sb.attach(&resp, "10.232.1.2/24");
    d.program_external_connectivity(ProgramExternalConnectivityRequest::new("netp", "p1")).unwrap();
    let s80 = sb.echo_server(80);
    let s81 = sb.echo_server(81);
    let info = d.endpoint_info(EndpointInfoRequest::new("netp", "p1")).unwrap();
    let ports = info["com.docker.network.portmap"].as_array().unwrap().clone();
    assert_eq!(ports.len(), 2, "{info:?}");
    assert_eq!(ports[0]["HostPort"], 18080);
    let eph = ports[1]["HostPort"].as_u64().unwrap();
    assert!(berth_network_bridge::EPHEMERAL_PORTS.contains(&(eph as u16)), "{eph}");
    // from the host: through its address on the bridge, and through loopback
    assert!(tcp_echo("10.232.1.1:18080".parse().unwrap()), "host → gateway:18080");
    assert!(tcp_echo("127.0.0.1:18080".parse().unwrap()), "host → 127.0.0.1:18080");
    assert!(tcp_echo(format!("10.232.1.1:{eph}").parse().unwrap()), "host → ephemeral port");
    // from the "outside world": a link of its own into the host
    let out = Sandbox::outside("10.232.9.1/24", "10.232.9.2/24", "10.232.0.0/16");
    assert!(out.tcp("10.232.9.1:18080"), "outside → host:18080");
    // but not straight to the container's address (not published)
    assert!(!out.tcp("10.232.1.2:80"), "outside → container must fail");
    // hairpin: a container on the same network, and the container itself
    let p2 = attach(&*d, "netp", "p2", "10.232.1.3/24");
    assert!(p2.tcp("10.232.1.1:18080"), "hairpin from p2");
    assert!(sb.tcp("10.232.1.1:18080"), "hairpin to itself");
    // NW-07: the port is taken while published ...
    d.create_endpoint(endpoint_req("netp", "p3", "10.232.1.4/24")).unwrap();
    let mut p3 = ProgramExternalConnectivityRequest::new("netp", "p3");
    p3.options = opts(
        "com.docker.network.portmap",
        json!([{"Proto": 6, "IP": "10.232.1.4", "Port": 80, "HostPort": 18080}]),
    );
    assert_err(d.program_external_connectivity(p3.clone()), ErrorKind::Conflict, "18080");
    // ... and free again at once after leave
    d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new("netp", "p1")).unwrap();
    d.leave(LeaveRequest::new("netp", "p1")).unwrap();
    assert!(!tcp_echo("10.232.1.1:18080".parse().unwrap()), "unpublished port must be closed");
    let info = d.endpoint_info(EndpointInfoRequest::new("netp", "p1")).unwrap();
    assert_eq!(info["com.docker.network.portmap"], json!([]));
    d.program_external_connectivity(p3).unwrap();
    drop((s80, s81, p2, sb));
    for ep in ["p1", "p2", "p3"] {
        detach(&*d, "netp", ep);
    }
    delete_network(&d, "netp");
    let rules = host.ruleset();
    assert!(!rules.contains("berth"), "{rules}");
    drop(out);
    assert_clean(&host, dir.path());
}

#[test]
fn internal_networks_have_no_masquerade_and_no_way_out() {
    let Some((host, dir, d)) = setup() else { return };
    let mut internal = network_req("neti", "10.233.1.0/24", "10.233.1.1/24", Value::Null);
    internal.options.insert("com.docker.network.internal".into(), json!(true));
    d.create_network(internal).unwrap();
    d.create_network(network_req("nete", "10.233.2.0/24", "10.233.2.1/24", Value::Null)).unwrap();
    d.create_network(network_req(
        "netn",
        "10.233.3.0/24",
        "10.233.3.1/24",
        json!({"com.docker.network.bridge.enable_ip_masquerade": "false"}),
    ))
    .unwrap();
    let rules = sh(&["nft", "list", "table", "inet", "berth"]);
    assert!(rules.contains("ip saddr 10.233.2.0/24 oifname != \"br-nete\" masquerade"), "{rules}");
    assert!(!rules.contains("10.233.1.0/24"), "internal network must have no NAT rule:\n{rules}");
    assert!(!rules.contains("oifname != \"br-netn\" masquerade"), "masquerade off:\n{rules}");
    {
        d.create_endpoint(endpoint_req("neti", "i1", "10.233.1.2/24")).unwrap();
        let si = Sandbox::new();
        let resp = join(&*d, "neti", "i1", &si, Options::new());
        assert_eq!(resp.gateway, "", "internal networks give no default gateway");
        si.attach(&resp, "10.233.1.2/24");
        si.ip(&["route", "add", "default", "via", "10.233.1.1"]);
        let se = attach(&*d, "nete", "e1", "10.233.2.2/24");
        let sn = attach(&*d, "netn", "n1", "10.233.3.2/24");
        let out = Sandbox::outside("10.233.9.1/24", "10.233.9.2/24", "10.233.0.0/16");
        let _who = out.whoami_server(7000);
        assert!(si.ping("10.233.1.1"), "internal → its gateway");
        assert!(!si.ping("10.233.2.2"), "internal → other network must fail");
        assert!(!se.ping("10.233.1.2"), "other network → internal must fail");
        assert_eq!(si.tcp_read("10.233.9.2:7000"), None, "internal → outside must fail");
        // masquerade: the outside sees the host's address, or the
        // container's own with masquerade off
        assert_eq!(se.tcp_read("10.233.9.2:7000").as_deref(), Some("10.233.9.1"));
        assert_eq!(sn.tcp_read("10.233.9.2:7000").as_deref(), Some("10.233.3.2"));
        drop((_who, out));
        detach(&*d, "neti", "i1");
        detach(&*d, "nete", "e1");
        detach(&*d, "netn", "n1");
    }
    for n in ["neti", "nete", "netn"] {
        delete_network(&d, n);
    }
    assert_clean(&host, dir.path());
}

#[test]
fn icc_off_blocks_containers_but_not_the_gateway() {
    let Some((host, dir, d)) = setup() else { return };
    let g = json!({"com.docker.network.bridge.enable_icc": "false"});
    d.create_network(network_req("netc", "10.234.1.0/24", "10.234.1.1/24", g)).unwrap();
    {
        let c1 = attach(&*d, "netc", "c1", "10.234.1.2/24");
        let c2 = attach(&*d, "netc", "c2", "10.234.1.3/24");
        let _s = c2.echo_server(7000);
        assert!(c1.ping("10.234.1.1"), "c1 → gateway");
        assert!(!c1.ping("10.234.1.3"), "c1 → c2 must fail with icc off");
        assert!(!c1.tcp("10.234.1.3:7000"), "c1 → c2 tcp must fail with icc off");
        detach(&*d, "netc", "c1");
        detach(&*d, "netc", "c2");
    }
    delete_network(&d, "netc");
    assert_clean(&host, dir.path());
}

#[test]
fn an_operators_bridge_is_adopted_and_survives() {
    let Some((host, dir, d)) = setup() else { return };
    sh(&["ip", "link", "add", "bop0", "type", "bridge"]);
    sh(&["ip", "addr", "add", "10.235.1.1/24", "dev", "bop0"]);
    sh(&["ip", "link", "add", "bop1", "type", "bridge"]);
    sh(&["ip", "link", "add", "vop0", "type", "veth", "peer", "name", "vop1"]);
    let g = |b: &str| json!({"com.docker.network.bridge.name": b});
    d.create_network(network_req("neto", "10.235.1.0/24", "10.235.1.1/24", g("bop0"))).unwrap();
    d.create_network(network_req("netq", "10.235.2.0/24", "10.235.2.1/24", g("bop1"))).unwrap();
    assert_err(
        d.create_network(network_req("netr", "10.235.3.0/24", "10.235.3.1/24", g("vop0"))),
        ErrorKind::Conflict,
        "not a bridge",
    );
    assert_err(
        d.create_network(network_req("nets", "10.235.4.0/24", "10.235.4.1/24", g("bop0"))),
        ErrorKind::Conflict,
        "already used",
    );
    {
        let o1 = attach(&*d, "neto", "o1", "10.235.1.2/24");
        let o2 = attach(&*d, "neto", "o2", "10.235.1.3/24");
        assert!(o1.ping("10.235.1.3"));
        assert!(o1.ping("10.235.1.1"));
        drop((o1, o2));
        detach(&*d, "neto", "o1");
        detach(&*d, "neto", "o2");
    }
    assert!(sh(&["ip", "addr", "show", "bop1"]).contains("10.235.2.1/24"));
    delete_network(&d, "neto");
    delete_network(&d, "netq");
    // NW-02: both bridges survive; bop0 keeps the operator's address, the
    // address the driver added to bop1 is gone again
    assert!(sh(&["ip", "addr", "show", "bop0"]).contains("10.235.1.1/24"));
    assert!(!sh(&["ip", "addr", "show", "bop1"]).contains("10.235.2.1"));
    for l in ["bop0", "bop1", "vop0"] {
        sh(&["ip", "link", "del", l]);
    }
    assert_clean(&host, dir.path());
}

#[test]
fn mtu_and_mac_are_set_and_checked() {
    let Some((host, dir, d)) = setup() else { return };
    let bad = json!({"com.docker.network.driver.mtu": "70000"});
    assert_err(
        d.create_network(network_req("netbad", "10.236.9.0/24", "10.236.9.1/24", bad)),
        ErrorKind::InvalidArgument,
        "out of range",
    );
    let g = json!({"com.docker.network.driver.mtu": "9000"});
    d.create_network(network_req("netm", "10.236.1.0/24", "10.236.1.1/24", g)).unwrap();
    assert!(sh(&["ip", "link", "show", "br-netm"]).contains("mtu 9000"));
    let mut req = endpoint_req("netm", "m1", "10.236.1.2/24");
    req.interface.as_mut().unwrap().mac_address = "02:11:22:33:44:55".into();
    assert_eq!(d.create_endpoint(req).unwrap().interface, None, "a requested MAC is not answered back");
    let generated = d.create_endpoint(endpoint_req("netm", "m2", "10.236.1.3/24")).unwrap();
    assert_eq!(generated.interface.unwrap().mac_address, "02:42:0a:ec:01:03");
    {
        let s1 = Sandbox::new();
        let r1 = join(&*d, "netm", "m1", &s1, Options::new());
        let peer = r1.interface_name.clone().unwrap().src_name;
        let shown = sh(&["ip", "link", "show", &peer]);
        assert!(shown.contains("mtu 9000") && shown.contains("02:11:22:33:44:55"), "{shown}");
        s1.attach(&r1, "10.236.1.2/24");
        let s2 = Sandbox::new();
        s2.attach(&join(&*d, "netm", "m2", &s2, Options::new()), "10.236.1.3/24");
        // NW-04: 9000 works end to end, unfragmented
        let (ok, text) = run(&[
            "ip",
            "netns",
            "exec",
            &s1.name,
            "ping",
            "-c1",
            "-W2",
            "-M",
            "do",
            "-s",
            "8972",
            "10.236.1.3",
        ]);
        assert!(ok, "jumbo ping: {text}");
        detach(&*d, "netm", "m1");
        detach(&*d, "netm", "m2");
    }
    delete_network(&d, "netm");
    assert_clean(&host, dir.path());
}

#[test]
fn errors_conflicts_and_parallel_creates() {
    let Some((host, dir, d)) = setup() else { return };
    d.create_network(network_req("net1", "10.237.1.0/24", "10.237.1.1/24", Value::Null)).unwrap();
    assert_err(
        d.create_network(network_req("net1", "10.237.1.0/24", "10.237.1.1/24", Value::Null)),
        ErrorKind::AlreadyExists,
        "net1",
    );
    assert_err(
        d.create_network(network_req("net2", "10.237.1.0/25", "10.237.1.1/25", Value::Null)),
        ErrorKind::Conflict,
        "overlaps",
    );
    assert_err(
        d.create_network(network_req("net3", "10.237.3.0/24", "10.237.4.1/24", Value::Null)),
        ErrorKind::InvalidArgument,
        "outside",
    );
    assert_err(d.create_network(CreateNetworkRequest::new("net4")), ErrorKind::InvalidArgument, "IPv4 pool");
    assert_err(d.create_endpoint(endpoint_req("nope", "e", "10.237.1.2/24")), ErrorKind::NotFound, "nope");
    assert_err(d.create_endpoint(endpoint_req("net1", "e", "")), ErrorKind::InvalidArgument, "IPv4 address");
    assert_err(
        d.create_endpoint(endpoint_req("net1", "e", "10.9.9.9/24")),
        ErrorKind::InvalidArgument,
        "none of",
    );
    d.create_endpoint(endpoint_req("net1", "e", "10.237.1.2/24")).unwrap();
    assert_err(
        d.create_endpoint(endpoint_req("net1", "e", "10.237.1.2/24")),
        ErrorKind::AlreadyExists,
        "\"e\"",
    );
    assert_err(d.join(JoinRequest::new("net1", "x")), ErrorKind::NotFound, "\"x\"");
    // NW-08: deleting twice, or one never created, succeeds
    for _ in 0..3 {
        d.delete_endpoint(DeleteEndpointRequest::new("net1", "e")).unwrap();
        d.delete_endpoint(DeleteEndpointRequest::new("net1", "never")).unwrap();
        d.leave(LeaveRequest::new("net1", "never")).unwrap();
    }
    assert!(!host.links().iter().any(|l| l.starts_with("vb")), "{:?}", host.links());
    delete_network(&d, "net1");
    // NW-01: of many parallel creates on one subnet exactly one wins
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                d.create_network(network_req(
                    &format!("par{i}"),
                    "10.237.8.0/24",
                    "10.237.8.1/24",
                    Value::Null,
                ))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.kind == ErrorKind::Conflict));
    for i in 0..6 {
        delete_network(&d, &format!("par{i}"));
    }
    assert_clean(&host, dir.path());
}

#[test]
fn the_firewall_tracks_live_networks_and_survives_a_restart() {
    let Some((host, dir, d)) = setup() else { return };
    for i in 1..=4 {
        d.create_network(network_req(
            &format!("nf{i}"),
            &format!("10.238.{i}.0/24"),
            &format!("10.238.{i}.1/24"),
            Value::Null,
        ))
        .unwrap();
        let rules = host.ruleset();
        assert_eq!(rules.matches("masquerade comment").count(), 2 * i, "{rules}");
    }
    d.create_endpoint(endpoint_req("nf1", "e1", "10.238.1.2/24")).unwrap();
    let mut p = ProgramExternalConnectivityRequest::new("nf1", "e1");
    p.options = opts("com.docker.network.portmap", json!([{"Proto": 17, "Port": 53, "HostPort": 10053}]));
    d.program_external_connectivity(p).unwrap();
    assert!(host.ruleset().contains("udp dport 10053 dnat ip to 10.238.1.2:53"));
    // a restart, after which the bridge and the table are gone (a reboot)
    drop(d);
    sh(&["ip", "link", "del", "br-nf2"]);
    sh(&["nft", "delete", "table", "inet", "berth"]);
    let d = open(dir.path());
    assert!(host.links().contains(&"br-nf2".to_string()), "owned bridge recreated");
    assert!(sh(&["ip", "addr", "show", "br-nf2"]).contains("10.238.2.1/24"));
    assert!(host.ruleset().contains("udp dport 10053 dnat ip to 10.238.1.2:53"), "table reprogrammed");
    let info = d.endpoint_info(EndpointInfoRequest::new("nf1", "e1")).unwrap();
    assert_eq!(info["com.docker.network.portmap"][0]["HostPort"], 10053);
    d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new("nf1", "e1")).unwrap();
    assert!(!host.ruleset().contains("10053"));
    for i in (1..=4).rev() {
        delete_network(&d, &format!("nf{i}"));
        let rules = host.ruleset();
        assert_eq!(rules.matches("masquerade comment").count(), 2 * (i - 1), "{rules}");
    }
    assert_clean(&host, dir.path());
}

#[test]
fn dual_stack_networks_get_v6_gateways_and_reach_each_other_over_v6() {
    let Some((host, dir, d)) = setup() else { return };
    let mut req = network_req("net6", "10.230.1.0/24", "10.230.1.1/24", Value::Null);
    req.ipv6_data = vec![ipam("fd42:230:1::/64", "fd42:230:1::1/64")];
    req.options.insert("com.docker.network.enable_ipv6".into(), json!(true));
    d.create_network(req).unwrap();
    assert!(sh(&["ip", "addr", "show", "br-net6"]).contains("fd42:230:1::1/64"));
    assert!(host.ruleset().contains("ip6 saddr fd42:230:1::/64 oifname != \"br-net6\" masquerade"));
    let mut sandboxes = Vec::new();
    for (ep, v4, v6) in
        [("s1", "10.230.1.2/24", "fd42:230:1::2/64"), ("s2", "10.230.1.3/24", "fd42:230:1::3/64")]
    {
        let mut req = endpoint_req("net6", ep, v4);
        req.interface.as_mut().unwrap().address_ipv6 = v6.into();
        d.create_endpoint(req).unwrap();
        let sb = Sandbox::new();
        let resp = join(&*d, "net6", ep, &sb, Options::new());
        assert_eq!((resp.gateway.as_str(), resp.gateway_ipv6.as_str()), ("10.230.1.1", "fd42:230:1::1"));
        sb.attach(&resp, v4);
        sb.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
        sandboxes.push(sb);
    }
    assert!(sandboxes[0].ping("fd42:230:1::3"), "v6 between endpoints");
    let _srv = sandboxes[1].echo_server(7000);
    assert!(sandboxes[0].tcp("[fd42:230:1::3]:7000"), "v6 tcp between endpoints");
    drop(_srv);
    drop(sandboxes);
    detach(&*d, "net6", "s1");
    detach(&*d, "net6", "s2");
    delete_network(&d, "net6");
    assert_clean(&host, dir.path());
}
