//! The driver's state machine against a scripted `dmsetup`: every command
//! line it runs, in order, the record it keeps, and what it does with
//! recorded answers after failures and crashes (see `dmsetup_tests.rs`
//! for where the recorded outputs come from).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use super::*;
use crate::meta::Transaction;
use crate::runner::script::Script;

const POOL: &str = "berth-thinpool";
const NO_DEVICES: &str = "No devices found\n";

/// kubernetes' recorded pool status line, at transaction `tid`.
fn pool_line(tid: u64) -> String {
    format!(
        "0 209715200 thin-pool {tid} 441/524288 31424/1638400 - rw discard_passdown queue_if_no_space -\n"
    )
}

fn config() -> Config {
    Config {
        pool: POOL.into(),
        base_size: 10 << 30,
        fs: Some(Fs::Ext4),
        mkfs_args: vec![],
        mount_opts: vec![],
        min_free_percent: 10,
        lvm: None,
    }
}

/// The device name prefix a driver on `root` uses.
fn prefix_of(root: &Path) -> String {
    let m = root.canonicalize().unwrap().metadata().unwrap();
    let (major, minor) = split_dev(m.dev());
    format!("berth-{major}:{minor}-{}", m.ino())
}

struct Env {
    s: Arc<Script>,
    dir: tempfile::TempDir,
    prefix: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let prefix = prefix_of(dir.path());
        Env { s: Script::new(), dir, prefix }
    }

    fn name(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    fn dev(&self, id: &str) -> String {
        format!("/dev/mapper/{}", self.name(id))
    }

    fn mnt(&self, id: &str) -> String {
        self.dir.path().canonicalize().unwrap().join("mnt").join(id).display().to_string()
    }

    fn status(&self, tid: u64) -> &Self {
        self.s.ok(&["dmsetup", "status", POOL], &pool_line(tid));
        self
    }

    fn msg(&self, m: &str) -> &Self {
        self.s.ok(&["dmsetup", "message", POOL, "0", m], "");
        self
    }

    fn info(&self, out: &str) -> &Self {
        self.s.ok(&["dmsetup", "info", "-c", "--noheadings", "-o", "name,attr,open,segments,events"], out);
        self
    }

    fn activate(&self, id: &str, device: u32, sectors: u64, ro: bool) -> &Self {
        let table = format!("0 {sectors} thin /dev/mapper/{POOL} {device}");
        let name = self.name(id);
        let mut argv = vec!["dmsetup", "create", &name];
        if ro {
            argv.push("--readonly");
        }
        argv.extend(["--table", &table]);
        self.s.ok(&argv, "");
        self
    }

    fn deactivate(&self, id: &str) -> &Self {
        self.s.ok(&["dmsetup", "remove", &self.name(id)], "");
        self
    }

    fn mount(&self, id: &str, opts: &str) -> &Self {
        self.s.ok(&["mount", "-t", "ext4", "-o", opts, &self.dev(id), &self.mnt(id)], "");
        self
    }

    fn umount(&self, id: &str) -> &Self {
        self.s.ok(&["umount", &self.mnt(id)], "");
        self
    }

    /// The commands that make base layer `id` as device `device` at
    /// transaction `tid`.
    fn base(&self, id: &str, device: u32, tid: u64) -> &Self {
        self.status(tid).msg(&format!("create_thin {device}"));
        self.msg(&format!("set_transaction_id {tid} {}", tid + 1)).activate(id, device, 20971520, false);
        let dev = self.dev(id);
        self.s
            .ok(&["mkfs.ext4", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", &dev], "")
            .ok(&["tune2fs", "-c", "-1", "-i", "0", &dev], "");
        self.mount(id, "rw").umount(id).deactivate(id)
    }

    /// Opens a driver whose start sees the pool at `tid` and no devices.
    fn open(&self, tid: u64) -> DevmapperDriver {
        self.status(tid).info(NO_DEVICES);
        let d = DevmapperDriver::open(self.dir.path(), config(), Fs::Xfs, self.s.clone()).unwrap();
        assert_eq!(d.prefix, self.prefix);
        d
    }

    fn meta(&self) -> Meta {
        Meta::load(&self.dir.path().join("metadata.json")).unwrap().unwrap()
    }

    fn write_meta(&self, m: &Meta) {
        m.save(&self.dir.path().join("metadata.json")).unwrap();
    }
}

fn device(id: u32, parent: &str, initialized: bool) -> Device {
    Device {
        device_id: id,
        size: 10 << 30,
        parent: parent.into(),
        read_write: true,
        transaction_id: 1,
        initialized,
    }
}

#[test]
fn layers_live_through_exact_pool_transactions() {
    let e = Env::new();
    let d = e.open(0);
    e.base("base", 1, 0);
    d.create_rw(CreateRequest::new("base", "")).unwrap();
    e.s.assert_done();
    let m = e.meta();
    assert_eq!((m.transaction_id, m.open_transaction.clone(), m.filesystem.as_str()), (1, None, "ext4"));
    assert_eq!(m.devices["base"], Device { transaction_id: 1, ..device(1, "", true) });

    e.status(1).msg("create_snap 2 1").msg("set_transaction_id 1 2");
    d.create(CreateRequest::new("img", "base")).unwrap();
    assert!(!e.meta().devices["img"].read_write);

    // Two gets, one activation and mount; two puts, one unmount.
    e.activate("img", 2, 20971520, true).mount("img", "ro");
    let path = d.get(GetRequest::new("img")).unwrap().path;
    assert_eq!(path, format!("{}/rootfs", e.mnt("img")));
    d.get(GetRequest::new("img")).unwrap();
    d.put(PutRequest::new("img")).unwrap();
    e.s.assert_done();
    e.umount("img").deactivate("img");
    d.put(PutRequest::new("img")).unwrap();
    assert_eq!(d.put(PutRequest::new("img")).unwrap_err().kind, ErrorKind::FailedPrecondition);

    let err = d.remove(RemoveRequest::new("base")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    e.s.fail(&["dmsetup", "remove", &e.name("img")], 1, "Device does not exist.\nCommand failed.\n");
    e.msg("delete 2").msg("set_transaction_id 2 3");
    d.remove(RemoveRequest::new("img")).unwrap();
    e.deactivate("base").msg("delete 1").msg("set_transaction_id 3 4");
    d.remove(RemoveRequest::new("base")).unwrap();
    e.s.assert_done();
    let m = e.meta();
    assert_eq!((m.transaction_id, m.devices.len(), m.next_device_id), (4, 0, 2));

    // Ids are not reused until the counter comes round.
    e.base("again", 3, 4);
    d.create_rw(CreateRequest::new("again", "")).unwrap();
    e.s.assert_done();
}

#[test]
fn an_id_the_pool_already_has_is_skipped_for_the_session() {
    let e = Env::new();
    let d = e.open(7);
    e.status(7);
    e.s.fail(
        &["dmsetup", "message", POOL, "0", "create_thin 1"],
        1,
        "device-mapper: message ioctl on berth-thinpool  failed: File exists\nCommand failed.\n",
    );
    e.msg("create_thin 2").msg("set_transaction_id 7 8").activate("a", 2, 20971520, false);
    let dev = e.dev("a");
    e.s.ok(&["mkfs.ext4", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", &dev], "")
        .ok(&["tune2fs", "-c", "-1", "-i", "0", &dev], "");
    e.mount("a", "rw").umount("a").deactivate("a");
    d.create_rw(CreateRequest::new("a", "")).unwrap();
    assert_eq!(e.meta().devices["a"].device_id, 2);
    e.status(8).msg("create_snap 3 2").msg("set_transaction_id 8 9");
    d.create_rw(CreateRequest::new("b", "a")).unwrap();
    e.s.assert_done();
    assert_eq!(d.metadata(MetadataRequest::new("b")).unwrap().metadata["DeviceId"], "3");
}

#[test]
fn start_rolls_back_an_open_transaction_and_deletes_half_made_layers() {
    let e = Env::new();
    let mut m = Meta::new(POOL);
    m.transaction_id = 5;
    m.next_device_id = 4;
    m.filesystem = "ext4".into();
    m.devices.insert("done".into(), device(1, "", true));
    m.devices.insert("raw".into(), device(3, "", false));
    m.devices.insert("half".into(), device(4, "", true));
    m.open_transaction = Some(Transaction { transaction_id: 6, layer: "half".into(), device_id: 4 });
    e.write_meta(&m);
    // The pool never reached transaction 6: device 4 is deleted (it may
    // not exist), then base layer "raw", whose mkfs never finished.
    e.status(5).info(NO_DEVICES);
    e.s.fail(
        &["dmsetup", "message", POOL, "0", "delete 4"],
        1,
        "device-mapper: message ioctl on berth-thinpool  failed: No data available\nCommand failed.\n",
    );
    e.msg("delete 3").msg("set_transaction_id 5 6");
    let d = DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap();
    e.s.assert_done();
    let m = e.meta();
    assert_eq!(m.devices.keys().collect::<Vec<_>>(), ["done"]);
    assert_eq!((m.transaction_id, m.open_transaction), (6, None));
    assert!(d.exists(ExistsRequest::new("done")).unwrap() && !d.exists(ExistsRequest::new("half")).unwrap());
    assert_eq!(d.fs, Fs::Ext4, "the recorded filesystem wins over the default");
}

#[test]
fn start_completes_a_transaction_the_pool_closed_and_refuses_a_pool_ahead() {
    let e = Env::new();
    let mut m = Meta::new(POOL);
    m.transaction_id = 5;
    m.devices.insert("x".into(), device(2, "", true));
    m.open_transaction = Some(Transaction { transaction_id: 6, layer: "x".into(), device_id: 2 });
    e.write_meta(&m);
    e.status(6).info(NO_DEVICES);
    DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap();
    let m2 = e.meta();
    assert_eq!((m2.transaction_id, m2.open_transaction.is_none(), m2.devices.len()), (6, true, 1));

    e.write_meta(&m);
    e.status(9).info(NO_DEVICES);
    let err = DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("another program changes this pool"), "{err}");

    let other = Config { pool: "vg-other".into(), ..config() };
    let err = DevmapperDriver::open(e.dir.path(), other, Fs::Xfs, e.s.clone()).unwrap_err();
    assert!(err.message.contains("records the layers of thin pool \"berth-thinpool\""), "{err}");
    e.s.assert_done();
}

#[test]
fn start_takes_down_leftover_devices_of_this_root_only() {
    let e = Env::new();
    e.status(0).info(&format!(
        "{}:L--w:0:1:0\nberth-0:1-2-pool:L--w:1:1:0\n{}0-x:L--w:0:1:0\nVG00-root:L--w:1:1:0\n",
        e.name("left"),
        e.prefix
    ));
    e.s.fail(
        &["dmsetup", "remove", &e.name("left")],
        1,
        "device-mapper: remove ioctl on x  failed: Device or resource busy\n",
    );
    DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap();
    e.s.assert_done();
    // A missing pool says how to make one; a garbled info is internal.
    e.s.fail(&["dmsetup", "status", POOL], 1, "Device does not exist.\nCommand failed.\n");
    let err = DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains("dm.thinpooldev"), "{err}");
    e.status(0).info("VG00-tmp:L--w:1\n");
    let err = DevmapperDriver::open(e.dir.path(), config(), Fs::Xfs, e.s.clone()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    e.s.assert_done();
}

#[test]
fn creates_wait_for_a_healthy_pool_with_free_space() {
    let e = Env::new();
    let d = e.open(0);
    let cases = [
        ("0 209715200 thin-pool 0 10/524288 1600000/1638400 - rw discard_passdown queue_if_no_space -\n", ErrorKind::ResourceExhausted),
        ("0 209715200 thin-pool 0 520000/524288 10/1638400 - rw discard_passdown queue_if_no_space -\n", ErrorKind::ResourceExhausted),
        ("0 209715200 thin-pool 0 10/524288 10/1638400 - ro discard_passdown queue_if_no_space -\n", ErrorKind::Unavailable),
        ("0 209715200 thin-pool 0 10/524288 10/1638400 - out_of_data_space discard_passdown queue_if_no_space -\n", ErrorKind::ResourceExhausted),
        ("0 209715200 thin-pool 0 10/524288 10/1638400 - rw discard_passdown queue_if_no_space needs_check\n", ErrorKind::Unavailable),
        ("0 209715200 thin-pool Fail\n", ErrorKind::Unavailable),
    ];
    for (line, kind) in cases {
        e.s.ok(&["dmsetup", "status", POOL], line);
        let err = d.create_rw(CreateRequest::new("a", "")).unwrap_err();
        assert_eq!(err.kind, kind, "{line}");
        assert!(err.message.starts_with("create layer \"a\": "), "{err}");
    }
    e.s.assert_done();
    assert!(e.meta().devices.is_empty());
}

#[test]
fn a_failed_mkfs_deletes_the_new_device_in_its_own_transaction() {
    let e = Env::new();
    let d = e.open(0);
    e.status(0).msg("create_thin 1").msg("set_transaction_id 0 1").activate("a", 1, 20971520, false);
    e.s.fail(
        &["mkfs.ext4", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", &e.dev("a")],
        1,
        "mkfs.ext4: No space left on device while writing out and closing file system\n",
    );
    e.deactivate("a").msg("delete 1").msg("set_transaction_id 1 2");
    let err = d.create_rw(CreateRequest::new("a", "")).unwrap_err();
    e.s.assert_done();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted);
    let m = e.meta();
    assert_eq!((m.transaction_id, m.devices.len(), m.open_transaction), (2, 0, None));
}

#[test]
fn failed_pool_messages_leave_no_device_behind() {
    let e = Env::new();
    let d = e.open(3);
    // The create message fails: the transaction is abandoned, never closed.
    e.status(3);
    e.s.fail(
        &["dmsetup", "message", POOL, "0", "create_thin 1"],
        1,
        "device-mapper: message ioctl on berth-thinpool  failed: Invalid argument\nCommand failed\n",
    );
    assert_eq!(d.create_rw(CreateRequest::new("a", "")).unwrap_err().kind, ErrorKind::InvalidArgument);
    let m = e.meta();
    assert_eq!((m.transaction_id, m.open_transaction, m.devices.len()), (3, None, 0));
    // The closing message fails: the device is deleted again and the open
    // transaction stays recorded, for a start after a crash to roll back.
    e.status(3).msg("create_thin 2");
    e.s.fail(
        &["dmsetup", "message", POOL, "0", "set_transaction_id 3 4"],
        1,
        "device-mapper: message ioctl on berth-thinpool  failed: Invalid argument\nCommand failed\n",
    );
    e.msg("delete 2");
    assert!(d.create_rw(CreateRequest::new("a", "")).is_err());
    let m = e.meta();
    assert_eq!((m.transaction_id, m.devices.len()), (3, 0));
    assert_eq!(m.open_transaction.map(|t| (t.transaction_id, t.device_id)), Some((4, 2)));
    e.s.assert_done();
}

#[test]
fn a_bigger_child_grows_and_a_smaller_one_is_refused() {
    let e = Env::new();
    let d = e.open(0);
    e.base("base", 1, 0);
    d.create(CreateRequest::new("base", "")).unwrap();
    let mut req = CreateRequest::new("big", "base");
    req.storage_opt.insert("size".into(), "20G".into());
    e.status(1).msg("create_snap 2 1").msg("set_transaction_id 1 2").activate("big", 2, 41943040, false);
    e.mount("big", "rw");
    e.s.ok(&["resize2fs", &e.dev("big")], "");
    e.umount("big").deactivate("big");
    d.create_rw(req).unwrap();
    e.s.assert_done();
    let dev = &e.meta().devices["big"];
    assert_eq!((dev.size, dev.initialized), (20 << 30, true));
    let mut req = CreateRequest::new("small", "big");
    req.storage_opt.insert("size".into(), "10G".into());
    assert_eq!(d.create_rw(req).unwrap_err().kind, ErrorKind::InvalidArgument);
    let mut req = CreateRequest::new("odd", "big");
    req.storage_opt.insert("size".into(), "1000".into());
    assert_eq!(d.create_rw(req).unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn snapshotting_a_mounted_parent_suspends_it_and_status_reports_the_pool() {
    let e = Env::new();
    let d = e.open(0);
    e.base("p", 1, 0);
    d.create_rw(CreateRequest::new("p", "")).unwrap();
    e.activate("p", 1, 20971520, false).mount("p", "rw");
    d.get(GetRequest::new("p")).unwrap();
    e.status(1);
    e.s.ok(&["dmsetup", "suspend", &e.name("p")], "");
    e.msg("create_snap 2 1").msg("set_transaction_id 1 2");
    e.s.ok(&["dmsetup", "resume", &e.name("p")], "");
    d.create_rw(CreateRequest::new("c", "p")).unwrap();
    e.s.assert_done();

    e.status(2);
    e.s.ok(&["dmsetup", "table", POOL], "0 209715200 thin-pool 7:1 7:0 128 32768 1 skip_block_zeroing\n");
    let st: BTreeMap<String, String> =
        d.status(StatusRequest::default()).unwrap().status.into_iter().collect();
    assert_eq!(st["Pool Name"], POOL);
    assert_eq!(st["Pool Blocksize"], "65536");
    assert_eq!(st["Data Space Used"], (31424u64 * 65536).to_string());
    assert_eq!(st["Data Space Total"], (1638400u64 * 65536).to_string());
    assert_eq!(st["Metadata Space Used"], (441u64 * 4096).to_string());
    assert_eq!(st["Thin Pool Minimum Free Space"], (1638400u64 * 65536 / 10).to_string());
    assert_eq!((st["Pool Mode"].as_str(), st["Transaction Id"].as_str()), ("rw", "2"));
    assert_eq!(
        (st["Layers"].as_str(), st["In Use"].as_str(), st["Backing Filesystem"].as_str()),
        ("2", "1", "ext4")
    );

    // cleanup takes every mount and activation down.
    e.umount("p").deactivate("p");
    d.cleanup(CleanupRequest::default()).unwrap();
    e.s.assert_done();
}

#[test]
fn mount_and_deactivation_failures_keep_references_straight() {
    let e = Env::new();
    let d = e.open(0);
    e.base("a", 1, 0);
    d.create_rw(CreateRequest::new("a", "")).unwrap();
    // A failed mount deactivates again and takes no reference.
    e.activate("a", 1, 20971520, false);
    e.s.fail(
        &["mount", "-t", "ext4", "-o", "rw", &e.dev("a"), &e.mnt("a")],
        32,
        "mount: /x: wrong fs type, bad option, bad superblock\n",
    );
    e.deactivate("a");
    assert!(d.get(GetRequest::new("a")).is_err());
    assert_eq!(d.put(PutRequest::new("a")).unwrap_err().kind, ErrorKind::FailedPrecondition);
    // A busy device after the unmount: the reference goes, the error says so.
    e.activate("a", 1, 20971520, false).mount("a", "rw");
    d.get(GetRequest::new("a")).unwrap();
    e.umount("a");
    e.s.fail(
        &["dmsetup", "remove", &e.name("a")],
        1,
        "device-mapper: remove ioctl on x  failed: Device or resource busy\n",
    );
    let err = d.put(PutRequest::new("a")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("still active"), "{err}");
    assert_eq!(d.put(PutRequest::new("a")).unwrap_err().kind, ErrorKind::FailedPrecondition);
    e.s.assert_done();
    assert!(d.create(CreateRequest::new("a/b", "")).is_err());
    assert!(!d.exists(ExistsRequest::new("../a")).unwrap());
}

#[test]
fn start_skips_without_thin_targets_and_opens_with_them() {
    let e = Env::new();
    e.s.error(&["dmsetup", "targets"], std::io::ErrorKind::NotFound);
    let Err(err) = DevmapperDriver::start(e.dir.path(), config(), Fs::Xfs, e.s.clone(), e.dir.path()) else {
        panic!("dmsetup missing, yet started")
    };
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("dmsetup is not installed (dmsetup (lvm2))"), "{err}");
    e.s.ok(
        &["dmsetup", "targets"],
        "striped          v1.6.0\nlinear           v1.4.0\nerror            v1.5.0\n",
    );
    let init = DevmapperDriver::start(e.dir.path(), config(), Fs::Xfs, e.s.clone(), e.dir.path()).unwrap();
    let Init::Skipped(why) = init else { panic!("no thin-pool target, yet ready") };
    assert!(why.contains("no thin-pool target"), "{why}");
    e.s.ok(
        &["dmsetup", "targets"],
        "thin-pool        v1.22.0\nthin             v1.22.0\nlinear           v1.4.0\n",
    );
    e.status(0).info(NO_DEVICES);
    let init = DevmapperDriver::start(e.dir.path(), config(), Fs::Xfs, e.s.clone(), e.dir.path()).unwrap();
    let Init::Ready(d) = init else { panic!("thin targets present, yet skipped") };
    assert_eq!(d.fs, Fs::Ext4, "dm.fs wins over the host default");
    e.s.assert_done();
}

#[test]
fn on_this_machine_the_driver_declines_naming_what_is_missing() {
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    if misc.contains("device-mapper") {
        return; // a host with device-mapper
    }
    let dir = tempfile::tempdir().unwrap();
    let req = InitRequest::new("devicemapper", dir.path().to_str().unwrap(), dir.path().to_str().unwrap());
    match DevmapperDriver::new(req).unwrap() {
        Init::Skipped(why) => {
            assert!(why.contains("\"device-mapper\" is absent from /proc/misc and /proc/devices"), "{why}");
            if !Path::new("/dev/mapper/control").exists() {
                assert!(why.contains("/dev/mapper/control is missing"), "{why}");
            }
        }
        Init::Ready(_) => panic!("no device-mapper, yet the driver started"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a declining driver makes nothing");
}
