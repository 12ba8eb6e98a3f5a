//! The whole storage suite against the real vfs plugin, loaded as a shared
//! object exactly as the daemon loads it (`cargo build -p berth-storage-vfs`
//! first), through the library and through the binary.

mod support;

use std::process::Command;

use berth_conformance::{run, storage, sys, Options, Subject};

#[test]
fn the_vfs_plugin_passes_the_whole_storage_suite() {
    if !support::is_root() {
        eprintln!("skipped: vfs mounts read-only layers and ST-02 chowns, which need root");
        return;
    }
    let so = support::vfs_so();
    let subject = Subject::load(&so).unwrap_or_else(|e| panic!("vfs does not load: {e}"));
    let id = subject.identity();
    assert_eq!(id.name, "vfs");
    assert_eq!(id.api_version, berth_plugin_api::API_VERSION);
    assert_eq!(id.compat, Some(berth_core::Compat::Exact));
    let sha = id.sha256.as_deref().expect("a digest of the .so");
    assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "{sha}");

    let work = tempfile::tempdir().unwrap();
    let opts = Options { workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&storage::cases(), Some(&subject), &opts);
    println!("{}", report.to_human());
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len(), "nothing may be skipped on this host");
    assert_eq!(report.repeat, berth_conformance::DEFAULT_REPEAT);

    let junit = support::check_junit(&report);
    let props: Vec<(&str, &str)> =
        junit.all("property").iter().map(|p| (p.attr("name"), p.attr("value"))).collect();
    assert!(props.contains(&("plugin.name", "vfs")), "{props:?}");
    assert!(props.contains(&("plugin.sha256", sha)), "{props:?}");
    assert!(props.iter().any(|(k, v)| *k == "host.kernel_release" && !v.is_empty()), "{props:?}");

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("the JSON report parses");
    assert_eq!(json["plugin"]["name"], "vfs");
    assert_eq!(json["plugin"]["sha256"], sha);
    assert_eq!(json["tool_version"], berth_conformance::VERSION);
    assert_eq!(json["host"]["kernel_release"], sys::kernel_release());
    assert_eq!(json["cases"].as_array().unwrap().len(), storage::cases().len());

    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "case roots left behind");
}

#[test]
fn the_binary_certifies_vfs_with_a_junit_file() {
    if !support::is_root() {
        eprintln!("skipped: vfs needs root");
        return;
    }
    let so = support::vfs_so();
    let work = tempfile::tempdir().unwrap();
    let xml_file = work.path().join("report.xml");
    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(&so)
        .args(["--format", "junit", "--repeat", "3", "--output"])
        .arg(&xml_file)
        .arg("--workdir")
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let n = storage::cases().len();
    assert!(stdout.contains(&format!("{n} passed, 0 failed, 0 skipped")), "{stdout}");
    let xml = std::fs::read_to_string(&xml_file).unwrap();
    let root = support::xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(root.attr("tests"), n.to_string());
    assert_eq!(root.all("testsuite").len(), 1, "only the storage suite runs for a storage plugin");

    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(&so)
        .args(["--only", "ST-06,ST-01", "--format", "json", "--workdir"])
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--format json prints JSON");
    let ids: Vec<&str> =
        json["cases"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ST-01", "ST-06"]);
}
