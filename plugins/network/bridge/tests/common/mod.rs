//! Test rig shared by the bridge and macvlan integration tests (the macvlan
//! crate includes this file with `#[path]`).
//!
//! Rules (issue 6, "Rules for tests"): every test runs the driver in a
//! private network namespace of its own thread ([`Host::new`], standing in
//! for the host, so the machine's links and firewall are never touched),
//! makes its sandboxes with `ip netns add` under unique names, sends
//! traffic only between them, and removes everything even when it fails:
//! [`Sandbox`] deletes its namespace on drop, and the private "host"
//! namespace, with every link and nftables table in it, goes away with the
//! test's thread.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_plugin_api::network::*;
use berth_plugin_api::{DriverResult, ErrorKind};

/// A name no other test (or other run) uses: `tag`, the pid, a counter.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{tag}{}x{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// Whether the integration tests can run here (root, `ip`, `nft`, `ping`);
/// prints why not otherwise.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let tools =
        ["ip", "nft", "ping"].iter().all(|t| berth_plugin_api::util::command::find_program(t).is_some());
    if !root || !tools {
        eprintln!("skipped: needs root and the ip, nft and ping commands (iproute2, nftables, iputils-ping)");
    }
    root && tools
}

/// Runs a command, returning (success, stdout + stderr).
pub fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs a command that must succeed; returns its output.
#[track_caller]
pub fn sh(args: &[&str]) -> String {
    let (ok, text) = run(args);
    assert!(ok, "{args:?} failed: {text}");
    text
}

/// The calling thread's own network namespace, standing in for the host.
#[derive(Debug)]
pub struct Host;

impl Host {
    /// Moves the calling thread into a new network namespace with `lo` up.
    pub fn new() -> Host {
        // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's
        // namespace; it takes no pointers.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        sh(&["ip", "link", "set", "lo", "up"]);
        Host
    }

    /// The names of the links in the host namespace, `lo` left out.
    pub fn links(&self) -> Vec<String> {
        sh(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n != "lo")
            .collect()
    }

    /// `nft list ruleset` of the host namespace.
    pub fn ruleset(&self) -> String {
        sh(&["nft", "list", "ruleset"])
    }
}

/// A sandbox: a named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Sandbox {
    /// Its name under /run/netns.
    pub name: String,
    /// A link of the host namespace that belongs to it (the host end of
    /// [`Sandbox::outside`]), deleted with it.
    host_link: Option<String>,
}

impl Sandbox {
    /// A new namespace with `lo` up.
    pub fn new() -> Sandbox {
        let name = unique("bsb");
        sh(&["ip", "netns", "add", &name]);
        let sb = Sandbox { name, host_link: None };
        sb.ip(&["link", "set", "lo", "up"]);
        sb
    }

    /// A sandbox wired to the host by a veth pair of its own: the host end
    /// gets `host_cidr`, the inside end `inside_cidr`, and the inside
    /// routes `route` via the host end. It stands for "the outside world".
    pub fn outside(host_cidr: &str, inside_cidr: &str, route: &str) -> Sandbox {
        let mut sb = Sandbox::new();
        let (host_end, inside) = (unique("bvo"), unique("bvi"));
        sb.host_link = Some(host_end.clone());
        sh(&["ip", "link", "add", &host_end, "type", "veth", "peer", "name", &inside, "netns", &sb.name]);
        sh(&["ip", "addr", "add", host_cidr, "dev", &host_end]);
        sh(&["ip", "link", "set", &host_end, "up"]);
        sb.ip(&["addr", "add", inside_cidr, "dev", &inside]);
        sb.ip(&["link", "set", &inside, "up"]);
        let via = host_cidr.split('/').next().unwrap();
        sb.ip(&["route", "add", route, "via", via]);
        sb
    }

    /// The namespace's path (what the core passes as the sandbox key).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n <sandbox> args…`, which must succeed.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", self.name.as_str()];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// What the core does on join: moves `link` in, renames it
    /// `<prefix>0`, adds `addr`, sets it up and, if given, the default
    /// route via `gateway`.
    #[track_caller]
    pub fn attach(&self, resp: &JoinResponse, addr: &str) {
        let iface = resp.interface_name.as_ref().expect("join named an interface");
        let dst = format!("{}0", iface.dst_prefix);
        sh(&["ip", "link", "set", &iface.src_name, "netns", &self.name]);
        self.ip(&["link", "set", &iface.src_name, "name", &dst]);
        self.ip(&["addr", "add", addr, "dev", &dst]);
        self.ip(&["link", "set", &dst, "up"]);
        if !resp.gateway.is_empty() {
            self.ip(&["route", "add", "default", "via", &resp.gateway]);
        }
    }

    /// What the core does on leave for a link it cannot just delete
    /// (macvlan): renames `<prefix>0` back to `src_name` and moves it to
    /// the host namespace (the calling thread's), where the driver deletes
    /// it. Synchronous, unlike the destruction of a dropped namespace.
    #[track_caller]
    pub fn give_back(&self, resp: &JoinResponse) {
        let iface = resp.interface_name.as_ref().expect("join named an interface");
        let dst = format!("{}0", iface.dst_prefix);
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() }.to_string();
        self.ip(&["link", "set", &dst, "down"]);
        self.ip(&["link", "set", &dst, "name", &iface.src_name]);
        self.ip(&["link", "set", &iface.src_name, "netns", &tid]);
    }

    /// Whether one ping to `ip` is answered within a second (two tries).
    pub fn ping(&self, ip: &str) -> bool {
        (0..2).any(|_| run(&["ip", "netns", "exec", &self.name, "ping", "-c1", "-W1", ip]).0)
    }

    /// Runs `f` on a thread inside the sandbox's namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(self.path()).expect("open sandbox namespace");
        std::thread::spawn(move || {
            // SAFETY: `ns` is an open namespace file for the whole call;
            // setns only changes this new thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in sandbox")
    }

    /// A TCP echo server on `port` inside the sandbox; it stops when the
    /// returned guard drops.
    pub fn echo_server(&self, port: u16) -> EchoServer {
        self.server(port, false)
    }

    /// A TCP server on `port` inside the sandbox that answers every
    /// connection with the peer's address (to see NAT); stops on drop.
    pub fn whoami_server(&self, port: u16) -> EchoServer {
        self.server(port, true)
    }

    fn server(&self, port: u16, whoami: bool) -> EchoServer {
        let ns = std::fs::File::open(self.path()).expect("open sandbox namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // SAFETY: as in `within`.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let l = TcpListener::bind(("::", port)).expect("bind echo server (dual stack)");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if whoami {
                            let peer =
                                s.peer_addr().map(|a| a.ip().to_canonical().to_string()).unwrap_or_default();
                            let _ = s.write_all(peer.as_bytes());
                        } else {
                            let mut buf = [0u8; 64];
                            let n = s.read(&mut buf).unwrap_or(0);
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv().expect("echo server started");
        EchoServer { stop, thread: Some(thread) }
    }

    /// What a server at `addr` says to a connection from the sandbox.
    pub fn tcp_read(&self, addr: &str) -> Option<String> {
        let addr: SocketAddr = addr.parse().unwrap();
        self.within(move || tcp_read(addr))
    }

    /// Whether a TCP echo through `addr` works from inside the sandbox.
    pub fn tcp(&self, addr: &str) -> bool {
        let addr: SocketAddr = addr.parse().unwrap();
        self.within(move || tcp_echo(addr))
    }
}

/// A running echo server; stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(l) = &self.host_link {
            let _ = run(&["ip", "link", "del", l]);
        }
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// Whether a TCP echo through `addr` works from the calling thread.
pub fn tcp_echo(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"berth").is_err() {
        return false;
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got == b"berth"
}

/// What a server at `addr` says, read until it closes; `None` when the
/// connection fails.
pub fn tcp_read(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut got = String::new();
    s.read_to_string(&mut got).ok()?;
    Some(got)
}

/// An IPAM pool.
pub fn ipam(pool: &str, gateway: &str) -> IpamData {
    let mut d = IpamData::default();
    d.address_space = "local".into();
    d.pool = pool.into();
    d.gateway = gateway.into();
    d
}

/// A `create_network` request with one IPv4 pool and driver options.
pub fn network_req(id: &str, pool: &str, gateway: &str, generic: serde_json::Value) -> CreateNetworkRequest {
    let mut req = CreateNetworkRequest::new(id);
    req.ipv4_data = vec![ipam(pool, gateway)];
    if !generic.is_null() {
        req.options.insert("com.docker.network.generic".into(), generic);
    }
    req
}

/// A `create_endpoint` request with an IPv4 address (CIDR).
pub fn endpoint_req(net: &str, ep: &str, address: &str) -> CreateEndpointRequest {
    let mut req = CreateEndpointRequest::new(net, ep);
    let mut iface = EndpointInterface::default();
    iface.address = address.into();
    req.interface = Some(iface);
    req
}

/// Join `ep` of `net` to `sb`, with join options.
pub fn join(d: &dyn NetworkDriver, net: &str, ep: &str, sb: &Sandbox, options: Options) -> JoinResponse {
    let mut req = JoinRequest::new(net, ep);
    req.sandbox_key = sb.path();
    req.options = options;
    d.join(req).expect("join")
}

/// Creates endpoint `ep` with `addr`, joins it to a new sandbox and does
/// what the core does; returns the sandbox.
pub fn attach(d: &dyn NetworkDriver, net: &str, ep: &str, addr: &str) -> Sandbox {
    attach_with(d, net, ep, addr).0
}

/// [`attach`], also answering the join response.
pub fn attach_with(d: &dyn NetworkDriver, net: &str, ep: &str, addr: &str) -> (Sandbox, JoinResponse) {
    d.create_endpoint(endpoint_req(net, ep, addr)).expect("create endpoint");
    let sb = Sandbox::new();
    let resp = join(d, net, ep, &sb, Options::new());
    sb.attach(&resp, addr);
    (sb, resp)
}

/// Leaves and deletes an endpoint, twice (idempotence).
pub fn detach(d: &dyn NetworkDriver, net: &str, ep: &str) {
    for _ in 0..2 {
        d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new(net, ep)).expect("revoke");
        d.leave(LeaveRequest::new(net, ep)).expect("leave");
        d.delete_endpoint(DeleteEndpointRequest::new(net, ep)).expect("delete endpoint");
    }
}

/// Asserts an error of `kind` whose message contains `text`.
#[track_caller]
pub fn assert_err<T: std::fmt::Debug>(result: DriverResult<T>, kind: ErrorKind, text: &str) {
    let err = result.expect_err(&format!("expected a {kind} error containing {text:?}"));
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.contains(text), "{:?} does not contain {text:?}", err.message);
}
