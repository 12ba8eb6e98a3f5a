//! Network create and delete: IPAM first, then the driver (create); IPAM
//! released, then the driver (delete) — Docker's order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_plugin_api::ipam::{
    AddressSpacesRequest, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestPoolRequest, GATEWAY_REQUEST, REQUEST_ADDRESS_TYPE,
};
use berth_plugin_api::network::{
    CreateNetworkRequest, DeleteNetworkRequest, GwAllocCheckRequest, IpamData, Options, Scope,
};
use berth_plugin_api::util::rfc3339;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, IpamDriver, NetworkDriver};
use ipnet::IpNet;

use super::ledger::{addresses, pools, Op, Step};
use super::{
    encode, network_key, valid_name, CreateNetwork, NetworkCreated, NetworkRecord, NetworkService,
    PoolRecord, PoolSpec, OP_CREATE, OP_DELETE, SPECIAL,
};
use crate::call::Driver;
use crate::store::{now_secs, Change};
use crate::volumes::random_hex;

/// `com.docker.network.generic`: the user's driver options.
pub(super) const GENERIC: &str = "com.docker.network.generic";
/// The pool data key naming a gateway.
const GATEWAY_DATA: &str = "com.docker.network.gateway";

/// A pool config checked against its subnet.
struct Wanted {
    spec: PoolSpec,
    v6: bool,
}

fn parse_net(what: &str, s: &str) -> DriverResult<IpNet> {
    s.parse::<IpNet>().map_err(|e| DriverError::invalid_argument(format!("invalid {what} {s:?}: {e}")))
}

fn parse_ip(what: &str, s: &str) -> DriverResult<IpAddr> {
    s.parse::<IpAddr>().map_err(|e| DriverError::invalid_argument(format!("invalid {what} {s:?}: {e}")))
}

/// The bare address of a CIDR answer (`10.0.0.2/24` → `10.0.0.2`).
pub(super) fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Checks one `IPAM.Config` entry (NW-06, IP-10): a subnet without host
/// bits; range, gateway and aux addresses inside it and of its family.
fn check_pool(spec: &PoolSpec) -> DriverResult<Wanted> {
    if spec.subnet.is_empty() {
        if !spec.ip_range.is_empty() || !spec.gateway.is_empty() || !spec.auxiliary_addresses.is_empty() {
            return Err(DriverError::invalid_argument(
                "an IP range, gateway or auxiliary address needs a subnet (--subnet)",
            ));
        }
        return Ok(Wanted { spec: spec.clone(), v6: false });
    }
    let subnet = parse_net("subnet", &spec.subnet)?;
    if subnet.trunc() != subnet {
        return Err(DriverError::invalid_argument(format!(
            "invalid subnet {}: it has host bits set, use {}",
            spec.subnet,
            subnet.trunc()
        )));
    }
    if !spec.ip_range.is_empty() {
        let range = parse_net("IP range", &spec.ip_range)?;
        if !subnet.contains(&range) {
            return Err(DriverError::invalid_argument(format!(
                "IP range {} is not inside subnet {}",
                spec.ip_range, spec.subnet
            )));
        }
    }
    if !spec.gateway.is_empty() {
        let gw = parse_ip("gateway", &spec.gateway)?;
        if !subnet.contains(&gw) {
            return Err(DriverError::invalid_argument(format!(
                "gateway {} is not inside subnet {}",
                spec.gateway, spec.subnet
            )));
        }
    }
    for (name, ip) in &spec.auxiliary_addresses {
        let a = parse_ip("auxiliary address", ip)?;
        if !subnet.contains(&a) {
            return Err(DriverError::invalid_argument(format!(
                "auxiliary address {name}={ip} is not inside subnet {}",
                spec.subnet
            )));
        }
    }
    Ok(Wanted { spec: spec.clone(), v6: matches!(subnet, IpNet::V6(_)) })
}

/// The options `create_network` and `gw_alloc_check` get.
fn driver_options(req: &CreateNetwork, v4: bool, v6: bool) -> Options {
    let mut o = Options::new();
    let generic: serde_json::Map<String, serde_json::Value> =
        req.options.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    o.insert(GENERIC.into(), serde_json::Value::Object(generic));
    o.insert("com.docker.network.enable_ipv4".into(), v4.into());
    o.insert("com.docker.network.enable_ipv6".into(), v6.into());
    if req.internal {
        o.insert("com.docker.network.internal".into(), true.into());
    }
    o
}

fn ipam_data(p: &PoolRecord) -> IpamData {
    let mut d = IpamData::default();
    d.address_space = p.address_space.clone();
    d.pool = p.spec.subnet.clone();
    d.gateway = p.gateway_cidr.clone();
    d.aux_addresses = p.aux_cidr.clone();
    d
}

impl NetworkService {
    /// Creates a network: checks the request, reserves its pools, gateway
    /// and aux addresses from IPAM, then has the driver make it. A failure
    /// at any step undoes the steps before it.
    pub fn create(&self, req: CreateNetwork) -> DriverResult<NetworkCreated> {
        if req.name.is_empty() {
            return Err(DriverError::invalid_argument("a network needs a name"));
        }
        if !valid_name(&req.name) {
            return Err(DriverError::invalid_argument(format!(
                "network name {:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                req.name
            )));
        }
        if req.ingress || req.config_only || req.config_from.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(DriverError::unsupported(
                "ingress, config-only and config-from networks are swarm features",
            ));
        }
        let v4 = req.enable_ipv4.unwrap_or(true);
        let v6 = req.enable_ipv6.unwrap_or(false);
        let mut wanted = req.ipam.config.iter().map(check_pool).collect::<DriverResult<Vec<_>>>()?;
        if let Some(w) = wanted.iter().find(|w| w.v6 && !v6) {
            return Err(DriverError::invalid_argument(format!(
                "subnet {} is IPv6 but IPv6 is not enabled on this network (EnableIPv6, --ipv6)",
                w.spec.subnet
            )));
        }
        if let Some(w) = wanted.iter().find(|w| !w.v6 && !w.spec.subnet.is_empty() && !v4) {
            return Err(DriverError::invalid_argument(format!(
                "subnet {} is IPv4 but IPv4 is disabled on this network",
                w.spec.subnet
            )));
        }
        let driver_name =
            if req.driver.is_empty() { self.settings.default_driver.clone() } else { req.driver.clone() };
        let ipam_name = if req.ipam.driver.is_empty() {
            self.settings.default_ipam.clone()
        } else {
            req.ipam.driver.clone()
        };
        let driver = self.drivers.network(&driver_name)?;
        let caps = self.capabilities(&driver)?;
        let scope = match caps.scope {
            Scope::Local => "local",
            Scope::Global => "global",
        };
        if !req.scope.is_empty() && req.scope != scope {
            return Err(DriverError::invalid_argument(format!(
                "scope {:?} asked, but driver {driver_name:?} makes {scope} networks",
                req.scope
            )));
        }
        // moby's special drivers take no pool unless one is asked for.
        let needs_ipam = !(SPECIAL.contains(&driver_name.as_str()) && wanted.is_empty());
        if needs_ipam {
            if v4 && !wanted.iter().any(|w| !w.v6) {
                wanted.insert(0, Wanted { spec: PoolSpec::default(), v6: false });
            }
            if v6 && !wanted.iter().any(|w| w.v6) {
                wanted.push(Wanted { spec: PoolSpec::default(), v6: true });
            }
            wanted.sort_by_key(|w| w.v6);
        }
        let _name = self.locks.lock(&format!("network-name/{}", req.name));
        if self.read().networks.values().any(|n| n.name == req.name) {
            return Err(DriverError::conflict(format!("network with name {} already exists", req.name)));
        }
        let ipam = if needs_ipam { Some(self.drivers.ipam(&ipam_name)?) } else { None };
        let id = random_hex()?;
        let options = driver_options(&req, v4, v6);
        let data = serde_json::json!({ "id": id, "name": req.name, "ipam": ipam_name });
        let mut op = self.begin(OP_CREATE, network_key(&id), &driver_name, data)?;
        self.crash_point("network.create:after-intent");
        let made = (|| {
            let (skip4, skip6) = if caps.gw_alloc_checker {
                let mut check = GwAllocCheckRequest::default();
                check.options = options.clone();
                let r = driver.call("gw_alloc_check", move |d| d.gw_alloc_check(check))?;
                (r.skip_ipv4, r.skip_ipv6)
            } else {
                (false, false)
            };
            let mut records = Vec::new();
            if let Some(ipam) = &ipam {
                for w in &wanted {
                    let skip = if w.v6 { skip6 } else { skip4 };
                    records.push(self.take_pool(&mut op, ipam, w, scope, &req.ipam.options, skip)?);
                }
            }
            let mut create = CreateNetworkRequest::new(&id);
            create.options = options.clone();
            create.ipv4_data = records.iter().filter(|p| !p.v6).map(ipam_data).collect();
            create.ipv6_data = records.iter().filter(|p| p.v6).map(ipam_data).collect();
            driver.call("create_network", move |d| d.create_network(create))?;
            Ok(records)
        })();
        let pools = match made {
            Ok(p) => p,
            Err(e) => return Err(self.fail_create(op, &id, &driver, &ipam_name, e)),
        };
        self.crash_point("network.create:after-driver");
        let now = std::time::SystemTime::now();
        let record = NetworkRecord {
            id: id.clone(),
            name: req.name.clone(),
            created: rfc3339(now),
            created_unix: now_secs(),
            scope: scope.into(),
            driver: driver_name,
            ipam_driver: ipam_name,
            ipam_options: req.ipam.options.clone(),
            pools,
            enable_ipv4: v4,
            enable_ipv6: v6,
            internal: req.internal,
            attachable: req.attachable,
            options: req.options.clone(),
            labels: req.labels.clone(),
        };
        op.finish(&[Change::Put(network_key(&id), encode(&record)?)])?;
        self.write().networks.insert(id.clone(), record);
        Ok(NetworkCreated { id, warning: String::new() })
    }

    /// Reserves one pool, its gateway and aux addresses, noting each.
    fn take_pool(
        &self,
        op: &mut Op<'_>,
        ipam: &Driver<dyn IpamDriver>,
        w: &Wanted,
        scope: &str,
        options: &BTreeMap<String, String>,
        skip_gateway: bool,
    ) -> DriverResult<PoolRecord> {
        let spaces = ipam
            .call("default_address_spaces", |d| d.default_address_spaces(AddressSpacesRequest::default()))?;
        let space = if scope == "global" { spaces.global } else { spaces.local };
        let mut req = RequestPoolRequest::new(&space, &w.spec.subnet);
        req.sub_pool = w.spec.ip_range.clone();
        req.options = options.clone();
        req.v6 = w.v6;
        let pool = ipam.call("request_pool", move |d| d.request_pool(req))?;
        op.note(Step::Pool { pool_id: pool.pool_id.clone() })?;
        self.crash_point("network.create:after-pool");
        let mut rec = PoolRecord {
            spec: PoolSpec { subnet: pool.pool.clone(), ..w.spec.clone() },
            pool_id: pool.pool_id.clone(),
            address_space: space,
            v6: w.v6,
            ..Default::default()
        };
        match pool.data.get(GATEWAY_DATA).filter(|_| w.spec.gateway.is_empty()) {
            Some(gw) => {
                rec.gateway_cidr = gw.clone();
                rec.spec.gateway = bare(gw).to_string();
            }
            None if !w.spec.gateway.is_empty() || !skip_gateway => {
                let mut ask = RequestAddressRequest::new(&pool.pool_id);
                ask.address = w.spec.gateway.clone();
                ask.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
                let got = self.request_address(op, ipam, ask)?;
                rec.spec.gateway = bare(&got).to_string();
                rec.gateway_cidr = got;
                rec.gateway_requested = true;
            }
            None => {}
        }
        self.crash_point("network.create:after-gateway");
        for (name, ip) in &w.spec.auxiliary_addresses {
            let mut ask = RequestAddressRequest::new(&pool.pool_id);
            ask.address = ip.clone();
            let got = self.request_address(op, ipam, ask)?;
            rec.aux_cidr.insert(name.clone(), got);
        }
        Ok(rec)
    }

    /// Asks IPAM for an address and notes it; answers it as CIDR.
    pub(super) fn request_address(
        &self,
        op: &mut Op<'_>,
        ipam: &Driver<dyn IpamDriver>,
        ask: RequestAddressRequest,
    ) -> DriverResult<String> {
        let pool_id = ask.pool_id.clone();
        let got = ipam.call("request_address", move |d| d.request_address(ask))?;
        if got.address.is_empty() || parse_net("address", &got.address).is_err() {
            // Not usable: give back whatever it was, as moby does.
            if !got.address.is_empty() {
                let rel = ReleaseAddressRequest::new(&pool_id, bare(&got.address));
                let _ = ipam.call("release_address", move |d| d.release_address(rel));
            }
            return Err(DriverError::internal(format!(
                "IPAM driver {:?} answered no usable address ({:?}) for pool {pool_id}",
                ipam.name(),
                got.address
            )));
        }
        op.note(Step::Address { pool_id, address: bare(&got.address).to_string() })?;
        Ok(got.address)
    }

    /// Undoes a create that failed with `e`; answers the error to return
    /// (with what undoing could not do). A timed-out step may still finish
    /// inside its driver, so the operation then stays in the ledger.
    fn fail_create(
        &self,
        op: Op<'_>,
        id: &str,
        driver: &Driver<dyn NetworkDriver>,
        ipam: &str,
        mut e: DriverError,
    ) -> DriverError {
        if e.kind == ErrorKind::Timeout {
            op.keep();
            return e;
        }
        let undo = self.undo_create(id, Some(driver), ipam, &op.steps, false);
        if undo.is_empty() {
            if let Err(a) = op.abandon() {
                e.message.push_str(&format!("; {a}"));
            }
        } else {
            e.message.push_str(&format!(
                "; undoing the create failed, retried at the next start: {}",
                undo.join("; ")
            ));
            op.keep();
        }
        e
    }

    /// Rolls a create back: the driver's network (when `delete_network`,
    /// i.e. it may exist), then the noted addresses and pools. Answers
    /// what failed.
    pub(super) fn undo_create(
        &self,
        id: &str,
        driver: Option<&Driver<dyn NetworkDriver>>,
        ipam: &str,
        steps: &[Step],
        delete_network: bool,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        if delete_network {
            if let Some(driver) = driver {
                let del = DeleteNetworkRequest::new(id);
                if let Err(e) = driver.call("delete_network", move |d| d.delete_network(del)) {
                    failed.push(e.to_string());
                }
            }
        }
        let (addrs, pools) = (addresses(steps), pools(steps));
        if addrs.is_empty() && pools.is_empty() {
            return failed;
        }
        match self.drivers.ipam(ipam) {
            Ok(ipam) => failed.extend(release(&ipam, &addrs, &pools)),
            Err(e) => failed.push(e.to_string()),
        }
        failed
    }

    /// Deletes a network with no endpoints: IPAM's gateway, aux addresses
    /// and pools go back, then the driver deletes it. A failure leaves the
    /// network in place (every step is safe to repeat).
    pub fn delete(&self, name_or_id: &str) -> DriverResult<()> {
        let net = self.find_network(name_or_id)?;
        let _name = self.locks.lock(&format!("network-name/{}", net.name));
        let _id = self.locks.lock(&network_key(&net.id));
        let net = self.find_network(&net.id)?;
        let attached: Vec<String> = self
            .read()
            .endpoints
            .get(&net.id)
            .map(|eps| eps.values().map(|e| e.name.clone()).collect())
            .unwrap_or_default();
        if !attached.is_empty() {
            return Err(DriverError::conflict(format!(
                "error while removing network: network {} id {} has active endpoints ({}): disconnect them first",
                net.name,
                net.id,
                attached.join(", ")
            )));
        }
        let op =
            self.begin(OP_DELETE, network_key(&net.id), &net.driver, serde_json::json!({ "id": net.id }))?;
        self.crash_point("network.delete:after-intent");
        let failed = self.teardown_network(&net);
        if !failed.is_empty() {
            let timeout = failed.iter().any(|e| e.kind == ErrorKind::Timeout);
            let kind = failed[0].kind;
            let text: Vec<String> = failed.iter().map(|e| e.to_string()).collect();
            if timeout {
                op.keep();
            } else {
                op.abandon()?;
            }
            return Err(DriverError::new(kind, format!("remove network {}: {}", net.name, text.join("; "))));
        }
        op.finish(&[Change::Delete(network_key(&net.id))])?;
        self.write().networks.remove(&net.id);
        self.write().endpoints.remove(&net.id);
        Ok(())
    }

    /// IPAM releases, then the driver's delete; tries every step.
    pub(super) fn teardown_network(&self, net: &NetworkRecord) -> Vec<DriverError> {
        let mut failed = Vec::new();
        if !net.pools.is_empty() {
            match self.drivers.ipam(&net.ipam_driver) {
                Ok(ipam) => {
                    for p in net.pools.iter().rev() {
                        let mut addrs: Vec<(String, String)> =
                            p.aux_cidr.values().map(|a| (p.pool_id.clone(), bare(a).to_string())).collect();
                        if p.gateway_requested {
                            addrs.push((p.pool_id.clone(), bare(&p.gateway_cidr).to_string()));
                        }
                        for e in release(&ipam, &addrs, std::slice::from_ref(&p.pool_id)) {
                            failed.push(DriverError::internal(e));
                        }
                    }
                }
                Err(e) => failed.push(e),
            }
        }
        self.crash_point("network.delete:after-ipam");
        match self.drivers.network(&net.driver) {
            Ok(driver) => {
                let del = DeleteNetworkRequest::new(&net.id);
                if let Err(e) = driver.call("delete_network", move |d| d.delete_network(del)) {
                    failed.push(e);
                }
            }
            Err(e) => failed.push(e),
        }
        failed
    }
}

/// Gives `addrs` and then `pools` back to `ipam`; a pool that is not live
/// any more is done. Answers what failed.
pub(super) fn release(
    ipam: &Driver<dyn IpamDriver>,
    addrs: &[(String, String)],
    pools: &[String],
) -> Vec<String> {
    let mut failed = Vec::new();
    for (pool, addr) in addrs {
        let rel = ReleaseAddressRequest::new(pool, addr);
        match ipam.call("release_address", move |d| d.release_address(rel)) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    for pool in pools {
        let rel = ReleasePoolRequest::new(pool);
        match ipam.call("release_pool", move |d| d.release_pool(rel)) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => failed.push(e.to_string()),
        }
    }
    failed
}
