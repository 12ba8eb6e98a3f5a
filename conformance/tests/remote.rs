//! Remote runs: the volume and storage suites black-box against the real
//! plugins served out of process by the real `berth-plugin-host`, a
//! deliberately broken remote volume plugin (the small linked driver of
//! `support/voldriver.rs`, served over the protocol in this process), the
//! protocol cases PL-01..PL-08 with and without a plugin under test, and
//! the binary's `--remote`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use berth_conformance::remote::fixture::{Fixture, Reply};
use berth_conformance::remote::{self, default_options};
use berth_conformance::{run, storage, sys, volume, Case, Options, Report, Subject};
use berth_plugin_api::remote::{Handlers, Listen, Server, ServerHandle};
use berth_plugin_api::Kind;
use support::host::PluginHost;
use support::voldriver::{DirVolumes, VolFlaws};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth-conformance"));
    c.env_remove(berth_conformance::lifecycle::FIXTURES_ENV);
    c
}

/// Runs `cases` against `subject` with case roots under a fresh workdir,
/// and checks nothing was left there.
fn run_in_workdir(cases: &[Case], subject: Option<&Subject>) -> Report {
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), ..Options::default() };
    let report = run(cases, subject, &opts);
    println!("{}", report.to_human());
    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "case roots left in the workdir: {left:?}");
    support::check_junit(&report);
    report
}

fn failed(report: &Report) -> BTreeSet<&str> {
    report.failed_ids().into_iter().collect()
}

fn message<'a>(report: &'a Report, id: &str) -> &'a str {
    report.case(id).and_then(|c| c.message.as_deref()).unwrap_or_default()
}

/// Every directory entry under `dir`, for "nothing left behind" checks.
fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_local_plugin_served_by_plugin_host_passes_the_volume_suite_remotely() {
    let mut host = PluginHost::start(&support::local_so(), "local");
    let subject = Subject::remote(&host.address, None, default_options()).unwrap_or_else(|e| panic!("{e}"));
    let id = subject.identity();
    assert_eq!((id.name.as_str(), id.transport.as_str()), ("local", "remote"));
    assert_eq!(id.kinds, [Kind::Volume]);
    assert_eq!(id.address.as_deref(), Some(host.address.as_str()));
    assert_eq!(id.activate.as_deref(), Some(&["VolumeDriver".to_string()][..]));
    assert!(id.sha256.is_none() && id.path.is_none() && id.version.is_empty());
    assert!(subject.volume().is_some() && subject.storage().is_none());

    let report = run_in_workdir(&volume::cases(), Some(&subject));
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, volume::cases().len(), "nothing may be skipped");
    assert!(report
        .headline()
        .contains(&format!("plugin local (remote {}, implements [VolumeDriver])", host.address)));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["plugin"]["transport"], "remote");
    assert_eq!(json["plugin"]["activate"], serde_json::json!(["VolumeDriver"]));
    assert!(json["plugin"].get("sha256").is_none() && json["plugin"].get("version").is_none(), "{json}");

    // PL-02 and PL-06 look at the plugin under test too.
    let pl: Vec<Case> = remote::cases().into_iter().filter(|c| ["PL-02", "PL-06"].contains(&c.id)).collect();
    let report = run_in_workdir(&pl, Some(&subject));
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, 2);

    // Every case removed what it made in the plugin, which kept running.
    assert!(host.running());
    let left: Vec<String> = entries(&host.root()).into_iter().filter(|e| e.contains("vl0")).collect();
    assert!(left.is_empty(), "volumes left in the plugin's root: {left:?}");
    let stderr = host.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_binary_runs_the_volume_suite_against_a_remote_plugin() {
    let host = PluginHost::start(&support::local_so(), "vol");
    let work = tempfile::tempdir().unwrap();
    let xml_file = work.path().join("report.xml");
    // A bare socket path is a unix address too.
    let path = host.address.strip_prefix("unix://").unwrap();
    let out = bin()
        .args(["run", "--remote", path, "--name", "vol-remote", "--kind", "volume", "--repeat", "2"])
        .args(["--format", "junit", "--output"])
        .arg(&xml_file)
        .arg("--workdir")
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("9 passed, 0 failed, 0 skipped"), "{stdout}");
    assert!(
        stdout.contains(&format!("plugin vol-remote (remote {}, implements [VolumeDriver])", host.address)),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&xml_file).unwrap();
    let root = support::xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let props: Vec<(&str, &str)> =
        root.all("property").iter().map(|p| (p.attr("name"), p.attr("value"))).collect();
    assert!(props.contains(&("plugin.transport", "remote")), "{props:?}");
    assert!(props.contains(&("plugin.address", host.address.as_str())), "{props:?}");
    assert!(props.contains(&("plugin.activate", "VolumeDriver")), "{props:?}");
    assert!(!props.iter().any(|(k, _)| *k == "plugin.sha256" || *k == "plugin.version"), "{props:?}");

    // Without --kind: the kinds it implements, plus the protocol cases
    // (no loader cases without --fixtures); a storage case skips.
    let out = bin()
        .args([
            "run",
            "--remote",
            &host.address,
            "--format",
            "json",
            "--skip",
            "PL-03,PL-04,PL-08",
            "--workdir",
        ])
        .arg(work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> =
        json["cases"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "VL-01", "VL-02", "VL-03", "VL-04", "VL-05", "VL-06", "VL-07", "VL-08", "VL-09", "PL-01",
            "PL-02", "PL-05", "PL-06", "PL-07"
        ]
    );
    let out = bin()
        .args(["run", "--remote", &host.address, "--only", "ST-01", "--workdir"])
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("remote plugin \"vol\" does not implement GraphDriver (its /Plugin.Activate answered Implements [\"VolumeDriver\"])"),
        "{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("report.xml")], "case roots left behind");
}

#[test]
fn the_vfs_plugin_served_by_plugin_host_passes_the_storage_suite_remotely() {
    if !support::is_root() {
        eprintln!("skipped: vfs mounts read-only layers and ST-02 chowns, which need root");
        return;
    }
    let host = PluginHost::start(&support::vfs_so(), "vfs");
    let subject = Subject::remote(&host.address, None, default_options()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(subject.identity().kinds, [Kind::Storage]);
    let report = run_in_workdir(&storage::cases(), Some(&subject));
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, storage::cases().len(), "nothing may be skipped on this host");
    // Layer ids were tagged per case, and every case removed its layers.
    let left: Vec<String> = entries(&host.root()).into_iter().filter(|e| e.contains("-st")).collect();
    assert!(left.is_empty(), "layers left in the plugin's root: {left:?}");
    let again = run_in_workdir(&storage::cases()[..3], Some(&subject));
    berth_conformance::assert_conforms(&again);
}

/// `DirVolumes` with `flaws`, served over the protocol on a socket in
/// `dir`, as plugin `name`.
fn serve_dirvol(dir: &Path, name: &str, flaws: VolFlaws) -> ServerHandle {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let driver = match DirVolumes::new(&root.display().to_string(), flaws) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let handlers = Handlers { volume: Some(Arc::new(driver)), ..Handlers::default() };
    Server::bind(&Listen::Unix(dir.join(format!("{name}.sock"))), handlers).unwrap().spawn().unwrap()
}

#[test]
fn a_correct_remote_dirvol_passes_and_broken_ones_fail_the_right_cases() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dirvol(dir.path(), "dirvol", VolFlaws::default());
    let subject = Subject::remote(&server.address(), None, default_options()).unwrap();
    let report = run_in_workdir(&volume::cases(), Some(&subject));
    berth_conformance::assert_conforms(&report);
    server.shutdown();

    let dir = tempfile::tempdir().unwrap();
    let server =
        serve_dirvol(dir.path(), "busy", VolFlaws { remove_ignores_mounts: true, ..VolFlaws::default() });
    let subject = Subject::remote(&server.address(), None, default_options()).unwrap();
    let report = run_in_workdir(&volume::cases(), Some(&subject));
    assert_eq!(failed(&report), BTreeSet::from(["VL-04", "VL-08"]), "{}", report.to_human());
    let m = message(&report, "VL-04");
    assert!(
        m.contains("expected error kind conflict (a volume with active mounts must be refused until its last unmount), got success"),
        "{m}"
    );
    server.shutdown();

    // `get` of an unknown name answers 200 with an empty volume and no
    // error: the client takes it for that volume, and every case asking
    // for a missing name trips on it.
    let dir = tempfile::tempdir().unwrap();
    let server = serve_dirvol(
        dir.path(),
        "empty",
        VolFlaws { get_unknown_answers_empty: true, ..VolFlaws::default() },
    );
    let subject = Subject::remote(&server.address(), None, default_options()).unwrap();
    let report = run_in_workdir(&volume::cases(), Some(&subject));
    let got = failed(&report);
    assert!(got.contains("VL-01") && got.contains("VL-09"), "{}", report.to_human());
    assert!(
        got.is_subset(&BTreeSet::from(["VL-01", "VL-02", "VL-04", "VL-06", "VL-09"])),
        "{}",
        report.to_human()
    );
    let m = message(&report, "VL-01");
    assert!(m.contains("get of unknown volume \"vl01-never-created\" (#1)"), "{m}");
    assert!(m.contains("expected error kind not_found (a name the driver does not have is NotFound"), "{m}");
    server.shutdown();
}

#[test]
fn the_protocol_cases_pass_without_a_plugin_under_test() {
    let report = run_in_workdir(&remote::cases(), None);
    berth_conformance::assert_conforms(&report);
    assert_eq!(report.summary.passed, 8, "nothing may be skipped");
    let ids: Vec<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["PL-01", "PL-02", "PL-03", "PL-04", "PL-05", "PL-06", "PL-07", "PL-08"]);
}

/// A scripted plugin under test answering `implements` and, for
/// `NetworkDriver.GetCapabilities`, `caps`.
fn scripted(path: &Path, implements: &'static [&'static str], caps: &'static str) -> Fixture {
    Fixture::plugin(path, implements, move |r| match r.path.as_str() {
        "/NetworkDriver.GetCapabilities" => Reply::ok(caps),
        _ => Reply::ok("{}"),
    })
    .unwrap()
}

#[test]
fn a_plugin_under_test_with_a_bad_handshake_or_bad_capabilities_fails_pl02_or_pl06() {
    let pl: Vec<Case> = remote::cases().into_iter().filter(|c| ["PL-02", "PL-06"].contains(&c.id)).collect();
    let dir = tempfile::tempdir().unwrap();

    let f = scripted(&dir.path().join("nothing.sock"), &["LogDriver"], "{}");
    let subject = Subject::remote(&f.address(), None, default_options()).unwrap();
    assert!(subject.identity().kinds.is_empty());
    let report = run_in_workdir(&pl, Some(&subject));
    assert_eq!(failed(&report), BTreeSet::from(["PL-02"]), "{}", report.to_human());
    let m = message(&report, "PL-02");
    assert!(m.contains("Implements of the plugin under test \"nothing\""), "{m}");
    assert!(
        m.contains("expected at least one of GraphDriver, NetworkDriver, IpamDriver, VolumeDriver"),
        "{m}"
    );
    assert!(m.contains("[\"LogDriver\"]"), "{m}");
    drop(f);

    let f = scripted(&dir.path().join("galaxy.sock"), &["NetworkDriver"], r#"{"Scope":"galaxy"}"#);
    let subject = Subject::remote(&f.address(), None, default_options()).unwrap();
    assert_eq!(subject.identity().kinds, [Kind::Network]);
    let report = run_in_workdir(&pl, Some(&subject));
    assert_eq!(failed(&report), BTreeSet::from(["PL-06"]), "{}", report.to_human());
    let m = message(&report, "PL-06");
    assert!(m.contains("Scope \"galaxy\" is neither \"local\" nor \"global\""), "{m}");
}
