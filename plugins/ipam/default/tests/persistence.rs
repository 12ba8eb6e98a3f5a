//! State across a daemon restart: pools in the snapshot `ipam-state.json`,
//! address changes in `ipam-journal` until the next snapshot. The driver
//! writes nothing when it is dropped, so a reopen sees exactly what a
//! `kill -9` would leave.

mod common;

use std::fs;

use berth_plugin_api::ipam::IpamCapabilitiesRequest;
use berth_plugin_api::ErrorKind;
use common::*;

#[test]
fn pools_and_allocations_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, sub, serial, v6, global);
    {
        let d = open(dir.path());
        plain = pool(&d, "10.1.0.0/24");
        sub = request_pool(&d, "", "10.2.0.0/16", "10.2.3.0/24").unwrap().pool_id;
        serial = serial_pool(&d, "10.3.0.0/29");
        v6 = pool(&d, "fd00:1::/64");
        global = request_pool(&d, "global", "10.1.0.0/24", "").unwrap().pool_id;
        gateway(&d, &plain, "").unwrap();
        for _ in 0..5 {
            any(&d, &plain).unwrap();
        }
        release(&d, &plain, "10.1.0.3").unwrap();
        address(&d, &plain, "10.1.0.200").unwrap();
        assert_eq!(any(&d, &sub).unwrap(), "10.2.3.0/16");
        any(&d, &serial).unwrap();
        any(&d, &serial).unwrap();
        release(&d, &serial, "10.3.0.1").unwrap();
        assert_eq!(any(&d, &v6).unwrap(), "fd00:1::1/64");
        address(&d, &v6, "fd00:1::ffff").unwrap();
        let gone = pool(&d, "10.9.0.0/24");
        release_pool(&d, &gone).unwrap();
    }
    assert!(!dir.path().join("ipam-state.json.tmp").exists());
    let d = open(dir.path());
    // Live pools are still live, in their spaces.
    assert_err(request_pool(&d, "", "10.1.0.0/24", ""), ErrorKind::Conflict, "already live");
    assert_err(request_pool(&d, "global", "10.1.0.0/24", ""), ErrorKind::Conflict, "already live");
    assert_err(request_pool(&d, "", "10.2.0.0/16", "10.2.3.0/24"), ErrorKind::Conflict, "already live");
    // Taken addresses are still taken, the released one is free again.
    assert_err(address(&d, &plain, "10.1.0.200"), ErrorKind::Conflict, "already in use");
    assert_err(gateway(&d, &plain, ""), ErrorKind::Conflict, "already has gateway 10.1.0.1");
    assert_eq!(any(&d, &plain).unwrap(), "10.1.0.3/24");
    assert_eq!(any(&d, &plain).unwrap(), "10.1.0.7/24");
    assert_eq!(any(&d, &sub).unwrap(), "10.2.3.1/16");
    // The serial cursor survives: .3, not the released .1.
    assert_eq!(any(&d, &serial).unwrap(), "10.3.0.3/29");
    assert_eq!(any(&d, &v6).unwrap(), "fd00:1::2/64");
    assert_err(address(&d, &v6, "fd00:1::ffff"), ErrorKind::Conflict, "already in use");
    assert_eq!(any(&d, &global).unwrap(), "10.1.0.1/24");
    // The released pool stayed released.
    assert_err(release_pool(&d, "local/10.9.0.0/24"), ErrorKind::NotFound, "not live");
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipam-state.json");
    let cases = [
        "{ not json",
        r#"{"version": 9, "pools": []}"#,
        r#"{"version": 1, "pools": [{"address_space": "local", "pool": "10.0.0.1/24"}]}"#,
        r#"{"version": 1, "pools": [{"address_space": "local", "pool": "10.0.0.0/24"},
                                    {"address_space": "local", "pool": "10.0.0.0/16"}]}"#,
        r#"{"version": 1, "pools": [{"address_space": "local", "pool": "10.0.0.0/24",
                                     "allocated": [["10.0.0.1", "10.0.1.1"]]}]}"#,
        r#"{"version": 1, "pools": [{"address_space": "local", "pool": "10.0.0.0/24",
                                     "allocated": [["10.0.0.0", "10.0.0.1"]]}]}"#,
        r#"{"version": 1, "pools": [{"address_space": "local", "pool": "fd00::/64",
                                     "allocated": [["fd00::1", "fd00::ffff:ffff"]]}]}"#,
    ];
    for text in cases {
        fs::write(&path, text).unwrap();
        let e = assert_err(
            try_open(dir.path(), serde_json::Value::Null),
            ErrorKind::Internal,
            "corrupt IPAM state file",
        );
        assert!(e.message.contains(path.to_str().unwrap()), "{}", e.message);
    }
    fs::write(&path, r#"{"version": 1, "pools": []}"#).unwrap();
    open(dir.path());
}

#[test]
fn a_pool_change_that_cannot_be_saved_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    let id = pool(&d, "10.70.0.0/24");
    assert_eq!(any(&d, &id).unwrap(), "10.70.0.1/24");
    // Put a non-empty directory where the snapshot goes: rename fails.
    let path = dir.path().join("ipam-state.json");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("blocker"), "").unwrap();
    let e = request_pool(&d, "", "10.71.0.0/24", "").unwrap_err();
    assert!(e.message.contains("ipam-state.json"), "{}", e.message);
    assert!(release_pool(&d, &id).is_err());
    // Address changes go to the journal, which still works.
    assert_eq!(any(&d, &id).unwrap(), "10.70.0.2/24");
    fs::remove_dir_all(&path).unwrap();
    // Nothing else changed: 10.71 not live, 10.70 still live.
    assert_err(request_pool(&d, "", "10.70.0.0/24", ""), ErrorKind::Conflict, "already live");
    pool(&d, "10.71.0.0/24");
    drop(d);
    let d = open(dir.path());
    assert_eq!(any(&d, &id).unwrap(), "10.70.0.3/24");
}

#[test]
fn a_journal_left_by_a_crash_is_replayed_and_folded() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let d = open(dir.path());
        id = pool(&d, "10.72.0.0/24");
        for _ in 0..10 {
            any(&d, &id).unwrap();
        }
        release(&d, &id, "10.72.0.4").unwrap();
        // No shutdown: the journal holds the 11 changes.
        assert_eq!(fs::read_to_string(dir.path().join("ipam-journal")).unwrap().lines().count(), 11);
    }
    let d = open(dir.path());
    assert_eq!(fs::metadata(dir.path().join("ipam-journal")).unwrap().len(), 0, "folded at load");
    assert_eq!(any(&d, &id).unwrap(), "10.72.0.4/24");
    assert_eq!(any(&d, &id).unwrap(), "10.72.0.11/24");
}

/// `persist = "replay"`: the state lives in memory, nothing is written
/// under the root, the capabilities ask the daemon to replay, and a reopen
/// starts empty (the daemon's replay fills it again).
#[test]
fn replay_mode_keeps_nothing_on_disk_and_asks_for_replay() {
    let dir = tempfile::tempdir().unwrap();
    let replay = serde_json::json!({ "persist": "replay" });
    let caps = |d: &Ipam| d.capabilities(IpamCapabilitiesRequest::default()).unwrap();
    let id;
    {
        let d = try_open(dir.path(), replay.clone()).unwrap();
        assert!(caps(&d).requires_request_replay);
        id = pool(&d, "10.73.0.0/24");
        gateway(&d, &id, "").unwrap();
        assert_eq!(any(&d, &id).unwrap(), "10.73.0.2/24");
        address(&d, &id, "10.73.0.9").unwrap();
        assert_err(address(&d, &id, "10.73.0.9"), ErrorKind::Conflict, "already in use");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written under the root");
    // A new driver knows nothing until the daemon replays; replaying the
    // same requests gives the same pool id and the same addresses.
    let d = try_open(dir.path(), replay).unwrap();
    assert_err(any(&d, &id), ErrorKind::NotFound, "not live");
    assert_eq!(pool(&d, "10.73.0.0/24"), id);
    assert_eq!(gateway(&d, &id, "10.73.0.1").unwrap(), "10.73.0.1/24");
    assert_eq!(address(&d, &id, "10.73.0.2").unwrap(), "10.73.0.2/24");
    assert_eq!(address(&d, &id, "10.73.0.9").unwrap(), "10.73.0.9/24");
    assert_eq!(any(&d, &id).unwrap(), "10.73.0.3/24", "replayed addresses are taken");
    assert_err(gateway(&d, &id, ""), ErrorKind::Conflict, "already has gateway 10.73.0.1");

    // "journal" is the default and persists by itself.
    for options in [serde_json::Value::Null, serde_json::json!({ "persist": "journal" })] {
        let j = tempfile::tempdir().unwrap();
        let d = try_open(j.path(), options).unwrap();
        assert!(!caps(&d).requires_request_replay);
        pool(&d, "10.74.0.0/24");
        assert!(j.path().join("ipam-state.json").exists());
    }
}

#[test]
fn an_unknown_persist_mode_is_refused_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [serde_json::json!("disk"), serde_json::json!("Replay"), serde_json::json!(1)] {
        let e = assert_err(
            try_open(dir.path(), serde_json::json!({ "persist": bad })),
            ErrorKind::InvalidArgument,
            "persist",
        );
        assert!(e.message.contains("options of driver \"default\""), "{}", e.message);
    }
    let e = assert_err(
        try_open(dir.path(), serde_json::json!({ "persist": "disk" })),
        ErrorKind::InvalidArgument,
        "persist",
    );
    assert!(e.message.contains(r#"option persist is "disk"; expected "journal""#), "{}", e.message);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
