//! {{driver_name}}: a small but complete berth network driver — a veth
//! into the sandbox.
//!
//! # What it makes
//!
//! * Per network a bridge `vb-<network id>` (first 12 characters of the
//!   id), up, with the network's MTU and **no address**: it joins the
//!   network's endpoints at layer 2 (without it, two endpoints of one
//!   network could not reach each other) and nothing else. The host takes no
//!   part, so networks are isolated from each other and from the outside
//!   without any firewall rule (an internal network, in Docker's words).
//! * Per endpoint a veth pair made in one step: the host end `vh-<endpoint
//!   id>`, up, on the bridge; the peer `vp-<endpoint id>`, down, with the
//!   endpoint's MAC (the requested one, or a random locally administered
//!   one) and the network's MTU.
//! * On join it answers the peer as the interface to move in (`SrcName`,
//!   `DstPrefix` `eth`) and the gateway IPAM reserved for the network, and
//!   nothing else; berth (or dockerd) moves the peer into the sandbox and
//!   sets its addresses and default route. The gateway is where your
//!   router goes: this template runs none.
//! * On leave the core has taken the peer out of the sandbox again; the
//!   pair stays until the endpoint is deleted, which always follows.
//!   Deleting the endpoint deletes the host end, and the kernel deletes
//!   the peer with it wherever it is; deleting the network deletes the
//!   bridge (and the veths of endpoints a crash left on it).
//!
//! The one option is `com.docker.network.driver.mtu` (68 to 65535); any
//! other is refused. Subnets of two networks may not overlap. State (the
//! networks and endpoints) is one JSON file under the driver's root; after
//! a reboot the bridges are made again when the driver starts.
//!
//! # The rules berth-conformance checks (`berth-conformance list --kind network`)
//!
//! * create/delete are symmetric; a duplicate id is `AlreadyExists`; of
//!   many creates on one subnet exactly one wins (NW-01);
//! * the join answer has the pools' gateways; no IPv6 unless the network
//!   has it (NW-03); the MTU reaches the sandbox, and one out of range is
//!   `InvalidArgument` naming the MTU (NW-04); a generated MAC is locally
//!   administered unicast, a requested one is kept (NW-05);
//! * bad pools (gateway outside, multicast, IPv6 link-local) are refused
//!   before anything is made (NW-06);
//! * deleting an endpoint twice, or one never made, succeeds, and no veth
//!   end remains (NW-08);
//! * two endpoints of one network reach each other; of two networks they
//!   do not (NW-13).
//!
//! The suite finds what kind of driver this is by trying (it refuses
//! `com.docker.network.bridge.name` and `parent`, takes pools alone), so
//! the cases for bridge-like (NW-02, NW-09), macvlan-like (NW-11),
//! host/none (NW-10) and overlay (NW-12) drivers skip, and NW-07 skips
//! because no ports are published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_plugin_api::network::*;
use berth_plugin_api::util::command::find_program;
use berth_plugin_api::util::driver::combine;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, NetworkDriver};
use serde::Deserialize;
use serde_json::Value;

use crate::config::*;
use crate::links::{IpLinks, Links};
use crate::state::{self, Endpoint, Network, State, STATE_FILE};

/// The driver's options from berthd's configuration: none yet, and an
/// unknown key is refused rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Opts {}

/// The driver: the host's links, and its state behind one lock (every
/// call runs a few `ip` commands at most, so one lock is plenty).
#[derive(Debug)]
pub struct VethDriver {
    links: Arc<dyn Links>,
    state_path: PathBuf,
    state: Mutex<State>,
}

fn net_not_found(id: &str) -> DriverError {
    DriverError::not_found(format!("network {} not found in {{driver_name}}", short(id)))
}

fn ep_not_found(net: &str, ep: &str) -> DriverError {
    DriverError::not_found(format!("endpoint {} not found on network {}", short(ep), short(net)))
}

impl VethDriver {
    /// Builds the driver from berthd's init request: its state lives in
    /// `req.root`. Declines to run (a reason the operator sees, not a
    /// failure) without the `ip` command or without CAP_NET_ADMIN.
    pub fn new(req: InitRequest) -> DriverResult<Init<VethDriver>> {
        let _opts: Opts = req.decode_options()?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(
                "{{driver_name}} needs a root directory for its state, and none was given",
            ));
        }
        if find_program("ip").is_none() {
            return Ok(Init::Skipped("{{driver_name}} needs the ip command (iproute2): install it".into()));
        }
        match VethDriver::open(&req.root, Arc::new(IpLinks)) {
            Ok(d) => Ok(Init::Ready(d)),
            Err(e) if e.kind == ErrorKind::PermissionDenied => {
                Ok(Init::Skipped(format!("{{driver_name}} needs CAP_NET_ADMIN: {}", e.message)))
            }
            Err(e) => Err(e),
        }
    }

    /// A driver keeping its state in `root` (made if missing) and making
    /// its links with `links`. After a reboot the state outlives the
    /// links: the networks' bridges are made again here.
    pub fn open(root: impl AsRef<Path>, links: Arc<dyn Links>) -> DriverResult<VethDriver> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create {}", root.display()), &e))?;
        let state_path = root.join(STATE_FILE);
        let state = state::load(&state_path)?;
        let mut errors = Vec::new();
        for net in state.networks.values() {
            match links.exists(&net.bridge) {
                Ok(true) => {}
                Ok(false) => errors.extend(links.add_bridge(&net.bridge, net.config.mtu).err()),
                Err(e) => errors.push(e),
            }
        }
        if let Some(e) = combine(errors) {
            return Err(e.context("make the bridges of the networks in the state file again"));
        }
        Ok(VethDriver { links, state_path, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere does not make the state wrong: it is only ever
        // changed after the host was.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, state: &State) -> DriverResult<()> {
        state::save(&self.state_path, state)
    }
}

impl NetworkDriver for VethDriver {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        // Networks exist on this host only.
        Ok(Capabilities::new(Scope::Local))
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        let id = req.network_id.as_str();
        check_id("network", id)?;
        // Everything is checked before anything is made (NW-06).
        let config = NetConfig::parse(&req)?;
        let bridge = link_name(BRIDGE_PREFIX, id);
        let mut state = self.lock();
        if state.networks.contains_key(id) {
            return Err(DriverError::already_exists(format!("network {} exists already", short(id))));
        }
        for (other_id, other) in &state.networks {
            // Of many creates on one subnet exactly one wins (NW-01).
            if let Some((mine, theirs)) = config.overlap(&other.config) {
                return Err(DriverError::conflict(format!(
                    "network {}: subnet {mine} overlaps subnet {theirs} of network {}",
                    short(id),
                    short(other_id)
                )));
            }
            if other.bridge == bridge {
                return Err(DriverError::conflict(format!(
                    "network {}: bridge {bridge} belongs to network {}; network ids must differ in their first 12 characters",
                    short(id),
                    short(other_id)
                )));
            }
        }
        self.links.add_bridge(&bridge, config.mtu).map_err(|e| match e.kind {
            ErrorKind::AlreadyExists => DriverError::conflict(format!(
                "network {}: link {bridge} exists already; if an earlier run left it, delete it (`ip link del {bridge}`)",
                short(id)
            )),
            _ => e.context(format!("network {}: make bridge {bridge}", short(id))),
        })?;
        let net = Network { bridge: bridge.clone(), config, endpoints: BTreeMap::new() };
        state.networks.insert(id.to_string(), net);
        if let Err(e) = self.save(&state) {
            // Not remembered, so not made either.
            state.networks.remove(id);
            let _ = self.links.delete(&bridge);
            return Err(e);
        }
        Ok(())
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        let id = req.network_id.as_str();
        if check_id("network", id).is_err() {
            return Ok(()); // no such network could have been made
        }
        let mut state = self.lock();
        let Some(net) = state.networks.get(id).cloned() else {
            // Deleted already, or made and forgotten in a crash: its bridge
            // (named after its id) goes if it is there.
            let bridge = link_name(BRIDGE_PREFIX, id);
            if state.networks.values().any(|n| n.bridge == bridge) {
                return Ok(()); // another network's (ids alike in 12 characters)
            }
            return self.links.delete(&bridge);
        };
        // The daemon deletes endpoints first; any left (a crash) go with
        // the network, as in Docker's bridge driver. Every step is tried
        // and every failure reported; the network stays remembered until
        // all of them succeed, so deleting again finishes the job.
        let mut errors = Vec::new();
        for ep in net.endpoints.values() {
            errors.extend(self.links.delete(&ep.host).err());
        }
        errors.extend(self.links.delete(&net.bridge).err());
        if let Some(e) = combine(errors) {
            return Err(e.context(format!("delete network {}", short(id))));
        }
        state.networks.remove(id);
        self.save(&state)
    }

    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        let (net_id, ep_id) = (req.network_id.as_str(), req.endpoint_id.as_str());
        check_id("network", net_id)?;
        check_id("endpoint", ep_id)?;
        // A MAC the user asked for is kept; otherwise the driver makes one
        // and says so in its answer (NW-05). Addresses are IPAM's: the core
        // sets them in the sandbox, so the driver leaves them alone.
        let requested = req.interface.as_ref().map(|i| i.mac_address.as_str()).filter(|m| !m.is_empty());
        let mac = match requested {
            Some(text) => parse_mac(text).filter(|m| m[0] & 0x01 == 0).ok_or_else(|| {
                DriverError::invalid_argument(format!(
                    "endpoint {}: MAC address {text:?} is not a unicast aa:bb:cc:dd:ee:ff",
                    short(ep_id)
                ))
            })?,
            None => random_mac()?,
        };
        let mut state = self.lock();
        let net = state.networks.get(net_id).ok_or_else(|| net_not_found(net_id))?;
        if net.endpoints.contains_key(ep_id) {
            return Err(DriverError::already_exists(format!(
                "endpoint {} exists already on network {}",
                short(ep_id),
                short(net_id)
            )));
        }
        let ep = Endpoint {
            host: link_name(HOST_PREFIX, ep_id),
            peer: link_name(PEER_PREFIX, ep_id),
            mac: format_mac(mac),
            sandbox: String::new(),
        };
        let taken = state.networks.values().flat_map(|n| n.endpoints.iter()).find(|(_, e)| e.host == ep.host);
        if let Some((other, _)) = taken {
            return Err(DriverError::conflict(format!(
                "endpoint {}: link {} belongs to endpoint {}; endpoint ids must differ in their first 12 characters",
                short(ep_id),
                ep.host,
                short(other)
            )));
        }
        let (bridge, mtu) = (net.bridge.clone(), net.config.mtu);
        self.links.add_veth(&ep, &bridge, mtu).map_err(|e| {
            e.context(format!("endpoint {}: make veth pair {} / {}", short(ep_id), ep.host, ep.peer))
        })?;
        let host = ep.host.clone();
        if let Some(net) = state.networks.get_mut(net_id) {
            net.endpoints.insert(ep_id.to_string(), ep);
        }
        if let Err(e) = self.save(&state) {
            if let Some(net) = state.networks.get_mut(net_id) {
                net.endpoints.remove(ep_id);
            }
            let _ = self.links.delete(&host);
            return Err(e);
        }
        let mut resp = CreateEndpointResponse::default();
        if requested.is_none() {
            // Only what the request left empty is answered.
            let mut iface = EndpointInterface::default();
            iface.mac_address = format_mac(mac);
            resp.interface = Some(iface);
        }
        Ok(resp)
    }

    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        let state = self.lock();
        let net = state.networks.get(&req.network_id).ok_or_else(|| net_not_found(&req.network_id))?;
        let ep = net
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| ep_not_found(&req.network_id, &req.endpoint_id))?;
        Ok(Options::from([
            ("com.docker.network.endpoint.macaddress".to_string(), Value::from(ep.mac.clone())),
            ("host_interface".to_string(), Value::from(ep.host.clone())),
            ("bridge".to_string(), Value::from(net.bridge.clone())),
            ("sandbox".to_string(), Value::from(ep.sandbox.clone())),
        ]))
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        let (net_id, ep_id) = (req.network_id.as_str(), req.endpoint_id.as_str());
        if check_id("endpoint", ep_id).is_err() {
            return Ok(()); // no such endpoint could have been made
        }
        let mut state = self.lock();
        let known = state.networks.get(net_id).and_then(|n| n.endpoints.get(ep_id)).map(|e| e.host.clone());
        // An endpoint the driver does not know (deleted already, never
        // made, or made and forgotten in a crash) may still have a veth
        // named after its id: that goes too, unless another endpoint owns
        // the name. Deleting twice, or one never made, succeeds (NW-08).
        let host = match known {
            Some(host) => host,
            None => {
                let host = link_name(HOST_PREFIX, ep_id);
                if state.networks.values().flat_map(|n| n.endpoints.values()).any(|e| e.host == host) {
                    return Ok(());
                }
                host
            }
        };
        // Deleting the host end deletes the pair, wherever the peer is (in
        // a sandbox, or back in the host after leave).
        self.links.delete(&host)?; // conformance: delete the veth
        if let Some(net) = state.networks.get_mut(net_id) {
            if net.endpoints.remove(ep_id).is_some() {
                self.save(&state)?;
            }
        }
        Ok(())
    }

    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        let mut state = self.lock();
        let net = state.networks.get_mut(&req.network_id).ok_or_else(|| net_not_found(&req.network_id))?;
        let (gateway, gateway_ipv6) = (net.config.gateway(), net.config.gateway_ipv6());
        let ep = net
            .endpoints
            .get_mut(&req.endpoint_id)
            .ok_or_else(|| ep_not_found(&req.network_id, &req.endpoint_id))?;
        ep.sandbox = req.sandbox_key.clone();
        // The core moves the peer into the sandbox and names it eth0, eth1,
        // …; it sets the addresses IPAM gave, this MAC and MTU (the link
        // has them already) and a default route via the gateway.
        let iface = InterfaceName::new(ep.peer.clone(), "eth");
        self.save(&state)?;
        let mut resp = JoinResponse::default();
        resp.interface_name = Some(iface);
        resp.gateway = gateway;
        resp.gateway_ipv6 = gateway_ipv6;
        Ok(resp)
    }

    fn leave(&self, req: LeaveRequest) -> DriverResult<()> {
        // The core takes the peer out of the sandbox (back to the host,
        // under its own name); the pair stays until delete_endpoint, which
        // always follows. Leaving twice, or unjoined, succeeds.
        let mut state = self.lock();
        let ep = state.networks.get_mut(&req.network_id).and_then(|n| n.endpoints.get_mut(&req.endpoint_id));
        match ep {
            Some(ep) if !ep.sandbox.is_empty() => {
                ep.sandbox.clear();
                self.save(&state)
            }
            _ => Ok(()),
        }
    }

    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        // No NAT and no published ports: the network reaches only its own
        // endpoints (endpoint_info reports no port map, so NW-07 skips).
        // This is where a driver would program them.
        let state = self.lock();
        let net = state.networks.get(&req.network_id).ok_or_else(|| net_not_found(&req.network_id))?;
        if !net.endpoints.contains_key(&req.endpoint_id) {
            return Err(ep_not_found(&req.network_id, &req.endpoint_id));
        }
        Ok(())
    }

    fn revoke_external_connectivity(&self, _req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        Ok(()) // nothing was programmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::fake::FakeLinks;
    use serde_json::json;

    fn driver(root: &Path) -> (VethDriver, Arc<FakeLinks>) {
        let fake = Arc::new(FakeLinks::default());
        (VethDriver::open(root, fake.clone()).unwrap(), fake)
    }

    fn network(id: &str, subnet: &str, options: Value) -> CreateNetworkRequest {
        let mut req = CreateNetworkRequest::new(id);
        let mut pool = IpamData::default();
        pool.pool = subnet.into();
        pool.gateway = format!("{}1/24", subnet.trim_end_matches("0/24"));
        req.ipv4_data = vec![pool];
        if !options.is_null() {
            req.options.insert(GENERIC.into(), options);
        }
        req
    }

    #[test]
    fn an_endpoint_is_a_veth_on_the_network_bridge_and_goes_with_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, host) = driver(tmp.path());
        d.create_network(network("aaaa1111", "10.9.1.0/24", json!({ MTU: "9000" }))).unwrap();
        assert_eq!(host.get("vb-aaaa1111").unwrap().mtu, Some(9000));

        let resp = d.create_endpoint(CreateEndpointRequest::new("aaaa1111", "eeee1111")).unwrap();
        let mac = resp.interface.unwrap().mac_address;
        let peer = host.get("vp-eeee1111").unwrap();
        assert_eq!((peer.mac.as_deref(), peer.mtu), (Some(mac.as_str()), Some(9000)));
        assert_eq!(host.get("vh-eeee1111").unwrap().master.as_deref(), Some("vb-aaaa1111"));

        let mut join = JoinRequest::new("aaaa1111", "eeee1111");
        join.sandbox_key = "/run/netns/sb1".into();
        let j = d.join(join).unwrap();
        assert_eq!(j.interface_name, Some(InterfaceName::new("vp-eeee1111", "eth")));
        assert_eq!((j.gateway.as_str(), j.gateway_ipv6.as_str()), ("10.9.1.1", ""));
        assert!(j.static_routes.is_empty());
        let info = d.endpoint_info(EndpointInfoRequest::new("aaaa1111", "eeee1111")).unwrap();
        assert_eq!(info["sandbox"], "/run/netns/sb1");
        for _ in 0..2 {
            d.leave(LeaveRequest::new("aaaa1111", "eeee1111")).unwrap();
        }

        for _ in 0..3 {
            d.delete_endpoint(DeleteEndpointRequest::new("aaaa1111", "eeee1111")).unwrap();
            d.delete_endpoint(DeleteEndpointRequest::new("aaaa1111", "never000")).unwrap();
        }
        assert_eq!(host.names(), ["vb-aaaa1111"]);
        for _ in 0..2 {
            d.delete_network(DeleteNetworkRequest::new("aaaa1111")).unwrap();
        }
        assert!(host.names().is_empty());
    }

    #[test]
    fn a_requested_mac_is_kept_and_not_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, host) = driver(tmp.path());
        d.create_network(network("aaaa1111", "10.9.1.0/24", Value::Null)).unwrap();
        let mut req = CreateEndpointRequest::new("aaaa1111", "eeee2222");
        let mut iface = EndpointInterface::default();
        iface.mac_address = "02:5a:00:00:00:07".into();
        req.interface = Some(iface.clone());
        assert_eq!(d.create_endpoint(req).unwrap().interface, None);
        assert_eq!(host.get("vp-eeee2222").unwrap().mac.as_deref(), Some("02:5a:00:00:00:07"));
        let mut multicast = CreateEndpointRequest::new("aaaa1111", "eeee3333");
        iface.mac_address = "01:00:5e:00:00:01".into();
        multicast.interface = Some(iface);
        assert_eq!(d.create_endpoint(multicast).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn duplicates_overlaps_and_bad_configs_make_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, host) = driver(tmp.path());
        d.create_network(network("aaaa1111", "10.9.1.0/24", Value::Null)).unwrap();
        let again = d.create_network(network("aaaa1111", "10.9.1.0/24", Value::Null));
        assert_eq!(again.unwrap_err().kind, ErrorKind::AlreadyExists);
        let overlap = d.create_network(network("bbbb2222", "10.9.1.0/24", Value::Null));
        assert_eq!(overlap.unwrap_err().kind, ErrorKind::Conflict);
        for bad in [json!({ MTU: "67" }), json!({ "com.docker.network.bridge.name": "br0" })] {
            let e = d.create_network(network("cccc3333", "10.9.3.0/24", bad)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
        }
        assert_eq!(host.names(), ["vb-aaaa1111"]);
        let orphan = d.create_endpoint(CreateEndpointRequest::new("ffff0000", "eeee1111"));
        assert_eq!(orphan.unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn of_parallel_creates_on_one_subnet_exactly_one_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, _host) = driver(tmp.path());
        let d = Arc::new(d);
        let wins: usize = (0..8)
            .map(|i| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    d.create_network(network(&format!("race{i}"), "10.9.7.0/24", Value::Null))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap().is_ok() as usize)
            .sum();
        assert_eq!(wins, 1);
    }

    #[test]
    fn a_reopened_driver_knows_its_networks_and_remakes_lost_bridges() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, host) = driver(tmp.path());
        d.create_network(network("aaaa1111", "10.9.1.0/24", Value::Null)).unwrap();
        d.create_endpoint(CreateEndpointRequest::new("aaaa1111", "eeee1111")).unwrap();
        drop(d);
        // A reboot: the links are gone, the state file is not.
        host.links.lock().unwrap().clear();
        let d = VethDriver::open(tmp.path(), host.clone()).unwrap();
        assert_eq!(host.names(), ["vb-aaaa1111"]);
        d.create_endpoint(CreateEndpointRequest::new("aaaa1111", "eeee2222")).unwrap();
        // Deleting a network deletes the veths of endpoints left on it.
        d.delete_network(DeleteNetworkRequest::new("aaaa1111")).unwrap();
        assert!(host.names().is_empty());
        let d = VethDriver::open(tmp.path(), host.clone()).unwrap();
        assert_eq!(d.join(JoinRequest::new("aaaa1111", "eeee2222")).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_veth_forgotten_in_a_crash_goes_with_its_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, host) = driver(tmp.path());
        d.create_network(network("aaaa1111", "10.9.1.0/24", Value::Null)).unwrap();
        let (host_end, peer) = ("vh-eeee9999".into(), "vp-eeee9999".into());
        let lost = Endpoint { host: host_end, peer, mac: "02:00:00:00:00:09".into(), sandbox: String::new() };
        host.add_veth(&lost, "vb-aaaa1111", None).unwrap();
        d.delete_endpoint(DeleteEndpointRequest::new("aaaa1111", "eeee9999")).unwrap();
        assert_eq!(host.names(), ["vb-aaaa1111"]);
    }

    #[test]
    fn it_declares_local_scope_and_refuses_unknown_init_options() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, _host) = driver(tmp.path());
        assert_eq!(d.capabilities(CapabilitiesRequest::default()).unwrap().scope, Scope::Local);
        let mut init = InitRequest::new("{{driver_name}}", tmp.path().display().to_string(), "");
        init.options = json!({ "colour": "blue" });
        assert_eq!(VethDriver::new(init).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
