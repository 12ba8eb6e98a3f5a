//! Bridge networks end to end through berthd: two sandboxes on one bridge
//! network reach each other, a sandbox on another bridge network does not,
//! and after `berth network rm` no link and no nftables table of berth's is
//! left. Traffic stays between the test's own namespaces.

mod common;

use std::process::Command;

use common::{describe, World};

const BRIDGE: &str = "\n[[plugin]]\nname = \"bridge\"\npath = \"libberth_network_bridge.so\"\n";

fn ping(from_key: &str, to: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={from_key}"))
        .args(["ping", "-c", "1", "-W", "2", to])
        .output()
        .expect("run nsenter ping (apt-get install -y iputils-ping)")
        .status
        .success()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", name]).output().unwrap().status.success()
}

fn berth_table_exists() -> bool {
    Command::new("nft").args(["list", "table", "inet", "berth"]).output().is_ok_and(|o| o.status.success())
}

/// Removes what the test made even when an assertion fails.
struct Cleanup<'a> {
    w: &'a World,
    sandboxes: Vec<String>,
    networks: Vec<String>,
    bridges: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for s in &self.sandboxes {
            let _ = self.w.berth(&["sandbox", "rm", s]);
        }
        for n in &self.networks {
            let _ = self.w.berth(&["network", "rm", n]);
        }
        for b in &self.bridges {
            let _ = Command::new("ip").args(["link", "del", b]).output();
        }
    }
}

#[test]
fn two_sandboxes_on_a_bridge_network_reach_each_other_and_other_networks_are_isolated() {
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is missing: apt-get install -y nftables (.ci/test does)"
    );
    let w = World::new(BRIDGE);
    let _d = w.start();
    let tag = std::process::id() % 10_000;
    let (net_a, net_b) = (format!("bna{tag}"), format!("bnb{tag}"));
    let (br_a, br_b) = (format!("bta{tag}"), format!("btb{tag}"));
    let mut guard = Cleanup { w: &w, sandboxes: Vec::new(), networks: Vec::new(), bridges: Vec::new() };
    guard.bridges = vec![br_a.clone(), br_b.clone()];

    for (net, br, subnet) in [(&net_a, &br_a, "10.238.71.0/24"), (&net_b, &br_b, "10.238.72.0/24")] {
        let opt = format!("com.docker.network.bridge.name={br}");
        w.berth_ok(&["network", "create", "-d", "bridge", "--subnet", subnet, "-o", &opt, net]);
        guard.networks.push(net.clone());
        assert!(link_exists(br), "the bridge {br} exists");
    }
    assert!(berth_table_exists(), "berth's nftables table exists while bridge networks do");

    let mut keys = Vec::new();
    for (name, net) in [("s1", &net_a), ("s2", &net_a), ("s3", &net_b)] {
        let sandbox = format!("{name}-{tag}");
        let made = w.berth_json(&["sandbox", "create", "--format", "json", &sandbox]);
        guard.sandboxes.push(sandbox.clone());
        keys.push(made["Key"].as_str().expect("the sandbox's netns path").to_string());
        w.berth_ok(&["network", "connect", net, &sandbox]);
    }
    let address = |net: &str, sandbox: &str| -> String {
        let inspect = w.berth_json(&["network", "inspect", net]);
        let inspect = if inspect.is_array() { inspect[0].clone() } else { inspect };
        let containers = inspect["Containers"].as_object().expect("Containers").clone();
        let entry = containers
            .values()
            .find(|c| c["Name"].as_str() == Some(sandbox))
            .unwrap_or_else(|| panic!("{sandbox} in {net}: {inspect}"));
        entry["IPv4Address"].as_str().unwrap().split('/').next().unwrap().to_string()
    };
    let ip2 = address(&net_a, &format!("s2-{tag}"));
    let ip3 = address(&net_b, &format!("s3-{tag}"));
    assert!(ip2.starts_with("10.238.71."), "{ip2}");

    assert!(ping(&keys[0], &ip2), "s1 reaches s2 on the same bridge network ({ip2})");
    assert!(!ping(&keys[0], &ip3), "s1 must not reach s3 on another bridge network ({ip3})");

    // Everything goes: sandboxes (disconnecting them), then the networks.
    for s in std::mem::take(&mut guard.sandboxes) {
        w.berth_ok(&["sandbox", "rm", &s]);
    }
    for n in std::mem::take(&mut guard.networks) {
        let out = w.berth(&["network", "rm", &n]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    for br in [&br_a, &br_b] {
        assert!(!link_exists(br), "the bridge {br} is gone with its network");
    }
    assert!(!berth_table_exists(), "no nftables table of berth's is left after the last bridge network");
    for key in &keys {
        assert!(!std::path::Path::new(key).exists(), "the sandbox's namespace {key} is gone");
    }
}
