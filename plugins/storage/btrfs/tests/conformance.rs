//! The conformance storage suite against btrfs, linked, with every case
//! root on a loop-mounted btrfs made for the run: every case implemented so
//! far must pass, none may be skipped on this host (root, btrfs in the
//! kernel, btrfs-progs to make the filesystem).

mod common;

use berth_conformance::{run, storage, Options, Subject};
use berth_storage_btrfs::BtrfsDriver;
use common::LoopBtrfs;

#[test]
fn the_storage_suite_passes_on_a_loop_btrfs() {
    let fs = LoopBtrfs::new();
    // A directory below the mount point: the leak check looks at and
    // below the work dir, and the mount itself is no leak.
    let work = fs.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let subject = Subject::linked_storage("btrfs", env!("CARGO_PKG_VERSION"), BtrfsDriver::new);
    let opts = Options { workdir: Some(work.clone()), ..Options::default() };
    let report = run(&storage::cases(), Some(&subject), &opts);
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len(), "nothing may be skipped on this host");
    assert!(berth_conformance::sys::mounts_under(&work).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "case roots left behind");
}
