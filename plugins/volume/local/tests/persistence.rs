//! Volumes across a daemon restart.

mod common;

use std::fs;

use berth_plugin_api::ErrorKind;
use common::*;

#[test]
fn volumes_survive_a_reopen_and_still_mount() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let d = open(dir.path());
        create(&d, "keep").unwrap();
        create(&d, "gone").unwrap();
        fs::write(dir.path().join("keep/_data/file"), "data").unwrap();
        remove(&d, "gone").unwrap();
        before = get(&d, "keep").unwrap();
    }
    let d = open(dir.path());
    assert_eq!(names(&d), ["keep"]);
    assert_eq!(get(&d, "keep").unwrap(), before, "same path and creation time");
    let p = mount(&d, "keep", &id(1)).unwrap();
    assert_eq!(fs::read_to_string(std::path::Path::new(&p).join("file")).unwrap(), "data");
}

#[test]
fn interrupted_creates_and_removes_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".berth-new-99-0/_data")).unwrap();
    fs::create_dir_all(dir.path().join(".berth-old-99-1/_data/sub")).unwrap();
    let d = open(dir.path());
    assert!(names(&d).is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn corrupt_metadata_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = open(dir.path());
        create(&d, "v").unwrap();
    }
    let opts = dir.path().join("v/opts.json");
    fs::write(&opts, "{ not json").unwrap();
    let e = assert_err(try_open(dir.path(), serde_json::Value::Null), ErrorKind::Internal, "corrupt");
    assert!(e.message.contains(opts.to_str().unwrap()), "{}", e.message);
}

#[test]
fn a_forgotten_volume_can_be_created_again_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // A directory the driver does not count as a volume (no `_data`) ...
    fs::create_dir_all(dir.path().join("old")).unwrap();
    fs::write(dir.path().join("old/notes"), "x").unwrap();
    let d = open(dir.path());
    assert!(names(&d).is_empty());
    // ... is adopted by a create of that name.
    create(&d, "old").unwrap();
    assert!(get(&d, "old").unwrap().created_at.is_some());
    assert!(dir.path().join("old/notes").exists());
}
