//! The [`NetworkDriver`] implementation: bookkeeping, links and the
//! firewall, in that order of trust: the state file says what exists,
//! netlink makes links match it, nftables makes the table match it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_plugin_api::network::*;
use berth_plugin_api::util::command::{find_program, HostRunner, Runner};
use berth_plugin_api::util::driver::combine;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, NetworkDriver};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::firewalld::Firewalld;
use crate::libnft;
use crate::netutil::{self, os_err};
use crate::nft::{self, FwNetwork, FwPort};
use crate::options::{self, NetConfig, PortBinding};
use crate::rtnl::Rtnl;
use crate::state::{self, Endpoint, Network, State, STATE_FILE};

/// Prefix of the host end of an endpoint's veth pair.
pub const HOST_VETH_PREFIX: &str = "vbr";
/// Prefix of the sandbox end of an endpoint's veth pair (before the core
/// renames it).
pub const PEER_VETH_PREFIX: &str = "vbc";
/// Host ports chosen for `HostPort: 0` come from this range (dockerd's).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49153..=60999;

/// The driver's options from the configuration; an unknown key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// The nftables table (family `inet`) the driver owns; default `berth`.
    #[serde(default)]
    pub table: Option<String>,
    /// MTU of networks that do not set `com.docker.network.driver.mtu`;
    /// default 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// D-Bus address of the bus where firewalld may run; default the
    /// system bus. Where firewalld runs, the bridges go into its zone
    /// `berth` (see [`crate::firewalld`]).
    #[serde(default)]
    pub firewalld_bus: Option<String>,
}

/// The `bridge` network driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct BridgeDriver {
    state_path: PathBuf,
    table: String,
    default_mtu: u32,
    /// libnftables in process, or the `nft` command.
    nft: Box<dyn nft::Backend>,
    firewalld: Option<Firewalld>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// What the table is known to hold: the networks of the last state
    /// programmed; `None` (at start, after a failure) has the next change
    /// regenerate the whole table.
    applied: Option<Vec<FwNetwork>>,
    /// firewalld's zone and policy are known to exist.
    zone_ready: bool,
}

fn rtnl() -> DriverResult<Rtnl> {
    Rtnl::open().map_err(|e| os_err("open rtnetlink socket", &e))
}

fn not_found(network_id: &str) -> DriverError {
    DriverError::not_found(format!("bridge network {network_id:?} not found"))
}

fn ep_not_found(network_id: &str, endpoint_id: &str) -> DriverError {
    DriverError::not_found(format!("endpoint {endpoint_id:?} not found on bridge network {network_id:?}"))
}

impl BridgeDriver {
    /// Builds the driver: checks the options, loads
    /// `<root>/bridge-state.json`, recreates the bridges of recorded
    /// networks that are gone (after a reboot) and programs the firewall
    /// to match. The firewall is programmed through libnftables in process
    /// ([`libnft`]) where `libnftables.so.1` loads, else with the `nft`
    /// command. Declines (skipped) with neither, or without the right to
    /// change the firewall.
    pub fn new(req: InitRequest) -> DriverResult<Init<BridgeDriver>> {
        match libnft::Library::open() {
            Ok(lib) => Self::build(req, |_| Box::new(lib)),
            Err(_) if find_program("nft").is_some() => Self::with_runner(req, Arc::new(HostRunner)),
            Err(why) => Ok(Init::Skipped(format!(
                "neither libnftables ({why}) nor the nft command is installed (package nftables); the bridge driver programs NAT, published ports and isolation with them"
            ))),
        }
    }

    /// [`BridgeDriver::new`] programming the firewall with the `nft`
    /// command run by `runner` (one process per change), whether or not
    /// libnftables is installed.
    pub fn with_runner(req: InitRequest, runner: Arc<dyn Runner>) -> DriverResult<Init<BridgeDriver>> {
        Self::build(req, |run_root| Box::new(nft::Command::new(runner, run_root.join("nftables-batch.json"))))
    }

    /// Builds the driver with the firewall backend `nft` makes (given the
    /// run root).
    fn build(
        req: InitRequest,
        nft: impl FnOnce(&Path) -> Box<dyn nft::Backend>,
    ) -> DriverResult<Init<BridgeDriver>> {
        let opts: Opts = req.decode_options()?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(
                "the bridge network driver needs a root directory for its state, and none was given",
            ));
        }
        let table = opts.table.unwrap_or_else(|| "berth".into());
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(DriverError::invalid_argument(format!(
                "options of driver {:?}: table {table:?} is not a valid nftables table name",
                req.name
            )));
        }
        let default_mtu = match opts.mtu {
            None => 1500,
            Some(m) => netutil::parse_mtu(Some(&serde_json::json!(m)), false)?.unwrap_or(1500),
        };
        let root = Path::new(&req.root);
        std::fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create network root {}", root.display()), &e))?;
        let run_root = if req.run_root.is_empty() { root } else { Path::new(&req.run_root) };
        std::fs::create_dir_all(run_root)
            .map_err(|e| DriverError::io(format_args!("create run root {}", run_root.display()), &e))?;
        let state_path = root.join(STATE_FILE);
        let state = state::load(&state_path)?;
        let driver = BridgeDriver {
            state_path,
            table,
            default_mtu,
            nft: nft(run_root),
            firewalld: Firewalld::connect(opts.firewalld_bus.as_deref()),
            inner: Mutex::new(Inner { state, applied: None, zone_ready: false }),
        };
        match driver.reconcile() {
            Ok(()) => Ok(Init::Ready(driver)),
            Err(e) if e.kind == ErrorKind::PermissionDenied => Ok(Init::Skipped(format!(
                "the bridge driver needs CAP_NET_ADMIN to manage links and nftables: {}",
                e.message
            ))),
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| {
            DriverError::internal(
                "bridge driver state is unusable after an earlier panic; restart the daemon",
            )
        })
    }

    /// Brings links and firewall in line with the recorded state.
    fn reconcile(&self) -> DriverResult<()> {
        let mut inner = self.lock()?;
        let mut errors = Vec::new();
        let mut nl = rtnl()?;
        let state = inner.state.clone();
        for (id, net) in &state.networks {
            if let Err(e) = ensure_bridge(&mut nl, id, net) {
                errors.push(e);
            }
            if let Err(e) = self.zone_add(&mut inner, &net.config.bridge) {
                errors.push(e);
            }
        }
        if let Err(e) = self.sync_firewall(&mut inner, &state) {
            errors.push(e);
        }
        combine(errors).map_or(Ok(()), Err)
    }

    /// Puts `bridge` into firewalld's zone, where firewalld runs.
    fn zone_add(&self, inner: &mut Inner, bridge: &str) -> DriverResult<()> {
        let Some(fw) = &self.firewalld else { return Ok(()) };
        if !inner.zone_ready {
            fw.ensure_zone()?;
            inner.zone_ready = true;
        }
        fw.add_interface(bridge)
    }

    /// Takes `bridge` out of firewalld's zone, where firewalld runs.
    fn zone_remove(&self, bridge: &str) -> DriverResult<()> {
        self.firewalld.as_ref().map_or(Ok(()), |fw| fw.remove_interface(bridge))
    }

    /// Makes the firewall table match `next`, programming only what
    /// changed since the last state applied: a new network or published
    /// port only adds (see [`nft::sync`]). The whole table is regenerated
    /// when what it holds is unknown (at start: the restore) or after a
    /// failure.
    fn sync_firewall(&self, inner: &mut Inner, next: &State) -> DriverResult<()> {
        let want = fw_networks(next);
        let current = inner.applied.take();
        nft::sync(&*self.nft, &self.table, current.as_deref(), &want)?;
        inner.applied = Some(want);
        Ok(())
    }

    /// Programs the firewall for `next` and saves it; on failure the
    /// firewall is put back to the current state and nothing changes.
    fn commit(&self, inner: &mut Inner, next: State) -> DriverResult<()> {
        let result = self.sync_firewall(inner, &next).and_then(|()| state::save(&self.state_path, &next));
        match result {
            Ok(()) => {
                inner.state = next;
                Ok(())
            }
            Err(e) => {
                let current = inner.state.clone();
                let _ = self.sync_firewall(inner, &current);
                Err(e)
            }
        }
    }
}

/// Recreates a missing bridge the driver owns (after a reboot) with its
/// addresses.
fn ensure_bridge(nl: &mut Rtnl, id: &str, net: &Network) -> DriverResult<()> {
    let name = &net.config.bridge;
    let link = nl.link_by_name(name).map_err(|e| os_err(format_args!("look up bridge {name}"), &e))?;
    let index = match link {
        Some(l) => l.index,
        None if net.owned_bridge => {
            nl.add_bridge(name, Some(net.config.mtu))
                .map_err(|e| os_err(format_args!("recreate bridge {name} of network {id:?}"), &e))?;
            lookup_index(nl, name)?
        }
        None => {
            return Err(DriverError::failed_precondition(format!(
                "bridge {name} of network {id:?} is gone; the operator's bridge must exist for the network to work"
            )))
        }
    };
    for gw in gateway_addresses(net) {
        nl.add_address(index, gw).map_err(|e| os_err(format_args!("add {gw} to bridge {name}"), &e))?;
    }
    Ok(())
}

fn lookup_index(nl: &mut Rtnl, name: &str) -> DriverResult<u32> {
    nl.link_by_name(name)
        .map_err(|e| os_err(format_args!("look up link {name}"), &e))?
        .map(|l| l.index)
        .ok_or_else(|| DriverError::internal(format!("link {name} vanished right after it was created")))
}

/// The gateway addresses a network puts on its bridge.
fn gateway_addresses(net: &Network) -> Vec<IpNet> {
    net.pools
        .iter()
        .filter_map(|p| p.gateway)
        .filter(|g| !(net.config.inhibit_ipv4 && matches!(g, IpNet::V4(_))))
        .collect()
}

fn fw_networks(state: &State) -> Vec<FwNetwork> {
    state
        .networks
        .iter()
        .map(|(id, n)| FwNetwork {
            id: id.clone(),
            bridge: n.config.bridge.clone(),
            subnets: n.pools.iter().map(|p| p.subnet).collect(),
            internal: n.config.internal,
            masquerade: n.config.masquerade,
            snat_ipv4: n.config.snat_ipv4,
            ports: n
                .endpoints
                .iter()
                .flat_map(|(eid, e)| e.ports.iter().map(move |p| (eid, p)))
                .filter_map(|(eid, p)| {
                    Some(FwPort {
                        endpoint: eid.clone(),
                        proto: p.proto_name(),
                        host_ip: p.host_ip.parse().ok(),
                        host_port: p.host_port,
                        container_ip: p.ip.parse().ok()?,
                        container_port: p.port,
                    })
                })
                .collect(),
        })
        .collect()
}

/// Deletes an endpoint's veth pair wherever its ends are in the host
/// namespace.
/// The index of bridge `name` of network `nid`; gone is an error that says
/// what to do.
fn bridge_index(nl: &mut Rtnl, name: &str, nid: &str) -> DriverResult<u32> {
    let link = nl.link_by_name(name).map_err(|e| os_err(format_args!("look up bridge {name}"), &e))?;
    link.map(|l| l.index).ok_or_else(|| {
        DriverError::failed_precondition(format!(
            "bridge {name} of network {nid:?} is gone; delete and recreate the network"
        ))
    })
}

/// Whether berth's core asked for the interface in the sandbox
/// ([`berth_plugin_api::network::JOIN_IN_PLACE`]).
fn in_place(options: &Options) -> bool {
    options.get(berth_plugin_api::network::JOIN_IN_PLACE).is_some_and(|v| v == &serde_json::Value::Bool(true))
}

/// `CreateEndpoint`'s answer: the MAC the driver chose, when none was asked.
fn created(generated: bool, mac: String) -> CreateEndpointResponse {
    let mut resp = CreateEndpointResponse::default();
    if generated {
        let mut filled = EndpointInterface::default();
        filled.mac_address = mac;
        resp.interface = Some(filled);
    }
    resp
}

/// Makes `ep`'s veth pair on bridge `bridge` (its index), the sandbox end
/// in `netns` when given; undone when a step fails.
fn make_veth(
    nl: &mut Rtnl,
    ep: &Endpoint,
    config: &NetConfig,
    bridge: u32,
    netns: Option<std::os::fd::RawFd>,
) -> DriverResult<()> {
    let mac = netutil::parse_mac(&ep.mac)
        .ok_or_else(|| DriverError::internal(format!("endpoint MAC {:?} does not parse", ep.mac)))?;
    // A crash between creating the pair and saving may have left it.
    let _ = delete_veth(nl, ep);
    nl.add_veth_into(&ep.host_veth, &ep.peer_veth, config.mtu, Some(mac), Some(bridge), netns)
        .map_err(|e| os_err(format_args!("create veth pair {} / {}", ep.host_veth, ep.peer_veth), &e))?;
    // Hairpin lets a container reach its own published port where
    // br_netfilter bridges the DNATed frame back to the port it came from;
    // isolation is ICC off.
    let flags = lookup_index(nl, &ep.host_veth).and_then(|index| {
        nl.set_bridge_port(index, true, !config.icc)
            .map_err(|e| os_err(format_args!("set bridge port flags of {}", ep.host_veth), &e))
    });
    if let Err(e) = flags {
        let _ = delete_veth(nl, ep);
        return Err(e);
    }
    Ok(())
}

fn delete_veth(nl: &mut Rtnl, ep: &Endpoint) -> DriverResult<()> {
    let gone = nl
        .delete_link_by_name(&ep.host_veth)
        .map_err(|e| os_err(format_args!("delete veth {}", ep.host_veth), &e))?;
    if !gone {
        nl.delete_link_by_name(&ep.peer_veth)
            .map_err(|e| os_err(format_args!("delete veth {}", ep.peer_veth), &e))?;
    }
    Ok(())
}

/// Chooses the host ports of `wanted` for endpoint `ep_id` (NW-07): a
/// given port must be free of other berth bindings and of listeners on the
/// host; `0` or a range takes the first free one.
fn allocate_ports(
    state: &State,
    net: &Network,
    ep_id: &str,
    ep: &Endpoint,
    wanted: &[PortBinding],
) -> DriverResult<Vec<PortBinding>> {
    let mut taken: BTreeSet<(u8, String, u16)> = state
        .networks
        .values()
        .flat_map(|n| n.endpoints.iter())
        .filter(|(id, _)| id.as_str() != ep_id)
        .flat_map(|(_, e)| e.ports.iter())
        .map(|p| (p.proto, p.host_ip.clone(), p.host_port))
        .collect();
    let mut out = Vec::new();
    for w in wanted {
        let container_ip: IpAddr = if w.ip.is_empty() {
            ep.address.map(|a| a.addr()).ok_or_else(|| {
                DriverError::invalid_argument(format!(
                    "endpoint {ep_id:?} has no IPv4 address to publish port {} on",
                    w.port
                ))
            })?
        } else {
            w.ip.parse().map_err(|_| {
                DriverError::invalid_argument(format!("port binding: {:?} is not an IP address", w.ip))
            })?
        };
        let host_ip: IpAddr = if w.host_ip.is_empty() {
            match (net.config.host_binding_ipv4, container_ip) {
                (IpAddr::V4(h), IpAddr::V6(_)) if h.is_unspecified() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                (h, _) => h,
            }
        } else {
            w.host_ip.parse().map_err(|_| {
                DriverError::invalid_argument(format!("port binding: {:?} is not an IP address", w.host_ip))
            })?
        };
        if host_ip.is_ipv4() != container_ip.is_ipv4() {
            return Err(DriverError::invalid_argument(format!(
                "port binding {host_ip} → {container_ip}: host and container addresses are of different families"
            )));
        }
        let clash = |taken: &BTreeSet<(u8, String, u16)>, port: u16| {
            taken.iter().any(|(proto, ip, p)| {
                *proto == w.proto
                    && *p == port
                    && ip
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip == host_ip || ip.is_unspecified() || host_ip.is_unspecified())
            })
        };
        let explicit = w.host_port != 0 && (w.host_port_end == 0 || w.host_port_end == w.host_port);
        let port = if explicit {
            if clash(&taken, w.host_port) {
                return Err(DriverError::conflict(format!(
                    "host port {host_ip}:{}/{} is already published by another berth endpoint",
                    w.host_port,
                    w.proto_name()
                )));
            }
            if !bindable(w.proto, host_ip, w.host_port) {
                return Err(DriverError::conflict(format!(
                    "host port {host_ip}:{}/{} is in use on the host",
                    w.host_port,
                    w.proto_name()
                )));
            }
            w.host_port
        } else {
            let range = if w.host_port == 0 { EPHEMERAL_PORTS } else { w.host_port..=w.host_port_end };
            range.clone().find(|p| !clash(&taken, *p) && bindable(w.proto, host_ip, *p)).ok_or_else(|| {
                DriverError::resource_exhausted(format!(
                    "no free host port in {}-{} for {}/{}",
                    range.start(),
                    range.end(),
                    w.port,
                    w.proto_name()
                ))
            })?
        };
        taken.insert((w.proto, host_ip.to_string(), port));
        out.push(PortBinding {
            proto: w.proto,
            ip: container_ip.to_string(),
            port: w.port,
            host_ip: host_ip.to_string(),
            host_port: port,
            host_port_end: port,
        });
    }
    Ok(out)
}

/// Whether nothing on the host listens on `ip:port` (tcp/udp; sctp is
/// not checked). An address that is not local counts as free.
fn bindable(proto: u8, ip: IpAddr, port: u16) -> bool {
    let r = match proto {
        6 => TcpListener::bind((ip, port)).map(drop),
        17 => UdpSocket::bind((ip, port)).map(drop),
        _ => Ok(()),
    };
    !matches!(r, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

impl NetworkDriver for BridgeDriver {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Local))
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        netutil::check_id("bridge", "network", &req.network_id)?;
        let id = req.network_id.clone();
        let config = NetConfig::parse(&req, self.default_mtu)?;
        let pools = netutil::parse_pools("bridge", &id, &req.ipv4_data, &req.ipv6_data)?;
        if !pools.iter().any(|p| matches!(p.subnet, IpNet::V4(_))) {
            return Err(DriverError::invalid_argument(format!(
                "bridge network {id:?} needs an IPv4 pool from IPAM, and none was given"
            )));
        }
        let mut inner = self.lock()?;
        if inner.state.networks.contains_key(&id) {
            return Err(DriverError::already_exists(format!("bridge network {id:?} already exists")));
        }
        for (other_id, other) in &inner.state.networks {
            if other.config.bridge == config.bridge {
                return Err(DriverError::conflict(format!(
                    "bridge {} is already used by network {other_id:?}",
                    config.bridge
                )));
            }
            for p in &pools {
                if let Some(o) =
                    other.pools.iter().find(|o| o.subnet.contains(&p.subnet) || p.subnet.contains(&o.subnet))
                {
                    return Err(DriverError::conflict(format!(
                        "bridge network {id:?}: subnet {} overlaps subnet {} of network {other_id:?}",
                        p.subnet, o.subnet
                    )));
                }
            }
        }
        let mut nl = rtnl()?;
        let name = config.bridge.clone();
        let (index, owned) =
            match nl.link_by_name(&name).map_err(|e| os_err(format_args!("look up bridge {name}"), &e))? {
                Some(l) if l.kind.as_deref() == Some("bridge") => (l.index, false),
                Some(l) => {
                    return Err(DriverError::conflict(format!(
                        "link {name} exists and is {}, not a bridge; choose another {}",
                        l.kind.map_or("a plain link".to_string(), |k| format!("a {k} link")),
                        options::BRIDGE_NAME
                    )))
                }
                None => {
                    nl.add_bridge(&name, Some(config.mtu))
                        .map_err(|e| os_err(format_args!("create bridge {name}"), &e))?;
                    (lookup_index(&mut nl, &name)?, true)
                }
            };
        let mut net = Network {
            config,
            pools,
            owned_bridge: owned,
            added_addresses: Vec::new(),
            endpoints: Default::default(),
        };
        let result = (|| {
            for gw in gateway_addresses(&net) {
                if nl
                    .add_address(index, gw)
                    .map_err(|e| os_err(format_args!("add {gw} to bridge {name}"), &e))?
                {
                    net.added_addresses.push(gw);
                }
            }
            if !owned {
                nl.set_up(index).map_err(|e| os_err(format_args!("set bridge {name} up"), &e))?;
            }
            if !net.config.internal {
                netutil::sysctl("net.ipv4.ip_forward", "1")?;
                if net.pools.iter().any(|p| matches!(p.subnet, IpNet::V6(_))) {
                    netutil::sysctl("net.ipv6.conf.all.forwarding", "1")?;
                }
            }
            if owned {
                // Published ports reached through 127.0.0.1 are routed out
                // of the bridge with a loopback source (then masqueraded).
                netutil::sysctl(&format!("net.ipv4.conf.{name}.route_localnet"), "1")?;
            }
            self.zone_add(&mut inner, &name)?;
            let mut next = inner.state.clone();
            next.networks.insert(id.clone(), net.clone());
            self.commit(&mut inner, next)
        })();
        if result.is_err() {
            let _ = self.zone_remove(&name);
            if owned {
                let _ = nl.delete_link(index);
            } else {
                for a in &net.added_addresses {
                    let _ = nl.delete_address(index, *a);
                }
            }
        }
        result
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        let mut inner = self.lock()?;
        let Some(net) = inner.state.networks.get(&req.network_id).cloned() else { return Ok(()) };
        let mut errors = Vec::new();
        let mut nl = rtnl()?;
        for ep in net.endpoints.values() {
            if let Err(e) = delete_veth(&mut nl, ep) {
                errors.push(e);
            }
        }
        let name = &net.config.bridge;
        if let Err(e) = self.zone_remove(name) {
            errors.push(e);
        }
        if net.owned_bridge {
            if let Err(e) = nl.delete_link_by_name(name) {
                errors.push(os_err(format_args!("delete bridge {name}"), &e));
            }
        } else if !net.added_addresses.is_empty() {
            match nl.link_by_name(name) {
                Ok(Some(l)) => {
                    for a in &net.added_addresses {
                        if let Err(e) = nl.delete_address(l.index, *a) {
                            errors.push(os_err(format_args!("remove {a} from bridge {name}"), &e));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(os_err(format_args!("look up bridge {name}"), &e)),
            }
        }
        let mut next = inner.state.clone();
        next.networks.remove(&req.network_id);
        if errors.is_empty() {
            if let Err(e) = self.commit(&mut inner, next) {
                errors.push(e);
            }
        } else if let Err(e) = self.sync_firewall(&mut inner, &next) {
            // The network stays recorded so a retry finishes the teardown.
            errors.push(e);
        }
        combine(errors).map_or(Ok(()), Err)
    }

    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        netutil::check_id("bridge", "endpoint", &req.endpoint_id)?;
        let (nid, eid) = (req.network_id.as_str(), req.endpoint_id.as_str());
        let mut inner = self.lock()?;
        let net = inner.state.networks.get(nid).ok_or_else(|| not_found(nid))?;
        if net.endpoints.contains_key(eid) {
            return Err(DriverError::already_exists(format!(
                "endpoint {eid:?} already exists on bridge network {nid:?}"
            )));
        }
        let iface = req.interface.clone().unwrap_or_default();
        let (address, address_ipv6) = netutil::endpoint_addresses("bridge", eid, &iface, &net.pools)?;
        if address.is_none() {
            return Err(DriverError::invalid_argument(format!(
                "bridge endpoint {eid:?} needs an IPv4 address from IPAM, and none was given"
            )));
        }
        let requested = netutil::requested_mac(eid, req.interface.as_ref(), &req.options)?;
        let mac = requested.unwrap_or_else(|| {
            let v4 = address.and_then(|a| if let IpAddr::V4(v) = a.addr() { Some(v) } else { None });
            netutil::generate_mac(v4, &format!("{nid}/{eid}"))
        });
        let requested_ports = options::portmap(&req.options)?.unwrap_or_default();
        let ep = Endpoint {
            host_veth: netutil::link_name(HOST_VETH_PREFIX, nid, eid),
            peer_veth: netutil::link_name(PEER_VETH_PREFIX, nid, eid),
            address,
            address_ipv6,
            mac: netutil::format_mac(&mac),
            requested_ports,
            ports: Vec::new(),
            deferred: in_place(&req.options),
        };
        // For berth's core the pair is made at join, its sandbox end in the
        // sandbox already.
        let mut nl = if ep.deferred { None } else { Some(rtnl()?) };
        if let Some(nl) = nl.as_mut() {
            let bridge = bridge_index(nl, &net.config.bridge, nid)?;
            make_veth(nl, &ep, &net.config, bridge, None)?;
        }
        let mut next = inner.state.clone();
        next.networks.get_mut(nid).expect("checked above").endpoints.insert(eid.to_string(), ep.clone());
        if let Err(e) = self.commit(&mut inner, next) {
            if let Some(nl) = nl.as_mut() {
                let _ = delete_veth(nl, &ep);
            }
            return Err(e);
        }
        Ok(created(requested.is_none(), ep.mac))
    }

    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        let inner = self.lock()?;
        let net = inner.state.networks.get(&req.network_id).ok_or_else(|| not_found(&req.network_id))?;
        let ep = net
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| ep_not_found(&req.network_id, &req.endpoint_id))?;
        let mut info = Options::new();
        info.insert(netutil::PORTMAP.into(), serde_json::to_value(&ep.ports).unwrap_or_default());
        info.insert(netutil::EP_MAC.into(), serde_json::Value::String(ep.mac.clone()));
        info.insert(
            "com.berth.network.bridge.host_veth".into(),
            serde_json::Value::String(ep.host_veth.clone()),
        );
        Ok(info)
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        let mut inner = self.lock()?;
        let Some(ep) = inner
            .state
            .networks
            .get(&req.network_id)
            .and_then(|n| n.endpoints.get(&req.endpoint_id))
            .cloned()
        else {
            return Ok(());
        };
        let mut nl = rtnl()?;
        delete_veth(&mut nl, &ep)?;
        let mut next = inner.state.clone();
        if let Some(n) = next.networks.get_mut(&req.network_id) {
            n.endpoints.remove(&req.endpoint_id);
        }
        self.commit(&mut inner, next)
    }

    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        let (nid, eid) = (req.network_id.as_str(), req.endpoint_id.as_str());
        let mut inner = self.lock()?;
        let net = inner.state.networks.get(nid).ok_or_else(|| not_found(nid))?.clone();
        let ep = net.endpoints.get(eid).ok_or_else(|| ep_not_found(nid, eid))?;
        let mut nl = rtnl()?;
        if ep.deferred {
            // Made now: the sandbox end in the sandbox when berth's core
            // can take it there, else in the host for the caller to move.
            let bridge = bridge_index(&mut nl, &net.config.bridge, nid)?;
            let sandbox = match in_place(&req.options) && !req.sandbox_key.is_empty() {
                true => Some(
                    std::fs::File::open(&req.sandbox_key)
                        .map_err(|e| DriverError::io(format_args!("open sandbox {}", req.sandbox_key), &e))?,
                ),
                false => None,
            };
            make_veth(&mut nl, ep, &net.config, bridge, sandbox.as_ref().map(|f| f.as_raw_fd()))?;
            // Not saved: after a restart a `deferred` endpoint's pair is
            // found by name by delete, and a join makes it again.
            if let Some(e) = inner.state.networks.get_mut(nid).and_then(|n| n.endpoints.get_mut(eid)) {
                e.deferred = false;
            }
        } else if nl
            .link_by_name(&ep.peer_veth)
            .map_err(|e| os_err(format_args!("look up {}", ep.peer_veth), &e))?
            .is_none()
        {
            return Err(DriverError::failed_precondition(format!(
                "interface {} of endpoint {eid:?} is not in the host namespace; is the endpoint joined to a sandbox already?",
                ep.peer_veth
            )));
        }
        let mut resp = JoinResponse::default();
        resp.interface_name = Some(InterfaceName::new(ep.peer_veth.clone(), net.config.iface_prefix.clone()));
        if !net.config.internal {
            for (addr, v6) in [(ep.address, false), (ep.address_ipv6, true)] {
                let Some(addr) = addr else { continue };
                let gw = net.pools.iter().find(|p| p.subnet.contains(&addr.addr())).and_then(|p| p.gateway);
                if let Some(gw) = gw {
                    if v6 {
                        resp.gateway_ipv6 = gw.addr().to_string();
                    } else {
                        resp.gateway = gw.addr().to_string();
                    }
                }
            }
        }
        if let Some(ports) = options::portmap(&req.options)? {
            if ports != ep.requested_ports {
                let mut next = inner.state.clone();
                next.networks
                    .get_mut(nid)
                    .and_then(|n| n.endpoints.get_mut(eid))
                    .expect("checked above")
                    .requested_ports = ports;
                self.commit(&mut inner, next)?;
            }
        }
        Ok(resp)
    }

    fn leave(&self, req: LeaveRequest) -> DriverResult<()> {
        self.unpublish(&req.network_id, &req.endpoint_id)
    }

    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        let (nid, eid) = (req.network_id.as_str(), req.endpoint_id.as_str());
        let mut inner = self.lock()?;
        let net = inner.state.networks.get(nid).ok_or_else(|| not_found(nid))?;
        let ep = net.endpoints.get(eid).ok_or_else(|| ep_not_found(nid, eid))?;
        let wanted = match options::portmap(&req.options)? {
            Some(p) => p,
            None => ep.requested_ports.clone(),
        };
        // Internal networks publish nothing (as in dockerd).
        let ports = if net.config.internal {
            Vec::new()
        } else {
            allocate_ports(&inner.state, net, eid, ep, &wanted)?
        };
        if ports == ep.ports {
            return Ok(());
        }
        let mut next = inner.state.clone();
        next.networks.get_mut(nid).and_then(|n| n.endpoints.get_mut(eid)).expect("checked above").ports =
            ports;
        self.commit(&mut inner, next)
    }

    fn revoke_external_connectivity(&self, req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        self.unpublish(&req.network_id, &req.endpoint_id)
    }
}

impl BridgeDriver {
    /// Removes an endpoint's published ports; idempotent.
    fn unpublish(&self, nid: &str, eid: &str) -> DriverResult<()> {
        let mut inner = self.lock()?;
        let has_ports = inner
            .state
            .networks
            .get(nid)
            .and_then(|n| n.endpoints.get(eid))
            .is_some_and(|e| !e.ports.is_empty());
        if !has_ports {
            return Ok(());
        }
        let mut next = inner.state.clone();
        next.networks
            .get_mut(nid)
            .and_then(|n| n.endpoints.get_mut(eid))
            .expect("checked above")
            .ports
            .clear();
        self.commit(&mut inner, next)
    }
}
