//! The default IPAM as berthd's embedded configuration loads it keeps its
//! state in memory (`persist = "replay"`): across a berthd restart the
//! daemon replays its records into it, so a new endpoint gets a new
//! address and `network inspect` is unchanged. (The test's config loads
//! the plugins of this build, as the embedded one would search installed
//! ones first.)

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{describe, World};

/// Unmounts every namespace file under the world's exec root and deletes
/// the parent link on drop.
struct Guard(PathBuf, String);

impl Drop for Guard {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.1]).output();
    }
}

const MACVLAN: &str = "\n[[plugin]]\nname = \"macvlan\"\npath = \"libberth_network_macvlan.so\"\n";

/// The world's config with the default IPAM as the embedded config has it.
fn world() -> World {
    let w = World::new(MACVLAN);
    let text = w.config_text(MACVLAN);
    let ipam = "name = \"default\"\npath = \"libberth_ipam_default.so\"\n";
    assert!(text.contains(ipam), "{text}");
    let embedded = include_str!("../../core/src/default.toml");
    assert!(embedded.contains(&format!("{ipam}options = {{ persist = \"replay\" }}")), "{embedded}");
    let text = text.replace(ipam, &format!("{ipam}options = {{ persist = \"replay\" }}\n"));
    std::fs::write(&w.config, text).unwrap();
    w
}

fn files_named(dir: &std::path::Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_named(&p, name));
        } else if e.file_name() == name {
            out.push(p);
        }
    }
    out
}

#[test]
fn across_a_restart_recorded_addresses_stay_taken_and_inspect_is_unchanged() {
    let w = world();
    let tag = std::process::id() % 10_000;
    let (net, parent) = (format!("rpl{tag}"), format!("rpl{tag}h"));
    let made = Command::new("ip")
        .args(["link", "add", &parent, "type", "veth", "peer", "name", &format!("rpl{tag}c")])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", describe(&made));
    let _g = Guard(w.exec_root.join("netns"), parent.clone());
    let mut d = w.start();
    let parent_opt = format!("parent={parent}");
    w.berth_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.239.41.0/24",
        "--gateway",
        "10.239.41.1",
        "--aux-address",
        "keep=10.239.41.3",
        "-o",
        &parent_opt,
        &net,
    ]);
    for sb in ["rb1", "rb2", "rb3"] {
        w.berth_ok(&["sandbox", "create", sb]);
    }
    w.berth_ok(&["network", "connect", &net, "rb1"]);
    let before = w.berth_json(&["network", "inspect", &net]);
    let ep = |v: &serde_json::Value, sb: &str| -> String {
        let c = v[0]["Containers"].as_object().unwrap();
        let e = c.values().find(|e| e["Name"] == sb).unwrap_or_else(|| panic!("{sb} in {v}"));
        e["IPv4Address"].as_str().unwrap().to_string()
    };
    assert_eq!(ep(&before, "rb1"), "10.239.41.2/24");
    assert!(files_named(&w.root, "ipam-state.json").is_empty(), "the IPAM writes nothing");
    assert!(files_named(&w.root, "ipam-journal").is_empty(), "the IPAM writes nothing");

    // A clean stop, then a start with an empty IPAM that the daemon fills.
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", d.log());
    drop(d);
    let d = w.start();
    let log = d.log();
    assert!(
        log.contains("IPAM replay: 1 pools and 3 addresses of 1 networks requested again"),
        "gateway, aux and rb1: {log}"
    );
    assert_eq!(w.berth_json(&["network", "inspect", &net]), before, "inspect is unchanged");
    w.berth_ok(&["network", "connect", &net, "rb2"]);
    let after = w.berth_json(&["network", "inspect", &net]);
    assert_eq!(ep(&after, "rb2"), "10.239.41.4/24", "not .1 (gateway), .2 (rb1) or .3 (aux)");
    let taken = w.berth(&["network", "connect", "--ip", "10.239.41.2", &net, "rb3"]);
    assert!(!taken.status.success(), "{}", describe(&taken));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already in use"), "{}", describe(&taken));

    // Everything goes back, and the subnet is free again.
    w.berth_ok(&["sandbox", "rm", "rb1", "rb2", "rb3"]);
    w.berth_ok(&["network", "rm", &net]);
    w.berth_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.239.41.0/24",
        "-o",
        &parent_opt,
        &net,
    ]);
    w.berth_ok(&["network", "rm", &net]);
    drop(d);
}
