//! Remote network and IPAM drivers under berthd, end to end (as root).
//!
//! 1. A network plugin in Python that berth did not write (Docker's
//!    `NetworkDriver` protocol, from `shared/reference/docker-plugin-protocol.md`
//!    §5 alone), found by name in the daemon's plugin socket directory: the
//!    calls it gets, in order and in shape, are dockerd's; it ignores
//!    berth's `com.berth.network.join_in_place` and still works (it makes its
//!    veth pair in the host namespace and the core moves the end in).
//! 2. berth's own bridge driver and default IPAM driver run out of process
//!    by `berth-plugin-host`: two sandboxes on one network reach each other,
//!    and nothing (bridge, veth, nftables table, namespace) is left.
//!
//! Everything the tests make is removed by Drop guards even when an
//! assertion fails: sandboxes and networks through the daemon, then the
//! plugin processes and their sockets, then any link or table left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{describe, target_dir, World};
use serde_json::Value;

/// A network plugin in Python: Python's `http.server` on a unix socket,
/// HTTP/1.0 (one request per connection). `argv`: socket, log file.
///
/// `CreateEndpoint` makes a veth pair in the host namespace, `rnh` + the
/// first 10 characters of the endpoint id on the host, `rnc` + the same
/// as the end `Join` hands over (`DstPrefix` `eth`); it fills `MacAddress`
/// when the request left it empty. `Join` answers the network's IPv4
/// gateway (so the endpoint gives the sandbox its default route) unless
/// the network was created with the driver option `pygw=none`. `Leave`
/// and `DeleteEndpoint` delete the pair (idempotent). Every request is
/// appended to the log as `<path> <body>` on one line (the body as sent,
/// without its trailing newline).
const PY_NETWORK: &str = r#"
import http.server, json, os, socketserver, subprocess, sys, threading

SOCK, LOG = sys.argv[1], sys.argv[2]
lock = threading.Lock()
networks = {}

def names(ep):
    return "rnh" + ep[:10], "rnc" + ep[:10]

def ip(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        with lock:
            with open(LOG, "a") as f:
                f.write(self.path + " " + raw.decode().strip().replace("\n", " ") + "\n")
        req = json.loads(raw) if raw.strip() else {}
        path = self.path
        if path == "/Plugin.Activate":
            return self.answer({"Implements": ["NetworkDriver"]})
        if path == "/NetworkDriver.GetCapabilities":
            return self.answer({"Scope": "local"})
        if path == "/NetworkDriver.CreateNetwork":
            generic = (req.get("Options") or {}).get("com.docker.network.generic") or {}
            gw = ""
            if generic.get("pygw") != "none":
                for d in req.get("IPv4Data") or []:
                    gw = (d.get("Gateway") or "").split("/")[0] or gw
            with lock:
                networks[req["NetworkID"]] = gw
            return self.answer({})
        if path == "/NetworkDriver.DeleteNetwork":
            with lock:
                networks.pop(req["NetworkID"], None)
            return self.answer({})
        if path == "/NetworkDriver.CreateEndpoint":
            host, peer = names(req["EndpointID"])
            r = ip("link", "add", host, "type", "veth", "peer", "name", peer)
            if r.returncode != 0:
                return self.answer({"Err": "ip link add: " + r.stderr.strip()}, 500)
            iface = req.get("Interface") or {}
            if iface.get("MacAddress"):
                return self.answer({"Interface": {}})
            e = req["EndpointID"]
            mac = "02:" + ":".join(e[i:i + 2] for i in range(0, 10, 2))
            return self.answer({"Interface": {"MacAddress": mac}})
        if path == "/NetworkDriver.Join":
            host, peer = names(req["EndpointID"])
            with lock:
                gw = networks.get(req["NetworkID"], "")
            return self.answer({"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"}, "Gateway": gw})
        if path in ("/NetworkDriver.Leave", "/NetworkDriver.DeleteEndpoint"):
            host, _ = names(req["EndpointID"])
            ip("link", "del", host)
            return self.answer({})
        if path in ("/NetworkDriver.ProgramExternalConnectivity",
                    "/NetworkDriver.RevokeExternalConnectivity",
                    "/NetworkDriver.EndpointOperInfo"):
            return self.answer({})
        self.answer({"Err": "unknown method " + path}, 404)

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.path.exists(SOCK):
    os.unlink(SOCK)
Server(SOCK, Handler).serve_forever()
"#;

/// berthd, the CLI and the plugins the tests use, built once; the bridge
/// driver is not among the packages the shared harness builds.
fn ensure_built() {
    common::ensure_built();
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "berth-network-bridge"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if target_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(out.status.success(), "cargo build of the bridge driver failed:\n{}", describe(&out));
    });
}

fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", name]).stderr(Stdio::null()).output().unwrap().status.success()
}

fn del_link(name: &str) {
    let _ = Command::new("ip").args(["link", "del", name]).stderr(Stdio::null()).status();
}

/// Host links enslaved to bridge `br`.
fn ports_of(br: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-j", "link", "show", "master", br]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
}

/// `ip -o <args>` inside the namespace at `key`.
fn ip_in(key: &str, args: &[&str]) -> String {
    let out = Command::new("nsenter").arg(format!("--net={key}")).arg("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?} in {key}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Interface names inside the namespace at `key`.
fn links_in(key: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&ip_in(key, &["-j", "link"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
}

fn ping(from_key: &str, to: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={from_key}"))
        .args(["ping", "-c", "1", "-W", "2", to])
        .output()
        .expect("run nsenter ping (apt-get install -y iputils-ping)")
        .status
        .success()
}

/// A process the test started (a plugin); SIGTERM, then SIGKILL, on drop,
/// and its socket removed.
struct Proc {
    child: Option<Child>,
    socket: PathBuf,
}

impl Proc {
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety
            // preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Waits for the socket, failing if the process exits first.
    fn wait_socket(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket.exists() {
            if let Some(s) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "the plugin exited ({s}) before making {}: {}",
                    self.socket.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{} did not appear", self.socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes what a test made, every step tried, in order: sandboxes and
/// networks through the daemon (which still needs the plugins), then the
/// plugins, then links and nftables tables left over.
struct Cleanup<'a> {
    w: &'a World,
    /// berthd, killed after everything else was asked of it.
    daemon: Option<common::Daemon>,
    sandboxes: Vec<String>,
    networks: Vec<String>,
    plugins: Vec<Proc>,
    /// Exact link names to delete.
    links: Vec<String>,
    /// The Python plugin's log: the host ends of the endpoints it made.
    py_log: Option<PathBuf>,
    /// nftables `inet` tables to delete.
    tables: Vec<String>,
}

impl<'a> Cleanup<'a> {
    fn new(w: &'a World) -> Self {
        Cleanup {
            w,
            daemon: None,
            sandboxes: Vec::new(),
            networks: Vec::new(),
            plugins: Vec::new(),
            links: Vec::new(),
            py_log: None,
            tables: Vec::new(),
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for s in &self.sandboxes {
            let _ = self.w.berth(&["sandbox", "rm", s]);
        }
        for n in &self.networks {
            let _ = self.w.berth(&["network", "rm", n]);
        }
        for p in &mut self.plugins {
            p.stop();
        }
        if let Some(log) = &self.py_log {
            for call in calls(log).iter().filter(|c| c.path == "/NetworkDriver.CreateEndpoint") {
                if let Some(ep) = call.body["EndpointID"].as_str() {
                    del_link(&format!("rnh{}", &ep[..10.min(ep.len())]));
                }
            }
        }
        for l in &self.links {
            del_link(l);
        }
        for t in &self.tables {
            let _ = Command::new("nft").args(["delete", "table", "inet", t]).stderr(Stdio::null()).status();
        }
        // Namespace files of sandboxes the daemon could not remove.
        for entry in std::fs::read_dir(self.w.exec_root.join("netns")).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
        }
    }
}

/// One logged request.
#[derive(Debug)]
struct Call {
    path: String,
    raw: String,
    body: Value,
}

fn calls(log: &Path) -> Vec<Call> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (path, raw) = l.split_once(' ').unwrap_or((l, ""));
            // A body that is not JSON stays text (and fails the checks).
            let body = if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
            };
            Call { path: path.to_string(), raw: raw.to_string(), body }
        })
        .collect()
}

/// The short names of the calls (`NetworkDriver.` and `Plugin.` dropped).
fn short(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.path.trim_start_matches("/NetworkDriver.").trim_start_matches('/').to_string())
        .collect()
}

/// The one call in `calls` with `path` whose `key` is `value`.
fn find<'c>(calls: &'c [Call], path: &str, key: &str, value: &str) -> &'c Call {
    let found: Vec<&Call> =
        calls.iter().filter(|c| c.path == path && c.body[key].as_str() == Some(value)).collect();
    assert_eq!(found.len(), 1, "one {path} with {key} {value}: {found:?}");
    found[0]
}

/// `berth sandbox create --format json NAME [extra]`: (id, key).
fn sandbox(w: &World, g: &mut Cleanup<'_>, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["sandbox", "create", "--format", "json"];
    args.extend_from_slice(extra);
    args.push(name);
    let made = w.berth_json(&args);
    g.sandboxes.push(name.to_string());
    let id = made["Id"].as_str().expect("Id").to_string();
    let key = made["Key"].as_str().expect("the sandbox's netns path").to_string();
    (id, key)
}

/// The endpoint of sandbox `name` in `berth network inspect net`.
fn endpoint_of(w: &World, net: &str, name: &str) -> Value {
    let inspect = w.berth_json(&["network", "inspect", net]);
    let inspect = if inspect.is_array() { inspect[0].clone() } else { inspect };
    inspect["Containers"]
        .as_object()
        .expect("Containers")
        .values()
        .find(|c| c["Name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{name} in {net}: {inspect}"))
        .clone()
}

fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap()
}

#[test]
fn a_python_network_plugin_gets_dockerds_calls_in_dockerds_order() {
    ensure_built();
    let w = World::new("");
    let mut g = Cleanup::new(&w);
    let tag = std::process::id() % 10_000;
    let py = format!("pynet{tag}");
    let socket = w.plugins_dir().join(format!("{py}.sock"));
    let log = w.dir.path().join("pynet.log");
    g.py_log = Some(log.clone());
    let script = w.write("pynet.py", PY_NETWORK);
    let child = Command::new("python3")
        .arg(&script)
        .arg(&socket)
        .arg(&log)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(w.dir.path().join("pynet.stderr")).unwrap())
        .spawn()
        .expect("python3 runs (apt-get install -y python3)");
    g.plugins.push(Proc { child: Some(child), socket: socket.clone() });
    g.plugins[0].wait_socket(&w.dir.path().join("pynet.stderr"));
    // The daemon starts after the plugin, as Docker's documentation asks.
    g.daemon = Some(w.start());

    let (n1, n2) = (format!("rn1-{tag}"), format!("rn2-{tag}"));
    let id1 = w
        .berth_ok(&["network", "create", "-d", &py, "--subnet", "10.246.31.0/24", "-o", "team=a", &n1])
        .trim()
        .to_string();
    g.networks.push(n1.clone());
    // A network whose Join answers no gateway: its endpoints give no
    // default route, so they are no gateway endpoint and get no
    // ProgramExternalConnectivity (dockerd's getGatewayEndpoint).
    let id2 = w
        .berth_ok(&["network", "create", "-d", &py, "--subnet", "10.246.32.0/24", "-o", "pygw=none", &n2])
        .trim()
        .to_string();
    g.networks.push(n2.clone());
    assert_eq!((id1.len(), id2.len()), (64, 64), "{id1} {id2}");

    let (s1, s2) = (format!("rs1-{tag}"), format!("rs2-{tag}"));
    // s1 publishes a port: the port map travels in the options as
    // dockerd sends a container's, and the bindings are asked back with
    // EndpointOperInfo after ProgramExternalConnectivity.
    let (sb1, key1) = sandbox(&w, &mut g, &s1, &["-p", "80"]);
    let (_sb2, key2) = sandbox(&w, &mut g, &s2, &[]);

    w.berth_ok(&["network", "connect", &n1, &s1]);
    w.berth_ok(&["network", "connect", &n1, &s2]);
    w.berth_ok(&["network", "connect", &n2, &s1]);

    // Each sandbox has the plugin's interface as eth<n>, with the IPAM's
    // address, the MAC the plugin chose, and the gateway the Join gave.
    let ep11 = endpoint_of(&w, &n1, &s1);
    let ep12 = endpoint_of(&w, &n1, &s2);
    let ep21 = endpoint_of(&w, &n2, &s1);
    assert_eq!(ep11["IPv4Address"], "10.246.31.2/24", "{ep11}");
    assert_eq!(ep12["IPv4Address"], "10.246.31.3/24", "{ep12}");
    assert_eq!(ep21["IPv4Address"], "10.246.32.2/24", "{ep21}");
    let mut s1_links = links_in(&key1);
    s1_links.sort();
    assert_eq!(s1_links, ["eth0", "eth1", "lo"], "s1 has one interface per network");
    assert_eq!(links_in(&key2).len(), 2, "s2: lo and eth0");
    for (key, dev, cidr, ep) in [
        (&key1, "eth0", "10.246.31.2/24", &ep11),
        (&key2, "eth0", "10.246.31.3/24", &ep12),
        (&key1, "eth1", "10.246.32.2/24", &ep21),
    ] {
        let addr = ip_in(key, &["-o", "-4", "addr", "show", "dev", dev]);
        assert!(addr.contains(&format!("inet {cidr} ")), "{dev} in {key}: {addr}");
        let epid = ep["EndpointID"].as_str().unwrap();
        let mac = format!("02:{}", (0..10).step_by(2).map(|i| &epid[i..i + 2]).collect::<Vec<_>>().join(":"));
        assert_eq!(ep["MacAddress"], mac.as_str(), "the MAC the plugin filled in is recorded");
        let link = ip_in(key, &["-o", "link", "show", "dev", dev]);
        assert!(link.contains(&format!("link/ether {mac} ")), "{dev} in {key} has the plugin's MAC: {link}");
        assert!(!link_exists(&format!("rnc{}", &epid[..10])), "the sandbox end was moved out of the host");
        assert!(link_exists(&format!("rnh{}", &epid[..10])), "the host end stays on the host");
    }
    let routes = ip_in(&key1, &["-4", "route", "show", "default"]);
    assert!(
        routes.contains("default via 10.246.31.1 dev eth0"),
        "n1's Join gave s1 its default route: {routes}"
    );
    assert!(!routes.contains("eth1"), "n2 gave no gateway: {routes}");
    let ports = w.berth_json(&["sandbox", "inspect", &s1])[0]["Ports"].clone();
    assert_eq!(ports, serde_json::json!({"80/tcp": null}), "the plugin reported no bindings");

    w.berth_ok(&["network", "disconnect", &n1, &s1]);
    assert_eq!(links_in(&key1), ["lo", "eth1"], "only n2's interface is left in s1");
    // Removing a sandbox disconnects it.
    w.berth_ok(&["sandbox", "rm", &s2]);
    w.berth_ok(&["sandbox", "rm", &s1]);
    g.sandboxes.clear();
    for n in [&n1, &n2] {
        let out = w.berth(&["network", "rm", n]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    g.networks.clear();

    // The calls, in dockerd's order.
    let all = calls(&log);
    let (e11, e12, e21) = (
        ep11["EndpointID"].as_str().unwrap(),
        ep12["EndpointID"].as_str().unwrap(),
        ep21["EndpointID"].as_str().unwrap(),
    );
    let connect_gw = ["CreateEndpoint", "Join", "ProgramExternalConnectivity"];
    let mut want: Vec<&str> = vec!["Plugin.Activate", "GetCapabilities", "CreateNetwork", "CreateNetwork"];
    want.extend(connect_gw);
    want.push("EndpointOperInfo");
    want.extend(connect_gw);
    want.extend(["CreateEndpoint", "Join"]);
    want.extend(["RevokeExternalConnectivity", "Leave", "DeleteEndpoint"]); // disconnect n1 s1
    want.extend(["RevokeExternalConnectivity", "Leave", "DeleteEndpoint"]); // rm s2
    want.extend(["Leave", "DeleteEndpoint"]); // rm s1 (n2: no gateway endpoint)
    want.extend(["DeleteNetwork", "DeleteNetwork"]);
    assert_eq!(short(&all), want, "the plugin's calls:\n{all:#?}");
    // ... and for the right networks and endpoints.
    let ids: Vec<(String, String)> = all
        .iter()
        .map(|c| {
            let s = |k: &str| c.body[k].as_str().unwrap_or("").to_string();
            (s("NetworkID"), s("EndpointID"))
        })
        .collect();
    let (i1, i2) = (id1.as_str(), id2.as_str());
    let want_ids: Vec<(&str, &str)> = [
        [("", ""), ("", ""), (i1, ""), (i2, "")].as_slice(),
        &[(i1, e11); 4],
        &[(i1, e12); 3],
        &[(i2, e21); 2],
        &[(i1, e11); 3],
        &[(i1, e12); 3],
        &[(i2, e21); 2],
        &[(i1, ""), (i2, "")],
    ]
    .concat();
    let got_ids: Vec<(&str, &str)> = ids.iter().map(|(n, e)| (n.as_str(), e.as_str())).collect();
    assert_eq!(got_ids, want_ids, "network and endpoint of each call:\n{all:#?}");

    // No-argument calls have an empty body (as moby sends them).
    assert_eq!((all[0].raw.as_str(), all[1].raw.as_str()), ("", ""));
    // CreateNetwork: the id, the IPAM data (gateway in CIDR), the user's
    // options under com.docker.network.generic.
    let create = find(&all, "/NetworkDriver.CreateNetwork", "NetworkID", &id1);
    let v4 = &create.body["IPv4Data"];
    assert_eq!(v4.as_array().map(Vec::len), Some(1), "{}", create.raw);
    assert!(v4[0]["AddressSpace"].as_str().is_some_and(|s| !s.is_empty()), "{}", create.raw);
    assert_eq!(v4[0]["Pool"], "10.246.31.0/24", "{}", create.raw);
    assert_eq!(v4[0]["Gateway"], "10.246.31.1/24", "{}", create.raw);
    assert_eq!(create.body["IPv6Data"], serde_json::json!([]), "{}", create.raw);
    let options = &create.body["Options"];
    assert_eq!(options["com.docker.network.generic"], serde_json::json!({"team": "a"}), "{}", create.raw);
    assert_eq!(options["com.docker.network.enable_ipv6"], false, "{}", create.raw);
    // CreateEndpoint: the IPAM's address in CIDR, no MAC asked, berth's
    // join_in_place (which the plugin ignores), and s1's port map.
    let ce = find(&all, "/NetworkDriver.CreateEndpoint", "EndpointID", e11);
    assert_eq!(ce.body["Interface"]["Address"], "10.246.31.2/24", "{}", ce.raw);
    assert_eq!(ce.body["Interface"]["MacAddress"], "", "{}", ce.raw);
    assert_eq!(ce.body["Options"]["com.berth.network.join_in_place"], true, "{}", ce.raw);
    let portmap = &ce.body["Options"]["com.docker.network.portmap"];
    assert_eq!(
        (portmap[0]["Proto"].as_u64(), portmap[0]["Port"].as_u64()),
        (Some(6), Some(80)),
        "{}",
        ce.raw
    );
    let exposed = &ce.body["Options"]["com.docker.network.endpoint.exposedports"];
    assert_eq!(exposed, &serde_json::json!([{"Proto": 6, "Port": 80}]), "{}", ce.raw);
    let ce2 = find(&all, "/NetworkDriver.CreateEndpoint", "EndpointID", e12);
    assert_eq!(ce2.body["Interface"]["Address"], "10.246.31.3/24", "{}", ce2.raw);
    assert!(
        ce2.body["Options"].get("com.docker.network.portmap").is_none(),
        "s2 publishes nothing: {}",
        ce2.raw
    );
    // Join: the sandbox's key, berth's option, the port map (sandbox
    // options, as dockerd's), and ProgramExternalConnectivity the same.
    let join = find(&all, "/NetworkDriver.Join", "EndpointID", e11);
    assert_eq!(join.body["SandboxKey"], key1.as_str(), "{}", join.raw);
    assert!(key1.ends_with(&sb1[..12]), "the key names the sandbox: {key1}");
    assert_eq!(join.body["Options"]["com.berth.network.join_in_place"], true, "{}", join.raw);
    assert_eq!(join.body["Options"]["com.docker.network.portmap"], *portmap, "{}", join.raw);
    let join2 = find(&all, "/NetworkDriver.Join", "EndpointID", e12);
    assert_eq!(join2.body["SandboxKey"], key2.as_str(), "{}", join2.raw);
    let program = find(&all, "/NetworkDriver.ProgramExternalConnectivity", "EndpointID", e11);
    assert_eq!(program.body["Options"]["com.docker.network.portmap"], *portmap, "{}", program.raw);
    assert!(
        program.body["Options"].get("com.berth.network.join_in_place").is_none(),
        "join_in_place is for CreateEndpoint and Join only: {}",
        program.raw
    );
    for c in all.iter().filter(|c| c.path.contains("Leave") || c.path.contains("DeleteEndpoint")) {
        let keys: Vec<&String> = c.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["EndpointID", "NetworkID"], "{}: {}", c.path, c.raw);
    }

    // Nothing is left: no veth of the plugin's, no namespace.
    for ep in [e11, e12, e21] {
        for prefix in ["rnh", "rnc"] {
            let name = format!("{prefix}{}", &ep[..10]);
            assert!(!link_exists(&name), "{name} is gone");
        }
    }
    for key in [&key1, &key2] {
        assert!(!Path::new(key).exists(), "the sandbox's namespace {key} is gone");
    }
    assert!(w.berth_ok(&["network", "ls", "-q", "--filter", &format!("driver={py}")]).trim().is_empty());
}

/// Serves `lib` with berth-plugin-host as `name` in `w`'s plugin socket
/// directory.
fn host_plugin(w: &World, lib: &str, name: &str, options: Option<&str>) -> Proc {
    let socket = w.plugins_dir().join(format!("{name}.sock"));
    let root = w.dir.path().join(format!("host-{name}"));
    let log = w.dir.path().join(format!("host-{name}.log"));
    let mut cmd = Command::new(target_dir().join("berth-plugin-host"));
    cmd.arg("--plugin")
        .arg(target_dir().join(lib))
        .arg("--socket")
        .arg(&socket)
        .arg("--name")
        .arg(name)
        .arg("--root")
        .arg(root.join("root"))
        .arg("--run-root")
        .arg(root.join("run"));
    if let Some(o) = options {
        cmd.args(["--options", o]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn berth-plugin-host");
    let mut p = Proc { child: Some(child), socket };
    p.wait_socket(&log);
    p
}

fn table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", table])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn berths_bridge_and_default_ipam_out_of_process_connect_two_sandboxes() {
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is missing: apt-get install -y nftables (.ci/test does)"
    );
    ensure_built();
    let w = World::new("");
    let tag = std::process::id() % 10_000;
    let (rbr, ripam) = (format!("rbr{tag}"), format!("ripam{tag}"));
    // A table of this test's own: berthd's in-process bridge (other tests)
    // keeps `inet berth`.
    let table = format!("rbrt{tag}");
    let br = format!("rbb{tag}");
    let mut g = Cleanup::new(&w);
    g.tables.push(table.clone());
    g.links.push(br.clone());
    let opts = format!("{{\"table\":\"{table}\"}}");
    g.plugins.push(host_plugin(&w, "libberth_network_bridge.so", &rbr, Some(&opts)));
    g.plugins.push(host_plugin(&w, "libberth_ipam_default.so", &ripam, None));
    g.daemon = Some(w.start());

    let net = format!("rn{tag}");
    let bropt = format!("com.docker.network.bridge.name={br}");
    let create = [
        "network",
        "create",
        "-d",
        &rbr,
        "--ipam-driver",
        &ripam,
        "--subnet",
        "10.246.33.0/24",
        "-o",
        &bropt,
        &net,
    ];
    w.berth_ok(&create);
    g.networks.push(net.clone());
    assert!(link_exists(&br), "the plugin host made bridge {br}");
    assert!(table_exists(&table), "the plugin host's bridge programs table inet {table}");
    let addr = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &br]).output().unwrap();
    let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
    assert!(addr.contains("10.246.33.1/24"), "the bridge carries the remote IPAM's gateway: {addr}");

    let (sa, sb) = (format!("ra-{tag}"), format!("rb-{tag}"));
    let (_, key_a) = sandbox(&w, &mut g, &sa, &[]);
    let (_, key_b) = sandbox(&w, &mut g, &sb, &[]);
    w.berth_ok(&["network", "connect", &net, &sa]);
    w.berth_ok(&["network", "connect", &net, &sb]);
    let veths = ports_of(&br);
    g.links.extend(veths.iter().cloned());
    assert_eq!(veths.len(), 2, "one bridge port per endpoint: {veths:?}");

    let (ea, eb) = (endpoint_of(&w, &net, &sa), endpoint_of(&w, &net, &sb));
    let (ip_a, ip_b) = (ea["IPv4Address"].as_str().unwrap(), eb["IPv4Address"].as_str().unwrap());
    assert_eq!((ip_a, ip_b), ("10.246.33.2/24", "10.246.33.3/24"), "{ea} {eb}");
    for (key, ip) in [(&key_a, ip_a), (&key_b, ip_b)] {
        let a = ip_in(key, &["-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(a.contains(&format!("inet {ip} ")), "eth0 in {key}: {a}");
        let r = ip_in(key, &["-4", "route", "show", "default"]);
        assert!(r.contains("default via 10.246.33.1 dev eth0"), "{r}");
    }
    assert!(ping(&key_a, bare(ip_b)), "a reaches b ({ip_b}) through the out-of-process bridge");
    assert!(ping(&key_b, bare(ip_a)), "b reaches a ({ip_a})");
    let inspect = w.berth_json(&["network", "inspect", &net]);
    let n = if inspect.is_array() { inspect[0].clone() } else { inspect };
    assert_eq!(n["Driver"], rbr.as_str(), "{n}");
    assert_eq!(n["IPAM"]["Driver"], ripam.as_str(), "{n}");
    assert_eq!(n["IPAM"]["Config"][0]["Subnet"], "10.246.33.0/24", "{n}");
    assert_eq!(n["Containers"].as_object().map(|c| c.len()), Some(2), "{n}");
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    for name in [&rbr, &ripam] {
        let p = plugins.as_array().unwrap().iter().find(|p| p["name"] == name.as_str());
        let p = p.unwrap_or_else(|| panic!("{name} listed: {plugins}"));
        assert_eq!((p["transport"].as_str(), p["status"].as_str()), (Some("remote"), Some("active")), "{p}");
    }

    w.berth_ok(&["network", "disconnect", &net, &sa]);
    assert_eq!(links_in(&key_a), ["lo"], "a's interface went with the disconnect");
    assert_eq!(ports_of(&br).len(), 1, "a's bridge port went with it");
    w.berth_ok(&["sandbox", "rm", &sb]);
    w.berth_ok(&["sandbox", "rm", &sa]);
    g.sandboxes.clear();
    let out = w.berth(&["network", "rm", &net]);
    assert!(out.status.success(), "{}", describe(&out));
    g.networks.clear();

    assert!(!link_exists(&br), "the bridge {br} is gone with its network");
    for v in &veths {
        assert!(!link_exists(v), "the endpoint's link {v} is gone");
    }
    assert!(!table_exists(&table), "the plugin host's table inet {table} is gone with its last network");
    for key in [&key_a, &key_b] {
        assert!(!Path::new(key).exists(), "the sandbox's namespace {key} is gone");
    }
    // The pool went back to the remote IPAM: the same subnet can be had again.
    w.berth_ok(&create);
    g.networks.push(net.clone());
    w.berth_ok(&["network", "rm", &net]);
    g.networks.clear();
    assert!(!link_exists(&br) && !table_exists(&table));
}
