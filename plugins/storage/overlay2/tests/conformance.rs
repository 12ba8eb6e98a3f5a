//! The conformance storage suite against overlay2, linked, once per mount
//! API: every case implemented so far must pass, none may be skipped on
//! this host (root, overlay in the kernel).

use berth_conformance::{run, storage, Options, Subject};
use berth_plugin_api::InitRequest;
use berth_storage_overlay2::Overlay2Driver;

fn suite(api: &'static str) {
    let subject =
        Subject::linked_storage("overlay2", env!("CARGO_PKG_VERSION"), move |mut req: InitRequest| {
            req.options = serde_json::json!({ "mount_api": api });
            Overlay2Driver::new(req)
        });
    let work = tempfile::tempdir().unwrap();
    let opts = Options { workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&storage::cases(), Some(&subject), &opts);
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len(), "nothing may be skipped on this host");
    assert!(berth_conformance::sys::mounts_under(work.path()).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "case roots left behind");
}

#[test]
fn the_storage_suite_passes_with_fsconfig_mounts() {
    suite("fsconfig");
}

#[test]
fn the_storage_suite_passes_with_mount2_and_short_links() {
    suite("mount");
}
