//! Helpers shared by the conformance crate's integration tests.

#![allow(dead_code)]

pub mod host;
pub mod laxnet;
pub mod net;
pub mod refdiff;
pub mod refdriver;
pub mod voldriver;
pub mod xml;

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_conformance::{run, storage, Options, Report, Subject};
use berth_plugin_api::{Init, InitRequest};

use refdriver::{Flaws, RefDriver};

/// `<target>/<profile>`, from the running test binary.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("test binary lives in <target>/<profile>/deps").to_path_buf()
}

/// Builds the vfs plugin with cargo (same target dir and profile as these
/// tests) and returns the path of `libberth_storage_vfs.so`.
pub fn vfs_so() -> PathBuf {
    plugin_so("berth-storage-vfs", "libberth_storage_vfs.so")
}

/// Builds the local volume plugin like [`vfs_so`] and returns the path of
/// `libberth_volume_local.so`.
pub fn local_so() -> PathBuf {
    plugin_so("berth-volume-local", "libberth_volume_local.so")
}

/// Builds workspace package `package` with cargo (same target dir and
/// profile as these tests) and returns the path of its `file`.
pub fn plugin_so(package: &str, file: &str) -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("<target>/<profile>");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", package, "--target-dir"]).arg(target);
    // The compilers' scratch files go there, not into the temp dir that
    // cases running meanwhile in this process check for leaks.
    let scratch = target.join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    cmd.env("TMPDIR", &scratch);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
    assert!(
        out.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let so = profile.join(file);
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

/// A linked subject serving [`voldriver::DirVolumes`] with `flaws`.
pub fn vol_subject(flaws: voldriver::VolFlaws) -> Subject {
    Subject::linked_volume("dirvol", "0.0.0", move |init: InitRequest| {
        Ok(Init::Ready(voldriver::DirVolumes::new(&init.root, flaws)?))
    })
}

/// Runs the volume suite against [`voldriver::DirVolumes`] with `flaws`,
/// making case roots under `workdir`.
pub fn run_vol(flaws: voldriver::VolFlaws, workdir: &Path) -> Report {
    let opts = Options { repeat: 3, workdir: Some(workdir.to_path_buf()), ..Options::default() };
    run(&berth_conformance::volume::cases(), Some(&vol_subject(flaws)), &opts)
}

/// A linked subject serving [`RefDriver`] with `flaws`.
pub fn ref_subject(flaws: Flaws) -> Subject {
    Subject::linked_storage("ref", "0.0.0", move |init: InitRequest| {
        Ok(Init::Ready(RefDriver::new(&init.root, flaws)?))
    })
}

/// Runs the storage suite against [`RefDriver`] with `flaws`, making case
/// roots under `workdir`.
pub fn run_ref(flaws: Flaws, workdir: &Path) -> Report {
    run_ref_cases(&storage::cases(), flaws, workdir)
}

/// Runs `cases` against [`RefDriver`] with `flaws`, like [`run_ref`].
pub fn run_ref_cases(cases: &[berth_conformance::Case], flaws: Flaws, workdir: &Path) -> Report {
    let opts = Options { repeat: 3, workdir: Some(workdir.to_path_buf()), ..Options::default() };
    run(cases, Some(&ref_subject(flaws)), &opts)
}

/// Whether the suite runs as root (the storage suite's drivers need it to
/// mount, and ST-02 to chown).
pub fn is_root() -> bool {
    berth_conformance::sys::euid() == 0
}

/// Checks that `junit` is well-formed and agrees with `report`.
pub fn check_junit(report: &Report) -> xml::Element {
    let junit = report.to_junit();
    let root =
        xml::parse(&junit).unwrap_or_else(|e| panic!("JUnit output is not well-formed XML: {e}\n{junit}"));
    assert_eq!(root.name, "testsuites");
    assert_eq!(root.attr("tests"), report.summary.total.to_string());
    assert_eq!(root.attr("failures"), report.summary.failed.to_string());
    assert_eq!(root.attr("skipped"), report.summary.skipped.to_string());
    let cases = root.all("testcase");
    assert_eq!(cases.len(), report.cases.len());
    assert_eq!(root.all("failure").len(), report.summary.failed);
    assert_eq!(root.all("skipped").len(), report.summary.skipped);
    for (el, c) in cases.iter().zip(&report.cases) {
        assert_eq!(el.attr("name"), format!("{} {}", c.id, c.description));
        assert_eq!(el.attr("classname"), format!("berth.{}", c.suite));
    }
    root
}

/// Runs the `berth-conformance` binary on `so` with a JUnit report in a
/// fresh workdir (`--repeat 2`), checks it exited 0 and left only the
/// report, and answers (stdout, report XML).
pub fn run_binary(bin: &str, so: &Path) -> (String, String) {
    let work = tempfile::tempdir().unwrap();
    let xml_file = work.path().join("report.xml");
    let out = Command::new(bin)
        .arg("run")
        .arg("--plugin")
        .arg(so)
        .args(["--format", "junit", "--repeat", "2", "--output"])
        .arg(&xml_file)
        .arg("--workdir")
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("report.xml")], "case roots left behind");
    (stdout, std::fs::read_to_string(&xml_file).unwrap())
}
