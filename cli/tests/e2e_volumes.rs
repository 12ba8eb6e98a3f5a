//! Volumes end to end over the real `local` driver: filters, prune, mount
//! references, and their survival across `kill -9`.

mod common;

use std::time::Duration;

use common::{describe, World};

fn names(w: &World, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "--format", "json"];
    for f in filters {
        args.extend(["--filter", f]);
    }
    let v = w.berth_json(&args);
    v.as_array().unwrap().iter().map(|v| v["Name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn filters_prune_and_mount_references_work_through_the_cli() {
    let w = World::new("");
    let _d = w.start();
    w.berth_ok(&["volume", "create", "--label", "tier=db", "db"]);
    w.berth_ok(&["volume", "create", "web"]);
    let created = w.berth_json(&["volume", "create", "--format", "json", "cache"]);
    assert_eq!(created["Driver"], "local");
    assert_eq!(created["Scope"], "local");

    let m = w.berth_json(&["volume", "mount", "web", "--format", "json"]);
    let id = m["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(m["Mountpoint"].as_str().unwrap(), w.root.join("volumes/web/_data").to_str().unwrap());
    assert_eq!(names(&w, &["label=tier=db"]), ["db"]);
    assert_eq!(names(&w, &["dangling=false"]), ["web"]);
    assert_eq!(names(&w, &["dangling=true", "name=^c"]), ["cache"]);
    let out = w.berth(&["volume", "ls", "--filter", "colour=red"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid filter 'colour'"), "{}", describe(&out));

    // In use: refused, force or not.
    for args in [&["volume", "rm", "web"][..], &["volume", "rm", "-f", "web"]] {
        let out = w.berth(args);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use"), "{}", describe(&out));
    }
    let inspect = w.berth_json(&["volume", "inspect", "web"]);
    assert_eq!(inspect[0]["UsageData"]["RefCount"], 1);

    // Prune: anonymous only by default, everything unused with --all.
    let report = w.berth_json(&["volume", "prune", "--force", "--format", "json"]);
    assert_eq!(report["VolumesDeleted"], serde_json::json!([]));
    std::fs::write(w.root.join("volumes/cache/_data/blob"), vec![7u8; 4096]).unwrap();
    let report =
        w.berth_json(&["volume", "prune", "--all", "--force", "--filter", "label!=tier", "--format", "json"]);
    assert_eq!(report["VolumesDeleted"], serde_json::json!(["cache"]));
    assert_eq!(report["SpaceReclaimed"], 4096);
    assert_eq!(names(&w, &[]), ["db", "web"]);

    // Release, then removal works; unmounting twice is not-found.
    w.berth_ok(&["volume", "unmount", "web", &id]);
    let out = w.berth(&["volume", "unmount", "web", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("(not_found)"), "{}", describe(&out));
    w.berth_ok(&["volume", "rm", "web", "db"]);
    assert!(names(&w, &[]).is_empty());
}

#[test]
fn mount_references_survive_kill_9_and_an_interrupted_mount_is_rolled_back() {
    let w = World::new("");
    let mut d = w.start();
    w.berth_ok(&["volume", "create", "shared"]);
    w.berth_ok(&["volume", "mount", "shared", "--id", "user-a"]);
    w.berth_ok(&["volume", "mount", "shared", "--id", "user-b"]);
    d.kill9();

    // The daemon dies after the driver mounted but before it recorded.
    let mut d = w.start_with(&[], &[("BERTH_CRASH_AT", "volume.mount:after-driver")]);
    let out = w.berth(&["volume", "mount", "shared", "--id", "user-c"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()));
    let mounts = std::fs::read_to_string(w.root.join("volumes/shared/mounts.json")).unwrap();
    assert!(mounts.contains("user-c"), "the driver took user-c before the crash: {mounts}");

    let _d = w.start();
    let inspect = w.berth_json(&["volume", "inspect", "shared"]);
    assert_eq!(inspect[0]["UsageData"]["RefCount"], 2, "{inspect}");
    let mounts = std::fs::read_to_string(w.root.join("volumes/shared/mounts.json")).unwrap();
    assert!(!mounts.contains("user-c"), "reconcile released user-c in the driver: {mounts}");
    let info = w.berth_json(&["info", "--format", "json"]);
    let resolved = info["Berth"]["Reconcile"]["Resolved"].to_string();
    assert!(resolved.contains("rolled back interrupted mount user-c"), "{resolved}");
    for id in ["user-a", "user-b"] {
        w.berth_ok(&["volume", "unmount", "shared", id]);
    }
    w.berth_ok(&["volume", "rm", "shared"]);
}

/// Mount points at or under `path` in this process's mount table.
fn mounts_at(path: &std::path::Path) -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    table.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| m == p)).count()
}

#[test]
fn a_tmpfs_volume_is_mounted_once_across_kill_9_and_unmounted_with_its_last_reference() {
    let w = World::new("");
    let data = w.root.join("volumes/scratch/_data");
    let mut d = w.start();
    w.berth_ok(&[
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=4m",
        "scratch",
    ]);
    assert_eq!(mounts_at(&data), 0, "nothing is mounted before the first user");
    w.berth_ok(&["volume", "mount", "scratch", "--id", "one"]);
    w.berth_ok(&["volume", "mount", "scratch", "--id", "two"]);
    assert_eq!(mounts_at(&data), 1, "two users share one backing mount");
    std::fs::write(data.join("kept"), b"still here").unwrap();
    d.kill9();

    // A crash in the middle of a third mount, then a clean restart.
    let mut d = w.start_with(&[], &[("BERTH_CRASH_AT", "volume.mount:after-driver")]);
    assert!(!w.berth(&["volume", "mount", "scratch", "--id", "three"]).status.success());
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()));
    let _d = w.start();
    let inspect = w.berth_json(&["volume", "inspect", "scratch"]);
    assert_eq!(inspect[0]["UsageData"]["RefCount"], 2, "{inspect}");
    assert_eq!(inspect[0]["Status"]["refs"], 2, "the driver agrees: {inspect}");
    assert_eq!(mounts_at(&data), 1, "never mounted twice");
    assert_eq!(std::fs::read(data.join("kept")).unwrap(), b"still here");

    w.berth_ok(&["volume", "unmount", "scratch", "one"]);
    assert_eq!(mounts_at(&data), 1, "one user left");
    w.berth_ok(&["volume", "unmount", "scratch", "two"]);
    assert_eq!(mounts_at(&data), 0, "the backing mount goes with the last reference");
    w.berth_ok(&["volume", "rm", "scratch"]);
}
