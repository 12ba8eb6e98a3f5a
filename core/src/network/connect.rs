//! Attaching sandboxes to networks and detaching them: IPAM address →
//! create_endpoint → join → the core moves the interface in →
//! program_external_connectivity (→ endpoint_info, for the host ports the
//! driver chose); and the reverse. The sandbox's ports travel in the
//! options of the first three as dockerd sends them (see [`super::ports`]).

use std::net::IpAddr;
use std::path::Path;

use berth_plugin_api::ipam::RequestAddressRequest;
use berth_plugin_api::network::{
    CreateEndpointRequest, DeleteEndpointRequest, EndpointInfoRequest, EndpointInterface, JoinRequest,
    LeaveRequest, Options, RevokeExternalConnectivityRequest, JOIN_IN_PLACE,
};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, IpamDriver, NetworkDriver};
use ipnet::IpNet;

use super::create::{bare, release};
use super::gateway;
use super::ledger::{Op, Step};
use super::{
    encode, endpoint_key, network_key, ports, sandbox_key, ConnectRequest, DisconnectRequest, EndpointRecord,
    NetworkRecord, NetworkService, PoolRecord, PublishedPort, SandboxRecord, HOST_DRIVER, OP_CONNECT,
    OP_DISCONNECT,
};
use crate::call::Driver;
use crate::sandbox::{self, JoinSpec, Route};
use crate::store::Change;
use crate::volumes::random_hex;

/// The driver option giving the network's MTU.
const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// The bindings the driver chose for endpoint `ep`, from its
/// `endpoint_info`. A driver that publishes nothing (no port map in
/// its answer, or `unsupported`) gives none; any other failure is
/// logged and gives none too: the ports are published, only not
/// shown.
pub(super) fn published_ports(
    driver: &Driver<dyn NetworkDriver>,
    net: &NetworkRecord,
    ep: &str,
) -> Vec<PublishedPort> {
    let (network, req) = (&net.name, EndpointInfoRequest::new(&net.id, ep));
    match driver.call("endpoint_info", move |d| d.endpoint_info(req)) {
        Ok(info) => match ports::reported(&info) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%network, endpoint = ep, "the driver's endpoint info is unusable: {e}");
                Vec::new()
            }
        },
        Err(e) if e.kind == ErrorKind::Unsupported => Vec::new(),
        Err(e) => {
            tracing::warn!(%network, endpoint = ep, "endpoint info after publishing ports failed: {e}");
            Vec::new()
        }
    }
}

fn parse_cidr(what: &str, s: &str) -> DriverResult<Option<IpNet>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| {
        DriverError::invalid_argument(format!("{what} {s:?} is not an address with a prefix length: {e}"))
    })
}

fn parse_ip(what: &str, s: &str) -> DriverResult<Option<IpAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| DriverError::invalid_argument(format!("invalid {what} {s:?}: {e}")))
}

/// Fills `ours` from the driver's answer; changing a field that was set
/// already is refused (moby).
fn take(field: &str, ours: &mut String, theirs: &str) -> DriverResult<()> {
    if theirs.is_empty() || theirs == ours {
        return Ok(());
    }
    if !ours.is_empty() {
        return Err(DriverError::invalid_argument(format!(
            "the network driver tried to change the endpoint's {field} from {ours} to {theirs}"
        )));
    }
    *ours = theirs.to_string();
    Ok(())
}

/// The driver's `Leave` of endpoint `ep`; one it does not know is done.
fn driver_leave(net_id: &str, driver: &Driver<dyn NetworkDriver>, ep: &str) -> Option<DriverError> {
    let leave = LeaveRequest::new(net_id, ep);
    match driver.call("leave", move |d| d.leave(leave)) {
        Ok(()) => None,
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => Some(e),
    }
}

/// The driver's `DeleteEndpoint` of endpoint `ep`.
fn driver_delete(net_id: &str, driver: &Driver<dyn NetworkDriver>, ep: &str) -> Option<DriverError> {
    let del = DeleteEndpointRequest::new(net_id, ep);
    driver.call("delete_endpoint", move |d| d.delete_endpoint(del)).err()
}

impl NetworkService {
    /// Attaches sandbox `req.container` to `network`. Any step failing
    /// undoes the ones before it.
    pub fn connect(&self, network: &str, req: ConnectRequest) -> DriverResult<EndpointRecord> {
        let net = self.find_network(network)?;
        let sb = self.find_sandbox(&req.container)?;
        let _sb = self.locks.lock(&sandbox_key(&sb.id));
        let _net = self.locks.lock(&network_key(&net.id));
        let (net, sb) = (self.find_network(&net.id)?, self.find_sandbox(&sb.id)?);
        if (net.driver == HOST_DRIVER) != sb.host {
            return Err(DriverError::conflict(if sb.host {
                format!(
                    "sandbox {} shares the host namespace: it can join host networks only, not {}",
                    sb.name, net.name
                )
            } else {
                format!(
                    "sandbox {} has a namespace of its own: only a sandbox created to share the host's (Host) can join host network {}",
                    sb.name, net.name
                )
            }));
        }
        let others = self.endpoints_of_sandbox(&sb.id);
        if others.iter().any(|e| e.network_id == net.id) {
            return Err(DriverError::conflict(format!(
                "endpoint with name {} already exists in network {}",
                sb.name, net.name
            )));
        }
        let cfg = req.endpoint_config;
        let want4 = parse_ip("IPv4 address", &cfg.ipam_config.ipv4_address)?;
        let want6 = parse_ip("IPv6 address", &cfg.ipam_config.ipv6_address)?;
        if !cfg.mac_address.is_empty() && sandbox::netlink::parse_mac(&cfg.mac_address).is_none() {
            return Err(DriverError::invalid_argument(format!("invalid MAC address {:?}", cfg.mac_address)));
        }
        let driver = self.drivers.network(&net.driver)?;
        let ipam = if net.pools.is_empty() { None } else { Some(self.drivers.ipam(&net.ipam_driver)?) };
        let ep_id = random_hex()?;
        let data = serde_json::json!({
            "network": net.id, "endpoint": ep_id, "sandbox": sb.id, "key": sb.key,
            "host": sb.host, "ipam": net.ipam_driver,
        });
        let mut op = self.begin(OP_CONNECT, endpoint_key(&net.id, &ep_id), &net.driver, data)?;
        self.crash_point("endpoint.connect:after-intent");
        let mut rec = EndpointRecord {
            id: ep_id.clone(),
            network_id: net.id.clone(),
            sandbox_id: sb.id.clone(),
            name: sb.name.clone(),
            mac: cfg.mac_address.to_ascii_lowercase(),
            ..Default::default()
        };
        let current = others.iter().find(|e| e.gateway).cloned();
        let mut demoted = None;
        let options: Options =
            cfg.driver_opts.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let made = self.connect_steps(
            &mut op,
            &net,
            &sb,
            &driver,
            ipam.as_ref(),
            (want4, want6),
            options,
            (current.as_ref(), &mut demoted),
            &mut rec,
        );
        match made {
            Ok(()) => {
                let mut changes = vec![Change::Put(endpoint_key(&net.id, &ep_id), encode(&rec)?)];
                if let Some(o) = &demoted {
                    changes.push(Change::Put(endpoint_key(&o.network_id, &o.id), encode(o)?));
                }
                op.finish(&changes)?;
                let mut index = self.write();
                index.endpoints.entry(net.id.clone()).or_default().insert(ep_id, rec.clone());
                if let Some(o) = demoted {
                    index.endpoints.entry(o.network_id.clone()).or_default().insert(o.id.clone(), o);
                }
                Ok(rec)
            }
            Err(mut e) => {
                let undo = self.undo_connect(
                    &net.id,
                    &driver,
                    &net.ipam_driver,
                    &sb,
                    &ep_id,
                    &op.steps,
                    &rec.dst_name,
                    false,
                );
                if undo.is_empty() && e.kind != ErrorKind::Timeout {
                    if let Err(a) = op.abandon() {
                        e.message.push_str(&format!("; {a}"));
                    }
                } else {
                    if !undo.is_empty() {
                        e.message.push_str(&format!(
                            "; undoing the connect failed, retried at the next start: {}",
                            undo.join("; ")
                        ));
                    }
                    op.keep();
                }
                Err(e.context(format!("connect {} to network {}", sb.name, net.name)))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn connect_steps(
        &self,
        op: &mut Op<'_>,
        net: &NetworkRecord,
        sb: &SandboxRecord,
        driver: &Driver<dyn NetworkDriver>,
        ipam: Option<&Driver<dyn IpamDriver>>,
        wanted: (Option<IpAddr>, Option<IpAddr>),
        options: Options,
        (current, demoted): (Option<&EndpointRecord>, &mut Option<EndpointRecord>),
        rec: &mut EndpointRecord,
    ) -> DriverResult<()> {
        for (v6, want) in [(false, wanted.0), (true, wanted.1)] {
            let pools: Vec<&PoolRecord> = net.pools.iter().filter(|p| p.v6 == v6).collect();
            let (Some(ipam), false) = (ipam, pools.is_empty()) else {
                if let Some(ip) = want {
                    return Err(DriverError::invalid_argument(format!(
                        "network {} has no {} subnet to take {ip} from",
                        net.name,
                        if v6 { "IPv6" } else { "IPv4" }
                    )));
                }
                continue;
            };
            let (cidr, pool) = self.endpoint_address(op, ipam, &pools, want, &net.name)?;
            if v6 {
                (rec.ipv6, rec.pool_v6) = (cidr, pool);
            } else {
                (rec.ipv4, rec.pool_v4) = (cidr, pool);
            }
        }
        self.crash_point("endpoint.connect:after-address");
        let mut create = CreateEndpointRequest::new(&net.id, &rec.id);
        let mut iface = EndpointInterface::default();
        iface.address = rec.ipv4.clone();
        iface.address_ipv6 = rec.ipv6.clone();
        iface.mac_address = rec.mac.clone();
        create.interface = Some(iface);
        // The sandbox's ports go where dockerd puts a container's: in the
        // endpoint options, and as sandbox options in join and program.
        let sandbox_options = ports::driver_options(&sb.port_bindings, &sb.exposed_ports);
        create.options = options;
        create.options.extend(sandbox_options.clone());
        // The core configures an interface the driver made in the sandbox
        // as well as one it moves there (see sandbox::join).
        let in_place = || (JOIN_IN_PLACE.to_string(), serde_json::Value::Bool(true));
        if !sb.host {
            create.options.extend([in_place()]);
        }
        let answer = driver.call("create_endpoint", move |d| d.create_endpoint(create))?;
        if let Some(i) = answer.interface {
            take("IPv4 address", &mut rec.ipv4, &i.address)?;
            take("IPv6 address", &mut rec.ipv6, &i.address_ipv6)?;
            take("MAC address", &mut rec.mac, &i.mac_address.to_ascii_lowercase())?;
        }
        let ipv4 = parse_cidr("the endpoint's IPv4 address", &rec.ipv4)?;
        let ipv6 = parse_cidr("the endpoint's IPv6 address", &rec.ipv6)?;
        let mac = match rec.mac.as_str() {
            "" => None,
            m => Some(sandbox::netlink::parse_mac(m).ok_or_else(|| {
                DriverError::invalid_argument(format!(
                    "the network driver answered an invalid MAC address {m:?}"
                ))
            })?),
        };
        self.crash_point("endpoint.connect:after-endpoint");
        let mut join = JoinRequest::new(&net.id, &rec.id);
        join.sandbox_key = sb.key.clone();
        join.options = sandbox_options;
        if !sb.host {
            join.options.extend([in_place()]);
        }
        let joined = driver.call("join", move |d| d.join(join))?;
        let gw4 = parse_ip("gateway", &joined.gateway)?;
        let gw6 = parse_ip("IPv6 gateway", &joined.gateway_ipv6)?;
        (rec.join_gateway, rec.join_gateway6) = (gateway::text(gw4), gateway::text(gw6));
        let gateway = gateway::eligible(net, (gw4, gw6))
            && match current {
                None => true,
                // A record older than its join gateways cannot be
                // un-routed: it keeps the role.
                Some(c) if c.join_gateway.is_empty() && c.join_gateway6.is_empty() => false,
                Some(c) => self.find_network(&c.network_id).map_or(true, |cn| {
                    gateway::ranks_before(net, (gw4, gw6), &cn, gateway::join_gateways(c))
                }),
            };
        // Taking the role over (see `network::gateway`): the old
        // endpoint's default routes go before the new interface adds its.
        if let (true, Some(c)) = (gateway, current) {
            op.note(Step::Demoted { endpoint: c.id.clone(), network: c.network_id.clone() })?;
            self.unroute(sb, c)?;
            *demoted = Some(c.clone());
        }
        let mut routes = Vec::new();
        for r in &joined.static_routes {
            let destination = r.destination.parse().map_err(|e| {
                DriverError::invalid_argument(format!(
                    "the network driver answered a bad route to {:?}: {e}",
                    r.destination
                ))
            })?;
            let next_hop = match r.route_type {
                0 => Some(parse_ip("next hop", &r.next_hop)?.ok_or_else(|| {
                    DriverError::invalid_argument(format!(
                        "route to {} of type 0 has no next hop",
                        r.destination
                    ))
                })?),
                1 => None,
                t => return Err(DriverError::invalid_argument(format!("route type {t} is neither 0 nor 1"))),
            };
            routes.push(Route { destination, next_hop });
        }
        let iface = joined.interface_name.filter(|i| !i.src_name.is_empty());
        match iface {
            Some(i) if !sb.host => {
                op.note(Step::Joined { src_name: i.src_name.clone() })?;
                self.crash_point("endpoint.connect:after-join");
                let spec = JoinSpec {
                    src_name: i.src_name.clone(),
                    dst_prefix: i.dst_prefix.clone(),
                    ipv4,
                    ipv6,
                    mac,
                    mtu: net.options.get(MTU_OPTION).and_then(|m| m.parse().ok()),
                    gateway: gw4.filter(|_| gateway),
                    gateway6: gw6.filter(|_| gateway),
                    routes,
                    disable_ipv6: ipv6.is_none(),
                };
                let joined = sandbox::join(Path::new(&sb.key), &spec)?;
                rec.dst_name = joined.name;
                rec.in_place = joined.in_place;
                rec.src_name = i.src_name;
            }
            Some(i) => tracing::warn!(
                network = %net.name, interface = %i.src_name,
                "a host-namespace sandbox moves no interface: the driver's is left to it"
            ),
            None => {}
        }
        self.crash_point("endpoint.connect:after-move");
        if gateway {
            if let Some(old) = demoted.as_mut() {
                let old_driver = self.find_network(&old.network_id)?.driver;
                self.revoke_gateway(&old_driver, old)?;
            }
            self.program_gateway(driver, net, sb, rec)?;
        }
        self.crash_point("endpoint.connect:after-program");
        Ok(())
    }

    /// One address for an endpoint: `want` from the pool holding it, or any
    /// address of the first pool that has one. Answers (CIDR, pool id).
    fn endpoint_address(
        &self,
        op: &mut Op<'_>,
        ipam: &Driver<dyn IpamDriver>,
        pools: &[&PoolRecord],
        want: Option<IpAddr>,
        network: &str,
    ) -> DriverResult<(String, String)> {
        if let Some(ip) = want {
            let pool = pools
                .iter()
                .find(|p| p.spec.subnet.parse::<IpNet>().is_ok_and(|n| n.contains(&ip)))
                .ok_or_else(|| {
                DriverError::invalid_argument(format!("address {ip} is in no subnet of network {network}"))
            })?;
            let mut ask = RequestAddressRequest::new(&pool.pool_id);
            ask.address = ip.to_string();
            return Ok((self.request_address(op, ipam, ask)?, pool.pool_id.clone()));
        }
        let mut last = None;
        for p in pools {
            match self.request_address(op, ipam, RequestAddressRequest::new(&p.pool_id)) {
                Ok(a) => return Ok((a, p.pool_id.clone())),
                Err(e) if e.kind == ErrorKind::ResourceExhausted => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            DriverError::resource_exhausted(format!("network {network} has no address left"))
        }))
    }

    /// Rolls a connect back: revoke, the interface out of the sandbox,
    /// leave, delete_endpoint, the noted addresses back to IPAM (every
    /// step idempotent). With `sweep`, any interface of the sandbox no
    /// recorded endpoint owns is taken out too (the join's new name was
    /// not known when a crash cut it short). Answers what failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn undo_connect(
        &self,
        net_id: &str,
        driver: &Driver<dyn NetworkDriver>,
        ipam: &str,
        sb: &SandboxRecord,
        ep: &str,
        steps: &[Step],
        dst_name: &str,
        sweep: bool,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        let revoke = RevokeExternalConnectivityRequest::new(net_id, ep);
        if let Err(e) =
            driver.call("revoke_external_connectivity", move |d| d.revoke_external_connectivity(revoke))
        {
            failed.push(e.to_string());
        }
        let src = steps.iter().find_map(|s| match s {
            Step::Joined { src_name } => Some(src_name.clone()),
            _ => None,
        });
        if let (Some(src), false) = (&src, sb.host) {
            let key = Path::new(&sb.key);
            let out = if sweep {
                let keep: Vec<String> =
                    self.endpoints_of_sandbox(&sb.id).into_iter().map(|e| e.dst_name).collect();
                sandbox::evict_others(key, &keep, src)
            } else {
                sandbox::leave(key, dst_name, src, false)
            };
            if let Err(e) = out {
                failed.push(e.to_string());
            }
        }
        failed.extend(self.leave_and_delete(net_id, driver, ep).into_iter().map(|e| e.to_string()));
        let addrs = super::ledger::addresses(steps);
        if !addrs.is_empty() {
            match self.drivers.ipam(ipam) {
                Ok(ipam) => failed.extend(release(&ipam, &addrs, &[])),
                Err(e) => failed.push(e.to_string()),
            }
        }
        for s in steps {
            if let Step::Demoted { endpoint, network } = s {
                failed.extend(self.restore_gateway(sb, network, endpoint));
            }
        }
        failed
    }

    fn leave_and_delete(
        &self,
        net_id: &str,
        driver: &Driver<dyn NetworkDriver>,
        ep: &str,
    ) -> Vec<DriverError> {
        let mut failed: Vec<DriverError> = driver_leave(net_id, driver, ep).into_iter().collect();
        failed.extend(driver_delete(net_id, driver, ep));
        failed
    }

    /// Detaches sandbox `req.container` from `network`. With `force`, the
    /// endpoint's record goes even when a driver step fails.
    pub fn disconnect(&self, network: &str, req: DisconnectRequest) -> DriverResult<()> {
        let net = self.find_network(network)?;
        let sb = self.find_sandbox(&req.container)?;
        let _sb = self.locks.lock(&sandbox_key(&sb.id));
        let _net = self.locks.lock(&network_key(&net.id));
        self.disconnect_locked(&net, &sb, req.force)
    }

    /// [`NetworkService::disconnect`] with both locks held.
    pub(super) fn disconnect_locked(
        &self,
        net: &NetworkRecord,
        sb: &SandboxRecord,
        force: bool,
    ) -> DriverResult<()> {
        let ep = self
            .read()
            .endpoints
            .get(&net.id)
            .and_then(|eps| eps.values().find(|e| e.sandbox_id == sb.id).cloned())
            .ok_or_else(|| {
                DriverError::not_found(format!(
                    "sandbox {} is not connected to network {}",
                    sb.name, net.name
                ))
            })?;
        let data = serde_json::json!({
            "endpoint": ep, "key": sb.key, "host": sb.host, "ipam": net.ipam_driver,
        });
        let mut op = self.begin(OP_DISCONNECT, endpoint_key(&net.id, &ep.id), &net.driver, data)?;
        self.crash_point("endpoint.disconnect:after-intent");
        let mut promoted = None;
        let failed = {
            let op = &mut op;
            // dockerd's sbLeave: the next gateway endpoint is programmed
            // after the old one's Leave, before its DeleteEndpoint.
            let mut after_leave = |so_far: &[DriverError]| {
                if ep.gateway && (so_far.is_empty() || force) {
                    promoted = self.take_over(Some(op), sb, &ep.id);
                }
            };
            self.teardown_endpoint(&net.driver, &net.ipam_driver, &ep, &sb.key, sb.host, &mut after_leave)
        };
        let mut changes = Vec::new();
        if let Some(p) = &promoted {
            changes.push(Change::Put(endpoint_key(&p.network_id, &p.id), encode(p)?));
        }
        if !failed.is_empty() && !force {
            let kind = failed[0].kind;
            let text: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
            if let Some(p) = promoted {
                // The role moved already: both records say so, and the
                // endpoint stays for a retry to finish deleting.
                let mut old = ep.clone();
                (old.gateway, old.ports) = (false, Vec::new());
                changes.push(Change::Put(endpoint_key(&net.id, &ep.id), encode(&old)?));
                op.finish(&changes)?;
                let mut index = self.write();
                index.endpoints.entry(net.id.clone()).or_default().insert(old.id.clone(), old);
                index.endpoints.entry(p.network_id.clone()).or_default().insert(p.id.clone(), p);
            } else if failed.iter().any(|e| e.kind == ErrorKind::Timeout) {
                op.keep();
            } else {
                op.abandon()?;
            }
            return Err(DriverError::new(
                kind,
                format!("disconnect {} from network {}: {}", sb.name, net.name, text.join("; ")),
            ));
        }
        for e in &failed {
            tracing::warn!(endpoint = %ep.id, "forced disconnect: ignored {e}");
        }
        changes.push(Change::Delete(endpoint_key(&net.id, &ep.id)));
        op.finish(&changes)?;
        let mut index = self.write();
        if let Some(eps) = index.endpoints.get_mut(&net.id) {
            eps.remove(&ep.id);
        }
        if let Some(p) = promoted {
            index.endpoints.entry(p.network_id.clone()).or_default().insert(p.id.clone(), p);
        }
        Ok(())
    }

    /// The reverse of a connect, in Docker's order; tries every step.
    /// `after_leave` runs between the driver's `Leave` and its
    /// `DeleteEndpoint`, given the failures so far (where a disconnect
    /// moves the gateway role, see `network::gateway`).
    pub(super) fn teardown_endpoint(
        &self,
        driver: &str,
        ipam: &str,
        ep: &EndpointRecord,
        key: &str,
        host: bool,
        after_leave: &mut dyn FnMut(&[DriverError]),
    ) -> Vec<DriverError> {
        let mut failed = Vec::new();
        let driver = match self.drivers.network(driver) {
            Ok(d) => Some(d),
            Err(e) => {
                failed.push(e);
                None
            }
        };
        if let (Some(d), true) = (&driver, ep.gateway) {
            let revoke = RevokeExternalConnectivityRequest::new(&ep.network_id, &ep.id);
            if let Err(e) =
                d.call("revoke_external_connectivity", move |d| d.revoke_external_connectivity(revoke))
            {
                failed.push(e);
            }
        }
        if !ep.src_name.is_empty() && !host {
            if let Err(e) = sandbox::leave(Path::new(key), &ep.dst_name, &ep.src_name, ep.in_place) {
                failed.push(e);
            }
        }
        self.crash_point("endpoint.disconnect:after-leave");
        if let Some(d) = &driver {
            failed.extend(driver_leave(&ep.network_id, d, &ep.id));
        }
        after_leave(&failed);
        if let Some(d) = &driver {
            failed.extend(driver_delete(&ep.network_id, d, &ep.id));
        }
        let addrs: Vec<(String, String)> = [(&ep.pool_v4, &ep.ipv4), (&ep.pool_v6, &ep.ipv6)]
            .into_iter()
            .filter(|(p, a)| !p.is_empty() && !a.is_empty())
            .map(|(p, a)| (p.clone(), bare(a).to_string()))
            .collect();
        if !addrs.is_empty() {
            match self.drivers.ipam(ipam) {
                Ok(ipam) => failed.extend(release(&ipam, &addrs, &[]).into_iter().map(DriverError::internal)),
                Err(e) => failed.push(e),
            }
        }
        failed
    }
}
