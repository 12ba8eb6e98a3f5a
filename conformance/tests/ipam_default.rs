//! The IPAM suite against the real `default` plugin: loaded as a shared
//! object exactly as the daemon loads it (built here with
//! `cargo build -p berth-ipam-default`), through the library and the
//! binary, and served out of process by the real `berth-plugin-host`.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use berth_conformance::{ipam, run, sys, Options, Report, Subject};
use berth_plugin_api::Kind;
use support::host::PluginHost;

fn default_so() -> std::path::PathBuf {
    support::plugin_so("berth-ipam-default", "libberth_ipam_default.so")
}

/// Runs the IPAM suite with case roots under a fresh workdir, and checks
/// nothing was left there.
fn run_ipam(subject: &Subject) -> Report {
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&ipam::cases(), Some(subject), &opts);
    println!("{}", report.to_human());
    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "case roots left in the workdir: {left:?}");
    support::check_junit(&report);
    report
}

fn skipped(report: &Report) -> BTreeSet<(&str, &str)> {
    report
        .cases
        .iter()
        .filter(|c| c.result == "skip")
        .map(|c| (c.id.as_str(), c.message.as_deref().unwrap_or_default()))
        .collect()
}

#[test]
fn the_default_plugin_passes_the_ipam_suite() {
    let subject = Subject::load(&default_so()).unwrap_or_else(|e| panic!("default does not load: {e}"));
    assert_eq!(subject.identity().name, "default");
    assert_eq!(subject.identity().kinds, [Kind::Ipam]);
    assert!(subject.ipam().is_some() && subject.volume().is_none() && subject.storage().is_none());
    let report = run_ipam(&subject);
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, 10);
    let skips = skipped(&report);
    assert_eq!(skips.len(), 2, "{skips:?}");
    assert!(
        skips.iter().any(|(id, why)| *id == "IP-11" && why.contains("remote IPAM plugins only")),
        "{skips:?}"
    );
    assert!(skips.contains(&("IP-12", "not a null IPAM driver")), "{skips:?}");
    let ids: Vec<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
    let want: Vec<String> = (1..=12).map(|n| format!("IP-{n:02}")).collect();
    assert_eq!(ids, want);
}

#[test]
fn the_binary_runs_the_ipam_suite_for_an_ipam_plugin() {
    let so = default_so();
    let (stdout, xml) = support::run_binary(env!("CARGO_BIN_EXE_berth-conformance"), &so);
    assert!(stdout.contains("10 passed, 0 failed, 2 skipped"), "{stdout}");
    let root = support::xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(root.attr("tests"), "12");
    let suites = root.all("testsuite");
    assert_eq!(suites.len(), 1, "only the IPAM suite runs for an IPAM plugin");
    assert_eq!(suites[0].attr("name"), "berth.ipam");

    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .args(["list", "--kind", "ipam"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 12, "{listed}");
    assert!(listed.contains("IP-12  ipam"), "{listed}");
}

#[test]
fn the_default_plugin_served_by_plugin_host_passes_the_ipam_suite_remotely() {
    let mut host = PluginHost::start(&default_so(), "ipd");
    let subject =
        berth_conformance::Subject::remote(&host.address, None, berth_conformance::remote::default_options())
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(subject.identity().kinds, [Kind::Ipam]);
    assert_eq!(subject.identity().activate.as_deref(), Some(&["IpamDriver".to_string()][..]));
    // Twice: prefixes of their own per case, and nothing left between runs.
    for _ in 0..2 {
        let report = run_ipam(&subject);
        berth_conformance::assert_conforms(&report);
        assert_eq!(report.summary.passed, 11, "IP-11 runs for a remote plugin");
        assert_eq!(skipped(&report), [("IP-12", "not a null IPAM driver")].into());
    }
    assert!(host.running());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.root().join("ipam-state.json")).unwrap()).unwrap();
    assert_eq!(state["pools"], serde_json::json!([]), "every case released its pools in the plugin");
    let stderr = host.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
