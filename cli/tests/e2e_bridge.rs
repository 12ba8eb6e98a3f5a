//! Bridge networks end to end through berthd: two sandboxes on one bridge
//! network reach each other, a sandbox on another bridge network does not,
//! and after `berth network rm` no link and no nftables table of berth's is
//! left; published ports (`berth sandbox create -p`) reach a sandbox from
//! the host and from other sandboxes, and go with the endpoint. Traffic
//! stays on loopback, the test's bridge and the test's own namespaces.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// The real python3 (not a pyenv or similar shim, so that killing the
/// process we started kills the interpreter).
fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("run python3 (apt-get install -y python3; .ci/test does)");
    assert!(out.status.success(), "python3: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A TCP server in a sandbox's namespace on 0.0.0.0:`port` that answers
/// every connection with `greeting` and closes it; killed on drop.
struct Server(Child);

const SERVE: &str = "import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(16)
print('ready', flush=True)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[2].encode())
    c.close()
";

impl Server {
    fn start(key: &str, port: u16, greeting: &str) -> Server {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={key}"))
            .args([python().as_str(), "-c", SERVE, &port.to_string(), greeting])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run nsenter python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let server = Server(child);
        assert_eq!(line.trim(), "ready", "the server in {key} did not start");
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a TCP connection from the host to `addr` reads, or the error.
fn fetch(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// What a TCP connection from inside the namespace at `key` to `ip:port`
/// reads ("" when it fails).
fn fetch_in(key: &str, ip: &str, port: u16) -> String {
    let script = "import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
sys.stdout.write(b''.join(iter(lambda: s.recv(100), b'')).decode())
";
    let out = Command::new("nsenter")
        .arg(format!("--net={key}"))
        .args([python().as_str(), "-c", script, ip, &port.to_string()])
        .output()
        .expect("run nsenter python3");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host port nothing listens on now (the kernel's choice for port 0).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

fn bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The TCP destination ports matched by the rules of nftables table
/// `inet <table>`; `None` when the table does not exist.
fn nft_dports(table: &str) -> Option<Vec<u64>> {
    let out = Command::new("nft").args(["-j", "list", "table", "inet", table]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft -j prints JSON");
    fn walk(v: &serde_json::Value, out: &mut Vec<u64>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(mm) = m.get("match") {
                    if mm["left"]["payload"]["field"] == "dport" {
                        out.extend(mm["right"].as_u64());
                    }
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut ports = Vec::new();
    walk(&v, &mut ports);
    Some(ports)
}

/// Host links enslaved to bridge `br`.
fn ports_of(br: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-j", "link", "show", "master", br]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
}

/// Removes the test's nftables table if the daemon could not.
struct Table(String);

impl Drop for Table {
    fn drop(&mut self) {
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.0]).output();
    }
}

#[test]
fn published_ports_reach_sandboxes_from_the_host_and_go_with_the_endpoint() {
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is missing: apt-get install -y nftables (.ci/test does)"
    );
    let tag = std::process::id() % 10_000;
    // A table of this test's own, so the test beside it (table `berth`)
    // and this one never rewrite each other's rules.
    let table = format!("berthp{tag}");
    let w = World::new(&format!("{BRIDGE}options = {{ table = \"{table}\" }}\n"));
    let _d = w.start();
    let _table = Table(table.clone());
    let (net, br) = (format!("bnp{tag}"), format!("btp{tag}"));
    let (sa, sb) = (format!("pa-{tag}"), format!("pb-{tag}"));
    let mut guard = Cleanup { w: &w, sandboxes: Vec::new(), networks: Vec::new(), bridges: vec![br.clone()] };

    let opt = format!("com.docker.network.bridge.name={br}");
    w.berth_ok(&["network", "create", "-d", "bridge", "--subnet", "10.238.73.0/24", "-o", &opt, &net]);
    guard.networks.push(net.clone());
    let gateway = "10.238.73.1";

    // A: 8080/tcp on a host port chosen here, on 127.0.0.1 only.
    // B: 8080/tcp on any free host port, on every host address.
    let host_port = free_port();
    let publish_a = format!("127.0.0.1:{host_port}:8080/tcp");
    let mut keys = Vec::new();
    for (name, publish) in [(&sa, publish_a.as_str()), (&sb, "8080")] {
        let made = w.berth_json(&["sandbox", "create", "--format", "json", "-p", publish, name]);
        guard.sandboxes.push(name.clone());
        keys.push(made["Key"].as_str().expect("the sandbox's netns path").to_string());
        w.berth_ok(&["network", "connect", &net, name]);
    }
    let (key_a, key_b) = (keys[0].clone(), keys[1].clone());
    let veths = ports_of(&br);
    assert_eq!(veths.len(), 2, "one bridge port per endpoint: {veths:?}");

    // Inspect shows what the driver chose, in Docker's NetworkSettings.Ports shape.
    let ports = |name: &str| w.berth_json(&["sandbox", "inspect", name])[0]["Ports"].clone();
    assert_eq!(
        ports(&sa),
        serde_json::json!({"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": host_port.to_string()}]})
    );
    let b = ports(&sb);
    assert_eq!(b["8080/tcp"][0]["HostIp"], "0.0.0.0", "{b}");
    let eph: u16 = b["8080/tcp"][0]["HostPort"].as_str().unwrap().parse().unwrap();
    // The bridge driver's EPHEMERAL_PORTS (dockerd's range).
    assert!((49153..=60999).contains(&eph), "ephemeral host port {eph}");
    let table_text = w.berth_ok(&["sandbox", "ls"]);
    assert!(table_text.contains(&format!("127.0.0.1:{host_port}->8080/tcp")), "{table_text}");
    assert!(table_text.contains(&format!("0.0.0.0:{eph}->8080/tcp")), "{table_text}");
    let list = w.berth_json(&["sandbox", "ls", "--format", "json"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let dports = nft_dports(&table).expect("the driver's table exists");
    assert!(dports.contains(&host_port.into()) && dports.contains(&eph.into()), "{dports:?}");

    let server_a = Server::start(&key_a, 8080, "hello from a");
    let server_b = Server::start(&key_b, 8080, "hello from b");
    // From the host through loopback: the driver sets route_localnet on
    // the bridges it makes and masquerades 127.0.0.0/8 leaving them, so
    // DNAT to 127.0.0.1 works as in dockerd without its userland proxy.
    let local = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    assert_eq!(fetch(local(host_port)), Ok("hello from a".into()), "host → 127.0.0.1:{host_port} → a");
    assert_eq!(fetch(local(eph)), Ok("hello from b".into()), "host → 127.0.0.1:{eph} → b");
    let gw = SocketAddr::from((gateway.parse::<Ipv4Addr>().unwrap(), eph));
    assert_eq!(fetch(gw), Ok("hello from b".into()), "host → {gw} (the bridge's address) → b");
    // Hairpin: a sandbox reaches a published port through a host address,
    // another sandbox's and its own.
    assert_eq!(fetch_in(&key_a, gateway, eph), "hello from b", "a → {gateway}:{eph} → b");
    assert_eq!(fetch_in(&key_b, gateway, eph), "hello from b", "b → {gateway}:{eph} → b itself");
    // A's port is on 127.0.0.1 only: not on the bridge's address.
    assert_eq!(fetch_in(&key_b, gateway, host_port), "", "{gateway}:{host_port} is not published");

    // Disconnected: the bindings go (rules, inspect), the host ports are
    // free, and nothing answers on them any more.
    drop(server_b);
    for name in [&sa, &sb] {
        w.berth_ok(&["network", "disconnect", &net, name]);
    }
    let dports = nft_dports(&table).unwrap_or_default();
    assert!(!dports.contains(&host_port.into()) && !dports.contains(&eph.into()), "{dports:?}");
    assert_eq!(ports(&sa), serde_json::json!({"8080/tcp": null}));
    assert!(bindable(host_port) && bindable(eph), "the host ports are free after the disconnect");
    assert!(fetch(local(host_port)).is_err(), "nothing answers on 127.0.0.1:{host_port} any more");

    // Everything goes; no rule, link or namespace is left.
    drop(server_a);
    for s in std::mem::take(&mut guard.sandboxes) {
        w.berth_ok(&["sandbox", "rm", &s]);
    }
    for n in std::mem::take(&mut guard.networks) {
        let out = w.berth(&["network", "rm", &n]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    assert_eq!(nft_dports(&table), None, "the driver's table goes with its last network");
    assert!(!link_exists(&br), "the bridge {br} is gone with its network");
    for v in &veths {
        assert!(!link_exists(v), "the endpoint's link {v} is gone");
    }
    for key in &keys {
        assert!(!std::path::Path::new(key).exists(), "the sandbox's namespace {key} is gone");
    }
}
