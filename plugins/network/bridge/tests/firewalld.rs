//! The bridge driver with a real firewalld: a private D-Bus bus
//! (`dbus-daemon` with a config of the test's own) and firewalld on it,
//! both started in the test's private "host" network namespace, so neither
//! the machine's bus nor its firewall is touched. Needs root, `ip`, `nft`,
//! `ping`, `dbus-daemon`, `busctl` and `firewalld` (Debian: dbus, systemd,
//! firewalld); says why it is skipped otherwise.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::network::*;
use berth_plugin_api::util::command::find_program;
use berth_plugin_api::{Init, InitRequest, NetworkDriver};
use common::*;
use serde_json::{json, Value};

/// A process the test started, killed (by its pid) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

fn busctl(address: &str, args: &[&str]) -> String {
    let mut all = vec!["busctl", "--address", address];
    all.extend_from_slice(args);
    run(&all).1
}

fn zone_of(address: &str, ifname: &str) -> String {
    busctl(
        address,
        &[
            "call",
            "org.fedoraproject.FirewallD1",
            "/org/fedoraproject/FirewallD1",
            "org.fedoraproject.FirewallD1.zone",
            "getZoneOfInterface",
            "s",
            ifname,
        ],
    )
}

#[test]
fn bridges_go_into_firewalld_zone_berth_and_traffic_passes() {
    if !can_run() {
        return;
    }
    if let Some(missing) =
        ["dbus-daemon", "busctl", "firewalld"].into_iter().find(|t| find_program(t).is_none())
    {
        eprintln!("skipped: {missing} is not installed (apt-get install dbus systemd firewalld)");
        return;
    }
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bus");
    let address = format!("unix:path={}", socket.display());
    std::fs::write(dir.path().join("bus.conf"), BUS_CONF.replace("SOCKET", socket.to_str().unwrap()))
        .unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let _bus = Proc(
        Command::new("dbus-daemon")
            .args(["--nofork", "--nopidfile", "--config-file"])
            .arg(dir.path().join("bus.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !socket.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::File::create(dir.path().join("firewalld.log")).unwrap();
    let _fw = Proc(
        Command::new("firewalld")
            .args(["--nofork", "--nopid", "--log-target", "console", "--system-config"])
            .arg(&etc)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    loop {
        let state = busctl(
            &address,
            &[
                "get-property",
                "org.fedoraproject.FirewallD1",
                "/org/fedoraproject/FirewallD1",
                "org.fedoraproject.FirewallD1",
                "state",
            ],
        );
        if state.contains("RUNNING") {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("firewalld.log")).unwrap_or_default();
        assert!(t.elapsed() < Duration::from_secs(60), "firewalld did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(host.ruleset().contains("table inet firewalld"), "firewalld runs in the test's namespace");

    let root = dir.path().join("state");
    let mut init = InitRequest::new("bridge", root.to_str().unwrap(), root.join("run").to_str().unwrap());
    init.options = json!({ "firewalld_bus": address });
    let d: Arc<dyn NetworkDriver> =
        match PluginModule::linked(berth_network_bridge::export::berth_plugin_root())
            .new_network(&init)
            .unwrap()
        {
            Init::Ready(d) => d,
            Init::Skipped(why) => panic!("declined: {why}"),
        };
    d.create_network(network_req("netfw", "10.239.1.0/24", "10.239.1.1/24", Value::Null)).unwrap();
    assert!(zone_of(&address, "br-netfw").contains("\"berth\""), "{}", zone_of(&address, "br-netfw"));
    assert!(Path::new(&etc).join("zones/berth.xml").is_file(), "zone berth in the permanent configuration");
    assert!(Path::new(&etc).join("policies/berth-forwarding.xml").is_file());
    {
        // with firewalld's rules in place, traffic still flows both ways
        let sb = attach(&*d, "netfw", "f1", "10.239.1.2/24");
        let out = Sandbox::outside("10.239.9.1/24", "10.239.9.2/24", "10.239.0.0/16");
        let _who = out.whoami_server(7000);
        assert_eq!(sb.tcp_read("10.239.9.2:7000").as_deref(), Some("10.239.9.1"), "masqueraded out");
        let mut p = ProgramExternalConnectivityRequest::new("netfw", "f1");
        p.options.insert(
            "com.docker.network.portmap".into(),
            json!([{"Proto": 6, "IP": "10.239.1.2", "Port": 80, "HostPort": 18081}]),
        );
        d.program_external_connectivity(p).unwrap();
        let _srv = sb.echo_server(80);
        assert!(out.tcp("10.239.9.1:18081"), "published port reached from outside through firewalld");
        detach(&*d, "netfw", "f1");
    }
    {
        // control: a bridge outside the zone (a second driver, told of no
        // firewalld, with a table of its own) is blocked by firewalld
        let root2 = dir.path().join("state2");
        let mut init =
            InitRequest::new("bridge2", root2.to_str().unwrap(), root2.join("run").to_str().unwrap());
        init.options = json!({ "firewalld_bus": "unix:path=/nonexistent/bus", "table": "berthctl" });
        let Init::Ready(d2) = PluginModule::linked(berth_network_bridge::export::berth_plugin_root())
            .new_network(&init)
            .unwrap()
        else {
            panic!("declined")
        };
        d2.create_network(network_req("netnz", "10.239.2.0/24", "10.239.2.1/24", Value::Null)).unwrap();
        let sb = attach(&*d2, "netnz", "z1", "10.239.2.2/24");
        let out = Sandbox::outside("10.239.8.1/24", "10.239.8.2/24", "10.239.0.0/16");
        let _who = out.whoami_server(7000);
        assert_eq!(sb.tcp_read("10.239.8.2:7000"), None, "firewalld must block a bridge outside zone berth");
        drop((_who, out, sb));
        detach(&*d2, "netnz", "z1");
        d2.delete_network(DeleteNetworkRequest::new("netnz")).unwrap();
    }
    for _ in 0..2 {
        d.delete_network(DeleteNetworkRequest::new("netfw")).unwrap();
    }
    assert!(!zone_of(&address, "br-netfw").contains("berth"), "bridge left in the zone");
    let rules = host.ruleset();
    assert!(!rules.contains("table inet berth"), "{rules}");
}
