//! The suite against deliberately broken linked drivers: each flaw must make
//! exactly the case that checks it fail, with a message that says what is
//! wrong. (The correct variant passes everything.)

mod support;

use std::collections::BTreeSet;

use berth_conformance::{run, storage, sys, Options, Report, Subject};
use berth_plugin_api::{DriverError, Init, InitRequest};
use support::refdriver::{Flaws, RefDriver};

/// Runs the suite with `flaws` in a fresh workdir; checks that nothing was
/// left behind (no mounts, no case roots) whatever the driver did.
fn suite(flaws: Flaws) -> Report {
    let work = tempfile::tempdir().unwrap();
    let report = support::run_ref(flaws, work.path());
    let left = sys::mounts_under(work.path()).unwrap();
    assert!(left.is_empty(), "mounts left under the workdir: {left:?}");
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

macro_rules! need_root {
    () => {
        if !support::is_root() {
            eprintln!("skipped: the reference driver mounts and chowns, which needs root");
            return;
        }
    };
}

#[test]
fn a_correct_driver_passes_every_storage_case() {
    need_root!();
    let report = suite(Flaws::default());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len());
}

#[test]
fn a_read_only_layer_that_takes_writes_fails_st06() {
    need_root!();
    let report = suite(Flaws { writable_read_only: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-06"]));
    let m = message(&report, "ST-06");
    assert!(m.contains("read-only layer \"st06-ro\""), "{m}");
    assert!(m.contains("create file new-file: succeeded"), "{m}");
    assert!(m.contains("expected every write refused"), "{m}");
}

#[test]
fn losing_setuid_bits_in_children_fails_st02() {
    need_root!();
    let report = suite(Flaws { drops_special_bits: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-02"]));
    let m = message(&report, "ST-02");
    assert!(m.contains("layer \"st02-child\""), "{m}");
    assert!(
        m.contains("suid: want file mode 4755 owner 1001:1002, have file mode 0755 owner 1001:1002"),
        "{m}"
    );
    assert!(m.contains("sticky-dir: want directory mode 1777"), "{m}");
}

#[test]
fn accepting_a_duplicate_id_fails_st04() {
    need_root!();
    let report = suite(Flaws { allows_duplicate_ids: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-04"]));
    let m = message(&report, "ST-04");
    assert!(
        m.contains(
            "create of existing layer \"st04-a\" again (#1): expected error kind already_exists, got success"
        ),
        "{m}"
    );
}

#[test]
fn removing_a_parent_fails_st05() {
    need_root!();
    let report = suite(Flaws { removes_parents: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-05"]));
    assert!(
        message(&report, "ST-05").contains("expected error kind conflict, got success"),
        "{}",
        message(&report, "ST-05")
    );
}

#[test]
fn a_stale_layer_count_fails_st03() {
    need_root!();
    let report = suite(Flaws { stale_layer_count: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-03"]));
    let m = message(&report, "ST-03");
    assert!(m.contains("status after remove of \"st03-ro\": expected Layers 0, got Layers 1"), "{m}");
}

#[test]
fn exists_that_lies_after_remove_fails_every_case_that_asks() {
    need_root!();
    let report = suite(Flaws { exists_after_remove: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-03", "ST-04", "ST-05"]));
    assert!(message(&report, "ST-03").contains("exists \"st03-ro\" after remove: expected false, got true"));
}

#[test]
fn a_new_root_of_0700_fails_st01() {
    need_root!();
    let report = suite(Flaws { root_mode_0700: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-01"]));
    assert!(
        message(&report, "ST-01").contains("expected mode 0755, got mode 0700"),
        "{}",
        message(&report, "ST-01")
    );
}

#[test]
fn leaked_mounts_fail_the_cases_that_mounted_and_are_cleaned_up() {
    need_root!();
    let report = suite(Flaws { leaks_mounts: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-01", "ST-02", "ST-03", "ST-06"]));
    for id in ["ST-01", "ST-02", "ST-03", "ST-06"] {
        let m = message(&report, id);
        assert!(m.contains("leak check after teardown") && m.contains("mount(s) left"), "{id}: {m}");
    }
}

#[test]
fn a_panicking_driver_fails_its_case_and_the_run_goes_on() {
    need_root!();
    let report = suite(Flaws { panics_in_status: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-03"]));
    assert!(
        message(&report, "ST-03").contains("panic: refdriver: status exploded"),
        "{}",
        message(&report, "ST-03")
    );
    assert_eq!(report.summary.total, storage::cases().len());
}

#[test]
fn a_driver_that_declines_skips_every_case_with_its_reason() {
    let subject = Subject::linked_storage("shy", "1.0.0", |_: InitRequest| {
        Ok(Init::<RefDriver>::Skipped("no frobnicator on this host".into()))
    });
    let work = tempfile::tempdir().unwrap();
    let opts = Options { workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&storage::cases(), Some(&subject), &opts);
    assert_eq!(report.summary.skipped, storage::cases().len(), "{}", report.to_human());
    for c in &report.cases {
        assert_eq!(c.message.as_deref(), Some("driver declined: no frobnicator on this host"));
    }
    assert!(!report.any_failed());
    support::check_junit(&report);
}

#[test]
fn a_driver_that_fails_to_construct_fails_every_case_with_the_error_kind() {
    let subject = Subject::linked_storage("broken", "1.0.0", |_: InitRequest| {
        Err::<Init<RefDriver>, _>(DriverError::invalid_argument("option \"dir\" is not a directory"))
    });
    let work = tempfile::tempdir().unwrap();
    let opts = Options { workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&storage::cases(), Some(&subject), &opts);
    assert_eq!(report.summary.failed, storage::cases().len());
    let f = report.cases[0].failure.as_ref().unwrap();
    assert_eq!(f.error_kind, Some(berth_plugin_api::ErrorKind::InvalidArgument));
    assert!(f.actual.contains("option \"dir\" is not a directory"), "{f:?}");
    let junit = support::check_junit(&report);
    assert_eq!(junit.all("failure")[0].attr("type"), "invalid_argument");
}

#[test]
fn the_xml_checker_used_on_junit_catches_what_it_should() {
    assert!(support::xml::parse("<a x=\"1\"><b/>t&amp;<c y='2'>&#10;</c></a>").is_ok());
    assert!(support::xml::parse("<a><b></a>").is_err());
    assert!(support::xml::parse("<a x=1/>").is_err());
    assert!(support::xml::parse("<a x=\"<\"/>").is_err());
    assert!(support::xml::parse("<a>&nbsp;</a>").is_err());
    assert!(support::xml::parse("<a/><b/>").is_err());
    assert!(support::xml::parse("<a x=\"1\" x=\"2\"/>").is_err());
    assert!(support::xml::parse("<a>\u{1}</a>").is_err());
}
