//! IPAM request replay at start-up: the real `default` IPAM with
//! `persist = "replay"` (state in memory only) under the network service
//! with the veth test driver, on real namespaces. Networks and endpoints
//! are made, the service is dropped as a daemon stops, and a fresh service
//! over the same state with a fresh, empty IPAM replays the records into
//! it; then the IPAM must hold exactly what it held before.

mod network_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_core::network::{
    ConnectRequest, CreateSandbox, DisconnectRequest, DriverSet, EndpointConfig, EndpointIpam,
    EndpointRecord, NetworkRecord, NetworkService, NetworkSettings, PoolSpec, OP_REPLAY,
};
use berth_core::store::{Intent, Store};
use berth_core::{DriverError, DriverResult, ErrorKind, Kind};
use berth_plugin_api::ipam::*;
use berth_plugin_api::{InitRequest, IpamDriver, NetworkDriver};
use network_support::{create_req, ready, wrap, LoggedIpam, VethDriver, World};

/// The default IPAM as berthd's embedded config loads it: state in memory.
fn replay_ipam(w: &World) -> Arc<dyn IpamDriver> {
    let mut init = InitRequest::new("default", w.dir.join("default").display().to_string(), "");
    init.options = serde_json::json!({ "persist": "replay" });
    Arc::new(ready(berth_ipam_default::DefaultIpamDriver::new(init)))
}

/// The service over the veth driver and `ipam` (as `default`, when
/// given) on this world's state, as a daemon starts: the ledger's
/// reconcile, then the replay. Answers what reconcile resolved and did
/// not, and the store.
fn start(
    w: &World,
    ipam: Option<Arc<dyn IpamDriver>>,
) -> (NetworkService, Arc<Store>, Vec<Result<String, String>>) {
    let veth = VethDriver { prefix: w.prefix.clone(), dir: w.dir.join("veth"), log: Arc::clone(&w.log) };
    let mut set =
        DriverSet::new().with_network(wrap(Arc::new(veth) as Arc<dyn NetworkDriver>, "veth", Kind::Network));
    if let Some(ipam) = ipam {
        set = set.with_ipam(wrap(ipam, "default", Kind::Ipam));
    }
    let store = Arc::new(Store::open(&w.dir.join("root")).unwrap());
    let settings = NetworkSettings {
        exec_root: w.exec_root(),
        default_driver: "veth".into(),
        default_ipam: "default".into(),
        crash_at: None,
    };
    let svc = NetworkService::new(Arc::new(set), Arc::clone(&store), settings).unwrap();
    let pending: Vec<_> =
        store.pending().unwrap().into_iter().filter(|(_, i)| berth_core::network::owns(&i.op)).collect();
    let reconciled = svc.reconcile(&pending);
    (svc, store, reconciled)
}

fn pool(subnet: &str, ip_range: &str, gateway: &str, aux: &[(&str, &str)]) -> PoolSpec {
    PoolSpec {
        subnet: subnet.into(),
        ip_range: ip_range.into(),
        gateway: gateway.into(),
        auxiliary_addresses: aux.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn sandbox(svc: &NetworkService, name: &str) {
    svc.create_sandbox(CreateSandbox { name: name.into(), ..Default::default() }).unwrap();
}

fn connect(svc: &NetworkService, net: &str, sb: &str, v4: &str, v6: &str) -> DriverResult<EndpointRecord> {
    let ipam_config = EndpointIpam { ipv4_address: v4.into(), ipv6_address: v6.into(), ..Default::default() };
    let endpoint_config = EndpointConfig { ipam_config, ..Default::default() };
    svc.connect(net, ConnectRequest { container: sb.into(), endpoint_config })
}

fn disconnect(svc: &NetworkService, net: &str, sb: &str) {
    svc.disconnect(net, DisconnectRequest { container: sb.into(), force: false }).unwrap();
}

fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap()
}

/// Every address the records hold, as (pool id, bare address, what).
fn recorded(store: &Store) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (_, n) in store.list::<NetworkRecord>("network/").unwrap() {
        for p in &n.pools {
            if p.gateway_requested {
                out.push((p.pool_id.clone(), p.spec.gateway.clone(), format!("{} gateway", n.name)));
            }
            for (name, a) in &p.aux_cidr {
                out.push((p.pool_id.clone(), bare(a).to_string(), format!("{} aux {name}", n.name)));
            }
        }
    }
    for (_, e) in store.list::<EndpointRecord>("endpoint/").unwrap() {
        for (pool, a) in [(&e.pool_v4, &e.ipv4), (&e.pool_v6, &e.ipv6)] {
            if !a.is_empty() {
                out.push((pool.clone(), bare(a).to_string(), format!("endpoint {}", e.name)));
            }
        }
    }
    out
}

/// Forwards every call to a driver the test keeps a handle on.
struct Shared(Arc<dyn IpamDriver>);

impl IpamDriver for Shared {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        self.0.capabilities(req)
    }
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.0.default_address_spaces(req)
    }
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        self.0.request_pool(req)
    }
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        self.0.release_pool(req)
    }
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        self.0.request_address(req)
    }
    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        self.0.release_address(req)
    }
}

fn ask(ipam: &dyn IpamDriver, pool: &str, address: &str) -> DriverResult<String> {
    let mut req = RequestAddressRequest::new(pool);
    req.address = address.into();
    ipam.request_address(req).map(|r| r.address)
}

#[test]
fn a_fresh_in_memory_ipam_gets_back_every_recorded_pool_and_address() {
    let w = World::new(61);
    let (svc, store, _) = start(&w, Some(replay_ipam(&w)));
    // A v4 pool with an IP range, a gateway and two aux addresses (one in
    // the range), and a v6 pool whose gateway IPAM picks.
    let mut r4 = create_req("rp-a", "veth");
    r4.ipam.config.push(pool(
        "10.251.0.0/16",
        "10.251.7.0/24",
        "10.251.0.1",
        &[("router", "10.251.0.2"), ("dns", "10.251.7.3")],
    ));
    r4.ipam.config.push(pool("fd00:251::/64", "", "", &[]));
    r4.enable_ipv6 = Some(true);
    svc.create(r4).unwrap();
    // A pool IPAM picks, with an IPAM option (replayed as given).
    let mut r2 = create_req("rp-b", "veth");
    r2.ipam.options = BTreeMap::from([("com.docker.network.ipam.serial".to_string(), "true".to_string())]);
    svc.create(r2).unwrap();
    // One network per sandbox: the veth driver's routes are the same on
    // every network.
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        sandbox(&svc, s);
    }
    let e1 = connect(&svc, "rp-a", "s1", "", "").unwrap();
    let e2 = connect(&svc, "rp-a", "s2", "", "").unwrap();
    let e3 = connect(&svc, "rp-a", "s3", "10.251.9.9", "fd00:251::99").unwrap();
    let e4 = connect(&svc, "rp-b", "s4", "", "").unwrap();
    assert_eq!((e1.ipv4.as_str(), e2.ipv4.as_str()), ("10.251.7.0/16", "10.251.7.1/16"));
    assert_eq!((e3.ipv4.as_str(), e3.ipv6.as_str()), ("10.251.9.9/16", "fd00:251::99/64"));
    let dynamic = svc.find_network("rp-b").unwrap().pools[0].spec.subnet.clone();
    assert!(e4.ipv4.starts_with(&dynamic[..dynamic.len() - 4]), "{} in {dynamic}", e4.ipv4);
    let before = recorded(&store);
    assert_eq!(before.len(), 12, "{before:?}");
    let inspect_a = serde_json::to_value(svc.inspect("rp-a").unwrap()).unwrap();
    let inspect_b = serde_json::to_value(svc.inspect("rp-b").unwrap()).unwrap();

    // The daemon stops; a new one starts with an empty IPAM.
    drop((svc, store));
    w.calls();
    let ipam = replay_ipam(&w);
    let logged: Arc<dyn IpamDriver> =
        Arc::new(LoggedIpam { inner: Shared(Arc::clone(&ipam)), log: Arc::clone(&w.log) });
    let (svc, store, reconciled) = start(&w, Some(logged));
    assert!(reconciled.is_empty(), "{reconciled:?}");
    let report = svc.replay();
    assert_eq!(report.drivers, ["default"]);
    assert_eq!((report.networks, report.pools, report.addresses), (2, 3, 12), "{report:?}");
    assert!(report.failures.is_empty() && report.renamed.is_empty(), "{report:?}");
    let calls = w.calls();
    let count = |c: &str| calls.iter().filter(|x| *x == c).count();
    assert_eq!(count("ipam.request_pool"), 3, "{calls:?}");
    assert_eq!(count("ipam.request_address(gateway)"), 3, "{calls:?}");
    assert_eq!(count("ipam.request_address"), 9, "{calls:?}");
    assert_eq!(calls.len(), 15, "no release, no address space lookup: {calls:?}");
    assert_eq!(recorded(&store), before, "the records are unchanged");
    assert_eq!(serde_json::to_value(svc.inspect("rp-a").unwrap()).unwrap(), inspect_a);
    assert_eq!(serde_json::to_value(svc.inspect("rp-b").unwrap()).unwrap(), inspect_b);

    // Every recorded address is taken again, each gateway is the pool's.
    for (pool, addr, what) in &before {
        let e = ask(&*ipam, pool, addr).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{what} {addr}: {e}");
    }
    for p in svc.find_network("rp-a").unwrap().pools {
        let mut gw = RequestAddressRequest::new(&p.pool_id);
        gw.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
        let e = ipam.request_address(gw).unwrap_err();
        assert!(e.message.contains("already has gateway"), "{e}");
    }
    // A new endpoint gets a fresh address, none of the recorded ones.
    let e5 = connect(&svc, "rp-a", "s5", "", "").unwrap();
    assert_eq!(e5.ipv4, "10.251.7.2/16", "after .0 and .1 (endpoints); .3 is aux");
    let taken: Vec<&str> = before.iter().map(|(_, a, _)| a.as_str()).collect();
    for a in [&e5.ipv4, &e5.ipv6] {
        assert!(!taken.contains(&bare(a)), "{a} was handed out again: {before:?}");
    }
    // Asking for a recorded address through the service is refused too.
    let e = connect(&svc, "rp-b", "s2", bare(&e4.ipv4), "").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    // Pools conflict as before.
    for (subnet, v6) in [
        ("10.251.0.0/16", false),
        ("10.251.7.0/24", false),
        (dynamic.as_str(), false),
        ("fd00:251::/64", true),
    ] {
        let mut r = create_req("rp-c", "veth");
        r.ipam.config.push(pool(subnet, "", "", &[]));
        r.enable_ipv6 = Some(v6);
        r.enable_ipv4 = Some(!v6);
        let e = svc.create(r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{subnet}: {e}");
    }

    // Everything goes back cleanly: no error, nothing left in IPAM.
    for (net, sb) in [("rp-a", "s1"), ("rp-a", "s2"), ("rp-a", "s3"), ("rp-a", "s5"), ("rp-b", "s4")] {
        disconnect(&svc, net, sb);
    }
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        svc.remove_sandbox(s).unwrap();
    }
    let pools: Vec<String> =
        ["rp-a", "rp-b"].iter().flat_map(|n| svc.find_network(n).unwrap().pools).map(|p| p.pool_id).collect();
    svc.delete("rp-a").unwrap();
    svc.delete("rp-b").unwrap();
    for id in &pools {
        let e = ipam.release_pool(ReleasePoolRequest::new(id)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{id} was released: {e}");
    }
    // The same networks can be made again, with the same answers.
    let mut again = create_req("rp-a", "veth");
    again.ipam.config.push(pool("10.251.0.0/16", "10.251.7.0/24", "10.251.0.1", &[("dns", "10.251.7.3")]));
    svc.create(again).unwrap();
    sandbox(&svc, "s6");
    assert_eq!(connect(&svc, "rp-a", "s6", "", "").unwrap().ipv4, "10.251.7.0/16");
    disconnect(&svc, "rp-a", "s6");
    svc.remove_sandbox("s6").unwrap();
    svc.delete("rp-a").unwrap();
    assert!(w.links().is_empty() && w.namespaces().is_empty());
}

#[test]
fn an_ipam_that_keeps_its_own_state_is_left_alone() {
    let w = World::new(62);
    let journal = |w: &World| -> Arc<dyn IpamDriver> {
        let init = InitRequest::new("default", w.dir.join("default").display().to_string(), "");
        Arc::new(ready(berth_ipam_default::DefaultIpamDriver::new(init)))
    };
    let (svc, store, _) = start(&w, Some(journal(&w)));
    let mut r = create_req("jr", "veth");
    r.ipam.config.push(pool("10.252.9.0/24", "", "10.252.9.1", &[]));
    svc.create(r).unwrap();
    drop((svc, store));
    w.calls();
    let logged: Arc<dyn IpamDriver> =
        Arc::new(LoggedIpam { inner: Shared(journal(&w)), log: Arc::clone(&w.log) });
    let (svc, _store, _) = start(&w, Some(logged));
    let report = svc.replay();
    assert!(report.drivers.is_empty() && report.networks == 0 && report.failures.is_empty(), "{report:?}");
    assert!(w.calls().is_empty(), "not a single request");
    // Its own journal kept the pool.
    let mut r = create_req("jr2", "veth");
    r.ipam.config.push(pool("10.252.9.0/24", "", "", &[]));
    assert_eq!(svc.create(r).unwrap_err().kind, ErrorKind::Conflict);
    svc.delete("jr").unwrap();
}

/// An IPAM that answers pool ids of its own (`x-<id>`) and can be told to
/// fail a pool or an address; in memory, asking for replay.
struct Twisted {
    inner: Arc<dyn IpamDriver>,
    fail_pool: String,
    fail_address: String,
    broken: AtomicBool,
}

impl Twisted {
    fn inner_id(id: &str) -> String {
        id.strip_prefix("x-").unwrap_or(id).to_string()
    }
}

impl IpamDriver for Twisted {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        self.inner.capabilities(req)
    }
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.inner.default_address_spaces(req)
    }
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        if self.broken.load(Ordering::SeqCst) && req.pool == self.fail_pool {
            return Err(DriverError::unavailable(format!("pool store for {} is offline", req.pool)));
        }
        let mut got = self.inner.request_pool(req)?;
        got.pool_id = format!("x-{}", got.pool_id);
        Ok(got)
    }
    fn release_pool(&self, mut req: ReleasePoolRequest) -> DriverResult<()> {
        req.pool_id = Self::inner_id(&req.pool_id);
        self.inner.release_pool(req)
    }
    fn request_address(&self, mut req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        if self.broken.load(Ordering::SeqCst) && req.address == self.fail_address {
            return Err(DriverError::internal(format!("address {} is cursed", req.address)));
        }
        req.pool_id = Self::inner_id(&req.pool_id);
        self.inner.request_address(req)
    }
    fn release_address(&self, mut req: ReleaseAddressRequest) -> DriverResult<()> {
        req.pool_id = Self::inner_id(&req.pool_id);
        self.inner.release_address(req)
    }
}

#[test]
fn a_renamed_pool_is_adopted_and_failures_are_reported_without_stopping_the_start() {
    let w = World::new(63);
    let (svc, store, _) = start(&w, Some(replay_ipam(&w)));
    let mut a = create_req("tw-a", "veth");
    a.ipam.config.push(pool("10.253.1.0/24", "", "10.253.1.1", &[("bad", "10.253.1.250")]));
    svc.create(a).unwrap();
    let mut b = create_req("tw-b", "veth");
    b.ipam.config.push(pool("10.253.2.0/24", "", "", &[]));
    svc.create(b).unwrap();
    sandbox(&svc, "t1");
    sandbox(&svc, "t2");
    let ea = connect(&svc, "tw-a", "t1", "", "").unwrap();
    connect(&svc, "tw-b", "t2", "", "").unwrap();
    let a_id = svc.find_network("tw-a").unwrap().id;
    let old_pool = ea.pool_v4.clone();
    assert_eq!(old_pool, "local/10.253.1.0/24");
    // A replay update a crash cut short: reconcile drops it.
    store
        .intent(&Intent {
            op: OP_REPLAY.into(),
            key: format!("network/{a_id}"),
            driver: "veth".into(),
            data: serde_json::json!({}),
            at: 0,
        })
        .unwrap();
    drop((svc, store));

    // Every pool comes back under another id; tw-b's pool and tw-a's aux
    // address cannot be had.
    let twisted = Arc::new(Twisted {
        inner: replay_ipam(&w),
        fail_pool: "10.253.2.0/24".into(),
        fail_address: "10.253.1.250".into(),
        broken: AtomicBool::new(true),
    });
    let (svc, store, reconciled) = start(&w, Some(Arc::clone(&twisted) as Arc<dyn IpamDriver>));
    assert_eq!(reconciled.len(), 1, "{reconciled:?}");
    assert!(reconciled[0].as_ref().is_ok_and(|l| l.contains("pool id update")), "{reconciled:?}");
    assert!(store.pending().unwrap().is_empty());
    let report = svc.replay();
    assert_eq!((report.networks, report.pools, report.addresses), (2, 1, 2), "gateway and t1: {report:?}");
    assert_eq!(report.renamed.len(), 1, "{report:?}");
    let renamed = &report.renamed[0];
    assert!(
        renamed.starts_with("network tw-a: ") && renamed.contains("\"x-local/10.253.1.0/24\""),
        "{renamed}"
    );
    assert_eq!(report.failures.len(), 2, "{report:?}");
    let f = report.failures.join("\n");
    assert!(f.contains("network tw-a: auxiliary address bad 10.253.1.250: ") && f.contains("cursed"), "{f}");
    assert!(f.contains("network tw-b: pool 10.253.2.0/24") && f.contains("offline"), "{f}");
    assert!(f.contains("its addresses were not requested"), "{f}");
    assert!(store.pending().unwrap().is_empty(), "the id update is done");

    // The new id is recorded, in the store and in the index.
    let net: NetworkRecord = store.get(&format!("network/{a_id}")).unwrap().unwrap();
    assert_eq!(net.pools[0].pool_id, "x-local/10.253.1.0/24");
    assert_eq!(svc.find_network("tw-a").unwrap().pools[0].pool_id, "x-local/10.253.1.0/24");
    let eps: Vec<(String, EndpointRecord)> = store.list(&format!("endpoint/{a_id}/")).unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].1.pool_v4, "x-local/10.253.1.0/24");
    // The network works under the new id: t1's address and the gateway are
    // taken, the next connect gets .3 (.250 was lost: it is free again).
    sandbox(&svc, "t3");
    let e3 = connect(&svc, "tw-a", "t3", "", "").unwrap();
    assert_eq!(e3.ipv4, "10.253.1.3/24");
    assert_eq!(e3.pool_v4, "x-local/10.253.1.0/24");
    // tw-b's pool is not live: its endpoints cannot be connected, but
    // the daemon runs, and everything can still be removed.
    sandbox(&svc, "t4");
    assert!(connect(&svc, "tw-b", "t4", "", "").is_err());
    twisted.broken.store(false, Ordering::SeqCst);
    for (net, sb) in [("tw-a", "t1"), ("tw-a", "t3"), ("tw-b", "t2")] {
        disconnect(&svc, net, sb);
    }
    for s in ["t1", "t2", "t3", "t4"] {
        svc.remove_sandbox(s).unwrap();
    }
    svc.delete("tw-a").unwrap();
    svc.delete("tw-b").unwrap();
    assert_eq!(
        twisted.release_pool(ReleasePoolRequest::new("x-local/10.253.1.0/24")).unwrap_err().kind,
        ErrorKind::NotFound,
        "released under its new id"
    );
}

#[test]
fn a_missing_ipam_driver_is_reported_per_network() {
    let w = World::new(64);
    let (svc, store, _) = start(&w, Some(replay_ipam(&w)));
    for (name, subnet) in [("mi-a", "10.254.31.0/24"), ("mi-b", "10.254.32.0/24")] {
        let mut r = create_req(name, "veth");
        r.ipam.config.push(pool(subnet, "", "", &[]));
        svc.create(r).unwrap();
    }
    drop((svc, store));
    let (svc, _store, _) = start(&w, None);
    let report = svc.replay();
    assert_eq!(report.networks, 2);
    assert_eq!(report.failures.len(), 2, "{report:?}");
    for name in ["mi-a", "mi-b"] {
        let prefix = format!("network {name}: IPAM driver \"default\"");
        let f = report.failures.iter().find(|f| f.starts_with(&prefix)).expect("one failure per network");
        assert!(f.contains("no pool or address of the network was replayed"), "{f}");
    }
    assert_eq!(svc.count(), 2, "the records stay");
}
