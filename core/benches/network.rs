//! Sandboxes on the real kernel (needs root):
//!
//! * `sandbox_create_remove`: a network namespace made (thread,
//!   `unshare`, bind mount, loopback up) and removed (unmount, unlink);
//! * `join_leave_veth`: an existing veth end moved into a sandbox, renamed
//!   `eth0`, given MAC, MTU, IPv4 and IPv6 addresses, set up, with a
//!   connected route, a static route and both default gateways; then taken
//!   out again (down, renamed back, moved to the host);
//! * `veth_create_join_leave_delete`: the same with the veth pair made and
//!   deleted each time, as a bridge driver's endpoint would be;
//! * `service_connect_disconnect`: the whole connect and disconnect
//!   through the network service (ledger intents and notes on disk, the
//!   default IPAM on disk, a veth test driver), as the daemon runs them.
//!
//! Budget (DESIGN): endpoint join + leave ≤ 5 ms; sandbox create + remove
//! ≤ 5 ms.

#[path = "../tests/network_support/mod.rs"]
mod network_support;

use std::sync::atomic::{AtomicU32, Ordering};

use berth_core::network::{ConnectRequest, CreateSandbox, DisconnectRequest};
use berth_core::sandbox::{self, JoinSpec, Route};
use network_support::{subnet_req, Veth, World};

fn main() {
    divan::main();
}

/// A fresh directory for one benchmark, removed with it.
fn dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("berth-bench-").tempdir().unwrap()
}

static N: AtomicU32 = AtomicU32::new(0);

fn unique() -> String {
    format!("bb{}{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::SeqCst))
}

#[divan::bench(sample_count = 50)]
fn sandbox_create_remove(b: divan::Bencher) {
    let d = dir();
    let key = d.path().join("netns/bench-create");
    b.bench_local(|| {
        sandbox::create(&key).unwrap();
        sandbox::remove(&key).unwrap();
    });
}

fn spec(src: &str) -> JoinSpec {
    JoinSpec {
        src_name: src.into(),
        dst_prefix: "eth".into(),
        ipv4: Some("10.254.200.2/24".parse().unwrap()),
        ipv6: Some("fd00:b9:200::2/64".parse().unwrap()),
        mac: Some([0x02, 0x42, 0x0a, 0xfe, 0xc8, 0x02]),
        mtu: Some(1400),
        gateway: Some("10.254.200.1".parse().unwrap()),
        gateway6: Some("fd00:b9:200::1".parse().unwrap()),
        routes: vec![
            Route { destination: "192.0.2.0/24".parse().unwrap(), next_hop: None },
            Route {
                destination: "198.51.100.0/24".parse().unwrap(),
                next_hop: Some("10.254.200.1".parse().unwrap()),
            },
        ],
        disable_ipv6: false,
    }
}

#[divan::bench(sample_count = 50)]
fn join_leave_veth(b: divan::Bencher) {
    let d = dir();
    let ns = network_support::Ns::new(d.path().join("netns/bench-join"));
    let v = Veth::new(&unique());
    let s = spec(&v.inner);
    b.bench_local(|| {
        let joined = sandbox::join(&ns.key, &s).unwrap();
        sandbox::leave(&ns.key, &joined.name, &v.inner, false).unwrap();
    });
}

#[divan::bench(sample_count = 50)]
fn veth_create_join_leave_delete(b: divan::Bencher) {
    let d = dir();
    let ns = network_support::Ns::new(d.path().join("netns/bench-veth"));
    b.bench_local(|| {
        let v = Veth::new(&unique());
        let joined = sandbox::join(&ns.key, &spec(&v.inner)).unwrap();
        sandbox::leave(&ns.key, &joined.name, &v.inner, false).unwrap();
        drop(v);
    });
}

/// The bridge driver's way for berth's core: the veth made with one end
/// in the sandbox already, joined in place (no namespace move), left in
/// place; creating and deleting the pair is not timed (the driver does it
/// in create/delete endpoint).
#[divan::bench(sample_count = 50)]
fn join_leave_in_place(b: divan::Bencher) {
    let d = dir();
    let ns = network_support::Ns::new(d.path().join("netns/bench-inplace"));
    b.with_inputs(|| Veth::new_in(&unique(), &ns.key)).bench_local_values(|v| {
        let joined = sandbox::join(&ns.key, &spec(&v.inner)).unwrap();
        sandbox::leave(&ns.key, &joined.name, &v.inner, true).unwrap();
        v
    });
}

#[divan::bench(sample_count = 30)]
fn service_connect_disconnect(b: divan::Bencher) {
    let w = World::new(99);
    let (svc, _) = w.service_with(None, Vec::new());
    svc.create(subnet_req("bench", "veth", "10.254.201.0/24", "10.254.201.1", None)).unwrap();
    svc.create_sandbox(CreateSandbox { name: "box".into(), host: false, ..Default::default() }).unwrap();
    b.bench_local(|| {
        svc.connect("bench", ConnectRequest { container: "box".into(), ..Default::default() }).unwrap();
        svc.disconnect("bench", DisconnectRequest { container: "box".into(), force: false }).unwrap();
    });
    svc.remove_sandbox("box").unwrap();
    svc.delete("bench").unwrap();
}
