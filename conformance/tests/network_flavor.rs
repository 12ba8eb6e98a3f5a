//! What a network driver is, the suite finds by effect: a driver that
//! accepts `com.docker.network.bridge.name` and `parent` but acts on
//! neither (`support::laxnet`) is neither bridge-like nor macvlan-like, so
//! the bridge and macvlan cases skip for it, saying why, instead of
//! checking it as what it is not.

mod support;

use berth_conformance::Subject;
use berth_plugin_api::Init;
use support::laxnet::LaxNet;
use support::net::{privileged, reason, run_network};

#[test]
fn a_driver_that_ignores_options_is_neither_bridge_like_nor_macvlan_like() {
    if !privileged() {
        return;
    }
    let subject = Subject::linked_network("lax", "0.0.0", |_| Ok(Init::Ready(LaxNet::default())));
    let report = run_network(&subject);
    let plain = "an interface driver taking pools and no bridge or parent option";
    for id in ["NW-02", "NW-09", "NW-10", "NW-11"] {
        assert_eq!(report.case(id).unwrap().result, "skip", "{id}: {}", reason(&report, id));
        assert!(reason(&report, id).contains(plain), "{id}: {}", reason(&report, id));
    }
    for id in ["NW-02", "NW-09"] {
        assert!(
            reason(&report, id).contains("applies to bridge-like drivers"),
            "{id}: {}",
            reason(&report, id)
        );
    }
    assert!(reason(&report, "NW-11").contains("macvlan-like"), "{}", reason(&report, "NW-11"));
    // Its endpoints come and go (its other flaws fail their own cases).
    assert_eq!(report.case("NW-08").unwrap().result, "pass", "{}", reason(&report, "NW-08"));
}
