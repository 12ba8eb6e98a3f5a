//! The suite against deliberately broken linked drivers: each flaw must make
//! exactly the cases that check it fail, with a message that says what is
//! wrong. The correct variant passes everything, with berth-core's naive
//! diff and with a native `DiffDriver`.
//!
//! The flawed variants run every case but ST-11 (the 128-layer chain takes
//! seconds on a copying driver and no flaw here concerns it); the correct
//! ones run them all.

mod support;

use std::collections::BTreeSet;

use berth_conformance::{run, storage, sys, Case, Options, Report, Subject};
use berth_plugin_api::{DriverError, Init, InitRequest};
use support::refdriver::{Flaws, RefDriver};

/// Runs every case but ST-11 with `flaws`, like [`full_suite`].
fn suite(flaws: Flaws) -> Report {
    let cases: Vec<Case> = storage::cases().into_iter().filter(|c| c.id != "ST-11").collect();
    run_cases(&cases, flaws)
}

/// Runs the whole suite with `flaws` in a fresh workdir; checks that
/// nothing was left behind (no mounts, no case roots) whatever the driver
/// did.
fn full_suite(flaws: Flaws) -> Report {
    run_cases(&storage::cases(), flaws)
}

fn run_cases(cases: &[Case], flaws: Flaws) -> Report {
    let work = tempfile::tempdir().unwrap();
    let report = support::run_ref_cases(cases, flaws, work.path());
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
    let report = full_suite(Flaws::default());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len());
}

#[test]
fn a_correct_driver_with_a_native_diff_passes_every_storage_case() {
    need_root!();
    let report = full_suite(Flaws { native_diff: true, ..Flaws::default() });
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len());
    assert!(report.to_human().contains("pass"));
}

#[test]
fn a_read_only_layer_that_takes_writes_fails_st06_and_st19() {
    need_root!();
    let report = suite(Flaws { writable_read_only: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-06", "ST-19"]));
    let m = message(&report, "ST-06");
    assert!(m.contains("read-only layer \"st06-ro\""), "{m}");
    assert!(m.contains("create file new-file: succeeded"), "{m}");
    assert!(m.contains("expected every write refused"), "{m}");
    let m = message(&report, "ST-19");
    assert!(m.contains("write into read-only layer \"st19-r1\" after the restart: expected refused"), "{m}");
}

#[test]
fn a_copy_that_drops_xattrs_fails_st14_naming_them() {
    need_root!();
    let report = suite(Flaws { drops_xattrs: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-14"]));
    let m = message(&report, "ST-14");
    assert!(m.contains("tree of layer \"st14-n0c\""), "{m}");
    assert!(m.contains("/f: xattr user.berth: want \"value\", have none (lost)"), "{m}");
    assert!(m.contains("/cap: xattr security.capability: want 0x01000002"), "{m}");
    assert!(m.contains("/d: xattr user.dir"), "{m}");
}

#[test]
fn a_diff_that_ignores_whiteouts_fails_every_case_that_deletes_through_it() {
    need_root!();
    let report = suite(Flaws { native_diff: true, diff_ignores_whiteouts: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-07", "ST-08", "ST-09", "ST-12", "ST-13", "ST-17"]));
    let m = message(&report, "ST-07");
    assert!(m.contains("tree of layer \"st07-n1i\""), "{m}");
    assert!(m.contains("/victim: unexpected file"), "{m}");
    assert!(m.contains("/vdir/inner: unexpected file"), "{m}");
    let m = message(&report, "ST-13");
    assert!(m.contains("no .wh.gone for the deletion of /gone"), "{m}");
    assert!(m.contains("no opq/.wh..wh..opq for opaque /opq"), "{m}");
    let m = message(&report, "ST-08");
    assert!(m.contains("/d/a: unexpected file"), "{m}");
}

#[test]
fn an_untar_that_follows_symlinks_fails_st15_showing_what_it_touched() {
    need_root!();
    let report = suite(Flaws { native_diff: true, naive_untar: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-15"]));
    let m = message(&report, "ST-15");
    let outside = |what: &str, change: &str| {
        let want = format!("{what}: applied without error, and changed outside the layer: {change}");
        assert!(m.contains(&want), "{want}\nnot in: {m}");
    };
    outside("absolute path", "/evil-abs: unexpected file");
    outside("absolute path over a file", "/file: size: want 9, have 11");
    outside("file through a symlink planted to the sentinel", "/evil-through: unexpected file");
    outside("file through a symlink from a lower layer", "/evil-low: unexpected file");
    outside("whiteout through a planted symlink", "/file: missing");
    outside("`..` path", "");
    assert!(m.contains("root/layers/evil-up created"), "{m}");
    assert!(m.contains("symlink whose relative target climbs out: applied without error;"), "{m}");
}

#[test]
fn changes_that_miss_deletions_fail_st18() {
    need_root!();
    let report = suite(Flaws { native_diff: true, changes_miss_deletions: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-18"]));
    let m = message(&report, "ST-18");
    assert!(
        m.contains("/gone (deleted) missing; /dir/gone2 (deleted) missing; /olddir (deleted) missing"),
        "{m}"
    );
}

#[test]
fn a_size_option_silently_ignored_fails_st16() {
    need_root!();
    let report = suite(Flaws { ignores_size: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-16"]));
    let m = message(&report, "ST-16");
    assert!(m.contains("expected ENOSPC or EDQUOT past the limit, got every byte written and synced"), "{m}");
}

#[test]
fn a_driver_that_forgets_its_layers_when_reopened_fails_st19() {
    need_root!();
    let report = suite(Flaws { forgets_layers: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-19"]));
    let m = message(&report, "ST-19");
    assert!(
        m.contains(
            "exists \"st19-r0\" after the driver was reopened on the same root: expected true, got false"
        ),
        "{m}"
    );
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
fn removing_a_parent_fails_st05_and_st19() {
    need_root!();
    let report = suite(Flaws { removes_parents: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-05", "ST-19"]));
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
fn a_new_root_of_0700_fails_st01_and_every_tree_comparison() {
    need_root!();
    let report = suite(Flaws { root_mode_0700: true, ..Flaws::default() });
    let fails = failed(&report);
    assert!(fails.contains("ST-01") && fails.contains("ST-07") && fails.contains("ST-13"), "{fails:?}");
    assert!(
        message(&report, "ST-01").contains("expected mode 0755, got mode 0700"),
        "{}",
        message(&report, "ST-01")
    );
    for id in fails.iter().filter(|id| **id != "ST-01") {
        let m = message(&report, id);
        assert!(m.contains("1 difference(s): /: mode: want 0755, have 0700"), "{id}: {m}");
    }
}

#[test]
fn leaked_mounts_fail_the_cases_that_mounted_and_are_cleaned_up() {
    need_root!();
    let report = suite(Flaws { leaks_mounts: true, ..Flaws::default() });
    let fails = failed(&report);
    for id in ["ST-01", "ST-02", "ST-03", "ST-06", "ST-07", "ST-19"] {
        assert!(fails.contains(id), "{id} mounts read-only layers: {fails:?}");
    }
    for id in ["ST-04", "ST-05", "ST-16"] {
        assert!(!fails.contains(id), "{id} mounts no read-only layer: {fails:?}");
    }
    for id in &fails {
        let m = message(&report, id);
        assert!(m.contains("leak check after teardown") && m.contains("mount(s) left"), "{id}: {m}");
    }
    let m = message(&report, "ST-19");
    assert!(m.starts_with("mount table after cleanup"), "{m}");
}

#[test]
fn a_panicking_driver_fails_its_case_and_the_run_goes_on() {
    need_root!();
    let report = suite(Flaws { panics_in_status: true, ..Flaws::default() });
    assert_eq!(failed(&report), BTreeSet::from(["ST-03", "ST-16", "ST-19"]));
    for id in ["ST-03", "ST-16", "ST-19"] {
        assert!(
            message(&report, id).contains("panic: refdriver: status exploded"),
            "{}",
            message(&report, id)
        );
    }
    assert_eq!(report.summary.total, storage::cases().len() - 1);
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
