//! Command lines and parsers, against recorded `dmsetup` outputs.
//!
//! Where each recorded output comes from:
//!
//! * `STATUS_NAMED`, `TABLE_NAMED`: `dmsetup status docker-8\:1-268480-pool`
//!   and `dmsetup table` of it, recorded in kubernetes'
//!   `docs/proposals/disk-accounting.md` (data block size 128 sectors,
//!   31424 of 1638400 data blocks used).
//! * `STATUS_DOCS`, `STATUS_DIRECT_LVM`, `TABLE_DIRECT_LVM`: Docker's
//!   "Use the Device Mapper storage driver" page, resizing a loop-lvm and a
//!   direct-lvm pool (`dmsetup status | grep pool`, `dmsetup table ...`).
//! * `STATUS_ATOMIC_RW`, `STATUS_ATOMIC_RO`: `dmsetup status` on Fedora 22
//!   Atomic (kernel 4.0, no needs_check field), before and after its pool
//!   went read-only, from the Project Atomic blog "Running Atomic Host
//!   live" (2015).
//! * `STATUS_INSIGHTS`, `INFO_INSIGHTS`: RedHatInsights/insights-core
//!   `insights/parsers/tests/test_dmsetup.py` (sosreport captures): a
//!   pool with transaction id 441, thin devices, a broken snapshot, and
//!   `dmsetup info -C` rows, restated here in the `-c --noheadings`
//!   `:`-separated form this driver asks for.
//! * `TARGETS`: `dmsetup targets` in a cryptsetup test run on 5.14-rc2,
//!   posted to linux-block ("use regular gendisk registration in device
//!   mapper", 2021-07-28).
//! * `NO_KERNEL_DM`: what dmsetup 1.02.185 prints on the machine this
//!   driver was written on, whose kernel has no device-mapper.
//! * message failures: libdevmapper's `device-mapper: message ioctl on
//!   <name>  failed: <strerror>` / `Command failed.` (the format
//!   recorded in the kernel's dm-dust.rst), with the errno the thin-pool
//!   target returns (`EEXIST` for a used id, `ENODATA` for an unknown one).

use super::*;

const STATUS_NAMED: &str =
    "0 209715200 thin-pool 37 441/524288 31424/1638400 - rw discard_passdown queue_if_no_space -\n";
const TABLE_NAMED: &str = "0 209715200 thin-pool 7:1 7:0 128 32768 1 skip_block_zeroing\n";
const STATUS_DOCS: &str = "docker-8:1-123141-pool: 0 209715200 thin-pool 91 422/524288 18338/1638400 - rw \
discard_passdown queue_if_no_space -\n";
const STATUS_DIRECT_LVM: &str = "docker-253:17-1835016-pool: 0 96460800 thin-pool 51593 6270/1048576 \
701943/753600 - rw no_discard_passdown queue_if_no_space\n";
const TABLE_DIRECT_LVM: &str = "0 96460800 thin-pool 252:0 252:1 128 32768 1 skip_block_zeroing\n";
const STATUS_ATOMIC_RW: &str = "docker-253:0-278707-pool: 0 209715200 thin-pool 1 179/524288 4664/1638400 - \
rw discard_passdown queue_if_no_space \n";
const STATUS_ATOMIC_RO: &str = "docker-253:0-278707-pool: 0 209715200 thin-pool 3 224/524288 8633/1638400 - \
ro discard_passdown queue_if_no_space \n";
const STATUS_INSIGHTS: &str = "appsvg-lvapps_docker: 0 104857600 thin-pool 441 697/2048 20663/102400 - rw \
no_discard_passdown queue_if_no_space -\n";
const THIN_INSIGHTS: &str = "docker-253:10-1234567-0df13579: 0 20971520 thin 1922048 20971519\n";
const SNAPSHOT_INVALID: &str = "rootvg-varvol: 0 18874368 snapshot Invalid\n";
const INFO_INSIGHTS: &str =
    "VG00-tmp:L--w:1:1:0\nVG00-var:L--w:1:2:0\ndocker-253:10-1234567-0df13579:L--w:0:1:3\n";
const TARGETS: &str = "thin-pool        v1.22.0\nthin             v1.22.0\nzero             v1.1.0\n\
mirror           v1.14.0\nsnapshot-merge   v1.5.0\nsnapshot-origin  v1.9.0\nsnapshot         v1.16.0\n\
multipath        v1.14.0\ncrypt            v1.23.0\nstriped          v1.6.0\nlinear           v1.4.0\n\
error            v1.5.0\n";
const NO_KERNEL_DM: &str = "/dev/mapper/control: open failed: No such device\n\
Failure to communicate with kernel device-mapper driver.\n\
Check that device-mapper is available in the kernel.\n\
Incompatible libdevmapper 1.02.185 (2022-05-18) and kernel driver (unknown version).\n\
Command failed.\n";

fn argv(cmd: Cmd) -> String {
    cmd.argv.join(" | ")
}

#[test]
fn every_command_line_is_exact() {
    assert_eq!(argv(status("pool")), "dmsetup | status | pool");
    assert_eq!(argv(table("pool")), "dmsetup | table | pool");
    assert_eq!(argv(targets()), "dmsetup | targets");
    assert_eq!(argv(info_all()), "dmsetup | info | -c | --noheadings | -o | name,attr,open,segments,events");
    assert_eq!(argv(message("pool", &create_thin(7))), "dmsetup | message | pool | 0 | create_thin 7");
    assert_eq!(create_snap(8, 7), "create_snap 8 7");
    assert_eq!(delete(8), "delete 8");
    assert_eq!(set_transaction_id(41, 42), "set_transaction_id 41 42");
    assert_eq!(
        argv(activate("berth-8:1-9-abc", "berth-thinpool", 7, 10 << 30, false)),
        "dmsetup | create | berth-8:1-9-abc | --table | 0 20971520 thin /dev/mapper/berth-thinpool 7"
    );
    assert_eq!(
        argv(activate("n", "p", 3, 1 << 20, true)),
        "dmsetup | create | n | --readonly | --table | 0 2048 thin /dev/mapper/p 3"
    );
    assert_eq!(argv(deactivate("n")), "dmsetup | remove | n");
    assert_eq!(argv(suspend("n")), "dmsetup | suspend | n");
    assert_eq!(argv(resume("n")), "dmsetup | resume | n");
    let extra = vec!["-b".to_string(), "4096".to_string()];
    assert_eq!(
        argv(mkfs(Fs::Ext4, "/dev/mapper/n", &extra)),
        "mkfs.ext4 | -E | nodiscard,lazy_itable_init=0,lazy_journal_init=0 | -b | 4096 | /dev/mapper/n"
    );
    assert_eq!(argv(mkfs(Fs::Xfs, "/dev/mapper/n", &[])), "mkfs.xfs | /dev/mapper/n");
    assert_eq!(mkfs(Fs::Xfs, "d", &[]).timeout.as_secs(), 600);
    assert_eq!(argv(tune2fs("/dev/mapper/n")), "tune2fs | -c | -1 | -i | 0 | /dev/mapper/n");
    let m = Path::new("/r/mnt/a");
    assert_eq!(
        argv(mount(Fs::Ext4, "/dev/mapper/n", m, true, &[])),
        "mount | -t | ext4 | -o | ro | /dev/mapper/n | /r/mnt/a"
    );
    let opts = vec!["discard".to_string()];
    assert_eq!(
        argv(mount(Fs::Xfs, "/dev/mapper/n", m, false, &opts)),
        "mount | -t | xfs | -o | rw,nouuid,discard | /dev/mapper/n | /r/mnt/a"
    );
    assert_eq!(argv(umount(m)), "umount | /r/mnt/a");
    assert_eq!(argv(grow(Fs::Ext4, "/dev/mapper/n", m)), "resize2fs | /dev/mapper/n");
    assert_eq!(argv(grow(Fs::Xfs, "/dev/mapper/n", m)), "xfs_growfs | /r/mnt/a");
}

#[test]
fn pool_status_lines_parse_with_and_without_a_name() {
    let s = parse_pool_status(STATUS_NAMED).unwrap();
    assert_eq!(
        s,
        PoolStatus {
            sectors: 209715200,
            transaction_id: 37,
            metadata: (441, 524288),
            data: (31424, 1638400),
            mode: PoolMode::ReadWrite,
            needs_check: false
        }
    );
    let s = parse_pool_status(STATUS_DOCS).unwrap();
    assert_eq!((s.transaction_id, s.metadata, s.data), (91, (422, 524288), (18338, 1638400)));
    let s = parse_pool_status(STATUS_DIRECT_LVM).unwrap();
    assert_eq!((s.sectors, s.transaction_id, s.data), (96460800, 51593, (701943, 753600)));
    let s = parse_pool_status(STATUS_ATOMIC_RW).unwrap();
    assert_eq!((s.transaction_id, s.mode, s.needs_check), (1, PoolMode::ReadWrite, false));
    assert_eq!(parse_pool_status(STATUS_ATOMIC_RO).unwrap().mode, PoolMode::ReadOnly);
    assert_eq!(parse_pool_status(STATUS_INSIGHTS).unwrap().transaction_id, 441);
    let check = "0 1024 thin-pool 5 10/100 20/200 - rw discard_passdown queue_if_no_space needs_check 64\n";
    assert!(parse_pool_status(check).unwrap().needs_check);
    let full = "0 1024 thin-pool 5 10/100 20/200 - out_of_data_space discard_passdown error_if_no_space -\n";
    assert_eq!(parse_pool_status(full).unwrap().mode, PoolMode::OutOfDataSpace);
}

#[test]
fn malformed_or_foreign_status_lines_are_typed_errors() {
    assert!(matches!(
        parse_pool_status(THIN_INSIGHTS),
        Err(ParseError::Target { expected: "thin-pool", .. })
    ));
    assert!(matches!(parse_pool_status(SNAPSHOT_INVALID), Err(ParseError::Target { .. })));
    assert!(matches!(parse_pool_status(""), Err(ParseError::Missing(_))));
    assert!(matches!(parse_pool_status("0 1024 thin-pool 5 10/100\n"), Err(ParseError::Fields { .. })));
    assert_eq!(
        parse_pool_status("0 1024 thin-pool x 10/100 20/200 - rw a b -\n"),
        Err(ParseError::Number { field: "transaction id", value: "x".into() })
    );
    assert!(matches!(
        parse_pool_status("0 1024 thin-pool 5 10-100 20/200 - rw a b -\n"),
        Err(ParseError::Value { field: "metadata blocks", .. })
    ));
    assert!(matches!(
        parse_pool_status("0 1024 thin-pool 5 10/100 20/200 - frozen a b -\n"),
        Err(ParseError::Value { field: "pool mode", .. })
    ));
    let failed = parse_pool_status("0 20971520 thin-pool Fail\n").unwrap_err();
    assert!(matches!(failed, ParseError::PoolFailed(_)));
    let e = failed.into_error(&status("p"));
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("thin_check"), "{e}");
    let e = parse_pool_status(THIN_INSIGHTS).unwrap_err().into_error(&status("p"));
    assert_eq!(e.kind, ErrorKind::Internal);
}

#[test]
fn pool_tables_give_the_data_block_size() {
    assert_eq!(parse_pool_table(TABLE_NAMED).unwrap(), PoolTable { block_sectors: 128 });
    assert_eq!(parse_pool_table(TABLE_DIRECT_LVM).unwrap().block_sectors, 128);
    assert!(matches!(parse_pool_table("0 1024 thin-pool 7:1 7:0\n"), Err(ParseError::Fields { .. })));
    assert!(matches!(parse_pool_table("0 1024 thin-pool 7:1 7:0 0 1\n"), Err(ParseError::Value { .. })));
    assert!(matches!(parse_pool_table("0 1024 linear 7:1 0\n"), Err(ParseError::Target { .. })));
}

#[test]
fn info_rows_split_from_the_right_so_names_may_hold_colons() {
    let devs = parse_info(INFO_INSIGHTS).unwrap();
    assert_eq!(devs.len(), 3);
    assert_eq!(
        devs[2],
        DevInfo {
            name: "docker-253:10-1234567-0df13579".into(),
            attr: "L--w".into(),
            open: 0,
            segments: 1,
            events: 3
        }
    );
    assert_eq!(devs[1].segments, 2);
    assert_eq!(parse_info("No devices found\n").unwrap(), vec![]);
    assert_eq!(parse_info("").unwrap(), vec![]);
    // insights-core's malformed row: event "a".
    assert_eq!(
        parse_info("VG00-tmp:xIsr:1:1:a\n"),
        Err(ParseError::Value { field: "attr", value: "xIsr".into() })
    );
    assert_eq!(
        parse_info("VG00-tmp:L-sr:1:1:a\n"),
        Err(ParseError::Number { field: "events", value: "a".into() })
    );
    assert!(matches!(parse_info("VG00-tmp:L--w:1\n"), Err(ParseError::Fields { .. })));
}

#[test]
fn targets_show_whether_thin_provisioning_is_loaded() {
    assert!(has_target(TARGETS, "thin-pool") && has_target(TARGETS, "thin"));
    assert!(!has_target("striped          v1.6.0\nlinear           v1.4.0\n", "thin-pool"));
}

fn failed(stderr: &str) -> Output {
    Output { code: Some(1), stdout: String::new(), stderr: stderr.into() }
}

#[test]
fn tool_messages_map_to_error_kinds() {
    let cmd = message("berth-thinpool", &create_thin(5));
    let cases = [
        (NO_KERNEL_DM, ErrorKind::Unavailable),
        (
            "device-mapper: message ioctl on berth-thinpool  failed: File exists\nCommand failed.\n",
            ErrorKind::AlreadyExists,
        ),
        (
            "device-mapper: message ioctl on berth-thinpool  failed: No data available\nCommand failed.\n",
            ErrorKind::NotFound,
        ),
        ("Device does not exist.\nCommand failed.\n", ErrorKind::NotFound),
        (
            "device-mapper: remove ioctl on berth-x  failed: Device or resource busy\nCommand failed.\n",
            ErrorKind::Conflict,
        ),
        (
            "device-mapper: message ioctl on berth-thinpool  failed: No space left on device\n",
            ErrorKind::ResourceExhausted,
        ),
        (
            "device-mapper: message ioctl on dust1  failed: Invalid argument\nCommand failed\n",
            ErrorKind::InvalidArgument,
        ),
        ("/dev/mapper/control: open failed: Permission denied\n", ErrorKind::Unavailable),
        (
            "mount: /r/mnt/a: wrong fs type, bad option, bad superblock on /dev/mapper/x.\n",
            ErrorKind::Internal,
        ),
    ];
    for (stderr, kind) in cases {
        let e = failure(&cmd, &failed(stderr));
        assert_eq!(e.kind, kind, "{stderr}");
        assert!(
            e.message.starts_with("`dmsetup message berth-thinpool 0 'create_thin 5'` failed (exit 1): "),
            "{e}"
        );
        assert!(!e.message.contains('\n'));
    }
    assert!(not_mounted(&failed("umount: /r/mnt/a: not mounted.\n")));
    let e = not_run(&mkfs(Fs::Xfs, "d", &[]), &std::io::Error::from(std::io::ErrorKind::NotFound));
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("mkfs.xfs is not installed (xfsprogs)"), "{e}");
    let e = not_run(&cmd, &std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
    assert_eq!(e.kind, ErrorKind::Timeout);
}

#[test]
fn filesystems_and_mount_options() {
    assert_eq!(Fs::parse("xfs"), Some(Fs::Xfs));
    assert_eq!(Fs::parse("btrfs"), None);
    assert_eq!(mount_options(Fs::Ext4, false, &[]), "rw");
    assert_eq!(mount_options(Fs::Xfs, true, &[]), "ro,nouuid");
}
