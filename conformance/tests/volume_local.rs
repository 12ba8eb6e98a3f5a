//! The whole volume suite against the real `local` plugin, loaded as a
//! shared object exactly as the daemon loads it (built here with
//! `cargo build -p berth-volume-local`), through the library and through
//! the binary.

mod support;

use std::process::Command;

use berth_conformance::{run, sys, volume, Options, Subject};

#[test]
fn the_local_plugin_passes_the_whole_volume_suite() {
    let so = support::local_so();
    let subject = Subject::load(&so).unwrap_or_else(|e| panic!("local does not load: {e}"));
    assert_eq!(subject.identity().name, "local");
    assert_eq!(subject.identity().kinds, [berth_plugin_api::Kind::Volume]);
    assert!(subject.volume().is_some() && subject.storage().is_none());

    let work = tempfile::tempdir().unwrap();
    let opts = Options { workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&volume::cases(), Some(&subject), &opts);
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, volume::cases().len(), "nothing may be skipped");
    let ids: Vec<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["VL-01", "VL-02", "VL-03", "VL-04", "VL-05", "VL-06", "VL-07", "VL-08", "VL-09"]);
    support::check_junit(&report);

    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "case roots left behind");
}

#[test]
fn the_binary_runs_the_volume_suite_for_a_volume_plugin() {
    let so = support::local_so();
    let work = tempfile::tempdir().unwrap();
    let xml_file = work.path().join("report.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(&so)
        .args(["--format", "junit", "--repeat", "2", "--output"])
        .arg(&xml_file)
        .arg("--workdir")
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("9 passed, 0 failed, 0 skipped"), "{stdout}");
    let xml = std::fs::read_to_string(&xml_file).unwrap();
    let root = support::xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(root.attr("tests"), "9");
    let suites = root.all("testsuite");
    assert_eq!(suites.len(), 1, "only the volume suite runs for a volume plugin");
    assert_eq!(suites[0].attr("name"), "berth.volume");

    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(&so)
        .args(["--kind", "volume", "--skip", "VL-08", "--format", "json", "--workdir"])
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--format json prints JSON");
    assert_eq!(json["plugin"]["name"], "local");
    assert_eq!(json["cases"].as_array().unwrap().len(), 8);

    // A storage-only run asked of a volume plugin skips, saying why.
    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(&so)
        .args(["--only", "ST-01", "--workdir"])
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("plugin \"local\" does not declare a storage driver"), "{stdout}");

    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("report.xml")], "case roots left behind");
}
