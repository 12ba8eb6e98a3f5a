//! The devicemapper driver on this host, black-box: through the plugin
//! ABI, and under the whole conformance storage suite.
//!
//! On a kernel without device-mapper (the machine this crate was written
//! on: no `/dev/mapper/control`, no `device-mapper` in `/proc/misc` or
//! `/proc/devices`, no loadable modules) the driver must decline with a
//! reason naming what is missing, and the suite must report every storage
//! case skipped with exactly that reason. On a host where the driver does
//! run, the suite must not fail.

use berth_conformance::{run, storage, Options, Subject};
use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::{Init, InitRequest};
use berth_storage_devicemapper::DevmapperDriver;

/// What the driver answers on a fresh temp root, through the ABI.
fn init_here() -> (Option<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let module = PluginModule::linked(berth_storage_devicemapper::export::berth_plugin_root());
    let req =
        InitRequest::new("devicemapper", root.to_str().unwrap(), dir.path().join("run").to_str().unwrap());
    let skipped = match module.new_storage(&req).expect("devicemapper answers ready or skipped, not an error")
    {
        Init::Skipped(why) => Some(why),
        Init::Ready(_) => None,
    };
    (skipped, dir)
}

/// Whether this kernel has device-mapper at all.
fn kernel_has_dm() -> bool {
    std::fs::read_to_string("/proc/misc").unwrap_or_default().contains("device-mapper")
}

#[test]
fn without_device_mapper_in_the_kernel_the_driver_declines_naming_what_is_missing() {
    if kernel_has_dm() {
        return; // this host has device-mapper; the suite test below covers it
    }
    let control = std::path::Path::new("/dev/mapper/control").exists();
    let (why, dir) = init_here();
    let why = why.expect("no device-mapper: the driver must decline");
    assert!(why.starts_with("this kernel has no device-mapper: "), "{why}");
    assert!(why.contains("\"device-mapper\" is absent from /proc/misc and /proc/devices"), "{why}");
    if !control {
        assert!(why.contains("/dev/mapper/control is missing"), "{why}");
    }
    assert!(why.contains("choose another storage driver"), "{why}");
    assert!(!why.contains('\n'), "one line for the operator: {why}");
    // Declining makes nothing under the root, and no device node either.
    assert_eq!(std::fs::read_dir(dir.path().join("root")).unwrap().count(), 0);
    assert_eq!(std::path::Path::new("/dev/mapper/control").exists(), control);
}

#[test]
fn the_storage_suite_reports_every_case_skipped_with_the_drivers_reason() {
    let (skipped, _dir) = init_here();
    let subject = Subject::linked_storage("devicemapper", env!("CARGO_PKG_VERSION"), DevmapperDriver::new);
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
