//! `create_network` and `delete_network` of the real bridge driver against
//! the real kernel (issue 6 target: create ≤ 5 ms).
//!
//! Each benchmark thread first moves into a private network namespace of
//! its own, so the host's links and firewall are never touched; the driver
//! owns a table of its own name there. `others` networks exist before the
//! first sample and stay for the whole benchmark:
//!
//! * `create_network`: each iteration creates one network (bridge, gateway
//!   address, sysctls, firewall); it is deleted after the sample, untimed;
//! * `delete_network`: each iteration deletes a network created before the
//!   sample, untimed.
//!
//! The `firewall_*` benchmarks time the firewall alone ([`nft::sync`] on
//! a table of its own, no links, no state file), through libnftables in
//! process (`library`) and through the `nft` command (`command`):
//!
//! * `firewall_add` / `firewall_delete`: one network's rules added to (or
//!   deleted from) a table holding `OTHERS` networks, as the driver does;
//! * `firewall_regenerate`: the table with `OTHERS` + 1 networks written
//!   whole (`add table; delete table; add table; ...`), which is what every
//!   change cost before the add-only design (with `command`).
//!
//! Needs root; says so and measures nothing otherwise.
//!
//! `cargo bench -p berth-network-bridge --bench network`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use berth_network_bridge::nft::{self, FwNetwork};
use berth_network_bridge::{libnft, BridgeDriver};
use berth_plugin_api::network::*;
use berth_plugin_api::util::command::HostRunner;
use berth_plugin_api::{Init, InitRequest, NetworkDriver};
use divan::Bencher;
use serde_json::json;

fn main() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the bridge benchmarks need root (network namespaces, links, nftables)");
        return;
    }
    divan::main();
}

thread_local! {
    /// The calling thread's private network namespace, made on first use.
    static PRIVATE_NETNS: () = {
        // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's
        // network namespace; it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    };
}

/// A driver in the calling thread's private namespace with `others`
/// networks; deletes them all (and so the table) on drop.
struct Fixture {
    driver: Arc<BridgeDriver>,
    _dir: tempfile::TempDir,
    others: Vec<String>,
}

impl Fixture {
    fn new(others: usize) -> Fixture {
        PRIVATE_NETNS.with(|_| ());
        let dir = tempfile::tempdir().unwrap();
        let mut init = InitRequest::new(
            "bridge",
            dir.path().to_str().unwrap(),
            dir.path().join("run").to_str().unwrap(),
        );
        init.options = json!({ "table": "berthbench" });
        let driver = match BridgeDriver::new(init).unwrap() {
            Init::Ready(d) => Arc::new(d),
            Init::Skipped(why) => panic!("the bridge driver declined: {why}"),
        };
        let others = (0..others).map(|_| create(&driver)).collect();
        Fixture { driver, _dir: dir, others }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.others.drain(..) {
            delete(&self.driver, &id);
        }
    }
}

/// A network that no other one in this process shares: id, bridge name
/// and a /24 of 10.0.0.0/8 from a counter.
fn request() -> CreateNetworkRequest {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    assert!(n < 1 << 16, "out of bench subnets");
    let id = format!("bench{n:05}");
    let mut pool = IpamData::default();
    pool.address_space = "local".into();
    pool.pool = format!("10.{}.{}.0/24", n >> 8, n & 0xff);
    pool.gateway = format!("10.{}.{}.1/24", n >> 8, n & 0xff);
    let mut req = CreateNetworkRequest::new(&id);
    req.ipv4_data = vec![pool];
    req.options.insert(
        "com.docker.network.generic".into(),
        json!({ "com.docker.network.bridge.name": format!("bb{n:05}") }),
    );
    req
}

fn create(d: &BridgeDriver) -> String {
    let req = request();
    let id = req.network_id.clone();
    d.create_network(req).expect("create network");
    id
}

fn delete(d: &BridgeDriver, id: &str) {
    d.delete_network(DeleteNetworkRequest::new(id)).expect("delete network");
}

/// Deletes its network when dropped (after the sample, untimed).
struct Created<'a>(&'a BridgeDriver, String);

impl Drop for Created<'_> {
    fn drop(&mut self) {
        delete(self.0, &self.1);
    }
}

#[divan::bench(args = [0, 10], sample_count = 30, sample_size = 1)]
fn create_network(bencher: Bencher, others: usize) {
    let fx = Fixture::new(others);
    let d = &*fx.driver;
    bencher.with_inputs(request).bench_local_values(|req| {
        let id = req.network_id.clone();
        d.create_network(req).expect("create network");
        Created(d, id)
    });
}

#[divan::bench(args = [0, 10], sample_count = 30, sample_size = 1)]
fn delete_network(bencher: Bencher, others: usize) {
    let fx = Fixture::new(others);
    let d = &*fx.driver;
    bencher.with_inputs(|| create(d)).bench_local_values(|id| delete(d, &id));
}

const TABLE: &str = "berthfwbench";

/// A firewall backend in the calling thread's private namespace (the
/// temp dir holds the `nft` command's batch file).
fn backend(kind: &str) -> (Box<dyn nft::Backend>, tempfile::TempDir) {
    PRIVATE_NETNS.with(|_| ());
    let dir = tempfile::tempdir().unwrap();
    let b: Box<dyn nft::Backend> = match kind {
        "library" => Box::new(libnft::Library::open().expect("libnftables")),
        "command" => Box::new(nft::Command::new(Arc::new(HostRunner), dir.path().join("batch.json"))),
        other => panic!("unknown backend {other}"),
    };
    (b, dir)
}

/// Network `n` of the firewall benchmarks, as the driver describes it.
fn fw_network(n: u32) -> FwNetwork {
    FwNetwork {
        id: format!("{n:064x}"),
        bridge: format!("bf{n:05}"),
        subnets: vec![format!("10.{}.{}.0/24", n >> 8, n & 0xff).parse().unwrap()],
        internal: false,
        masquerade: true,
        snat_ipv4: None,
        ports: Vec::new(),
    }
}

/// `others` networks programmed (a full regeneration), and one more.
fn fw_setup(b: &dyn nft::Backend, others: usize) -> (Vec<FwNetwork>, Vec<FwNetwork>) {
    let before: Vec<FwNetwork> = (1..=others as u32).map(fw_network).collect();
    nft::sync(b, TABLE, None, &before).unwrap();
    let mut after = before.clone();
    after.push(fw_network(others as u32 + 1));
    (before, after)
}

/// Puts the table back to `to` when dropped (after the sample, untimed).
struct Back<'a>(&'a dyn nft::Backend, &'a [FwNetwork], &'a [FwNetwork]);

impl Drop for Back<'_> {
    fn drop(&mut self) {
        nft::sync(self.0, TABLE, Some(self.1), self.2).unwrap();
    }
}

#[divan::bench(consts = [0, 10], args = ["library", "command"], sample_count = 30, sample_size = 1)]
fn firewall_add<const OTHERS: usize>(bencher: Bencher, kind: &str) {
    let (b, _dir) = backend(kind);
    let b = &*b;
    let (before, after) = fw_setup(b, OTHERS);
    bencher.bench_local(|| {
        assert_eq!(nft::sync(b, TABLE, Some(&before), &after).unwrap(), nft::Outcome::Added);
        Back(b, &after, &before)
    });
    nft::sync(b, TABLE, Some(&before), &[]).unwrap();
}

#[divan::bench(consts = [0, 10], args = ["library", "command"], sample_count = 30, sample_size = 1)]
fn firewall_delete<const OTHERS: usize>(bencher: Bencher, kind: &str) {
    let (b, _dir) = backend(kind);
    let b = &*b;
    let (before, after) = fw_setup(b, OTHERS);
    bencher.with_inputs(|| nft::sync(b, TABLE, Some(&before), &after).unwrap()).bench_local_values(|_| {
        assert_eq!(nft::sync(b, TABLE, Some(&after), &before).unwrap(), nft::Outcome::Changed);
    });
    nft::sync(b, TABLE, Some(&before), &[]).unwrap();
}

#[divan::bench(consts = [0, 10], args = ["library", "command"], sample_count = 30, sample_size = 1)]
fn firewall_regenerate<const OTHERS: usize>(bencher: Bencher, kind: &str) {
    let (b, _dir) = backend(kind);
    let b = &*b;
    let (before, after) = fw_setup(b, OTHERS);
    bencher.bench_local(|| nft::sync(b, TABLE, None, &after).unwrap());
    nft::sync(b, TABLE, Some(&after), &[]).unwrap();
    drop(before);
}
