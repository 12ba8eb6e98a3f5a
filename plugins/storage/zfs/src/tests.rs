//! The driver's state machine against a scripted `zfs`: every command
//! line it runs, in order, and what it does with recorded answers (see
//! `cmd_tests.rs` for where the recorded outputs come from).

use std::sync::Arc;

use super::*;
use crate::runner::script::Script;

const FS: &str = "zpool-docker";

/// The listing of a parent dataset with no layers.
const EMPTY: &str = "zpool-docker\t-\toff\t0\n";

/// A driver on a fresh temp root whose start listed `layers` and
/// `snapshots` and destroyed nothing.
fn open_with(script: &Arc<Script>, layers: &str, snapshots: &str) -> (ZfsDriver, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    script
        .ok(
            &[
                "zfs",
                "list",
                "-Hp",
                "-r",
                "-d",
                "1",
                "-t",
                "filesystem",
                "-o",
                "name,origin,readonly,quota",
                FS,
            ],
            layers,
        )
        .ok(
            &["zfs", "list", "-Hp", "-r", "-d", "2", "-t", "snapshot", "-o", "name,berth:child", FS],
            snapshots,
        );
    let driver = ZfsDriver::open(dir.path(), FS, script.clone()).unwrap();
    (driver, dir)
}

fn open(script: &Arc<Script>) -> (ZfsDriver, tempfile::TempDir) {
    open_with(script, EMPTY, "")
}

fn graph(d: &ZfsDriver, id: &str) -> String {
    d.root.join("graph").join(id).display().to_string()
}

#[test]
fn start_reads_layers_and_destroys_debris_snapshots() {
    let s = Script::new();
    let dir = tempfile::tempdir().unwrap();
    s.ok(
        &["zfs", "list", "-Hp", "-r", "-d", "1", "-t", "filesystem", "-o", "name,origin,readonly,quota", FS],
        "zpool-docker\t-\toff\t0\nzpool-docker/a\t-\ton\t0\nzpool-docker/b\tzpool-docker/a@b\toff\t1024\n",
    )
    .ok(
        &["zfs", "list", "-Hp", "-r", "-d", "2", "-t", "snapshot", "-o", "name,berth:child", FS],
        // b's origin; a crash between snapshot and clone of c; a crash
        // after destroying d but before its origin; an operator snapshot.
        "zpool-docker/a@b\tb\nzpool-docker/a@c\tc\nzpool-docker/b@d\td\nzpool-docker/a@daily\t-\n",
    )
    .ok(&["zfs", "destroy", "zpool-docker/a@c"], "")
    .fail(
        &["zfs", "destroy", "zpool-docker/b@d"],
        1,
        "cannot destroy 'zpool-docker/b@d': dataset is busy\n",
    );
    let d = ZfsDriver::open(dir.path(), FS, s.clone()).unwrap();
    s.assert_done();
    assert!(d.exists(ExistsRequest::new("a")).unwrap());
    let meta = d.metadata(MetadataRequest::new("b")).unwrap().metadata;
    assert_eq!(meta["Parent"], "a");
    assert_eq!(meta["ReadWrite"], "true");
    assert_eq!(meta["Quota"], "1024");
    assert_eq!(meta["Origin"], "zpool-docker/a@b");
    assert_eq!(d.metadata(MetadataRequest::new("a")).unwrap().metadata["ReadWrite"], "false");
    assert!(dir.path().join("graph").is_dir());
}

#[test]
fn a_missing_parent_dataset_or_garbled_listing_fails_start() {
    let s = Script::new();
    let dir = tempfile::tempdir().unwrap();
    s.fail(
        &["zfs", "list", "-Hp", "-r", "-d", "1", "-t", "filesystem", "-o", "name,origin,readonly,quota", FS],
        1,
        "cannot open 'zpool-docker': dataset does not exist\n",
    );
    let e = ZfsDriver::open(dir.path(), FS, s.clone()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("zfs create -o mountpoint=legacy zpool-docker"), "{e}");
    s.ok(
        &["zfs", "list", "-Hp", "-r", "-d", "1", "-t", "filesystem", "-o", "name,origin,readonly,quota", FS],
        "NAME\tORIGIN\nzpool-docker\t-\n",
    );
    let e = ZfsDriver::open(dir.path(), FS, s.clone()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("tab-separated fields"), "{e}");
    let e = ZfsDriver::open(dir.path(), "bad@name", s.clone()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    s.assert_done();
}

#[test]
fn create_get_put_remove_run_exactly_these_commands() {
    let s = Script::new();
    let (d, _dir) = open(&s);
    s.ok(&["zfs", "create", "-o", "mountpoint=legacy", "zpool-docker/base"], "");
    d.create_rw(CreateRequest::new("base", "")).unwrap();
    s.ok(&["zfs", "snapshot", "-o", "berth:child=img", "zpool-docker/base@img"], "").ok(
        &[
            "zfs",
            "clone",
            "-o",
            "mountpoint=legacy",
            "-o",
            "readonly=on",
            "-o",
            "quota=268435456",
            "zpool-docker/base@img",
            "zpool-docker/img",
        ],
        "",
    );
    let mut req = CreateRequest::new("img", "base");
    req.storage_opt.insert("Size".into(), "256M".into());
    d.create(req).unwrap();
    s.assert_done();

    // Two gets, one mount; two puts, one umount.
    let target = graph(&d, "img");
    s.ok(&["mount", "-t", "zfs", "-o", "ro", "zpool-docker/img", &target], "");
    assert_eq!(d.get(GetRequest::new("img")).unwrap().path, target);
    assert_eq!(d.get(GetRequest::new("img")).unwrap().path, target);
    assert!(Path::new(&target).is_dir());
    d.put(PutRequest::new("img")).unwrap();
    s.assert_done();
    s.ok(&["umount", &target], "");
    d.put(PutRequest::new("img")).unwrap();
    assert!(!Path::new(&target).exists(), "the mount point goes with the last put");
    let e = d.put(PutRequest::new("img")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);

    let e = d.remove(RemoveRequest::new("base")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("\"img\""), "{e}");
    s.ok(&["zfs", "destroy", "-r", "zpool-docker/img"], "")
        .ok(&["zfs", "destroy", "zpool-docker/base@img"], "");
    d.remove(RemoveRequest::new("img")).unwrap();
    s.ok(&["zfs", "destroy", "-r", "zpool-docker/base"], "");
    d.remove(RemoveRequest::new("base")).unwrap();
    s.assert_done();
    assert!(!d.exists(ExistsRequest::new("base")).unwrap());
    let e = d.remove(RemoveRequest::new("base")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[test]
fn a_stale_snapshot_is_destroyed_and_the_snapshot_retried() {
    let s = Script::new();
    let (d, _dir) = open_with(&s, "zpool-docker\t-\toff\t0\nzpool-docker/p\t-\ton\t0\n", "");
    s.fail(
        &["zfs", "snapshot", "-o", "berth:child=c", "zpool-docker/p@c"],
        1,
        "cannot create snapshot 'zpool-docker/p@c': dataset already exists\n",
    )
    .ok(&["zfs", "destroy", "zpool-docker/p@c"], "")
    .ok(&["zfs", "snapshot", "-o", "berth:child=c", "zpool-docker/p@c"], "")
    .ok(&["zfs", "clone", "-o", "mountpoint=legacy", "zpool-docker/p@c", "zpool-docker/c"], "");
    d.create_rw(CreateRequest::new("c", "p")).unwrap();
    s.assert_done();
    assert_eq!(d.metadata(MetadataRequest::new("c")).unwrap().metadata["Parent"], "p");
}

#[test]
fn a_failed_clone_takes_its_snapshot_back_and_records_nothing() {
    let s = Script::new();
    let (d, _dir) = open_with(&s, "zpool-docker\t-\toff\t0\nzpool-docker/p\t-\ton\t0\n", "");
    s.ok(&["zfs", "snapshot", "-o", "berth:child=c", "zpool-docker/p@c"], "")
        .fail(
            &["zfs", "clone", "-o", "mountpoint=legacy", "zpool-docker/p@c", "zpool-docker/c"],
            1,
            "cannot create 'zpool-docker/c': out of space\n",
        )
        .ok(&["zfs", "destroy", "zpool-docker/p@c"], "");
    let e = d.create_rw(CreateRequest::new("c", "p")).unwrap_err();
    s.assert_done();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(e.message.starts_with("create layer \"c\": `zfs clone"), "{e}");
    assert!(!d.exists(ExistsRequest::new("c")).unwrap());
    // A base create that zfs refuses: the kind is the tool's.
    s.fail(
        &["zfs", "create", "-o", "mountpoint=legacy", "-o", "readonly=on", "zpool-docker/x"],
        1,
        "cannot create 'zpool-docker/x': dataset already exists\n",
    );
    assert_eq!(d.create(CreateRequest::new("x", "")).unwrap_err().kind, ErrorKind::AlreadyExists);
    assert!(!d.exists(ExistsRequest::new("x")).unwrap());
}

#[test]
fn removing_a_mounted_layer_unmounts_it_first_and_tolerates_gone_datasets() {
    let s = Script::new();
    let (d, _dir) = open_with(
        &s,
        "zpool-docker\t-\toff\t0\nzpool-docker/p\t-\ton\t0\nzpool-docker/c\tzpool-docker/p@c\toff\t0\n",
        "zpool-docker/p@c\tc\n",
    );
    let target = graph(&d, "c");
    s.ok(&["mount", "-t", "zfs", "zpool-docker/c", &target], "");
    d.get(GetRequest::new("c")).unwrap();
    s.ok(&["umount", &target], "")
        .fail(
            &["zfs", "destroy", "-r", "zpool-docker/c"],
            1,
            "cannot open 'zpool-docker/c': dataset does not exist\n",
        )
        .fail(
            &["zfs", "destroy", "zpool-docker/p@c"],
            1,
            "cannot destroy 'zpool-docker/p@c': dataset is busy\n",
        );
    let e = d.remove(RemoveRequest::new("c")).unwrap_err();
    s.assert_done();
    // The layer is gone; the left snapshot is reported and swept later.
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("origin snapshot zpool-docker/p@c is left"), "{e}");
    assert!(!d.exists(ExistsRequest::new("c")).unwrap());
}

#[test]
fn a_busy_unmount_keeps_the_reference_and_cleanup_unmounts_everything() {
    let s = Script::new();
    let (d, _dir) =
        open_with(&s, "zpool-docker\t-\toff\t0\nzpool-docker/a\t-\toff\t0\nzpool-docker/b\t-\toff\t0\n", "");
    let (ta, tb) = (graph(&d, "a"), graph(&d, "b"));
    s.ok(&["mount", "-t", "zfs", "zpool-docker/a", &ta], "")
        .ok(&["mount", "-t", "zfs", "zpool-docker/b", &tb], "");
    d.get(GetRequest::new("a")).unwrap();
    d.get(GetRequest::new("b")).unwrap();
    s.fail(&["umount", &ta], 32, &format!("umount: {ta}: target is busy.\n"));
    assert_eq!(d.put(PutRequest::new("a")).unwrap_err().kind, ErrorKind::Conflict);
    // Still referenced: cleanup unmounts both; "not mounted" counts as done.
    s.fail(&["umount", &ta], 32, &format!("umount: {ta}: not mounted.\n")).ok(&["umount", &tb], "");
    d.cleanup(CleanupRequest::default()).unwrap();
    s.assert_done();
    assert_eq!(d.put(PutRequest::new("b")).unwrap_err().kind, ErrorKind::FailedPrecondition);
}

#[test]
fn a_failed_mount_takes_no_reference() {
    let s = Script::new();
    let (d, _dir) = open_with(&s, "zpool-docker\t-\toff\t0\nzpool-docker/a\t-\toff\t0\n", "");
    let ta = graph(&d, "a");
    s.fail(
        &["mount", "-t", "zfs", "zpool-docker/a", &ta],
        2,
        "filesystem 'zpool-docker/a' cannot be mounted, unable to open the dataset\n",
    );
    assert_eq!(d.get(GetRequest::new("a")).unwrap_err().kind, ErrorKind::Internal);
    assert!(!Path::new(&ta).exists());
    assert_eq!(d.put(PutRequest::new("a")).unwrap_err().kind, ErrorKind::FailedPrecondition);
    s.error(&["mount", "-t", "zfs", "zpool-docker/a", &ta], std::io::ErrorKind::TimedOut);
    assert_eq!(d.get(GetRequest::new("a")).unwrap_err().kind, ErrorKind::Timeout);
    s.assert_done();
}

#[test]
fn status_reports_pool_and_parent_dataset_figures() {
    let s = Script::new();
    let (d, _dir) = open(&s);
    s.ok(
        &["zpool", "list", "-Hp", "-o", "name,health,size,allocated,free", FS],
        "zpool-docker\tONLINE\t107374182400\t249856\t107373932544\n",
    )
    .ok(
        &["zfs", "get", "-Hp", "-o", "property,value", "used,available,quota,compression", FS],
        "used\t249856\navailable\t103498395648\nquota\t0\ncompression\toff\n",
    );
    let st: BTreeMap<String, String> =
        d.status(StatusRequest::default()).unwrap().status.into_iter().collect();
    assert_eq!(st["Zpool"], "zpool-docker");
    assert_eq!(st["Zpool Health"], "ONLINE");
    assert_eq!(st["Parent Dataset"], "zpool-docker");
    assert_eq!(st["Space Used By Parent"], "249856");
    assert_eq!(st["Space Available"], "103498395648");
    assert_eq!(st["Parent Quota"], "no");
    assert_eq!(st["Compression"], "off");
    assert_eq!(st["Layers"], "0");
    // A failing tool shows in the value; status itself never fails.
    s.error(
        &["zpool", "list", "-Hp", "-o", "name,health,size,allocated,free", FS],
        std::io::ErrorKind::NotFound,
    )
    .ok(
        &["zfs", "get", "-Hp", "-o", "property,value", "used,available,quota,compression", FS],
        "used\t1.5G\n",
    );
    let st: BTreeMap<String, String> =
        d.status(StatusRequest::default()).unwrap().status.into_iter().collect();
    assert!(st["Zpool Health"].starts_with("unknown (cannot run `zpool list"), "{}", st["Zpool Health"]);
    assert!(st["Space Used By Parent"].starts_with("unknown (cannot read the output"), "{st:?}");
    s.assert_done();
}

#[test]
fn bad_ids_and_options_are_refused_before_any_command() {
    let s = Script::new();
    let (d, _dir) = open(&s);
    for id in ["", ".", "a/b", "a@b", "a b", &"x".repeat(200)] {
        let e = d.create(CreateRequest::new(id, "")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{id:?}");
        assert!(!d.exists(ExistsRequest::new(id)).unwrap());
    }
    let mut req = CreateRequest::new("a", "");
    req.storage_opt.insert("inodes".into(), "5".into());
    assert_eq!(d.create(req).unwrap_err().kind, ErrorKind::InvalidArgument);
    let mut req = CreateRequest::new("a", "");
    req.storage_opt.insert("size".into(), "0".into());
    assert_eq!(d.create(req).unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(d.create(CreateRequest::new("a", "nope")).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(d.get(GetRequest::new("nope")).unwrap_err().kind, ErrorKind::NotFound);
    assert!(s.calls().len() == 2, "only the start listings ran: {:?}", s.calls());
}

#[test]
fn options_are_typed() {
    let mut req = InitRequest::new("zfs", "/nonexistent", "/nonexistent-run");
    req.options = serde_json::json!({ "zfs.fsname": "tank/berth" });
    let o: ZfsOptions = req.decode_options().unwrap();
    assert_eq!(o.fsname.as_deref(), Some("tank/berth"));
    req.options = serde_json::json!({ "fsname": "tank" });
    assert_eq!(req.decode_options::<ZfsOptions>().unwrap_err().kind, ErrorKind::InvalidArgument);
    assert!(validate_fsname("tank/berth").is_ok());
    for bad in ["", "/tank", "tank//x", "tank/x@snap", "9tank"] {
        assert!(validate_fsname(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn on_this_machine_the_driver_declines_naming_what_is_missing() {
    if Path::new("/dev/zfs").exists() {
        return; // a host with ZFS: covered by the conformance suite instead
    }
    let dir = tempfile::tempdir().unwrap();
    let req = InitRequest::new("zfs", dir.path().to_str().unwrap(), dir.path().to_str().unwrap());
    match ZfsDriver::new(req).unwrap() {
        Init::Skipped(why) => {
            assert!(why.contains("/dev/zfs is missing"), "{why}");
            assert!(why.contains("\"zfs\" is absent from /proc/filesystems"), "{why}");
        }
        Init::Ready(_) => panic!("no /dev/zfs, yet the driver started"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a declining driver makes nothing");
}
