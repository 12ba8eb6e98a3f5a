//! The zfs driver on this host, black-box: through the plugin ABI, and
//! under the whole conformance storage suite.
//!
//! On a kernel without ZFS (the machine this crate was written on: no
//! `/dev/zfs`, no `zfs` in `/proc/filesystems`, no loadable modules) the
//! driver must decline with a reason naming what is missing, and the suite
//! must report every storage case skipped with exactly that reason. On a
//! host where the driver does run, the suite must not fail.

use berth_conformance::{run, storage, Options, Subject};
use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::{Init, InitRequest};
use berth_storage_zfs::ZfsDriver;

/// What the driver answers on a fresh temp root, through the ABI.
fn init_here() -> (Option<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let module = PluginModule::linked(berth_storage_zfs::export::berth_plugin_root());
    let req = InitRequest::new("zfs", root.to_str().unwrap(), dir.path().join("run").to_str().unwrap());
    let skipped = match module.new_storage(&req).expect("zfs answers ready or skipped, not an error") {
        Init::Skipped(why) => Some(why),
        Init::Ready(_) => None,
    };
    (skipped, dir)
}

#[test]
fn without_zfs_in_the_kernel_the_driver_declines_naming_what_is_missing() {
    if std::path::Path::new("/dev/zfs").exists() {
        return; // this host has ZFS; the suite test below covers it
    }
    let (why, dir) = init_here();
    let why = why.expect("no /dev/zfs: the driver must decline");
    assert!(why.starts_with("this kernel has no ZFS: "), "{why}");
    assert!(why.contains("/dev/zfs is missing"), "{why}");
    assert!(why.contains("\"zfs\" is absent from /proc/filesystems"), "{why}");
    assert!(why.contains("choose another storage driver"), "{why}");
    assert!(!why.contains('\n'), "one line for the operator: {why}");
    // Declining makes nothing under the root.
    assert_eq!(std::fs::read_dir(dir.path().join("root")).unwrap().count(), 0);
}

#[test]
fn the_storage_suite_reports_every_case_skipped_with_the_drivers_reason() {
    let (skipped, _dir) = init_here();
    let subject = Subject::linked_storage("zfs", env!("CARGO_PKG_VERSION"), ZfsDriver::new);
    let report = run(&storage::cases(), Some(&subject), &Options::default());
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    let Some(why) = skipped else { return };
    // The reason names no path, so every case's driver gives the same one.
    let expected = format!("driver declined: {why}");
    assert_eq!(report.summary.total, storage::cases().len());
    assert_eq!(report.summary.skipped, report.summary.total, "every case skips");
    for case in &report.cases {
        assert_eq!(case.result, "skip", "{}", case.id);
        assert_eq!(case.message.as_deref(), Some(expected.as_str()), "{}", case.id);
    }
}
