//! Joining an endpoint's interface to a sandbox and taking it out again,
//! libnetwork's way: the driver made the interface in the host namespace;
//! the core moves it in, names it `<prefix><n>`, sets MAC, MTU and
//! addresses, brings it up and adds the routes; on leave it is taken down,
//! given its host name back and moved out for the driver to delete (or
//! deleted in place when it cannot be moved).

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult, ErrorKind};
use ipnet::IpNet;
use netlink_packet_route::link::LinkAttribute;

use super::netlink::{Link, Netlink};
use super::netns::run_in_fd;

/// The default interface name prefix inside a sandbox.
pub const DEFAULT_PREFIX: &str = "eth";

/// A route added in the sandbox after the interface moved in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Where it leads.
    pub destination: IpNet,
    /// Via this address; `None` for a directly connected route.
    pub next_hop: Option<IpAddr>,
}

/// What the core sets up in a sandbox for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinSpec {
    /// The interface the driver made, by its name in the host namespace.
    pub src_name: String,
    /// Its name prefix in the sandbox (`eth` → `eth0`, `eth1`, …).
    pub dst_prefix: String,
    /// Its IPv4 address with the subnet's prefix length.
    pub ipv4: Option<IpNet>,
    /// Its IPv6 address with the subnet's prefix length.
    pub ipv6: Option<IpNet>,
    /// The MAC to give it; `None` keeps the one it has.
    pub mac: Option<[u8; 6]>,
    /// The MTU to give it; `None` keeps the one it has.
    pub mtu: Option<u32>,
    /// The IPv4 default gateway to set, if any.
    pub gateway: Option<IpAddr>,
    /// The IPv6 default gateway to set, if any.
    pub gateway6: Option<IpAddr>,
    /// Static routes.
    pub routes: Vec<Route>,
    /// Turn IPv6 off on the interface (a network without IPv6 gives no
    /// IPv6 at all, not even a link-local address).
    pub disable_ipv6: bool,
}

fn nl_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> DriverError {
    move |e| DriverError::io(what, &e)
}

/// What [`join`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The interface's name in the sandbox.
    pub name: String,
    /// Whether the driver made it in the sandbox already (so nothing was
    /// moved, and [`leave`] leaves it there for the driver to delete).
    pub in_place: bool,
}

/// Moves `spec.src_name` into the sandbox whose namespace file is `key`
/// and configures it; answers its name there. Runs from any thread of the
/// daemon: the host side on the calling thread, the sandbox side on a
/// dedicated one. On failure the interface is back in the host namespace
/// under its own name (or deleted when it cannot be), and the error says
/// what failed, and what undoing it could not do.
///
/// A driver may instead make the interface in the sandbox itself (the
/// bridge driver creates its veth pair with one end there, given the
/// sandbox key in `Join`): when `src_name` is not in the host namespace but
/// is in the sandbox, it is configured where it is. Moving a link between
/// namespaces costs the kernel about 17 ms here (an RCU grace period), and
/// creating it in place about 0.4 ms.
pub fn join(key: &Path, spec: &JoinSpec) -> DriverResult<Joined> {
    let src = spec.src_name.as_str();
    let mut host = Netlink::open().map_err(nl_err("open netlink in the host namespace"))?;
    let found = host.link(src).map_err(nl_err(format!("find interface {src:?} in the host namespace")))?;
    let ns = File::open(key).map_err(|e| DriverError::io(format!("open sandbox {}", key.display()), &e))?;
    let Some(link) = found else {
        return join_in_place(&ns, key, spec).map(|name| Joined { name, in_place: true });
    };
    if link.up {
        host.set_link(link.index, Vec::new(), Some(false)).map_err(nl_err(format!("set {src:?} down")))?;
    }
    let host_ns = File::open("/proc/thread-self/ns/net")
        .map_err(|e| DriverError::io("open the host network namespace", &e))?;
    host.move_link(link.index, ns.as_raw_fd())
        .map_err(nl_err(format!("move {src:?} into sandbox {}", key.display())))?;
    let host_fd = host_ns.as_raw_fd();
    let done = run_in_fd(ns.as_raw_fd(), || -> DriverResult<String> {
        let mut nl = Netlink::open().map_err(nl_err("open netlink in the sandbox"))?;
        let mut name = None;
        match configure(&mut nl, spec, &mut name) {
            Ok(n) => Ok(n),
            Err(mut e) => {
                let names: Vec<&str> = name.as_deref().into_iter().chain([src]).collect();
                for undo in evict(&mut nl, &names, src, host_fd) {
                    e.message.push_str(&format!("; undo: {undo}"));
                }
                Err(e)
            }
        }
    });
    match done {
        Ok(result) => result
            .map(|name| Joined { name, in_place: false })
            .map_err(|e| e.context(format!("join {src:?} to sandbox {}", key.display()))),
        Err(e) => Err(DriverError::io(
            format!("enter sandbox {} ({src:?} stays inside until the sandbox goes)", key.display()),
            &e,
        )),
    }
}

/// [`join`] for an interface the driver made in the sandbox: configured
/// there; on failure it is taken down and given `src_name` back, for the
/// driver to delete.
fn join_in_place(ns: &File, key: &Path, spec: &JoinSpec) -> DriverResult<String> {
    let src = spec.src_name.as_str();
    let done = run_in_fd(ns.as_raw_fd(), || -> DriverResult<String> {
        let mut nl = Netlink::open().map_err(nl_err("open netlink in the sandbox"))?;
        if nl.link(src).map_err(nl_err(format!("find {src:?} in the sandbox")))?.is_none() {
            return Err(DriverError::not_found(format!(
                "interface {src:?} that the driver named is neither in the host namespace nor in the sandbox"
            )));
        }
        let mut name = None;
        configure(&mut nl, spec, &mut name).map_err(|mut e| {
            if let Some(undo) = reset(&mut nl, name.as_deref().unwrap_or(src), src) {
                e.message.push_str(&format!("; undo: {undo}"));
            }
            e
        })
    });
    match done {
        Ok(result) => result.map_err(|e| e.context(format!("join {src:?} in sandbox {}", key.display()))),
        Err(e) => Err(DriverError::io(format!("enter sandbox {}", key.display()), &e)),
    }
}

/// Takes interface `name` of the sandbox `nl` talks to down and renames it
/// `src`, leaving it there; answers what failed. Gone already is done.
fn reset(nl: &mut Netlink, name: &str, src: &str) -> Option<String> {
    let link = match nl.link(name) {
        Ok(Some(l)) => l,
        Ok(None) => return None,
        Err(e) => return Some(format!("find {name:?} in the sandbox: {e}")),
    };
    let mut attrs = Vec::new();
    if link.name != src {
        attrs.push(LinkAttribute::IfName(src.to_string()));
    }
    nl.set_link(link.index, attrs, Some(false)).err().map(|e| format!("set {name:?} down as {src:?}: {e}"))
}

/// The sandbox side of [`join`]: `name` is set once the interface has its
/// new name, so a failure can find it.
fn configure(nl: &mut Netlink, spec: &JoinSpec, name: &mut Option<String>) -> DriverResult<String> {
    let src = spec.src_name.as_str();
    let links = nl.links().map_err(nl_err("list the sandbox's interfaces"))?;
    let link = links
        .iter()
        .find(|l| l.name == src)
        .cloned()
        .ok_or_else(|| DriverError::internal(format!("{src:?} did not arrive in the sandbox")))?;
    let prefix = if spec.dst_prefix.is_empty() { DEFAULT_PREFIX } else { spec.dst_prefix.as_str() };
    let dst = next_name(prefix, &links);
    let mut attrs = vec![LinkAttribute::IfName(dst.clone())];
    if let Some(mac) = spec.mac {
        attrs.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(mtu) = spec.mtu {
        attrs.push(LinkAttribute::Mtu(mtu));
    }
    nl.set_link(link.index, attrs, None)
        .map_err(nl_err(format!("rename {src:?} to {dst:?} and set MAC/MTU")))?;
    *name = Some(dst.clone());
    if spec.disable_ipv6 {
        let knob = format!("/proc/sys/net/ipv6/conf/{dst}/disable_ipv6");
        match std::fs::write(&knob, "1") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // no IPv6 in this kernel
            Err(e) => return Err(DriverError::io(format!("write {knob}"), &e)),
        }
    }
    for addr in spec.ipv4.iter().chain(&spec.ipv6) {
        nl.add_address(link.index, *addr).map_err(nl_err(format!("add address {addr} to {dst:?}")))?;
    }
    nl.set_link(link.index, Vec::new(), Some(true)).map_err(nl_err(format!("set {dst:?} up")))?;
    // Connected routes first: a next hop or gateway may be reachable only
    // through one of them.
    let connected = spec.routes.iter().filter(|r| r.next_hop.is_none());
    for r in connected.chain(spec.routes.iter().filter(|r| r.next_hop.is_some())) {
        nl.add_route(Some(r.destination), r.next_hop, link.index).map_err(nl_err(format!(
            "add route to {}{} on {dst:?}",
            r.destination,
            r.next_hop.map(|h| format!(" via {h}")).unwrap_or_default()
        )))?;
    }
    for gw in spec.gateway.iter().chain(&spec.gateway6) {
        nl.add_route(None, Some(*gw), link.index)
            .map_err(nl_err(format!("add default route via {gw} on {dst:?}")))?;
    }
    Ok(dst)
}

/// `<prefix><n>` with the smallest `n` no interface of `links` uses.
fn next_name(prefix: &str, links: &[Link]) -> String {
    (0..).map(|i| format!("{prefix}{i}")).find(|n| !links.iter().any(|l| &l.name == n)).unwrap_or_default()
}

/// Takes the first interface of `names` that exists out of the sandbox
/// `nl` talks to: down, renamed `src`, moved to `host_fd`; deleted when it
/// cannot be moved. Answers what failed, deleting included.
fn evict(nl: &mut Netlink, names: &[&str], src: &str, host_fd: RawFd) -> Vec<String> {
    let mut found = None;
    for n in names {
        match nl.link(n) {
            Ok(Some(l)) => {
                found = Some(l);
                break;
            }
            Ok(None) => {}
            Err(e) => return vec![format!("find {n:?} in the sandbox: {e}")],
        }
    }
    let Some(link) = found else { return Vec::new() };
    let _ = nl.set_link(link.index, Vec::new(), Some(false));
    let moved = if link.name == src {
        Ok(())
    } else {
        nl.set_link(link.index, vec![LinkAttribute::IfName(src.to_string())], None)
            .map_err(|e| format!("rename {:?} back to {src:?}: {e}", link.name))
    }
    .and_then(|()| nl.move_link(link.index, host_fd).map_err(|e| format!("move {src:?} out: {e}")));
    match moved {
        Ok(()) => Vec::new(),
        Err(why) => match nl.delete_link(link.index) {
            Ok(()) => {
                tracing::info!(interface = %link.name, "deleted in the sandbox ({why})");
                Vec::new()
            }
            Err(e) => vec![why, format!("delete {:?}: {e}", link.name)],
        },
    }
}

/// Takes the interface an endpoint joined out of the sandbox at `key`
/// (found as `name`, or as `src_name` when a join was cut short): back to
/// the host namespace under `src_name` for the driver to delete, or deleted
/// in the sandbox when it cannot be moved. An interface the driver made in
/// the sandbox (`in_place`, see [`join`]) stays there, down and named
/// `src_name`, for the driver to delete. An interface (or a sandbox) that
/// is gone already is done.
pub fn leave(key: &Path, name: &str, src_name: &str, in_place: bool) -> DriverResult<()> {
    let Some((ns, host_ns)) = open_namespaces(key)? else { return Ok(()) };
    let host_fd = host_ns.as_raw_fd();
    let failures = run_in_fd(ns.as_raw_fd(), || match Netlink::open() {
        Ok(mut nl) => {
            let names: Vec<&str> = [name, src_name].into_iter().filter(|n| !n.is_empty()).collect();
            if in_place {
                names.iter().find_map(|n| reset(&mut nl, n, src_name)).into_iter().collect()
            } else {
                evict(&mut nl, &names, src_name, host_fd)
            }
        }
        Err(e) => vec![format!("open netlink in the sandbox: {e}")],
    })
    .map_err(|e| DriverError::io(format!("enter sandbox {}", key.display()), &e))?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(DriverError::new(
            ErrorKind::Internal,
            format!("take {name:?} out of sandbox {}: {}", key.display(), failures.join("; ")),
        ))
    }
}

/// The sandbox's namespace file and the host's (this thread's) namespace,
/// open; `None` when the sandbox is gone already.
fn open_namespaces(key: &Path) -> DriverResult<Option<(File, File)>> {
    let ns = match File::open(key) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DriverError::io(format!("open sandbox {}", key.display()), &e)),
    };
    let host_ns = File::open("/proc/thread-self/ns/net")
        .map_err(|e| DriverError::io("open the host network namespace", &e))?;
    Ok(Some((ns, host_ns)))
}

/// Every interface of the sandbox at `key`.
pub fn links(key: &Path) -> DriverResult<Vec<Link>> {
    let ns = File::open(key).map_err(|e| DriverError::io(format!("open sandbox {}", key.display()), &e))?;
    run_in_fd(ns.as_raw_fd(), || Netlink::open().and_then(|mut nl| nl.links()))
        .and_then(|r| r)
        .map_err(|e| DriverError::io(format!("list the interfaces of sandbox {}", key.display()), &e))
}

/// Takes every interface of the sandbox at `key` except loopback and
/// `keep` out, as [`leave`] does (renamed `src_name`): what a join cut
/// short by a crash may have left under a name nobody recorded.
pub fn evict_others(key: &Path, keep: &[String], src_name: &str) -> DriverResult<()> {
    let Some((ns, host_ns)) = open_namespaces(key)? else { return Ok(()) };
    let host_fd = host_ns.as_raw_fd();
    let failures = run_in_fd(ns.as_raw_fd(), || {
        let mut nl = match Netlink::open() {
            Ok(nl) => nl,
            Err(e) => return vec![format!("open netlink in the sandbox: {e}")],
        };
        let links = match nl.links() {
            Ok(l) => l,
            Err(e) => return vec![format!("list the sandbox's interfaces: {e}")],
        };
        links
            .iter()
            .filter(|l| l.name != "lo" && !keep.contains(&l.name))
            .flat_map(|l| evict(&mut nl, &[l.name.as_str()], src_name, host_fd))
            .collect()
    })
    .map_err(|e| DriverError::io(format!("enter sandbox {}", key.display()), &e))?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(DriverError::internal(format!("clear sandbox {}: {}", key.display(), failures.join("; "))))
    }
}

/// Sets the sandbox's default routes via `gateway` (IPv4) and `gateway6`
/// out of its interface `name`: what a join does for the endpoint that
/// gives the sandbox its gateway, for an endpoint that takes that role
/// over later. A route that exists already is kept (so a retry after a
/// crash is harmless).
pub fn set_default_routes(
    key: &Path,
    name: &str,
    gateway: Option<IpAddr>,
    gateway6: Option<IpAddr>,
) -> DriverResult<()> {
    default_routes(key, name, gateway, gateway6, true)
}

/// Deletes the default routes [`set_default_routes`] (or a join) added via
/// `gateway` and `gateway6` out of interface `name`; a route, interface or
/// sandbox that is gone already is done.
pub fn unset_default_routes(
    key: &Path,
    name: &str,
    gateway: Option<IpAddr>,
    gateway6: Option<IpAddr>,
) -> DriverResult<()> {
    default_routes(key, name, gateway, gateway6, false)
}

fn default_routes(
    key: &Path,
    name: &str,
    gateway: Option<IpAddr>,
    gateway6: Option<IpAddr>,
    add: bool,
) -> DriverResult<()> {
    let ns = match File::open(key) {
        Ok(f) => f,
        Err(e) if !add && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DriverError::io(format!("open sandbox {}", key.display()), &e)),
    };
    let verb = if add { "add" } else { "delete" };
    let done = run_in_fd(ns.as_raw_fd(), || -> DriverResult<()> {
        let mut nl = Netlink::open().map_err(nl_err("open netlink in the sandbox"))?;
        let Some(link) = nl.link(name).map_err(nl_err(format!("find {name:?} in the sandbox")))? else {
            return if add {
                Err(DriverError::not_found(format!("interface {name:?} is not in the sandbox")))
            } else {
                Ok(())
            };
        };
        for gw in gateway.iter().chain(&gateway6) {
            let out = if add {
                nl.add_route(None, Some(*gw), link.index)
            } else {
                nl.delete_default_route(*gw, link.index)
            };
            match out {
                Ok(()) => {}
                Err(e) if add && e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) if !add && e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(DriverError::io(format!("{verb} default route via {gw} on {name:?}"), &e))
                }
            }
        }
        Ok(())
    });
    match done {
        Ok(r) => r.map_err(|e| e.context(format!("sandbox {}", key.display()))),
        Err(e) => Err(DriverError::io(format!("enter sandbox {}", key.display()), &e)),
    }
}
