//! The lease check after an IPAM case's teardown: every pool the case was
//! given must be free again, and so must every address it was handed.
//!
//! The check asks the driver itself, black-box, with the untracked
//! instance: each pool (as asked for; a dynamic one as answered) is
//! requested again with the case's own request. `Conflict` (or
//! `AlreadyExists`) means the pool is still allocated: a leak, named. A
//! success gives a fresh pool, in which the addresses the case was handed
//! in that prefix (at most [`ADDRESSES_PER_POOL`] of them, evenly spread)
//! are requested again as specific addresses: `Conflict` means the driver
//! kept an address of a released pool. The probe releases what it got.
//!
//! Skipped: pools of length 0 (a null driver's `0.0.0.0/0`), and against a
//! remote plugin — whose state is shared with whatever else uses it — the
//! dynamic pools (another client may hold that prefix by now); the case's
//! own prefixes are still checked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use berth_plugin_api::ipam::*;
use berth_plugin_api::ErrorKind;

use super::slot::guard;
use super::{addr_req, Cidr};
use crate::case::describe_error;
use crate::ctx::Ctx;

/// How many of a pool's addresses the check requests again, at most.
pub const ADDRESSES_PER_POOL: usize = 64;

/// A distinct pool request: address space, pool, sub-pool, IPv6.
type ProbeKey = (String, String, String, bool);

/// How many kept addresses a message names.
const SHOWN: usize = 8;

/// Whether an error says "that is taken".
fn taken(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Conflict | ErrorKind::AlreadyExists)
}

impl Ctx {
    /// What the IPAM case left allocated at the driver after teardown, one
    /// entry per pool or address, each naming it.
    pub(crate) fn ipam_leaks(&self) -> Vec<String> {
        let Some(slot) = self.ipam.as_ref() else { return Vec::new() };
        let Some(tracked) = slot.driver.as_ref() else { return Vec::new() };
        let d = &tracked.inner;
        let requested = guard(&slot.ledger.requested).clone();
        let handed = guard(&slot.ledger.handed).clone();
        // One probe per distinct request; the pool ids each one was given
        // (a restart's replay gives new ids).
        let mut probes: BTreeMap<ProbeKey, (RequestPoolRequest, Vec<String>)> = BTreeMap::new();
        for (req, resp) in requested {
            let Some(cidr) = Cidr::parse(&resp.pool) else { continue };
            let dynamic = req.pool.is_empty();
            if cidr.len == 0 || (dynamic && self.shared_driver()) {
                continue;
            }
            let mut probe = req.clone();
            if dynamic {
                probe.pool = resp.pool.clone();
            }
            let key = (probe.address_space.clone(), probe.pool.clone(), probe.sub_pool.clone(), probe.v6);
            probes.entry(key).or_insert_with(|| (probe, Vec::new())).1.push(resp.pool_id);
        }
        let mut leaks = Vec::new();
        for ((space, pool, sub, _), (req, ids)) in probes {
            let what = if sub.is_empty() {
                format!("pool {pool} in {space:?}")
            } else {
                format!("pool {pool} (sub-pool {sub}) in {space:?}")
            };
            match d.request_pool(req) {
                Err(e) if taken(e.kind) => leaks.push(format!(
                    "{what} (id {}) still allocated: requesting it again answered {}",
                    ids.join(", "),
                    describe_error(&e)
                )),
                // Any other refusal says nothing about a lease.
                Err(_) => {}
                Ok(fresh) => {
                    let addresses: BTreeSet<IpAddr> = ids
                        .iter()
                        .filter_map(|id| handed.get(id))
                        .flatten()
                        .filter_map(|a| a.parse().ok())
                        .collect();
                    let step = addresses.len().div_ceil(ADDRESSES_PER_POOL).max(1);
                    let mut checked = 0;
                    let mut kept = Vec::new();
                    let mut first = None;
                    for a in addresses.into_iter().step_by(step) {
                        checked += 1;
                        match d.request_address(addr_req(&fresh.pool_id, &a.to_string(), false)) {
                            Ok(r) => {
                                let _ = d.release_address(ReleaseAddressRequest::new(
                                    fresh.pool_id.clone(),
                                    super::bare(&r.address),
                                ));
                            }
                            Err(e) if taken(e.kind) => {
                                kept.push(a.to_string());
                                first.get_or_insert_with(|| describe_error(&e));
                            }
                            Err(_) => {}
                        }
                    }
                    if !kept.is_empty() {
                        let shown = kept.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
                        let more = kept.len().saturating_sub(SHOWN);
                        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
                        leaks.push(format!(
                            "address(es) {shown}{more} of {what} still allocated after the pool was released \
                             and requested again ({} of {checked} checked of those the case was handed; the \
                             first answered {})",
                            kept.len(),
                            first.unwrap_or_default()
                        ));
                    }
                    if let Err(e) = d.release_pool(ReleasePoolRequest::new(fresh.pool_id.clone())) {
                        leaks.push(format!(
                            "{what}: the check's own request of it (id {}) could not be released: {}",
                            fresh.pool_id,
                            describe_error(&e)
                        ));
                    }
                }
            }
        }
        leaks
    }
}
