//! Address allocation with the default IPAM driver (issue 6 target: every
//! address of a /16 in ≤ 50 ms in all).
//!
//! Every sample gets a fresh driver and pool (not timed), then times the
//! requests, each a full `request_address` call (lock, allocator, answer
//! text, journal record if any), by where the state lives:
//!
//! * `replay`: `persist = "replay"`, as berthd's embedded configuration
//!   loads it: state in memory, the daemon's records are the persistence
//!   (it replays them at start). The daemon's path; the target applies.
//! * `replay-abi`: the same driver called through the stable ABI, as the
//!   daemon calls the `.so` (linked in-process here).
//! * `journal-tmpfs`: `persist = "journal"` (the default, durable by
//!   itself) on `/dev/shm`: the journal written and `fdatasync`ed per
//!   address as on any disk, but the flush costs next to nothing: the
//!   software cost of persistence.
//! * `journal-disk`: the same in the system temp dir: each address durable
//!   before it is answered, one `fdatasync` per address (threads share
//!   them). Bound by the disk's flush latency (seconds for a /16).
//!
//! `cargo bench -p berth-ipam-default --bench alloc`

use std::path::Path;
use std::sync::Arc;

use berth_ipam_default::DefaultIpamDriver;
use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::ipam::*;
use berth_plugin_api::{Init, InitRequest, IpamDriver};

fn main() {
    divan::main();
}

/// A driver keeping its state as `store` says, holding pool `cidr`; the
/// temp dir lives as long as the driver.
fn setup(store: &str, cidr: &str) -> (Arc<dyn IpamDriver>, String, Option<tempfile::TempDir>) {
    let dir = match store {
        "replay" | "replay-abi" => None,
        "journal-tmpfs" => {
            Some(tempfile::tempdir_in(Path::new("/dev/shm")).expect("/dev/shm (tmpfs) for the tmpfs runs"))
        }
        "journal-disk" => Some(tempfile::tempdir().unwrap()),
        other => panic!("unknown store {other}"),
    };
    let root = dir.as_ref().map(|d| d.path().to_str().unwrap().to_string()).unwrap_or_default();
    let mut init = InitRequest::new("default", root, "");
    if dir.is_none() {
        init.options = serde_json::json!({ "persist": "replay" });
    }
    let driver: Arc<dyn IpamDriver> = if store == "replay-abi" {
        let module = PluginModule::linked(berth_ipam_default::export::berth_plugin_root());
        ready(module.new_ipam(&init).unwrap())
    } else {
        Arc::new(ready(DefaultIpamDriver::new(init).unwrap()))
    };
    let caps = driver.capabilities(IpamCapabilitiesRequest::default()).unwrap();
    assert_eq!(caps.requires_request_replay, dir.is_none(), "{store}");
    let id = driver.request_pool(RequestPoolRequest::new("local", cidr)).unwrap().pool_id;
    (driver, id, dir)
}

fn ready<T>(i: Init<T>) -> T {
    match i {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("declined: {why}"),
    }
}

fn allocate(d: &dyn IpamDriver, id: &str, n: usize) {
    for _ in 0..n {
        divan::black_box(d.request_address(RequestAddressRequest::new(id)).unwrap());
    }
}

/// Every address of a /16: 65,534 requests (the /16 target).
#[divan::bench(args = ["replay", "replay-abi", "journal-tmpfs"], sample_count = 10)]
fn slash16_all(bencher: divan::Bencher, store: &str) {
    bencher.with_inputs(|| setup(store, "10.7.0.0/16")).bench_local_values(|(d, id, dir)| {
        allocate(&*d, &id, 65_534);
        assert!(d.request_address(RequestAddressRequest::new(&id)).is_err(), "the /16 is full");
        (d, dir)
    });
}

/// Every address of a /16 durable on the disk, one `fdatasync` each, for
/// comparison (one sample: seconds).
#[divan::bench(sample_count = 1, sample_size = 1)]
fn slash16_all_journal_disk(bencher: divan::Bencher) {
    bencher.with_inputs(|| setup("journal-disk", "10.7.0.0/16")).bench_local_values(|(d, id, dir)| {
        allocate(&*d, &id, 65_534);
        (d, dir)
    });
}

/// The first 100,000 addresses of a /8 (a 2 MiB bitmap).
#[divan::bench(args = ["replay", "journal-tmpfs"], sample_count = 10)]
fn slash8_first_100k(bencher: divan::Bencher, store: &str) {
    bencher.with_inputs(|| setup(store, "10.0.0.0/8")).bench_local_values(|(d, id, dir)| {
        allocate(&*d, &id, 100_000);
        (d, dir)
    });
}

/// 1,000 addresses of a /16 durable on the disk, from 1 thread and from
/// 8 threads (125 each, sharing `fdatasync`s).
#[divan::bench(args = [1, 8], sample_count = 3)]
fn journal_disk_1000(bencher: divan::Bencher, threads: usize) {
    bencher.with_inputs(|| setup("journal-disk", "10.8.0.0/16")).bench_local_values(|(d, id, dir)| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| allocate(&*d, &id, 1000 / threads));
            }
        });
        (d, dir)
    });
}
