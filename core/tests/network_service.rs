//! The network service over the real `none`, `host` and `default`
//! drivers and a veth test driver, on real namespaces: lifecycle, Docker's
//! call order, what a sandbox looks like inside, and that nothing (link,
//! namespace, lease) is left.

#[path = "network_support/builtins.rs"]
mod builtins;
mod network_support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use berth_core::network::{ConnectRequest, CreateSandbox, DisconnectRequest, EndpointConfig};
use berth_core::{ErrorKind, Filters};
use builtins::ServiceExt;
use network_support::{addrs, create_req, host_links, routes, subnet_req, World};

fn connect(
    svc: &berth_core::NetworkService,
    net: &str,
    sb: &str,
) -> berth_core::DriverResult<berth_core::network::EndpointRecord> {
    svc.connect(net, ConnectRequest { container: sb.into(), ..Default::default() })
}

fn disconnect(svc: &berth_core::NetworkService, net: &str, sb: &str) -> berth_core::DriverResult<()> {
    svc.disconnect(net, DisconnectRequest { container: sb.into(), force: false })
}

fn sandbox(svc: &berth_core::NetworkService, name: &str, host: bool) -> berth_core::SandboxRecord {
    svc.create_sandbox(CreateSandbox { name: name.into(), host, ..Default::default() }).unwrap()
}

#[test]
fn network_create_inspect_ls_rm_prune_with_none_and_host() {
    let w = World::new(1);
    let (svc, _) = w.service(None);
    let mut req = create_req("nothing", "none");
    req.labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    let made = svc.create(req).unwrap();
    assert_eq!(made.id.len(), 64);
    assert!(made.id.bytes().all(|b| b.is_ascii_hexdigit()));
    let v = serde_json::to_value(svc.inspect("nothing").unwrap()).unwrap();
    assert_eq!(v["Id"], made.id.as_str());
    assert_eq!((v["Driver"].as_str(), v["Scope"].as_str()), (Some("none"), Some("local")));
    assert_eq!(v["IPAM"], serde_json::json!({"Driver": "default", "Config": [], "Options": {}}));
    for k in ["Ingress", "ConfigOnly", "Internal", "Attachable", "EnableIPv6"] {
        assert_eq!(v[k], false, "{k}");
    }
    assert_eq!(v["Containers"], serde_json::json!({}));
    assert_eq!(svc.inspect(&made.id[..10]).unwrap().name, "nothing", "a unique id prefix finds it");
    assert_eq!(svc.inspect("nope").unwrap_err().kind, ErrorKind::NotFound);

    // Names are unique; the none driver holds one network at a time.
    assert_eq!(svc.create(create_req("nothing", "host")).unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(svc.create(create_req("nothing2", "none")).unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(svc.count(), 1, "a refused create leaves no record");
    let host = svc.create(create_req("hostnet", "host")).unwrap();

    let names = |f: Filters| svc.list(&f).unwrap().into_iter().map(|n| n.name).collect::<Vec<_>>();
    let lf = |pairs: &[&str]| {
        Filters::from_pairs(pairs.iter().copied(), berth_core::network::LIST_FILTERS).unwrap()
    };
    assert_eq!(names(Filters::none()), ["hostnet", "nothing"]);
    assert_eq!(names(lf(&["driver=host"])), ["hostnet"]);
    assert_eq!(names(lf(&["label=team=a"])), ["nothing"]);
    assert_eq!(names(lf(&["name=^no"])), ["nothing"]);
    assert_eq!(names(lf(&[&format!("id={}", &host.id[..8])])), ["hostnet"]);
    assert_eq!(names(lf(&["dangling=true", "scope=local", "type=custom"])).len(), 2);

    // A pool given to `none` is refused by the driver, and undone: the same
    // subnet is free for another network at once.
    let e = svc.create(subnet_req("bad", "none", "10.253.1.0/24", "", None)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let veth = svc.create(subnet_req("veth1", "veth", "10.253.1.0/24", "10.253.1.1", None)).unwrap();

    // Bad configs are refused before any driver call (NW-06, IP-10).
    for (subnet, gw) in [("10.253.2.0/24", "10.253.3.1"), ("10.253.2.1/24", ""), ("nonsense", "")] {
        let e = svc.create(subnet_req("x", "veth", subnet, gw, None)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{subnet} {gw}: {e}");
    }
    let mut v6_off = create_req("x", "veth");
    v6_off
        .ipam
        .config
        .push(berth_core::network::PoolSpec { subnet: "fd00:1::/64".into(), ..Default::default() });
    assert_eq!(svc.create(v6_off).unwrap_err().kind, ErrorKind::InvalidArgument);

    // Prune: label filters, then everything unused.
    let pf = |pairs: &[&str]| {
        Filters::from_pairs(pairs.iter().copied(), berth_core::network::PRUNE_FILTERS).unwrap()
    };
    assert_eq!(svc.prune(&pf(&["label=team=a"])).unwrap().networks_deleted, ["nothing"]);
    assert_eq!(
        svc.prune(&pf(&["until=2000-01-01T00:00:00Z"])).unwrap().networks_deleted,
        Vec::<String>::new()
    );
    svc.delete("veth1").unwrap();
    assert_eq!(svc.delete(&veth.id).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(svc.prune(&Filters::none()).unwrap().networks_deleted, ["hostnet"]);
    assert_eq!(svc.count(), 0);
    // Everything released: the subnet can be taken again.
    svc.create(subnet_req("again", "veth", "10.253.1.0/24", "10.253.1.1", None)).unwrap();
    svc.delete("again").unwrap();
}

#[test]
fn network_none_sandbox_has_only_loopback_and_leaves_no_namespace() {
    let w = World::new(2);
    let (svc, _) = w.service(None);
    svc.create(create_req("nonet", "none")).unwrap();
    let sb = sandbox(&svc, "box", false);
    assert!(berth_core::sandbox::is_netns(std::path::Path::new(&sb.key)));
    assert_eq!(sb.key, w.exec_root().join("netns").join(&sb.id[..12]).display().to_string());
    let ep = connect(&svc, "nonet", "box").unwrap();
    assert_eq!((ep.ipv4.as_str(), ep.dst_name.as_str()), ("", ""));
    let names: Vec<String> = berth_core::sandbox::links(std::path::Path::new(&sb.key))
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo"]);
    let v = serde_json::to_value(svc.inspect("nonet").unwrap()).unwrap();
    assert_eq!(v["Containers"][&sb.id]["Name"], "box");
    assert_eq!(v["Containers"][&sb.id]["EndpointID"], ep.id.as_str());
    assert_eq!(connect(&svc, "nonet", "box").unwrap_err().kind, ErrorKind::Conflict, "connected once only");
    assert_eq!(svc.delete("nonet").unwrap_err().kind, ErrorKind::Conflict, "in use");
    assert_eq!(svc.sandboxes()[0].networks.keys().collect::<Vec<_>>(), ["nonet"]);
    // Removing the sandbox disconnects it first.
    svc.remove_sandbox("box").unwrap();
    assert!(w.namespaces().is_empty(), "{:?}", w.namespaces());
    assert!(svc.sandboxes().is_empty());
    svc.delete("nonet").unwrap();
    assert_eq!(disconnect(&svc, "x", "box").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn network_host_sandbox_shares_the_host_namespace_and_adds_no_link() {
    let w = World::new(3);
    let (svc, _) = w.service(None);
    svc.create(create_req("hostnet", "host")).unwrap();
    svc.create(create_req("nonet", "none")).unwrap();
    let before = host_links();
    let hb = sandbox(&svc, "hostbox", true);
    let hb2 = sandbox(&svc, "hostbox2", true);
    assert_eq!(hb.key, hb2.key, "host sandboxes share one key");
    let ino = |p: &str| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(&hb.key), ino("/proc/self/ns/net"), "the key is the host namespace");
    connect(&svc, "hostnet", "hostbox").unwrap();
    assert_eq!(host_links(), before, "no new links");
    let own = sandbox(&svc, "ownbox", false);
    assert_eq!(connect(&svc, "hostnet", &own.name).unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(connect(&svc, "nonet", "hostbox").unwrap_err().kind, ErrorKind::Conflict);
    disconnect(&svc, "hostnet", "hostbox").unwrap();
    svc.remove_sandbox("hostbox").unwrap();
    assert!(std::path::Path::new(&hb.key).exists(), "still used by hostbox2");
    svc.remove_sandbox("hostbox2").unwrap();
    svc.remove_sandbox("ownbox").unwrap();
    assert!(w.namespaces().is_empty(), "{:?}", w.namespaces());
    assert_eq!(host_links(), before);
}

#[test]
fn network_veth_join_configures_the_sandbox_in_dockers_order_and_leaves_nothing() {
    let w = World::new(4);
    let (svc, _) = w.service(None);
    let net = svc
        .create(subnet_req("vnet", "veth", "10.254.4.0/24", "10.254.4.1", Some("fd00:b9:4::/64")))
        .unwrap();
    assert_eq!(
        w.calls(),
        [
            "ipam.default_address_spaces",
            "ipam.request_pool",
            "ipam.request_address(gateway)",
            "ipam.default_address_spaces",
            "ipam.request_pool",
            "ipam.request_address(gateway)",
            "net.create_network"
        ]
    );
    let v = serde_json::to_value(svc.inspect("vnet").unwrap()).unwrap();
    assert_eq!(
        v["IPAM"]["Config"][0],
        serde_json::json!({"Subnet": "10.254.4.0/24", "Gateway": "10.254.4.1"})
    );
    assert_eq!(v["IPAM"]["Config"][1]["Gateway"], "fd00:b9:4::1", "the first address of the v6 pool");
    assert_eq!(v["EnableIPv6"], true);

    let sb = sandbox(&svc, "box", false);
    let key = std::path::Path::new(&sb.key);
    let ep = connect(&svc, "vnet", "box").unwrap();
    assert_eq!(
        w.calls(),
        [
            "ipam.request_address",
            "ipam.request_address",
            "net.create_endpoint",
            "net.join",
            "net.program_external_connectivity"
        ]
    );
    assert_eq!((ep.ipv4.as_str(), ep.ipv6.as_str()), ("10.254.4.2/24", "fd00:b9:4::2/64"));
    assert_eq!(ep.dst_name, "eth0");
    assert!(ep.mac.starts_with("02:42:"), "{}", ep.mac);
    let links = berth_core::sandbox::links(key).unwrap();
    let eth0 = links.iter().find(|l| l.name == "eth0").expect("eth0");
    assert_eq!((eth0.mac.as_str(), eth0.mtu, eth0.up), (ep.mac.as_str(), 1400, true));
    let a = addrs(key);
    assert!(a.contains(&"eth0 inet 10.254.4.2/24".to_string()), "{a:?}");
    assert!(a.contains(&"eth0 inet6 fd00:b9:4::2/64".to_string()), "{a:?}");
    let r4 = routes(key, "-4");
    for want in [
        "default via 10.254.4.1 dev eth0",
        "192.0.2.0/24 dev eth0",
        "198.51.100.0/24 via 10.254.4.1 dev eth0",
    ] {
        assert!(r4.iter().any(|r| r == want), "{want} not in {r4:?}");
    }
    assert!(routes(key, "-6").iter().any(|r| r == "default via fd00:b9:4::1 dev eth0"));
    assert!(
        !host_links().iter().any(|l| l == &format!("{}{}c", w.prefix, &ep.id[..5])),
        "moved out of the host"
    );
    let v = serde_json::to_value(svc.inspect(&net.id).unwrap()).unwrap();
    assert_eq!(v["Containers"][&sb.id]["IPv4Address"], "10.254.4.2/24");
    assert_eq!(v["Containers"][&sb.id]["MacAddress"], ep.mac.as_str());

    // A static address, and a second sandbox.
    let sb2 = sandbox(&svc, "box2", false);
    let mut cfg = EndpointConfig::default();
    cfg.ipam_config.ipv4_address = "10.254.4.77".into();
    cfg.mac_address = "02:00:00:00:00:77".into();
    let ep2 =
        svc.connect("vnet", ConnectRequest { container: sb2.id[..12].into(), endpoint_config: cfg }).unwrap();
    assert_eq!((ep2.ipv4.as_str(), ep2.mac.as_str()), ("10.254.4.77/24", "02:00:00:00:00:77"));
    let mut taken = EndpointConfig::default();
    taken.ipam_config.ipv4_address = "10.254.4.77".into();
    let sb3 = sandbox(&svc, "box3", false);
    let e =
        svc.connect("vnet", ConnectRequest { container: "box3".into(), endpoint_config: taken }).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert_eq!(addrs(std::path::Path::new(&sb3.key)), ["lo inet 127.0.0.1/8", "lo inet6 ::1/128"]);
    w.calls();

    disconnect(&svc, "vnet", "box").unwrap();
    assert_eq!(
        w.calls(),
        [
            "net.revoke_external_connectivity",
            "net.leave",
            "net.delete_endpoint",
            "ipam.release_address",
            "ipam.release_address"
        ]
    );
    let names: Vec<String> = berth_core::sandbox::links(key).unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo"]);
    assert_eq!(svc.delete("vnet").unwrap_err().kind, ErrorKind::Conflict, "box2 is still on it");
    for s in ["box", "box2", "box3"] {
        svc.remove_sandbox(s).unwrap();
    }
    w.calls();
    svc.delete("vnet").unwrap();
    assert_eq!(
        w.calls(),
        [
            "ipam.release_address",
            "ipam.release_pool",
            "ipam.release_address",
            "ipam.release_pool",
            "net.delete_network"
        ]
    );
    assert!(w.links().is_empty(), "{:?}", w.links());
    assert!(w.namespaces().is_empty(), "{:?}", w.namespaces());
    // No lease left: the same subnets again.
    svc.create(subnet_req("vnet", "veth", "10.254.4.0/24", "10.254.4.1", Some("fd00:b9:4::/64"))).unwrap();
    svc.delete("vnet").unwrap();
}

#[test]
fn network_records_survive_a_restart() {
    let w = World::new(5);
    {
        let (svc, _) = w.service(None);
        svc.create(subnet_req("vnet", "veth", "10.254.5.0/24", "10.254.5.1", None)).unwrap();
        sandbox(&svc, "box", false);
        connect(&svc, "vnet", "box").unwrap();
    }
    let (svc, _) = w.service(None);
    let v = svc.inspect("vnet").unwrap();
    assert_eq!(v.containers.len(), 1);
    assert_eq!(svc.sandboxes().len(), 1);
    svc.remove_sandbox("box").unwrap();
    svc.delete("vnet").unwrap();
    assert!(w.links().is_empty() && w.namespaces().is_empty());
}

#[test]
fn network_ports_reach_the_driver_as_dockerd_sends_them_and_come_back_in_inspect() {
    use network_support::VethDriver;
    use serde_json::json;

    let w = World::new(6);
    let (svc, _) = w.service(None);
    svc.create(subnet_req("vnet", "veth", "10.254.6.0/24", "10.254.6.1", None)).unwrap();
    let req: CreateSandbox = serde_json::from_value(json!({
        "Name": "web",
        "PortBindings": {"80": [{"HostIp": "", "HostPort": ""}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}]},
        "ExposedPorts": {"9/tcp": {}},
    }))
    .unwrap();
    let sb = svc.create_sandbox(req).unwrap();
    assert_eq!(sb.port_bindings.keys().collect::<Vec<_>>(), ["53/udp", "80/tcp"], "canonical keys");
    let v = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(
        v[0]["Ports"],
        json!({"9/tcp": null, "53/udp": null, "80/tcp": null}),
        "nothing is published before a connect"
    );

    let ep = connect(&svc, "vnet", "web").unwrap();
    let portmap = json!([
        {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 5353},
        {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
    ]);
    let exposed = json!([{"Proto": 6, "Port": 9}, {"Proto": 17, "Port": 53}, {"Proto": 6, "Port": 80}]);
    for method in ["create_endpoint", "join", "program_external_connectivity"] {
        let o = VethDriver::options_of(&w.dir, &ep.id, method)
            .unwrap_or_else(|| panic!("{method} got no options"));
        assert_eq!(o["com.docker.network.portmap"], portmap, "{method}");
        assert_eq!(o["com.docker.network.endpoint.exposedports"], exposed, "{method}");
    }
    assert_eq!(ep.ports.len(), 2, "the bindings the driver reported are kept: {:?}", ep.ports);
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(
        view[0]["Ports"],
        json!({
            "9/tcp": null,
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}],
        })
    );
    assert_eq!(view[0]["PortBindings"]["80/tcp"], json!([{"HostIp": "", "HostPort": ""}]));

    // The bindings survive a restart with the endpoint, and go with it.
    drop(svc);
    let (svc, _) = w.service(None);
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(view[0]["Ports"]["80/tcp"], json!([{"HostIp": "0.0.0.0", "HostPort": "49153"}]));
    disconnect(&svc, "vnet", "web").unwrap();
    let view = serde_json::to_value(svc.sandboxes()).unwrap();
    assert_eq!(view[0]["Ports"]["80/tcp"], serde_json::Value::Null);

    // A sandbox without ports sends the drivers no port options at all;
    // create and join say the core can take an interface made in place.
    sandbox(&svc, "plain", false);
    let plain = connect(&svc, "vnet", "plain").unwrap();
    for method in ["create_endpoint", "join", "program_external_connectivity"] {
        let options = VethDriver::options_of(&w.dir, &plain.id, method).unwrap_or_default();
        let keys: Vec<&str> = options.keys().map(String::as_str).collect();
        let want: &[&str] = if method == "program_external_connectivity" {
            &[]
        } else {
            &[berth_plugin_api::network::JOIN_IN_PLACE]
        };
        assert_eq!(keys, want, "{method}");
    }

    // Bad ports are refused before anything is made.
    let before = w.namespaces().len();
    for body in [
        json!({"Name": "bad", "PortBindings": {"80/icmp": []}}),
        json!({"Name": "bad", "PortBindings": {"80/tcp": [{"HostIp": "nowhere"}]}}),
        json!({"Name": "bad", "PortBindings": {"80/tcp": [{"HostPort": "9-1"}]}}),
        json!({"Name": "bad", "ExposedPorts": {"65536/tcp": {}}}),
        json!({"Name": "bad", "Host": true, "PortBindings": {"80/tcp": [{}]}}),
    ] {
        let req: CreateSandbox = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(svc.create_sandbox(req).unwrap_err().kind, ErrorKind::InvalidArgument, "{body}");
    }
    assert!(svc.find_sandbox("bad").is_err());
    assert_eq!(w.namespaces().len(), before);

    for s in ["web", "plain"] {
        svc.remove_sandbox(s).unwrap();
    }
    svc.delete("vnet").unwrap();
    assert!(w.links().is_empty() && w.namespaces().is_empty());
}
