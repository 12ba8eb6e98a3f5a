// The cases shared by the none and host network drivers; the including
// file defines `NAME` and `module()`.

fn try_open(root: &Path, options: serde_json::Value) -> DriverResult<Net> {
    let mut init = InitRequest::new(NAME, root.to_str().unwrap(), root.join("run").to_str().unwrap());
    init.options = options;
    match module().new_network(&init)? {
        Init::Ready(d) => Ok(d),
        Init::Skipped(why) => panic!("the {NAME} driver declined: {why}"),
    }
}

fn open(root: &Path) -> Net {
    try_open(root, serde_json::Value::Null).unwrap()
}

#[track_caller]
fn assert_err<T>(result: DriverResult<T>, kind: ErrorKind, text: &str) {
    let Err(err) = result else { panic!("expected a {kind} error containing {text:?}, got success") };
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.contains(text), "{:?} does not contain {text:?}", err.message);
}

fn ipam(pool: &str, gateway: &str) -> IpamData {
    let mut d = IpamData::default();
    d.address_space = "null".into();
    d.pool = pool.into();
    d.gateway = gateway.into();
    d
}

fn network_req(id: &str) -> CreateNetworkRequest {
    let mut req = CreateNetworkRequest::default();
    req.network_id = id.into();
    req
}

fn create_network(d: &Net, id: &str) -> DriverResult<()> {
    d.create_network(network_req(id))
}

fn delete_network(d: &Net, id: &str) -> DriverResult<()> {
    let mut req = DeleteNetworkRequest::default();
    req.network_id = id.into();
    d.delete_network(req)
}

fn endpoint_req(net: &str, ep: &str) -> CreateEndpointRequest {
    let mut req = CreateEndpointRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    req
}

fn create_endpoint(d: &Net, net: &str, ep: &str) -> DriverResult<CreateEndpointResponse> {
    d.create_endpoint(endpoint_req(net, ep))
}

fn create_endpoint_with(
    d: &Net,
    ep: &str,
    v4: &str,
    v6: &str,
    mac: &str,
) -> DriverResult<CreateEndpointResponse> {
    let mut req = endpoint_req("n1", ep);
    let mut iface = EndpointInterface::default();
    iface.address = v4.into();
    iface.address_ipv6 = v6.into();
    iface.mac_address = mac.into();
    req.interface = Some(iface);
    d.create_endpoint(req)
}

fn info(d: &Net, net: &str, ep: &str) -> DriverResult<Options> {
    let mut req = EndpointInfoRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    d.endpoint_info(req)
}

fn delete_endpoint(d: &Net, net: &str, ep: &str) -> DriverResult<()> {
    let mut req = DeleteEndpointRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    d.delete_endpoint(req)
}

fn join(d: &Net, net: &str, ep: &str) -> DriverResult<JoinResponse> {
    let mut req = JoinRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    req.sandbox_key = "/run/berth/netns/0123456789ab".into();
    d.join(req)
}

fn leave(d: &Net, net: &str, ep: &str) -> DriverResult<()> {
    let mut req = LeaveRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    d.leave(req)
}

fn program(d: &Net, net: &str, ep: &str) -> DriverResult<()> {
    let mut req = ProgramExternalConnectivityRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    d.program_external_connectivity(req)
}

fn revoke(d: &Net, net: &str, ep: &str) -> DriverResult<()> {
    let mut req = RevokeExternalConnectivityRequest::default();
    req.network_id = net.into();
    req.endpoint_id = ep.into();
    d.revoke_external_connectivity(req)
}

#[test]
fn the_plugin_names_itself_with_local_scope() {
    let m = module().manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), (NAME, &[Kind::Network][..]));
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let caps = d.capabilities(CapabilitiesRequest::default()).unwrap();
    assert_eq!(caps.scope, Scope::Local);
    assert!(!caps.gw_alloc_checker);
    assert_err(d.gw_alloc_check(GwAllocCheckRequest::default()), ErrorKind::Unsupported, "gw_alloc_check");
}

#[test]
fn only_one_network_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create_network(&d, "n1").unwrap();
    assert_err(create_network(&d, "n1"), ErrorKind::AlreadyExists, "already exists");
    assert_err(create_network(&d, "n2"), ErrorKind::Conflict, "only one instance");
    for _ in 0..10 {
        delete_network(&d, "n2").unwrap(); // never created
    }
    create_endpoint(&d, "n1", "e1").unwrap();
    for _ in 0..10 {
        delete_network(&d, "n1").unwrap();
    }
    // The endpoints went with it; another network may come now.
    assert_err(info(&d, "n1", "e1"), ErrorKind::NotFound, "n1");
    create_network(&d, "n2").unwrap();
    assert_err(info(&d, "n2", "e1"), ErrorKind::NotFound, "e1");
    assert_err(create_network(&d, ""), ErrorKind::InvalidArgument, "network id");
}

#[test]
fn parallel_creates_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || create_network(&d, &format!("n{i}")))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.kind == ErrorKind::Conflict));
}

#[test]
fn networks_with_addresses_or_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let mut req = network_req("n1");
    req.ipv4_data = vec![ipam("172.18.0.0/16", "172.18.0.1/16")];
    assert_err(d.create_network(req), ErrorKind::InvalidArgument, "takes no addresses");
    let mut req = network_req("n1");
    req.ipv6_data = vec![ipam("fd00::/64", "")];
    assert_err(d.create_network(req), ErrorKind::InvalidArgument, "takes no addresses");
    let mut req = network_req("n1");
    req.ipv4_data = vec![ipam("0.0.0.0/0", "0.0.0.1/0")];
    assert_err(d.create_network(req), ErrorKind::InvalidArgument, "takes no addresses");
    let mut req = network_req("n1");
    req.options.insert("com.docker.network.generic".into(), json!({ "mtu": "9000" }));
    assert_err(d.create_network(req), ErrorKind::InvalidArgument, "takes no driver options");
    // The null IPAM driver's placeholder pool and empty option maps are fine.
    let mut req = network_req("n1");
    req.ipv4_data = vec![ipam("0.0.0.0/0", "")];
    req.ipv6_data = vec![ipam("::/0", "")];
    req.options.insert("com.docker.network.generic".into(), json!({}));
    req.options.insert("com.docker.network.enable_ipv6".into(), json!(false));
    d.create_network(req).unwrap();
}

#[test]
fn endpoints_are_bookkeeping_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    assert_err(create_endpoint(&d, "n1", "e1"), ErrorKind::NotFound, "n1");
    create_network(&d, "n1").unwrap();
    assert_err(create_endpoint(&d, "n2", "e1"), ErrorKind::NotFound, "n2");
    let r = create_endpoint(&d, "n1", "e1").unwrap();
    assert_eq!(r.interface, None);
    assert_err(create_endpoint(&d, "n1", "e1"), ErrorKind::AlreadyExists, "e1");
    assert_err(create_endpoint(&d, "n1", ""), ErrorKind::InvalidArgument, "endpoint id");
    assert_err(
        create_endpoint_with(&d, "e2", "10.0.0.2/24", "", ""),
        ErrorKind::InvalidArgument,
        "10.0.0.2/24",
    );
    assert_err(
        create_endpoint_with(&d, "e2", "", "fd00::2/64", ""),
        ErrorKind::InvalidArgument,
        "takes no addresses",
    );
    assert_err(
        create_endpoint_with(&d, "e2", "", "", "02:42:ac:11:00:02"),
        ErrorKind::InvalidArgument,
        "MAC",
    );
    // An empty interface asks for nothing.
    assert_eq!(create_endpoint_with(&d, "e2", "", "", "").unwrap().interface, None);

    assert_eq!(info(&d, "n1", "e1").unwrap(), BTreeMap::new());
    assert_err(info(&d, "n1", "e9"), ErrorKind::NotFound, "e9");
    assert_err(info(&d, "n9", "e1"), ErrorKind::NotFound, "n9");

    let j = join(&d, "n1", "e1").unwrap();
    assert_eq!(j.interface_name, None);
    assert!(j.gateway.is_empty() && j.gateway_ipv6.is_empty() && j.static_routes.is_empty());
    assert_err(join(&d, "n1", "e9"), ErrorKind::NotFound, "e9");
    assert_err(join(&d, "n9", "e1"), ErrorKind::NotFound, "n9");
    program(&d, "n1", "e1").unwrap();
    for _ in 0..10 {
        revoke(&d, "n1", "e1").unwrap();
        leave(&d, "n1", "e1").unwrap();
    }
    for _ in 0..10 {
        delete_endpoint(&d, "n1", "e1").unwrap();
        delete_endpoint(&d, "n1", "never").unwrap();
        delete_endpoint(&d, "n9", "e1").unwrap();
        leave(&d, "n9", "e9").unwrap();
        revoke(&d, "n9", "e9").unwrap();
    }
    assert_err(info(&d, "n1", "e1"), ErrorKind::NotFound, "e1");
    // Deleted endpoints can be created again.
    create_endpoint(&d, "n1", "e1").unwrap();
}

#[test]
fn the_network_and_its_endpoints_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open(dir.path());
        create_network(&d, "n1").unwrap();
        create_endpoint(&d, "n1", "e1").unwrap();
        create_endpoint(&d, "n1", "e2").unwrap();
        delete_endpoint(&d, "n1", "e2").unwrap();
    }
    let d = open(dir.path());
    assert_err(create_network(&d, "n1"), ErrorKind::AlreadyExists, "already exists");
    assert_err(create_network(&d, "n2"), ErrorKind::Conflict, "only one instance");
    info(&d, "n1", "e1").unwrap();
    assert_err(info(&d, "n1", "e2"), ErrorKind::NotFound, "e2");
    delete_network(&d, "n1").unwrap();
    drop(d);
    let d = open(dir.path());
    create_network(&d, "n2").unwrap();
}

#[test]
fn bad_options_and_state_are_refused_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    assert_err(try_open(dir.path(), json!({ "mtu": 1500 })), ErrorKind::InvalidArgument, "unknown field");
    let init = InitRequest::new(NAME, "", "");
    assert_err(module().new_network(&init), ErrorKind::InvalidArgument, "root");
    let path = dir.path().join("network-state.json");
    std::fs::write(&path, "{ nope").unwrap();
    assert_err(try_open(dir.path(), serde_json::Value::Null), ErrorKind::Internal, path.to_str().unwrap());
}

#[test]
fn a_change_that_cannot_be_saved_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let path = dir.path().join("network-state.json");
    std::fs::create_dir_all(path.join("blocker")).unwrap();
    assert_err(create_network(&d, "n1"), ErrorKind::Internal, "network-state.json");
    std::fs::remove_dir_all(&path).unwrap();
    // Not created: the same id is new, not "already exists".
    create_network(&d, "n1").unwrap();
}
