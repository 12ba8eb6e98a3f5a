//! PL-09 and PL-10 against the ABI fixture plugins of
//! `plugin-api/tests/compat/` (built here with the same helper as
//! `core/tests/evolution.rs`), through the library and the binary.

#[path = "../../plugin-api/tests/compat/fixtures.rs"]
mod fixtures;

use std::process::Command;

use berth_conformance::{lifecycle, run, Options};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth-conformance"));
    c.env_remove(lifecycle::FIXTURES_ENV);
    c
}

#[test]
fn pl_cases_pass_against_the_fixture_plugins() {
    let dir = fixtures::build();
    let work = tempfile::tempdir().unwrap();
    let opts = Options { fixtures: Some(dir), workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&lifecycle::cases(), None, &opts);
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, 2);
    assert!(report.fixtures.is_some());
}

#[test]
fn without_fixtures_pl_cases_skip_saying_how_to_build_them() {
    let empty = tempfile::tempdir().unwrap();
    let opts = Options { fixtures: Some(empty.path().into()), ..Options::default() };
    let report = run(&lifecycle::cases(), None, &opts);
    assert_eq!(report.summary.skipped, 2, "{}", report.to_human());
    let pl09 = report.case("PL-09").unwrap().message.as_deref().unwrap();
    assert!(pl09.starts_with("fixture plugins not built: run `plugin-api/tests/compat/build.sh`"), "{pl09}");
    assert!(pl09.contains("missing libcompatbad.so, libcompat20.so, libberth_fixture_faulty.so"), "{pl09}");
    assert!(pl09.contains("the duplicate-name and panic checks passed"), "{pl09}");

    let none = run(&lifecycle::cases(), None, &Options::default());
    assert_eq!(none.summary.skipped, 2);
    assert!(none.case("PL-10").unwrap().message.as_deref().unwrap().contains("no fixture directory given"));
}

#[test]
fn the_binary_takes_fixtures_from_the_environment() {
    let dir = fixtures::build();
    let out = bin()
        .args(["run", "--only", "PL-09,PL-10", "--format", "json"])
        .env(lifecycle::FIXTURES_ENV, &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["passed"], 2, "{json}");
    assert_eq!(json["fixtures"], dir.display().to_string());
}

#[test]
fn the_binary_refuses_an_incompatible_plugin_in_one_line_with_exit_2() {
    let dir = fixtures::build();
    for (file, needle) in [("libcompatbad.so", "create"), ("libcompat20.so", "2.0.0")] {
        let out = bin().arg("run").arg("--plugin").arg(dir.join(file)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{file}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
