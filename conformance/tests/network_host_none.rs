//! The network suite against the real `host` and `none` plugins, loaded
//! as shared objects, through the library and the binary.

mod support;

use berth_conformance::Subject;
use support::net::{ids, list, privileged, reason, run_network};

#[test]
fn the_host_and_none_plugins_pass_the_network_suite() {
    if !privileged() {
        return;
    }
    // One after the other: the cases of one process share link names.
    for (package, file) in [
        ("berth-network-host", "libberth_network_host.so"),
        ("berth-network-none", "libberth_network_none.so"),
    ] {
        let subject =
            Subject::load(&support::plugin_so(package, file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let report = run_network(&subject);
        berth_conformance::assert_conforms(&report);
        assert_eq!(ids(&report, "pass"), list(&["NW-01", "NW-08", "NW-10"]), "{file}");
        for id in ["NW-02", "NW-03", "NW-04", "NW-05", "NW-06", "NW-07", "NW-09", "NW-11", "NW-13"] {
            assert!(reason(&report, id).contains("addressless"), "{file} {id}: {}", reason(&report, id));
        }
    }
}

#[test]
fn the_binary_runs_the_network_suite_for_a_network_plugin() {
    if !privileged() {
        return;
    }
    let so = support::plugin_so("berth-network-none", "libberth_network_none.so");
    let (stdout, xml) = support::run_binary(env!("CARGO_BIN_EXE_berth-conformance"), &so);
    assert!(stdout.contains("3 passed, 0 failed, 10 skipped"), "{stdout}");
    let root = support::xml::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!(root.attr("tests"), "13");
    assert_eq!(root.all("testsuite")[0].attr("name"), "berth.network");
}
