//! The network suite against the `bridge` plugin served out of process by
//! the real `berth-plugin-host` (Docker's network plugin protocol).

mod support;

use berth_conformance::Subject;
use berth_plugin_api::Kind;
use support::host::PluginHost;
use support::net::{privileged, run_network};

#[test]
fn the_bridge_plugin_served_by_plugin_host_passes_the_network_suite_remotely() {
    if !privileged() {
        return;
    }
    let so = support::plugin_so("berth-network-bridge", "libberth_network_bridge.so");
    let mut host = PluginHost::start(&so, "brn");
    let subject = Subject::remote(&host.address, None, berth_conformance::remote::default_options())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(subject.identity().kinds, [Kind::Network]);
    let report = run_network(&subject);
    support::net::check_bridge_report(&report);
    assert!(host.running());
    let stderr = host.stop();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
