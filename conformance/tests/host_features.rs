//! The report's host section records the kernel features that gate cases
//! — in the human table, the JSON and the JUnit properties — and they are
//! this machine's, read here independently of the suite.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use berth_conformance::{features, run, sys, Options, Report};

/// What this test finds for the features it can read without the suite:
/// filesystems, device-mapper, 802.1Q, root.
fn read_here() -> BTreeMap<&'static str, bool> {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap();
    let has_fs = |n: &str| fs.lines().any(|l| l.split_whitespace().last() == Some(n));
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    BTreeMap::from([
        ("overlay", has_fs("overlay")),
        ("btrfs", has_fs("btrfs")),
        (
            "device-mapper",
            misc.contains(" device-mapper") || Path::new("/sys/class/misc/device-mapper").exists(),
        ),
        ("root", sys::euid() == 0),
    ])
}

fn check(features: &BTreeMap<String, bool>) {
    assert_eq!(features.keys().len(), features::ALL.len(), "{features:?}");
    for (name, present) in read_here() {
        assert_eq!(features.get(name), Some(&present), "{name}: {features:?}");
    }
    // On this machine (kernel 6.18, everything built in, no module tree)
    // that is: overlay present, device-mapper absent; and 802.1Q absent
    // whenever the kernel shows no trace of it.
    if !Path::new("/proc/net/vlan").exists() && !Path::new("/sys/module/8021q").exists() {
        let tree = Path::new("/lib/modules").join(sys::kernel_release());
        if !tree.exists() {
            assert!(!features["8021q"], "{features:?}");
        }
    }
    println!("{features:?}");
}

#[test]
fn the_features_appear_in_every_format_and_are_this_hosts() {
    // PL-10 without fixtures: one quick skip, so JUnit has a testsuite.
    let pl10: Vec<_> =
        berth_conformance::lifecycle::cases().into_iter().filter(|c| c.id == "PL-10").collect();
    let report: Report = run(&pl10, None, &Options::default());
    check(&report.host.features);
    let present = report.host.features_that_are(true);
    let absent = report.host.features_that_are(false);
    assert_eq!(present.len() + absent.len(), features::ALL.len());

    // Human: one line.
    let human = report.to_human();
    let line = human.lines().find(|l| l.starts_with("host features: ")).unwrap_or_else(|| panic!("{human}"));
    for f in &present {
        assert!(line.split(" (absent").next().unwrap().split_whitespace().any(|w| w == *f), "{f}: {line}");
    }
    for f in &absent {
        assert!(line.split("(absent: ").nth(1).unwrap().contains(f), "{f}: {line}");
    }

    // JSON: host.features, a map of name → present.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let map: BTreeMap<String, bool> = serde_json::from_value(json["host"]["features"].clone()).unwrap();
    assert_eq!(map, report.host.features);

    // JUnit: host.features (present, comma-separated) and host.features.absent.
    let junit = support::check_junit(&report);
    let props: BTreeMap<&str, &str> =
        junit.all("property").iter().map(|p| (p.attr("name"), p.attr("value"))).collect();
    assert_eq!(props.get("host.features"), Some(&present.join(",").as_str()), "{props:?}");
    assert_eq!(props.get("host.features.absent"), Some(&absent.join(",").as_str()), "{props:?}");
}

#[test]
fn the_binary_reports_the_features_in_json() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .args(["run", "--kind", "plugin", "--only", "PL-02", "--format", "json", "--workdir"])
        .arg(work.path())
        .env_remove(berth_conformance::lifecycle::FIXTURES_ENV)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let map: BTreeMap<String, bool> = serde_json::from_value(json["host"]["features"].clone()).unwrap();
    check(&map);
}
