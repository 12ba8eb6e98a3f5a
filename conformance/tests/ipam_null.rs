//! The IPAM suite against the real `null` plugin, as a shared object and
//! served by `berth-plugin-host`: IP-12 passes, every other case skips,
//! saying why.

mod support;

use berth_conformance::{ipam, run, Options, Report, Subject};
use support::host::PluginHost;

fn null_so() -> std::path::PathBuf {
    support::plugin_so("berth-ipam-null", "libberth_ipam_null.so")
}

fn run_ipam(subject: &Subject) -> Report {
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&ipam::cases(), Some(subject), &opts);
    println!("{}", report.to_human());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "case roots left behind");
    support::check_junit(&report);
    report
}

fn check_null_report(report: &Report) {
    berth_conformance::assert_conforms(report);
    assert_eq!(report.summary.passed, 1);
    assert_eq!(report.case("IP-12").unwrap().result, "pass");
    for c in report.cases.iter().filter(|c| c.id != "IP-12") {
        assert_eq!(c.result, "skip", "{}", c.id);
        let why = c.message.as_deref().unwrap_or_default();
        assert!(
            why.contains("null IPAM driver") || why.contains("remote IPAM plugins only"),
            "{}: {why}",
            c.id
        );
    }
}

#[test]
fn the_null_plugin_passes_ip12_and_skips_the_rest() {
    let subject = Subject::load(&null_so()).unwrap_or_else(|e| panic!("null does not load: {e}"));
    assert_eq!(subject.identity().name, "null");
    check_null_report(&run_ipam(&subject));
}

#[test]
fn the_null_plugin_passes_ip12_remotely() {
    let host = PluginHost::start(&null_so(), "ipn");
    let subject = Subject::remote(&host.address, None, berth_conformance::remote::default_options())
        .unwrap_or_else(|e| panic!("{e}"));
    let report = run_ipam(&subject);
    check_null_report(&report);
    assert!(report.case("IP-11").unwrap().message.as_deref().unwrap().contains("null IPAM driver"));
    let stderr = host.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_binary_exits_zero_for_the_null_plugin() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .arg("run")
        .arg("--plugin")
        .arg(null_so())
        .arg("--workdir")
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed, 11 skipped"), "{stdout}");
}
