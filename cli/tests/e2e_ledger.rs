//! Acceptance 4: the resource ledger survives `kill -9` and crashes at
//! chosen points; restart reconciles.

mod common;

use std::time::Duration;

use common::{describe, World};

fn reconcile_resolved(w: &World) -> Vec<String> {
    let info = w.berth_json(&["info", "--format", "json"]);
    info["Berth"]["Reconcile"]["Resolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn volumes_survive_kill_9_and_interrupted_operations_are_reconciled() {
    let w = World::new("");
    let mut d = w.start();
    for name in ["v1", "v2", "v3"] {
        assert_eq!(w.berth_ok(&["volume", "create", name]).trim(), name);
    }
    d.kill9();
    assert!(w.socket.exists(), "kill -9 leaves the socket file behind");

    // Restart on the same root: the stale socket is replaced, each volume
    // is listed exactly once, and its data directory is there.
    let mut d = w.start();
    let mut names = w.volume_names();
    names.sort();
    assert_eq!(names, ["v1", "v2", "v3"]);
    for name in ["v1", "v2", "v3"] {
        assert!(w.root.join("volumes").join(name).join("_data").is_dir(), "{name}/_data");
    }
    d.kill9();

    // A crash after the driver created the volume but before the daemon
    // recorded it: the create is rolled back at the next start.
    let mut d = w.start_with(&[], &[("BERTH_CRASH_AT", "volume.create:after-driver")]);
    let out = w.berth(&["volume", "create", "x"]);
    assert!(!out.status.success(), "create must fail when the daemon dies: {}", describe(&out));
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()), "berthd must have aborted");
    assert!(w.root.join("volumes/x").exists(), "the driver made x before the crash");

    let mut d2 = w.start();
    let names = w.volume_names();
    assert!(!names.contains(&"x".to_string()), "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!w.root.join("volumes/x").exists(), "reconcile must remove the driver's half");
    let resolved = reconcile_resolved(&w);
    assert!(
        resolved.iter().any(|l| l.contains("rolled back") && l.contains("\"x\"")),
        "reconcile report: {resolved:?}"
    );
    d2.kill9();
    drop(d);

    // A crash after the remove intent was recorded: restart finishes it.
    let mut d = w.start_with(&[], &[("BERTH_CRASH_AT", "volume.remove:after-intent")]);
    let out = w.berth(&["volume", "rm", "v1"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()));

    let _d = w.start();
    let mut names = w.volume_names();
    names.sort();
    assert_eq!(names, ["v2", "v3"]);
    assert!(!w.root.join("volumes/v1").exists(), "the removal must be finished");
    let resolved = reconcile_resolved(&w);
    assert!(
        resolved.iter().any(|l| l.contains("finished interrupted removal") && l.contains("\"v1\"")),
        "reconcile report: {resolved:?}"
    );
    let human = w.berth_ok(&["info"]);
    assert!(human.contains("Reconciled at start-up:"), "{human}");
}
