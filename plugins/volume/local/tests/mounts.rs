//! Mounts through the ABI: ids, counting, removal while in use, and what a
//! reopened driver remembers.

mod common;

use std::fs;

use berth_plugin_api::ErrorKind;
use common::*;

#[test]
fn n_mounts_need_n_unmounts_before_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create(&d, "v").unwrap();
    let data = dir.path().join("v/_data");
    for n in 1..=3 {
        assert_eq!(mount(&d, "v", &id(n)).unwrap(), data.to_str().unwrap());
    }
    assert_err(remove(&d, "v"), ErrorKind::Conflict, "volume v is in use by 3 mounts");
    unmount(&d, "v", &id(2)).unwrap();
    unmount(&d, "v", &id(1)).unwrap();
    assert_err(remove(&d, "v"), ErrorKind::Conflict, "in use by 1 mount");
    unmount(&d, "v", &id(3)).unwrap();
    remove(&d, "v").unwrap();
    assert!(!dir.path().join("v").exists());
}

#[test]
fn mount_ids_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create(&d, "v").unwrap();
    assert_err(mount(&d, "nope", &id(1)), ErrorKind::NotFound, "nope");
    assert_err(mount(&d, "v", ""), ErrorKind::InvalidArgument, "mount id");
    assert_err(unmount(&d, "nope", &id(1)), ErrorKind::NotFound, "nope");
    // Unmount is idempotent: an id that was never mounted succeeds.
    unmount(&d, "v", &id(1)).unwrap();
    // The same id twice is one mount.
    let p = mount(&d, "v", &id(1)).unwrap();
    assert_eq!(mount(&d, "v", &id(1)).unwrap(), p);
    unmount(&d, "v", &id(1)).unwrap();
    for _ in 0..10 {
        unmount(&d, "v", &id(1)).unwrap();
    }
    remove(&d, "v").unwrap();
}

#[test]
fn a_reopened_driver_knows_the_active_mounts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open(dir.path());
        create(&d, "v").unwrap();
        create(&d, "w").unwrap();
        mount(&d, "v", &id(1)).unwrap();
        mount(&d, "v", &id(2)).unwrap();
        unmount(&d, "v", &id(1)).unwrap();
        mount(&d, "w", &id(3)).unwrap();
        unmount(&d, "w", &id(3)).unwrap();
    }
    let d = open(dir.path());
    assert_err(remove(&d, "v"), ErrorKind::Conflict, "in use by 1 mount");
    unmount(&d, "v", &id(1)).unwrap();
    assert_err(remove(&d, "v"), ErrorKind::Conflict, "in use by 1 mount");
    unmount(&d, "v", &id(2)).unwrap();
    remove(&d, "v").unwrap();
    remove(&d, "w").unwrap();
}

#[test]
fn a_mount_that_cannot_be_recorded_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create(&d, "v").unwrap();
    // A non-empty directory where mounts.json goes makes the rename fail.
    let blocker = dir.path().join("v/mounts.json");
    fs::create_dir_all(blocker.join("x")).unwrap();
    let e = mount(&d, "v", &id(1)).unwrap_err();
    assert!(e.message.contains("mounts.json"), "{}", e.message);
    fs::remove_dir_all(&blocker).unwrap();
    // Not counted: the volume is removable.
    remove(&d, "v").unwrap();
}

#[test]
fn a_volume_whose_data_went_missing_does_not_mount() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create(&d, "v").unwrap();
    fs::remove_dir(dir.path().join("v/_data")).unwrap();
    assert_err(mount(&d, "v", &id(1)), ErrorKind::FailedPrecondition, "missing");
    remove(&d, "v").unwrap();
}
