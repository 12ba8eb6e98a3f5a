//! Request replay: after a restart, an IPAM driver that keeps no state of
//! its own gets back every pool and address the daemon's records hold.
//!
//! An IPAM driver asks for this with the capability
//! `RequiresRequestReplay` (Docker's default IPAM does; berth's `default`
//! does with `persist = "replay"`). Its state then dies with the process,
//! and the daemon's records — every network's pools, gateway and auxiliary
//! addresses in `network/<id>`, every endpoint's addresses in
//! `endpoint/<net>/<ep>` — are what persists.
//!
//! # When
//!
//! [`NetworkService::replay`] runs once at start-up, **after** the ledger's
//! reconcile and before the API serves a request. Reconcile first rolls
//! back interrupted creates and connects and finishes interrupted deletes
//! and disconnects; their IPAM releases find nothing live in a fresh driver
//! and are done (a release of a pool that is not live counts as done). So
//! exactly what the records hold once the ledger is settled is replayed.
//!
//! # Order
//!
//! Each IPAM driver a network with pools records is looked up and asked its
//! capabilities once; one that does not ask for replay is left alone (not
//! a single request). For every network of a driver that asks, oldest
//! first (creation time, then id):
//!
//! 1. each pool as recorded, IPv4 first: `RequestPool` with the recorded
//!    address space, the recorded subnet as `Pool` (the one IPAM chose at
//!    create time when the user named none), the IP range as `SubPool`,
//!    the network's `--ipam-opt` as options and `V6`;
//! 2. right after its pool, the gateway when the daemon requested it at
//!    create time (not when the pool's data named it): `RequestAddress`
//!    of exactly that address with `RequestAddressType =
//!    com.docker.network.gateway`; then each auxiliary address:
//!    `RequestAddress` of exactly that address, no options;
//! 3. every endpoint of the network (by id): its IPv4, then its IPv6
//!    address, each `RequestAddress` of exactly that address from its
//!    pool, no options, as a connect asks.
//!
//! # Semantics
//!
//! * A pool answered with the recorded id is the common case. A different
//!   id (a driver whose ids are not stable) is logged as a warning, listed
//!   in [`ReplayReport::renamed`], used for that pool's requests, and
//!   recorded: the network's pool and its endpoints' pools get the new id
//!   (one store transaction), so later connects and releases name it.
//! * A pool answered with another prefix than the recorded one is released
//!   again and its addresses are not requested.
//! * An address answered other than asked is released again.
//! * Nothing stops the daemon: every failure is logged (`warn`, with the
//!   network's name) and listed in [`ReplayReport::failures`], and the
//!   replay goes on with the next pool, address and network. A pool that
//!   could not be reserved skips its own addresses only. What failed stays
//!   unreserved in IPAM until the next start replays it again; the
//!   records are not changed.
//! * Replay is not a ledger operation: it changes no record except to
//!   adopt new pool ids, so a crash during it is harmless and the next
//!   start replays again into a fresh driver.
//! * One summary line at `info`: drivers, networks, pools, addresses,
//!   failures and the time it took.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use berth_plugin_api::ipam::{
    IpamCapabilitiesRequest, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestPoolRequest, GATEWAY_REQUEST, REQUEST_ADDRESS_TYPE,
};
use berth_plugin_api::{DriverResult, IpamDriver};
use ipnet::IpNet;
use serde::Serialize;

use super::create::bare;
use super::{encode, endpoint_key, network_key, EndpointRecord, NetworkRecord, NetworkService, OP_REPLAY};
use crate::call::Driver;
use crate::store::Change;

/// What the replay at start-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The IPAM drivers that asked for replay, by name.
    pub drivers: Vec<String>,
    /// Networks whose requests were replayed (failures included).
    pub networks: usize,
    /// Pools reserved again.
    pub pools: usize,
    /// Addresses reserved again: gateways, auxiliary and endpoint addresses.
    pub addresses: usize,
    /// Pools IPAM answered under another id than the recorded one, one
    /// line each naming the network; the new id was adopted and recorded.
    pub renamed: Vec<String>,
    /// What could not be replayed, one line each naming the network.
    pub failures: Vec<String>,
}

/// One network's replay: counts and problems, merged into the report.
#[derive(Default)]
struct Outcome {
    pools: usize,
    addresses: usize,
    renamed: Vec<String>,
    failures: Vec<String>,
}

fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn same_net(a: &str, b: &str) -> bool {
    match (a.parse::<IpNet>(), b.parse::<IpNet>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl NetworkService {
    /// Replays the recorded pool and address requests into every IPAM
    /// driver that asks for it (see the module docs of `network::replay`). Never fails:
    /// what could not be replayed is logged and listed in the report.
    pub fn replay(&self) -> ReplayReport {
        let t0 = Instant::now();
        let mut report = ReplayReport::default();
        let mut nets: Vec<NetworkRecord> =
            self.read().networks.values().filter(|n| !n.pools.is_empty()).cloned().collect();
        nets.sort_by(|a, b| (a.created_unix, &a.id).cmp(&(b.created_unix, &b.id)));
        let mut drivers: BTreeMap<String, Result<Option<Driver<dyn IpamDriver>>, String>> = BTreeMap::new();
        for net in &nets {
            let ipam =
                drivers.entry(net.ipam_driver.clone()).or_insert_with(|| self.replaying(&net.ipam_driver));
            let out = match ipam {
                Ok(None) => continue,
                Ok(Some(ipam)) => self.replay_network(ipam, net),
                Err(e) => Outcome {
                    failures: vec![format!(
                        "IPAM driver {:?}: {e}; no pool or address of the network was replayed",
                        net.ipam_driver
                    )],
                    ..Outcome::default()
                },
            };
            report.networks += 1;
            report.pools += out.pools;
            report.addresses += out.addresses;
            for line in out.renamed {
                tracing::warn!(network = %net.name, id = %net.id, "IPAM replay: {line}");
                report.renamed.push(format!("network {}: {line}", net.name));
            }
            for line in out.failures {
                tracing::warn!(network = %net.name, id = %net.id, "IPAM replay failed: {line}");
                report.failures.push(format!("network {}: {line}", net.name));
            }
        }
        report.drivers =
            drivers.into_iter().filter(|(_, d)| matches!(d, Ok(Some(_)))).map(|(n, _)| n).collect();
        tracing::info!(
            drivers = ?report.drivers,
            networks = report.networks,
            pools = report.pools,
            addresses = report.addresses,
            renamed = report.renamed.len(),
            failures = report.failures.len(),
            "IPAM replay: {} pools and {} addresses of {} networks requested again in {:.1} ms{}",
            report.pools,
            report.addresses,
            report.networks,
            t0.elapsed().as_secs_f64() * 1000.0,
            if report.failures.is_empty() { String::new() } else { format!(", {} failed", report.failures.len()) }
        );
        report
    }

    /// IPAM driver `name` if it asks for replay; an error when it cannot
    /// be reached or answer its capabilities.
    fn replaying(&self, name: &str) -> Result<Option<Driver<dyn IpamDriver>>, String> {
        let ipam = self.drivers.ipam(name).map_err(|e| e.to_string())?;
        let caps = ipam
            .call("capabilities", |d| d.capabilities(IpamCapabilitiesRequest::default()))
            .map_err(|e| format!("capabilities: {e}"))?;
        Ok(caps.requires_request_replay.then_some(ipam))
    }

    /// Replays one network: its pools with their gateway and aux
    /// addresses, then its endpoints' addresses.
    fn replay_network(&self, ipam: &Driver<dyn IpamDriver>, net: &NetworkRecord) -> Outcome {
        let _net = self.locks.lock(&network_key(&net.id));
        let mut out = Outcome::default();
        // Recorded pool id → the id IPAM answered, for the pools it took.
        let mut ids: HashMap<String, String> = HashMap::new();
        for p in &net.pools {
            let mut req = RequestPoolRequest::new(&p.address_space, &p.spec.subnet);
            req.sub_pool = p.spec.ip_range.clone();
            req.options = net.ipam_options.clone();
            req.v6 = p.v6;
            let what = format!("pool {} (id {:?})", p.spec.subnet, p.pool_id);
            let got = match ipam.call("request_pool", move |d| d.request_pool(req)) {
                Ok(got) => got,
                Err(e) => {
                    out.failures.push(format!("{what}: {e}; its addresses were not requested"));
                    continue;
                }
            };
            if !same_net(&got.pool, &p.spec.subnet) {
                let rel = ReleasePoolRequest::new(&got.pool_id);
                let undo = match ipam.call("release_pool", move |d| d.release_pool(rel)) {
                    Ok(()) => "released it again".to_string(),
                    Err(e) => format!("releasing it failed: {e}"),
                };
                out.failures.push(format!(
                    "{what}: IPAM answered pool {:?} (id {:?}) instead; {undo}; its addresses were not requested",
                    got.pool, got.pool_id
                ));
                continue;
            }
            out.pools += 1;
            if got.pool_id != p.pool_id {
                out.renamed.push(format!(
                    "IPAM answered id {:?} for pool {} recorded as {:?}: the new id is recorded",
                    got.pool_id, p.spec.subnet, p.pool_id
                ));
            }
            ids.insert(p.pool_id.clone(), got.pool_id.clone());
            if p.gateway_requested && !p.gateway_cidr.is_empty() {
                let mut ask = RequestAddressRequest::new(&got.pool_id);
                ask.address = bare(&p.gateway_cidr).to_string();
                ask.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
                replay_address(ipam, ask, "gateway", &mut out);
            }
            for (name, cidr) in &p.aux_cidr {
                let mut ask = RequestAddressRequest::new(&got.pool_id);
                ask.address = bare(cidr).to_string();
                replay_address(ipam, ask, &format!("auxiliary address {name}"), &mut out);
            }
        }
        let eps: Vec<EndpointRecord> =
            self.read().endpoints.get(&net.id).map(|m| m.values().cloned().collect()).unwrap_or_default();
        for ep in &eps {
            for (pool, cidr, family) in [(&ep.pool_v4, &ep.ipv4, "IPv4"), (&ep.pool_v6, &ep.ipv6, "IPv6")] {
                if pool.is_empty() || cidr.is_empty() {
                    continue;
                }
                let Some(id) = ids.get(pool) else {
                    // A pool that failed was reported with its addresses.
                    if !net.pools.iter().any(|p| &p.pool_id == pool) {
                        out.failures.push(format!(
                            "endpoint {} ({}): its {family} address {cidr} names pool {pool:?}, \
                             which the network does not hold",
                            ep.name, ep.id
                        ));
                    }
                    continue;
                };
                let mut ask = RequestAddressRequest::new(id);
                ask.address = bare(cidr).to_string();
                let what =
                    format!("{family} address of endpoint {} ({})", ep.name, &ep.id[..12.min(ep.id.len())]);
                replay_address(ipam, ask, &what, &mut out);
            }
        }
        if ids.iter().any(|(recorded, answered)| recorded != answered) {
            if let Err(e) = self.adopt_pool_ids(&net.id, &ids) {
                out.failures.push(format!("recording the new pool ids: {e}"));
            }
        }
        out
    }

    /// Records the pool ids IPAM answered in the network and its
    /// endpoints, in one store transaction, and in the index.
    fn adopt_pool_ids(&self, net_id: &str, ids: &HashMap<String, String>) -> DriverResult<()> {
        let map = |id: &mut String| {
            if let Some(new) = ids.get(id.as_str()) {
                id.clone_from(new);
            }
        };
        let (mut net, mut eps) = {
            let index = self.read();
            let Some(net) = index.networks.get(net_id).cloned() else { return Ok(()) };
            (net, index.endpoints.get(net_id).cloned().unwrap_or_default())
        };
        net.pools.iter_mut().for_each(|p| map(&mut p.pool_id));
        let mut changes = vec![Change::Put(network_key(net_id), encode(&net)?)];
        for ep in eps.values_mut() {
            let before = (ep.pool_v4.clone(), ep.pool_v6.clone());
            map(&mut ep.pool_v4);
            map(&mut ep.pool_v6);
            if before != (ep.pool_v4.clone(), ep.pool_v6.clone()) {
                changes.push(Change::Put(endpoint_key(net_id, &ep.id), encode(&*ep)?));
            }
        }
        let data = serde_json::json!({ "id": net_id, "pool_ids": ids });
        let op = self.begin(OP_REPLAY, network_key(net_id), &net.driver, data)?;
        op.finish(&changes)?;
        let mut index = self.write();
        index.networks.insert(net_id.to_string(), net);
        index.endpoints.insert(net_id.to_string(), eps);
        Ok(())
    }
}

/// Requests exactly the address `ask` names; an answer other than asked is
/// released again.
fn replay_address(ipam: &Driver<dyn IpamDriver>, ask: RequestAddressRequest, what: &str, out: &mut Outcome) {
    let (pool, want) = (ask.pool_id.clone(), ask.address.clone());
    match ipam.call("request_address", move |d| d.request_address(ask)) {
        Ok(got) if same_ip(bare(&got.address), &want) => out.addresses += 1,
        Ok(got) => {
            let mut undo = String::new();
            if !got.address.is_empty() {
                let rel = ReleaseAddressRequest::new(&pool, bare(&got.address));
                undo = match ipam.call("release_address", move |d| d.release_address(rel)) {
                    Ok(()) => "; released it again".into(),
                    Err(e) => format!("; releasing it failed: {e}"),
                };
            }
            out.failures.push(format!("{what} {want}: IPAM answered {:?} instead{undo}", got.address));
        }
        Err(e) => out.failures.push(format!("{what} {want}: {e}")),
    }
}
