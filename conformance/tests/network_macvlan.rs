//! The network suite against the real `macvlan` plugin, loaded as a
//! shared object; its parents are veth pairs the suite makes per case.

mod support;

use berth_conformance::Subject;
use support::net::{ids, list, privileged, reason, run_network};

fn macvlan_so() -> std::path::PathBuf {
    support::plugin_so("berth-network-macvlan", "libberth_network_macvlan.so")
}

#[test]
fn the_macvlan_plugin_passes_the_network_suite() {
    if !privileged() {
        return;
    }
    let subject = Subject::load(&macvlan_so()).unwrap_or_else(|e| panic!("macvlan does not load: {e}"));
    let report = run_network(&subject);
    berth_conformance::assert_conforms(&report);
    assert_eq!(ids(&report, "pass"), list(&["NW-01", "NW-03", "NW-04", "NW-05", "NW-06", "NW-08", "NW-13"]));
    let skips = ids(&report, "skip");
    assert_eq!(skips, list(&["NW-02", "NW-07", "NW-09", "NW-10", "NW-11", "NW-12"]));
    assert!(reason(&report, "NW-02").contains("macvlan-like"), "{}", reason(&report, "NW-02"));
    assert!(reason(&report, "NW-07").contains("does not publish ports"), "{}", reason(&report, "NW-07"));
    // This kernel has no 802.1Q links: the operator's-parent half runs,
    // the parent.vlan half says why it cannot.
    assert!(
        reason(&report, "NW-11").contains("operator's-parent half passed"),
        "{}",
        reason(&report, "NW-11")
    );
}
