//! The files-outside-the-case-root check: a linked volume driver that
//! leaves a file in the temp dir for every volume it creates fails every
//! case that creates one, naming the file; with the check off the same
//! cases pass. One test only: the files it litters would be seen by cases
//! running at the same time in this process.

mod support;

use std::path::PathBuf;

use berth_conformance::{run, volume, Options};
use support::voldriver::{litter, VolFlaws};

/// Removes the files the littering driver left, however the test ends.
struct Sweep;

impl Sweep {
    fn left() -> Vec<PathBuf> {
        let prefix = litter("").file_name().unwrap().to_string_lossy().into_owned();
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        for p in Sweep::left() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn a_driver_that_leaves_files_in_the_temp_dir_fails_naming_them() {
    let _sweep = Sweep;
    let flaws = VolFlaws { litters_temp_dir: true, ..VolFlaws::default() };
    let work = tempfile::tempdir().unwrap();

    let report = support::run_vol(flaws, work.path());
    println!("{}", report.to_human());
    let left = Sweep::left();
    assert!(!left.is_empty(), "the driver littered nothing");
    let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for c in &report.cases {
        let m = c.message.as_deref().unwrap_or_default();
        if !m.contains("leak check after teardown (driver dropped)") {
            continue;
        }
        assert_eq!(c.result, "fail", "{}: {m}", c.id);
        // Each named file is one the driver left, with its full path.
        let files: Vec<&PathBuf> = left
            .iter()
            .filter(|p| m.contains(&format!("{} (file)", tmp.join(p.file_name().unwrap()).display())))
            .collect();
        assert!(!files.is_empty(), "{}: names none of {left:?}: {m}", c.id);
        named.extend(files);
    }
    assert!(report.summary.failed >= 5, "{}", report.to_human());
    assert_eq!(named.len(), left.len(), "every littered file is named by a case: {named:?} {left:?}");

    // With the check off, the same driver passes (the files are its only flaw).
    for p in Sweep::left() {
        std::fs::remove_file(p).unwrap();
    }
    let opts =
        Options { repeat: 3, workdir: Some(work.path().into()), check_files: false, ..Options::default() };
    let report = run(&volume::cases(), Some(&support::vol_subject(flaws)), &opts);
    berth_conformance::assert_conforms(&report);
}
