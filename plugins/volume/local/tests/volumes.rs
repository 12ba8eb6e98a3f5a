//! Volume lifecycle through the ABI: names, options, create, get, list,
//! path, remove, capabilities.

mod common;

use std::fs;

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::VolumeCapabilitiesRequest;
use berth_plugin_api::{ErrorKind, Kind};
use common::*;
use serde_json::json;

#[test]
fn the_plugin_names_itself() {
    let m = module().manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), ("local", &[Kind::Volume][..]));
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    assert_eq!(d.capabilities(VolumeCapabilitiesRequest::default()).unwrap().scope, Scope::Local);
}

#[test]
fn a_volume_lives_under_the_data_dir_and_goes_with_remove() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let before = std::time::SystemTime::now();
    create(&d, "web-data").unwrap();
    let data = dir.path().join("web-data/_data");
    assert!(data.is_dir());
    assert!(dir.path().join("web-data/opts.json").is_file());
    assert_eq!(path(&d, "web-data").unwrap(), data.to_str().unwrap());

    let info = get(&d, "web-data").unwrap();
    assert_eq!(info.name, "web-data");
    assert_eq!(info.mountpoint, data.to_str().unwrap());
    assert_eq!(info.status.get("refs"), Some(&json!(0)));
    assert!(!info.status.contains_key("options") && !info.status.contains_key("mounted"), "{info:?}");
    let created = info.created_at.expect("created_at");
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    assert!(created >= berth_volume_local::rfc3339(before), "{created}");

    fs::write(data.join("file"), "hello").unwrap();
    remove(&d, "web-data").unwrap();
    assert!(!dir.path().join("web-data").exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    assert_err(get(&d, "web-data"), ErrorKind::NotFound, "web-data");
    assert_err(path(&d, "web-data"), ErrorKind::NotFound, "web-data");
    assert_err(remove(&d, "web-data"), ErrorKind::NotFound, "web-data");
    // Re-creatable, and empty again.
    create(&d, "web-data").unwrap();
    assert!(!data.join("file").exists());
}

#[test]
fn create_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create(&d, "v1").unwrap();
    fs::write(dir.path().join("v1/_data/keep"), "x").unwrap();
    let first = get(&d, "v1").unwrap();
    for _ in 0..3 {
        create(&d, "v1").unwrap();
    }
    assert_eq!(get(&d, "v1").unwrap(), first);
    assert!(dir.path().join("v1/_data/keep").exists());
    assert_eq!(names(&d), ["v1"]);
}

#[test]
fn names_are_checked_everywhere_they_create_something() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    for bad in ["", "-x", ".x", "_x", "a/b", "../escape", "/abs", "with space", "ünï"] {
        assert_err(create(&d, bad), ErrorKind::InvalidArgument, "invalid volume name");
    }
    assert!(names(&d).is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    for good in ["a", "0", "A.b_c-d", "x1.2.3"] {
        create(&d, good).unwrap();
    }
    assert_eq!(names(&d), ["0", "A.b_c-d", "a", "x1.2.3"]);
}

#[test]
fn bad_volume_options_are_invalid_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    for (opts, text) in [
        (&[("type", "tmpfs")][..], "option \"type\" needs option \"device\""),
        (&[("device", "tmpfs")], "option \"device\" needs option \"type\""),
        (&[("o", "size=1m")], "option \"o\" needs option \"device\""),
        (&[("bogus", "1")], "unknown option \"bogus\""),
        (&[("type", "nfs"), ("device", ":/x"), ("bogus", "1")], "\"bogus\""),
        (&[("size", "lots")], "\"lots\""),
        (&[("type", "none"), ("device", "/srv")], "o=bind"),
    ] {
        let e = assert_err(create_with(&d, "v", opts), ErrorKind::InvalidArgument, text);
        assert!(e.message.starts_with("volume v: "), "{}", e.message);
    }
    // A failed create leaves nothing behind.
    assert!(names(&d).is_empty());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn options_are_kept_and_shown_with_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let opts = [("type", "cifs"), ("device", "//srv/share"), ("o", "username=u,password=hunter2")];
    create_with(&d, "v", &opts).unwrap();
    // Re-creating with other options changes nothing (Docker keeps the first).
    create_with(&d, "v", &[("type", "tmpfs"), ("device", "tmpfs")]).unwrap();
    for d in [d, open(dir.path())] {
        let s = get(&d, "v").unwrap().status;
        assert_eq!(s["type"], json!("cifs"));
        assert_eq!(s["device"], json!("//srv/share"));
        assert_eq!(s["mounted"], json!(false));
        assert_eq!(s["refs"], json!(0));
        assert_eq!(s["options"]["o"], json!("username=u,password=********"), "passwords are masked");
    }
    let on_disk = fs::read_to_string(dir.path().join("v/opts.json")).unwrap();
    assert!(on_disk.contains("\"cifs\""), "{on_disk}");
}

#[test]
fn list_is_sorted_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    for name in ["zeta", "alpha", "Mid", "beta"] {
        create(&d, name).unwrap();
    }
    let all = list(&d);
    assert_eq!(all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["Mid", "alpha", "beta", "zeta"]);
    for v in &all {
        assert_eq!(v.mountpoint, dir.path().join(&v.name).join("_data").to_str().unwrap());
        assert!(v.created_at.is_some());
    }
}

#[test]
fn the_data_dir_option_moves_the_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere/volumes");
    let d = try_open(&dir.path().join("root"), json!({ "data_dir": elsewhere })).unwrap();
    create(&d, "v").unwrap();
    assert_eq!(mount(&d, "v", &id(1)).unwrap(), elsewhere.join("v/_data").to_str().unwrap());
    assert!(!dir.path().join("root/v").exists());
}

#[test]
fn bad_driver_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_err(try_open(dir.path(), json!({ "datadir": "/x" })), ErrorKind::InvalidArgument, "unknown field");
    assert_err(
        try_open(dir.path(), json!({ "data_dir": "relative/x" })),
        ErrorKind::InvalidArgument,
        "absolute",
    );
    assert_err(
        try_open(dir.path(), json!({ "data_dir": 3 })),
        ErrorKind::InvalidArgument,
        "expected a string",
    );
    let init = berth_plugin_api::InitRequest::new("local", "", "");
    assert_err(module().new_volume(&init), ErrorKind::InvalidArgument, "root");
}

#[test]
fn parallel_creates_of_one_name_make_one_volume() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let d = d.clone();
            std::thread::spawn(move || {
                create(&d, "shared").unwrap();
                create(&d, &format!("own{i}")).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(names(&d).len(), 9);
}
