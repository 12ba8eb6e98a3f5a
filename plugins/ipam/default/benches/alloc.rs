//! Address allocation with the default IPAM driver (issue 6 target: every
//! address of a /16 in ≤ 50 ms in all).
//!
//! Every sample gets a fresh driver and pool (not timed), then times the
//! requests, each a full `request_address` call (lock, allocator, answer
//! text, journal record), by where the state lives:
//!
//! * `memory`: [`DefaultIpamDriver::in_memory`], no persistence: the
//!   allocator and the call itself;
//! * `tmpfs`: on `/dev/shm`, the journal written and `fdatasync`ed per
//!   address as on any disk, but the flush costs next to nothing: the
//!   software cost of persistence;
//! * `disk`: in the system temp dir, each address durable before it is
//!   answered: one `fdatasync` per address (threads share them).
//!
//! `cargo bench -p berth-ipam-default --bench alloc`

use std::path::Path;
use std::sync::Arc;

use berth_ipam_default::{DefaultIpamDriver, Opts};
use berth_plugin_api::ipam::*;
use berth_plugin_api::{Init, InitRequest, IpamDriver};

fn main() {
    divan::main();
}

/// A driver keeping its state in `store`, holding pool `cidr`; the temp
/// dir lives as long as the driver.
fn setup(store: &str, cidr: &str) -> (Arc<DefaultIpamDriver>, String, Option<tempfile::TempDir>) {
    let dir = match store {
        "memory" => None,
        "tmpfs" => {
            Some(tempfile::tempdir_in(Path::new("/dev/shm")).expect("/dev/shm (tmpfs) for the tmpfs runs"))
        }
        "disk" => Some(tempfile::tempdir().unwrap()),
        other => panic!("unknown store {other}"),
    };
    let driver = match &dir {
        None => DefaultIpamDriver::in_memory(&Opts::default()).unwrap(),
        Some(d) => match DefaultIpamDriver::new(InitRequest::new("default", d.path().to_str().unwrap(), ""))
            .unwrap()
        {
            Init::Ready(d) => d,
            Init::Skipped(why) => panic!("declined: {why}"),
        },
    };
    let id = driver.request_pool(RequestPoolRequest::new("local", cidr)).unwrap().pool_id;
    (Arc::new(driver), id, dir)
}

fn allocate(d: &dyn IpamDriver, id: &str, n: usize) {
    for _ in 0..n {
        divan::black_box(d.request_address(RequestAddressRequest::new(id)).unwrap());
    }
}

/// Every address of a /16: 65,534 requests (the /16 target).
#[divan::bench(args = ["memory", "tmpfs"], sample_count = 10)]
fn slash16_all(bencher: divan::Bencher, store: &str) {
    bencher.with_inputs(|| setup(store, "10.7.0.0/16")).bench_local_values(|(d, id, dir)| {
        allocate(&*d, &id, 65_534);
        assert!(d.request_address(RequestAddressRequest::new(&id)).is_err(), "the /16 is full");
        (d, dir)
    });
}

/// The first 100,000 addresses of a /8 (a 2 MiB bitmap).
#[divan::bench(args = ["memory", "tmpfs"], sample_count = 10)]
fn slash8_first_100k(bencher: divan::Bencher, store: &str) {
    bencher.with_inputs(|| setup(store, "10.0.0.0/8")).bench_local_values(|(d, id, dir)| {
        allocate(&*d, &id, 100_000);
        (d, dir)
    });
}

/// 1,000 addresses of a /16 durable on the disk, from 1 thread and from
/// 8 threads (125 each, sharing `fdatasync`s).
#[divan::bench(args = [1, 8], sample_count = 3)]
fn disk_1000(bencher: divan::Bencher, threads: usize) {
    bencher.with_inputs(|| setup("disk", "10.8.0.0/16")).bench_local_values(|(d, id, dir)| {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| allocate(&*d, &id, 1000 / threads));
            }
        });
        (d, dir)
    });
}
