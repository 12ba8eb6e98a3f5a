//! The [`NetworkDriver`] implementation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::network::*;
use berth_plugin_api::util::driver::combine;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, NetworkDriver};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::netutil::{self, os_err};
use crate::options::{vlan_of, Mode, NetConfig, PARENT};
use crate::rtnl::{self, Rtnl};
use crate::state::{self, Endpoint, Network, State, STATE_FILE};

/// Prefix of an endpoint's macvlan link in the host namespace.
pub const LINK_PREFIX: &str = "mvb";

/// The driver's options from the configuration: none, and an unknown key
/// is refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {}

/// The `macvlan` network driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct MacvlanDriver {
    state_path: PathBuf,
    state: Mutex<State>,
}

fn rtnl() -> DriverResult<Rtnl> {
    Rtnl::open().map_err(|e| os_err("open rtnetlink socket", &e))
}

fn not_found(network_id: &str) -> DriverError {
    DriverError::not_found(format!("macvlan network {network_id:?} not found"))
}

fn ep_not_found(network_id: &str, endpoint_id: &str) -> DriverError {
    DriverError::not_found(format!("endpoint {endpoint_id:?} not found on macvlan network {network_id:?}"))
}

/// The dummy link that stands in for a missing parent, as in Docker.
fn dummy_name(network_id: &str) -> String {
    let short: String = network_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("dm-{short}")
}

impl MacvlanDriver {
    /// Builds the driver: checks the options, loads
    /// `<root>/macvlan-state.json` and recreates parent links it created
    /// that are gone (after a reboot).
    pub fn new(req: InitRequest) -> DriverResult<Init<MacvlanDriver>> {
        let _opts: Opts = req.decode_options()?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(
                "the macvlan network driver needs a root directory for its state, and none was given",
            ));
        }
        let root = Path::new(&req.root);
        std::fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create network root {}", root.display()), &e))?;
        let state_path = root.join(STATE_FILE);
        let state = state::load(&state_path)?;
        if !state.networks.is_empty() {
            let mut nl = rtnl()?;
            let errors: Vec<DriverError> = state
                .networks
                .values()
                .filter_map(|n| ensure_parent(&mut nl, &state, &n.parent).err())
                .collect();
            if let Some(e) = combine(errors) {
                if e.kind == ErrorKind::PermissionDenied {
                    return Ok(Init::Skipped(format!(
                        "the macvlan driver needs CAP_NET_ADMIN: {}",
                        e.message
                    )));
                }
                return Err(e);
            }
        }
        Ok(Init::Ready(MacvlanDriver { state_path, state: Mutex::new(state) }))
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| {
            DriverError::internal(
                "macvlan driver state is unusable after an earlier panic; restart the daemon",
            )
        })
    }

    fn commit(&self, state: &mut State, next: State) -> DriverResult<()> {
        state::save(&self.state_path, &next)?;
        *state = next;
        Ok(())
    }
}

/// Makes sure parent `name` exists, creating it if it is one the driver
/// made before (a VLAN sub-interface or a dummy lost in a reboot).
/// Answers its index.
fn ensure_parent(nl: &mut Rtnl, state: &State, name: &str) -> DriverResult<u32> {
    if let Some(l) =
        nl.link_by_name(name).map_err(|e| os_err(format_args!("look up parent link {name}"), &e))?
    {
        return Ok(l.index);
    }
    if !state.created_parents.contains(name) {
        return Err(DriverError::failed_precondition(format!("parent link {name} is gone")));
    }
    create_parent(nl, name)
}

/// Creates parent `name`: a VLAN sub-interface for `<link>.<id>`, else a
/// dummy link.
fn create_parent(nl: &mut Rtnl, name: &str) -> DriverResult<u32> {
    match vlan_of(name) {
        Some((link, id)) => {
            let lower = nl
                .link_by_name(link)
                .map_err(|e| os_err(format_args!("look up link {link}"), &e))?
                .ok_or_else(|| {
                    DriverError::invalid_argument(format!(
                        "option {PARENT}: link {link} (the lower link of VLAN sub-interface {name}) does not exist"
                    ))
                })?;
            nl.add_vlan(name, lower.index, id).map_err(|e| {
                if rtnl::is_unknown_kind(&e) {
                    DriverError::unsupported(format!(
                        "option {PARENT}: cannot create VLAN sub-interface {name} (id {id} on {link}): this kernel \
                         has no 802.1Q VLAN links (8021q); create the parent yourself or use one without .<vlan>"
                    ))
                } else {
                    os_err(format_args!("create VLAN sub-interface {name} (id {id} on {link})"), &e)
                }
            })?;
        }
        None => nl.add_dummy(name).map_err(|e| {
            if rtnl::is_unknown_kind(&e) {
                DriverError::invalid_argument(format!(
                    "no parent link given (option {PARENT}), and this kernel has no dummy links to stand in for one \
                     as Docker does for internal macvlan networks; give -o {PARENT}=<link>"
                ))
            } else {
                os_err(format_args!("create dummy parent link {name}"), &e)
            }
        })?,
    }
    nl.link_by_name(name)
        .map_err(|e| os_err(format_args!("look up link {name}"), &e))?
        .map(|l| l.index)
        .ok_or_else(|| DriverError::internal(format!("link {name} vanished right after it was created")))
}

/// Whether parent `name` is one the driver created and no network of
/// `state` uses any more, so it goes (NW-11: shared while used, removed
/// with its last network, an operator's never).
fn parent_unused(state: &State, name: &str) -> bool {
    state.created_parents.contains(name) && !state.networks.values().any(|n| n.parent == name)
}

/// Deletes a parent the driver created once no network uses it.
fn release_parent(nl: &mut Rtnl, next: &mut State, name: &str) -> DriverResult<()> {
    if !parent_unused(next, name) {
        return Ok(());
    }
    nl.delete_link_by_name(name).map_err(|e| os_err(format_args!("delete parent link {name}"), &e))?;
    next.created_parents.remove(name);
    Ok(())
}

impl NetworkDriver for MacvlanDriver {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Local))
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        netutil::check_id("macvlan", "network", &req.network_id)?;
        let id = req.network_id.clone();
        let config = NetConfig::parse(&req)?;
        let pools = netutil::parse_pools("macvlan", &id, &req.ipv4_data, &req.ipv6_data)?;
        let mut state = self.lock()?;
        if state.networks.contains_key(&id) {
            return Err(DriverError::already_exists(format!("macvlan network {id:?} already exists")));
        }
        // Docker puts internal networks and those without a parent on a
        // dummy link of their own.
        let parent = match (&config.parent, config.internal) {
            (Some(p), false) => p.clone(),
            _ => dummy_name(&id),
        };
        for (other_id, other) in &state.networks {
            if other.parent != parent {
                continue;
            }
            if config.mode == Mode::Passthru || other.config.mode == Mode::Passthru {
                return Err(DriverError::conflict(format!(
                    "parent link {parent} is used by macvlan network {other_id:?}; a passthru network needs its parent alone"
                )));
            }
            for p in &pools {
                if let Some(o) =
                    other.pools.iter().find(|o| o.subnet.contains(&p.subnet) || p.subnet.contains(&o.subnet))
                {
                    return Err(DriverError::conflict(format!(
                        "macvlan network {id:?}: subnet {} overlaps subnet {} of network {other_id:?} on parent {parent}",
                        p.subnet, o.subnet
                    )));
                }
            }
        }
        let mut nl = rtnl()?;
        let mut next = state.clone();
        let existing =
            nl.link_by_name(&parent).map_err(|e| os_err(format_args!("look up parent link {parent}"), &e))?;
        let parent_link = match existing {
            Some(l) => l,
            None if vlan_of(&parent).is_some() || config.parent.is_none() || config.internal => {
                create_parent(&mut nl, &parent)?;
                next.created_parents.insert(parent.clone());
                nl.link_by_name(&parent)
                    .map_err(|e| os_err(format_args!("look up parent link {parent}"), &e))?
                    .ok_or_else(|| {
                        DriverError::internal(format!("link {parent} vanished right after it was created"))
                    })?
            }
            None => {
                return Err(DriverError::invalid_argument(format!(
                    "macvlan network {id:?}: parent link {parent} does not exist (option {PARENT})"
                )))
            }
        };
        if let Some(mtu) = config.mtu {
            if mtu > parent_link.mtu {
                let _ = release_parent(&mut nl, &mut next, &parent);
                return Err(DriverError::invalid_argument(format!(
                    "macvlan network {id:?}: MTU {mtu} is larger than the MTU {} of parent link {parent}",
                    parent_link.mtu
                )));
            }
        }
        next.networks.insert(
            id.clone(),
            Network { config, parent: parent.clone(), pools, endpoints: Default::default() },
        );
        if let Err(e) = self.commit(&mut state, next.clone()) {
            next.networks.remove(&id);
            let _ = release_parent(&mut nl, &mut next, &parent);
            return Err(e);
        }
        Ok(())
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        let mut state = self.lock()?;
        let Some(net) = state.networks.get(&req.network_id).cloned() else { return Ok(()) };
        let mut nl = rtnl()?;
        let mut errors = Vec::new();
        for ep in net.endpoints.values() {
            if let Err(e) = nl.delete_link_by_name(&ep.link) {
                errors.push(os_err(format_args!("delete macvlan link {}", ep.link), &e));
            }
        }
        let mut next = state.clone();
        next.networks.remove(&req.network_id);
        if let Err(e) = release_parent(&mut nl, &mut next, &net.parent) {
            errors.push(e);
        }
        if errors.is_empty() {
            if let Err(e) = self.commit(&mut state, next) {
                errors.push(e);
            }
        }
        combine(errors).map_or(Ok(()), Err)
    }

    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        netutil::check_id("macvlan", "endpoint", &req.endpoint_id)?;
        let (nid, eid) = (req.network_id.as_str(), req.endpoint_id.as_str());
        let mut state = self.lock()?;
        let net = state.networks.get(nid).ok_or_else(|| not_found(nid))?;
        if net.endpoints.contains_key(eid) {
            return Err(DriverError::already_exists(format!(
                "endpoint {eid:?} already exists on macvlan network {nid:?}"
            )));
        }
        if net.config.mode == Mode::Passthru && !net.endpoints.is_empty() {
            return Err(DriverError::conflict(format!(
                "macvlan network {nid:?} is in passthru mode, which allows one endpoint, and has one"
            )));
        }
        let iface = req.interface.clone().unwrap_or_default();
        let (address, address_ipv6) = netutil::endpoint_addresses("macvlan", eid, &iface, &net.pools)?;
        let requested = netutil::requested_mac(eid, req.interface.as_ref(), &req.options)?;
        let passthru = net.config.mode == Mode::Passthru;
        let mac = if passthru {
            None
        } else {
            Some(requested.unwrap_or_else(|| {
                let v4 = address.and_then(|a| if let IpAddr::V4(v) = a.addr() { Some(v) } else { None });
                netutil::generate_mac(v4, &format!("{nid}/{eid}"))
            }))
        };
        let ep = Endpoint {
            link: netutil::link_name(LINK_PREFIX, nid, eid),
            address,
            address_ipv6,
            mac: mac.map(|m| netutil::format_mac(&m)).unwrap_or_default(),
        };
        let mut nl = rtnl()?;
        let parent = ensure_parent(&mut nl, &state, &net.parent)?;
        let _ = nl.delete_link_by_name(&ep.link);
        nl.add_macvlan(&ep.link, parent, net.config.mode.kernel(), net.config.mtu, mac).map_err(|e| {
            let mut err = os_err(format_args!("create macvlan link {} on {}", ep.link, net.parent), &e);
            if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EBUSY)) {
                err.kind = ErrorKind::Conflict;
                err.message.push_str(
                    "; a passthru macvlan needs its parent alone, and other modes cannot join one in passthru mode",
                );
            }
            err
        })?;
        let mut next = state.clone();
        next.networks.get_mut(nid).expect("checked above").endpoints.insert(eid.to_string(), ep.clone());
        if let Err(e) = self.commit(&mut state, next) {
            let _ = nl.delete_link_by_name(&ep.link);
            return Err(e);
        }
        let mut resp = CreateEndpointResponse::default();
        if requested.is_none() && !ep.mac.is_empty() {
            let mut filled = EndpointInterface::default();
            filled.mac_address = ep.mac;
            resp.interface = Some(filled);
        }
        Ok(resp)
    }

    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        let state = self.lock()?;
        let net = state.networks.get(&req.network_id).ok_or_else(|| not_found(&req.network_id))?;
        let ep = net
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| ep_not_found(&req.network_id, &req.endpoint_id))?;
        let mut info = Options::new();
        info.insert(netutil::EP_MAC.into(), serde_json::Value::String(ep.mac.clone()));
        info.insert("com.berth.network.macvlan.parent".into(), serde_json::Value::String(net.parent.clone()));
        Ok(info)
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        let mut state = self.lock()?;
        let Some(ep) =
            state.networks.get(&req.network_id).and_then(|n| n.endpoints.get(&req.endpoint_id)).cloned()
        else {
            return Ok(());
        };
        let mut nl = rtnl()?;
        nl.delete_link_by_name(&ep.link)
            .map_err(|e| os_err(format_args!("delete macvlan link {}", ep.link), &e))?;
        let mut next = state.clone();
        if let Some(n) = next.networks.get_mut(&req.network_id) {
            n.endpoints.remove(&req.endpoint_id);
        }
        self.commit(&mut state, next)
    }

    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        let (nid, eid) = (req.network_id.as_str(), req.endpoint_id.as_str());
        let state = self.lock()?;
        let net = state.networks.get(nid).ok_or_else(|| not_found(nid))?;
        let ep = net.endpoints.get(eid).ok_or_else(|| ep_not_found(nid, eid))?;
        let mut nl = rtnl()?;
        if nl.link_by_name(&ep.link).map_err(|e| os_err(format_args!("look up {}", ep.link), &e))?.is_none() {
            return Err(DriverError::failed_precondition(format!(
                "interface {} of endpoint {eid:?} is not in the host namespace; is the endpoint joined to a sandbox already?",
                ep.link
            )));
        }
        let mut resp = JoinResponse::default();
        resp.interface_name = Some(InterfaceName::new(ep.link.clone(), net.config.iface_prefix.clone()));
        if !net.config.internal {
            for (addr, v6) in [(ep.address, false), (ep.address_ipv6, true)] {
                let Some(addr) = addr else { continue };
                let gw = net.pools.iter().find(|p| p.subnet.contains(&addr.addr())).and_then(|p| p.gateway);
                if let Some(gw) = gw.map(|g: IpNet| g.addr().to_string()) {
                    if v6 {
                        resp.gateway_ipv6 = gw;
                    } else {
                        resp.gateway = gw;
                    }
                }
            }
        }
        Ok(resp)
    }

    fn leave(&self, _req: LeaveRequest) -> DriverResult<()> {
        Ok(())
    }

    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        // Macvlan endpoints sit on the parent's segment; there is nothing
        // to publish (dockerd's macvlan driver ignores port maps too).
        let state = self.lock()?;
        let net = state.networks.get(&req.network_id).ok_or_else(|| not_found(&req.network_id))?;
        net.endpoints.get(&req.endpoint_id).ok_or_else(|| ep_not_found(&req.network_id, &req.endpoint_id))?;
        Ok(())
    }

    fn revoke_external_connectivity(&self, _req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::NetConfig;

    fn net(parent: &str) -> Network {
        let req = CreateNetworkRequest::new("n");
        Network {
            config: NetConfig::parse(&req).unwrap(),
            parent: parent.into(),
            pools: vec![],
            endpoints: Default::default(),
        }
    }

    /// The bookkeeping of NW-11 on its own (the kernels here may lack
    /// 802.1Q; the integration test runs it for real where they have it).
    #[test]
    fn a_created_parent_is_shared_and_goes_with_its_last_network() {
        let mut s = State::default();
        // net1 creates veth0.10; net2 shares it; eth0.20 is the operator's
        s.networks.insert("net1".into(), net("veth0.10"));
        s.created_parents.insert("veth0.10".into());
        s.networks.insert("net2".into(), net("veth0.10"));
        s.networks.insert("net3".into(), net("eth0.20"));
        s.networks.remove("net1");
        assert!(!parent_unused(&s, "veth0.10"), "still used by net2");
        s.networks.remove("net2");
        assert!(parent_unused(&s, "veth0.10"), "its last network is gone");
        s.networks.remove("net3");
        assert!(!parent_unused(&s, "eth0.20"), "the operator's parent is never removed");
    }
}
