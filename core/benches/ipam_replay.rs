//! IPAM request replay at start-up ([`NetworkService::replay`]) into a
//! fresh `default` IPAM with `persist = "replay"`, called as berthd calls
//! it: through the stable ABI (the plugin linked in-process rather than
//! loaded from its `.so`) and the core's driver wrapper (deadline, worker
//! thread, metrics).
//!
//! * `replay_endpoints`: one network (a /16, gateway requested) holding N
//!   endpoints, records in the state store: the time from a service that
//!   has loaded the records to the pool, the gateway and every endpoint's
//!   address reserved again (N + 1 address requests). Part of daemon
//!   start-up (budget: ≤ 100 ms in all).
//! * `slash16_through_the_wrapper`: every address of a /16 requested one
//!   by one through the same path, beside the plugin's own benchmark
//!   (`cargo bench -p berth-ipam-default --bench alloc`), which calls the
//!   driver directly.
//!
//! `cargo bench -p berth-core --bench ipam_replay`

use std::sync::Arc;
use std::time::Duration;

use berth_core::call::{Driver, Metrics};
use berth_core::network::{
    DriverSet, EndpointRecord, NetworkRecord, NetworkService, NetworkSettings, PoolRecord, PoolSpec,
};
use berth_core::store::{Change, Intent, Store};
use berth_core::Kind;
use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::ipam::{RequestAddressRequest, RequestPoolRequest};
use berth_plugin_api::{Init, InitRequest, IpamDriver};

fn main() {
    divan::main();
}

/// A fresh replay-mode default IPAM behind the daemon's wrapper.
fn ipam() -> Driver<dyn IpamDriver> {
    let module = PluginModule::linked(berth_ipam_default::export::berth_plugin_root());
    let mut init = InitRequest::new("default", "", "");
    init.options = serde_json::json!({ "persist": "replay" });
    let Init::Ready(d) = module.new_ipam(&init).unwrap() else { panic!("declined") };
    Driver::new(d, "default", Kind::Ipam, Duration::from_secs(30), Arc::new(Metrics::default()))
}

/// The bare address at `offset` in 10.200.0.0/16.
fn addr(offset: usize) -> String {
    format!("10.200.{}.{}", offset / 256, offset % 256)
}

/// A store holding one network on 10.200.0.0/16 with `n` endpoints, as
/// create and connect leave them.
fn seed(dir: &std::path::Path, n: usize) -> Arc<Store> {
    let store = Arc::new(Store::open(dir).unwrap());
    let net_id = "ab".repeat(32);
    let pool_id = "local/10.200.0.0/16".to_string();
    let net = NetworkRecord {
        id: net_id.clone(),
        name: "bench".into(),
        scope: "local".into(),
        driver: "veth".into(),
        ipam_driver: "default".into(),
        pools: vec![PoolRecord {
            spec: PoolSpec {
                subnet: "10.200.0.0/16".into(),
                gateway: "10.200.0.1".into(),
                ..Default::default()
            },
            pool_id: pool_id.clone(),
            address_space: "local".into(),
            gateway_cidr: "10.200.0.1/16".into(),
            gateway_requested: true,
            ..Default::default()
        }],
        enable_ipv4: true,
        ..Default::default()
    };
    let mut changes = vec![Change::Put(format!("network/{net_id}"), serde_json::to_value(&net).unwrap())];
    for i in 0..n {
        let ep = EndpointRecord {
            id: format!("{i:064x}"),
            network_id: net_id.clone(),
            sandbox_id: format!("{:064x}", i + 1_000_000),
            name: format!("sb{i}"),
            ipv4: format!("{}/16", addr(i + 2)),
            pool_v4: pool_id.clone(),
            ..Default::default()
        };
        changes.push(Change::Put(format!("endpoint/{net_id}/{}", ep.id), serde_json::to_value(&ep).unwrap()));
    }
    let intent = Intent {
        op: "bench.seed".into(),
        key: String::new(),
        driver: String::new(),
        data: serde_json::Value::Null,
        at: 0,
    };
    let seq = store.intent(&intent).unwrap();
    store.finish(seq, &changes).unwrap();
    store
}

/// A service over `store` with a fresh IPAM, records loaded.
fn service(store: &Arc<Store>, dir: &std::path::Path) -> (NetworkService, Driver<dyn IpamDriver>) {
    let ipam = ipam();
    let set = DriverSet::new().with_ipam(ipam.clone());
    let settings = NetworkSettings {
        exec_root: dir.join("run"),
        default_driver: "veth".into(),
        default_ipam: "default".into(),
        crash_at: None,
    };
    (NetworkService::new(Arc::new(set), Arc::clone(store), settings).unwrap(), ipam)
}

#[divan::bench(args = [1_000, 10_000], sample_count = 20)]
fn replay_endpoints(bencher: divan::Bencher, n: usize) {
    let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().unwrap();
    let store = seed(dir.path(), n);
    bencher.with_inputs(|| service(&store, dir.path())).bench_local_values(|(svc, ipam)| {
        let report = svc.replay();
        assert_eq!((report.pools, report.addresses), (1, n + 1), "{report:?}");
        assert!(report.failures.is_empty(), "{report:?}");
        (svc, ipam)
    });
    // The replayed addresses are taken: the next one is fresh.
    let (svc, ipam) = service(&store, dir.path());
    svc.replay();
    let got = ipam
        .call("request_address", |d| d.request_address(RequestAddressRequest::new("local/10.200.0.0/16")));
    assert_eq!(got.unwrap().address, format!("{}/16", addr(n + 2)));
}

#[divan::bench(sample_count = 10)]
fn slash16_through_the_wrapper(bencher: divan::Bencher) {
    bencher
        .with_inputs(|| {
            let ipam = ipam();
            let req = RequestPoolRequest::new("local", "10.7.0.0/16");
            let id = ipam.call("request_pool", move |d| d.request_pool(req)).unwrap().pool_id;
            (ipam, id)
        })
        .bench_local_values(|(ipam, id)| {
            for _ in 0..65_534 {
                let req = RequestAddressRequest::new(&id);
                divan::black_box(ipam.call("request_address", move |d| d.request_address(req)).unwrap());
            }
            ipam
        });
}
