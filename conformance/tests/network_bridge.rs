//! The network suite against the real `bridge` plugin, loaded as a shared
//! object exactly as the daemon loads it (built here with
//! `cargo build -p berth-network-bridge`).

mod support;

use berth_conformance::Subject;
use berth_plugin_api::Kind;
use support::net::{privileged, run_network};

fn bridge_so() -> std::path::PathBuf {
    support::plugin_so("berth-network-bridge", "libberth_network_bridge.so")
}

#[test]
fn the_bridge_plugin_passes_the_network_suite() {
    if !privileged() {
        return;
    }
    let subject = Subject::load(&bridge_so()).unwrap_or_else(|e| panic!("bridge does not load: {e}"));
    assert_eq!(subject.identity().kinds, [Kind::Network]);
    let report = run_network(&subject);
    support::net::check_bridge_report(&report);
}
