//! The volume suite against a small linked volume driver, correct and with
//! one planted defect at a time: each defect must fail the case that
//! checks it, with a message that tells the vendor what to fix.

mod support;

use std::collections::BTreeSet;

use berth_conformance::{sys, volume, Report};
use support::voldriver::VolFlaws;

fn suite(flaws: VolFlaws) -> Report {
    let work = tempfile::tempdir().unwrap();
    let report = support::run_vol(flaws, work.path());
    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    let roots: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(roots.is_empty(), "case roots left in the workdir: {roots:?}");
    support::check_junit(&report);
    println!("{}", report.to_human());
    report
}

fn failed(report: &Report) -> BTreeSet<&str> {
    report.failed_ids().into_iter().collect()
}

fn message<'a>(report: &'a Report, id: &str) -> &'a str {
    report.case(id).and_then(|c| c.message.as_deref()).unwrap_or_default()
}

#[test]
fn a_correct_linked_volume_driver_passes_every_volume_case() {
    let report = suite(VolFlaws::default());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, volume::cases().len());
}

#[test]
fn a_correct_mount_backed_driver_passes_every_volume_case() {
    if !support::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let report = suite(VolFlaws { tmpfs_backed: true, ..VolFlaws::default() });
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, volume::cases().len());
}

#[test]
fn a_backing_mount_that_goes_before_the_last_user_fails_vl03() {
    if !support::is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let report = suite(VolFlaws { tmpfs_backed: true, unmounts_backing_early: true, ..VolFlaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["VL-03"]), "{}", report.to_human());
    let m = message(&report, "VL-03");
    assert!(m.contains("mount table after 1 of 3 unmounts: expected"), "{m}");
    assert!(m.contains("still mounted: 2 user(s) remain, got unmounted"), "{m}");
}

#[test]
fn removing_a_mounted_volume_fails_vl04() {
    let report = suite(VolFlaws { remove_ignores_mounts: true, ..VolFlaws::default() });
    // VL-08 checks the same rule for a mount taken before a restart.
    assert_eq!(failed(&report), BTreeSet::from(["VL-04", "VL-08"]), "{}", report.to_human());
    let m = message(&report, "VL-04");
    assert!(m.contains("remove of volume \"vl04-v\" at the driver while mount"), "{m}");
    assert!(
        m.contains(
            "expected error kind conflict (a volume with active mounts must be refused until its last unmount), got success"
        ),
        "{m}"
    );
    let f = report.case("VL-04").and_then(|c| c.failure.as_ref()).unwrap();
    assert_eq!(f.error_kind, None, "the driver answered no error");
    assert!(message(&report, "VL-08").contains("a driver remembers its active mount ids across restarts"));
}

#[test]
fn an_empty_answer_for_an_unknown_name_fails_vl01() {
    let report = suite(VolFlaws { get_unknown_answers_empty: true, ..VolFlaws::default() });
    // Every case that asks for a name the driver does not have trips on it.
    assert_eq!(
        failed(&report),
        BTreeSet::from(["VL-01", "VL-02", "VL-04", "VL-06", "VL-09"]),
        "{}",
        report.to_human()
    );
    let m = message(&report, "VL-01");
    assert!(m.contains("get of unknown volume \"vl01-never-created\" (#1)"), "{m}");
    assert!(
        m.contains("expected error kind not_found (a name the driver does not have is NotFound, never an empty answer or success), got success (VolumeInfo"),
        "{m}"
    );
    let m = message(&report, "VL-09");
    assert!(
        m.contains("get of \"vl09-v\" at the driver after its remove: expected error kind not_found"),
        "{m}"
    );
}
