//! Which endpoint of a sandbox gives it its default gateway, and moving
//! that role between endpoints as dockerd does (libnetwork
//! `Sandbox.getGatewayEndpoint`, `Endpoint.sbJoin`/`sbLeave`).
//!
//! **The rule.** libnetwork keeps a sandbox's endpoints ordered
//! (`epHeap.Less`) and the gateway endpoint is the first of them whose
//! join answered a gateway. The order, as berth implements it:
//!
//! 1. endpoints of an internal network, and of a `host` network, never
//!    hold the role (libnetwork sorts internal ones last, and its
//!    `getGatewayEndpoint` skips `host`/`null` networks; berth has no
//!    `docker_gwbridge`, which libnetwork sorts last of all);
//! 2. an endpoint whose join answered both an IPv4 and an IPv6 gateway
//!    comes before one that answered only one of them;
//! 3. libnetwork then orders by the container's endpoint priority
//!    (`epPriority`, `--gw-priority` in newer dockerd): berth's connect
//!    request carries no priority, so every endpoint has priority 0 and
//!    this step never decides;
//! 4. then by network name, ascending.
//!
//! **Connect** (`sbJoin`): when the new endpoint ranks before the current
//! gateway endpoint, the old one's default routes are removed before the
//! new interface is configured with its own (libnetwork's
//! `updateGateway`), then the old endpoint's external connectivity is
//! revoked and the new one's programmed. A failure after that point
//! restores the old endpoint (routes, program, ports).
//!
//! **Disconnect** (`sbLeave`, also for each endpoint of a removed
//! sandbox): the gateway endpoint's connectivity is revoked, its
//! interface taken out and the driver's `Leave` called; then the next
//! endpoint by the rule gets its default routes and
//! `ProgramExternalConnectivity` (and `EndpointOperInfo` when the sandbox
//! publishes ports) — before the old endpoint's `DeleteEndpoint`, as in
//! dockerd, where `Leave` precedes `Delete`.
//!
//! **Crash safety.** Both moves note a ledger step first
//! ([`Step::Demoted`] in a connect, [`Step::Promoting`] in a disconnect);
//! the records of both endpoints change in the operation's one finishing
//! store write. Reconcile rolls an interrupted connect back and restores
//! the demoted endpoint (routes re-added, connectivity re-programmed); it
//! finishes an interrupted disconnect, first revoking the noted endpoint
//! (whose program may have happened) and then taking the role over again.
//! A failed takeover is logged and the disconnect stands: the sandbox is
//! then left without a gateway, as before this module. When the role has
//! moved but the old endpoint's `DeleteEndpoint` or address release then
//! fails (no `force`), the operation is finished with both records
//! updated (the old one no longer the gateway) and the error answered; a
//! retried disconnect deletes what is left.
//!
//! **Limits.** A current gateway endpoint recorded before the join
//! gateways were kept (`join_gateway` empty) keeps the role on connect
//! (its default routes cannot be named to remove them), and never takes
//! it over. A restored endpoint (connect rolled back) is re-programmed,
//! but the host ports its record shows are the ones read at its first
//! program.

use std::net::IpAddr;
use std::path::Path;

use berth_plugin_api::network::{ProgramExternalConnectivityRequest, RevokeExternalConnectivityRequest};
use berth_plugin_api::{DriverResult, NetworkDriver};

use super::ledger::{Op, Step};
use super::{ports, EndpointRecord, NetworkRecord, NetworkService, SandboxRecord, HOST_DRIVER};
use crate::call::Driver;
use crate::sandbox;

/// The gateways `ep`'s join answered.
pub(super) fn join_gateways(ep: &EndpointRecord) -> (Option<IpAddr>, Option<IpAddr>) {
    (ep.join_gateway.parse().ok(), ep.join_gateway6.parse().ok())
}

/// Whether an endpoint of `net` whose join answered `gws` may give a
/// sandbox its gateway (rule 1).
pub(super) fn eligible(net: &NetworkRecord, gws: (Option<IpAddr>, Option<IpAddr>)) -> bool {
    !net.internal && net.driver != HOST_DRIVER && (gws.0.is_some() || gws.1.is_some())
}

/// The sort key of rules 2 to 4: smaller ranks first.
fn rank(net: &NetworkRecord, gws: (Option<IpAddr>, Option<IpAddr>)) -> (bool, u8, String) {
    let dual = gws.0.is_some() && gws.1.is_some();
    (!dual, 0, net.name.clone())
}

/// Whether an endpoint of `a` (join gateways `ga`) ranks before one of
/// `b` (`gb`).
pub(super) fn ranks_before(
    a: &NetworkRecord,
    ga: (Option<IpAddr>, Option<IpAddr>),
    b: &NetworkRecord,
    gb: (Option<IpAddr>, Option<IpAddr>),
) -> bool {
    rank(a, ga) < rank(b, gb)
}

impl NetworkService {
    /// The endpoint of sandbox `sb` that should hold the gateway role,
    /// `gone` left out, with its network.
    fn next_gateway(&self, sb: &str, gone: &str) -> Option<(EndpointRecord, NetworkRecord)> {
        let eps = self.endpoints_of_sandbox(sb);
        let index = self.read();
        eps.into_iter()
            .filter(|e| e.id != gone)
            .filter_map(|e| index.networks.get(&e.network_id).map(|n| (e, n.clone())))
            .filter(|(e, n)| eligible(n, join_gateways(e)))
            .min_by_key(|(e, n)| rank(n, join_gateways(e)))
    }

    /// `ProgramExternalConnectivity` of endpoint `rec` of `net` with the
    /// sandbox's port options, then (when `sb` publishes ports) the host
    /// ports the driver chose; marks `rec` the gateway endpoint. The one
    /// code path of connect and of a takeover.
    pub(super) fn program_gateway(
        &self,
        driver: &Driver<dyn NetworkDriver>,
        net: &NetworkRecord,
        sb: &SandboxRecord,
        rec: &mut EndpointRecord,
    ) -> DriverResult<()> {
        let mut program = ProgramExternalConnectivityRequest::new(&net.id, &rec.id);
        program.options = ports::driver_options(&sb.port_bindings, &sb.exposed_ports);
        driver.call("program_external_connectivity", move |d| d.program_external_connectivity(program))?;
        rec.gateway = true;
        if !sb.port_bindings.values().all(Vec::is_empty) {
            rec.ports = super::connect::published_ports(driver, net, &rec.id);
        }
        Ok(())
    }

    /// Makes `rec` of `net` the gateway endpoint of `sb`: its default
    /// routes in the sandbox, then [`NetworkService::program_gateway`].
    /// On failure the routes are taken out again.
    fn promote(&self, sb: &SandboxRecord, net: &NetworkRecord, rec: &mut EndpointRecord) -> DriverResult<()> {
        let (gw4, gw6) = join_gateways(rec);
        let key = Path::new(&sb.key);
        let routed = !sb.host && !rec.dst_name.is_empty();
        if routed {
            sandbox::set_default_routes(key, &rec.dst_name, gw4, gw6)?;
        }
        let programmed =
            self.drivers.network(&net.driver).and_then(|d| self.program_gateway(&d, net, sb, rec));
        if let Err(e) = programmed {
            if routed {
                if let Err(u) = sandbox::unset_default_routes(key, &rec.dst_name, gw4, gw6) {
                    tracing::warn!(endpoint = %rec.id, "taking the default routes out again failed: {u}");
                }
            }
            return Err(e);
        }
        Ok(())
    }

    /// Takes the default routes of gateway endpoint `rec` out of sandbox
    /// `sb` (the first half of a connect-side move; the revoke follows the
    /// new endpoint's join).
    pub(super) fn unroute(&self, sb: &SandboxRecord, rec: &EndpointRecord) -> DriverResult<()> {
        if sb.host || rec.dst_name.is_empty() {
            return Ok(());
        }
        let (gw4, gw6) = join_gateways(rec);
        sandbox::unset_default_routes(Path::new(&sb.key), &rec.dst_name, gw4, gw6)
    }

    /// `RevokeExternalConnectivity` of endpoint `rec` (its network's
    /// driver is `driver`); clears its gateway role and ports.
    pub(super) fn revoke_gateway(&self, driver: &str, rec: &mut EndpointRecord) -> DriverResult<()> {
        let d = self.drivers.network(driver)?;
        let revoke = RevokeExternalConnectivityRequest::new(&rec.network_id, &rec.id);
        d.call("revoke_external_connectivity", move |d| d.revoke_external_connectivity(revoke))?;
        rec.gateway = false;
        rec.ports.clear();
        Ok(())
    }

    /// After gateway endpoint `gone` of sandbox `sb` left: the next
    /// endpoint by the rule takes the role over. Answers its updated
    /// record, to be written with the operation's finish; `None` when no
    /// endpoint can, or the takeover failed (logged).
    pub(super) fn take_over(
        &self,
        op: Option<&mut Op<'_>>,
        sb: &SandboxRecord,
        gone: &str,
    ) -> Option<EndpointRecord> {
        let (mut rec, net) = self.next_gateway(&sb.id, gone)?;
        if let Some(op) = op {
            let note = Step::Promoting { endpoint: rec.id.clone(), network: rec.network_id.clone() };
            if let Err(e) = op.note(note) {
                tracing::warn!(sandbox = %sb.name, "no gateway takeover: noting it failed: {e}");
                return None;
            }
        }
        self.crash_point("endpoint.disconnect:before-takeover");
        match self.promote(sb, &net, &mut rec) {
            Ok(()) => {
                self.crash_point("endpoint.disconnect:after-takeover");
                tracing::info!(sandbox = %sb.name, network = %net.name, "gateway endpoint moved");
                Some(rec)
            }
            Err(e) => {
                tracing::warn!(
                    sandbox = %sb.name, network = %net.name,
                    "the endpoint next in line could not take the gateway over; the sandbox has none: {e}"
                );
                None
            }
        }
    }

    /// Puts the gateway role back on endpoint `ep` of network `net_id`
    /// after a connect that took it was rolled back (now or at reconcile):
    /// its default routes and its program again. Answers what failed.
    pub(super) fn restore_gateway(&self, sb: &SandboxRecord, net_id: &str, ep: &str) -> Vec<String> {
        let sb = self.read().sandboxes.get(&sb.id).cloned().unwrap_or_else(|| sb.clone());
        let found = {
            let index = self.read();
            index
                .networks
                .get(net_id)
                .cloned()
                .zip(index.endpoints.get(net_id).and_then(|m| m.get(ep)).cloned())
        };
        let Some((net, mut rec)) = found else { return Vec::new() };
        // Whether the revoke happened is not known: programs follow revokes.
        if let Err(e) = self.revoke_gateway(&net.driver, &mut rec.clone()) {
            tracing::warn!(endpoint = %ep, "revoking before restoring the gateway: {e}");
        }
        match self.promote(&sb, &net, &mut rec) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("restore the gateway of endpoint {ep}: {e}")],
        }
    }

    /// What reconcile does for an interrupted disconnect of gateway
    /// endpoint `gone` of sandbox `sb_id`: revokes the endpoint `steps`
    /// say was being promoted, then takes the role over again.
    pub(super) fn finish_takeover(&self, sb_id: &str, gone: &str, steps: &[Step]) -> Option<EndpointRecord> {
        let sb = self.read().sandboxes.get(sb_id).cloned()?;
        for s in steps {
            if let Step::Promoting { endpoint, network } = s {
                let found = self.read().endpoints.get(network).and_then(|m| m.get(endpoint)).cloned();
                let driver = self.read().networks.get(network).map(|n| n.driver.clone());
                if let (Some(mut rec), Some(driver)) = (found, driver) {
                    if let Err(e) = self.revoke_gateway(&driver, &mut rec) {
                        tracing::warn!(endpoint = %endpoint, "revoking a half-done takeover failed: {e}");
                    }
                }
            }
        }
        self.take_over(None, &sb, gone)
    }
}

/// A join's gateway as the record keeps it (empty when none).
pub(super) fn text(ip: Option<IpAddr>) -> String {
    ip.map(|i| i.to_string()).unwrap_or_default()
}
