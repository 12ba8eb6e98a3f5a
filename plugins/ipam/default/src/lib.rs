//! berth IPAM driver `default`: pools and addresses, kept on disk or
//! replayed by the daemon at start.
//!
//! # Address spaces and pools
//!
//! Two address spaces, `local` and `global` (an empty space means `local`).
//! Live pools in one space never overlap — not exactly, not as superset or
//! subset, not partly, for IPv4 and IPv6 alike; the same prefix may be live
//! in the other space.
//!
//! * A request naming a `pool` (CIDR, no host bits) reserves exactly that
//!   prefix; an optional `sub_pool` inside it is where "any address" comes
//!   from.
//! * A request with an empty `pool` gets the first subnet of the default
//!   address pools (IPv4, or IPv6 when `V6` is set) that overlaps no live
//!   pool of its space. See [`Opts`] for the defaults. A `pool` of the
//!   unspecified address with a prefix length (`0.0.0.0/24`, `::/80`, as
//!   Docker 29's `--subnet 0.0.0.0/24`) asks for a subnet of that length
//!   from the default pools; a length no default pool can hold is an
//!   invalid-argument error.
//! * The pool id is `<space>/<pool>`, or `<space>/<pool>/<sub-pool>`
//!   (`local/10.1.0.0/16/10.1.2.0/24`). It is stable across restarts; treat
//!   it as opaque.
//! * Requesting a pool that is already live — the identical pool included —
//!   is a **conflict**. (Docker's remote protocol lets identical requests
//!   share a reference-counted pool; berth's core keeps its own references
//!   and wants to hear when a pool would be live twice.) A released pool can
//!   be requested again; releasing a pool that is not live is not-found.
//! * A pool whose `V6` flag disagrees with its prefix's family, a sub-pool
//!   without a pool or outside it, an unparsable prefix and host bits are
//!   invalid-argument errors.
//!
//! # Addresses
//!
//! Addresses are answered as CIDR with the pool's prefix length
//! (`10.1.2.3/16`). Reserved, never handed out: in IPv4 the pool's network
//! and broadcast addresses (except in a /31 or /32, which hand out every
//! address); in IPv6 only the subnet-router anycast address, offset 0
//! (except in a /127 or /128).
//!
//! * A specific address may be anywhere in the pool, also outside its
//!   sub-pool (as in Docker: a static address outside `--ip-range`): taken
//!   → conflict; outside the pool or reserved → invalid-argument ("out of
//!   range").
//! * The gateway (`RequestAddressType = com.docker.network.gateway`): the
//!   address given, else the first host address of the sub-pool (or pool);
//!   taken → conflict. A pool has one gateway: asking for another while it
//!   is allocated is a conflict naming it; releasing its address clears it.
//! * Any address comes from the sub-pool (or pool), by the **reuse policy**:
//!   * *first free* (default): the lowest free address, so a released
//!     address is the next one handed out;
//!   * *serial* (`com.docker.network.ipam.serial = "true"` in the pool
//!     request's options, or in one address request's options, which is
//!     where Docker passes it): the next free address after the last one
//!     handed out, wrapping at the end, so a released address is reused as
//!     late as possible. `"false"` in an address request asks for first
//!     free.
//! * Nothing free → resource-exhausted ("no available addresses in pool …").
//! * Releasing an address that is not allocated (or reserved) succeeds;
//!   one outside the pool is invalid-argument, and any address of a pool
//!   that is not live is not-found.
//!
//! Pools of up to 2^24 addresses are tracked in a two-level bitmap (the
//! first free address is found a word at a time, full words skipped 64 at
//! a time), bigger ones (an IPv6 /64) in a sparse set (`src/alloc.rs`).
//!
//! # Persistence
//!
//! Option `persist` (see [`Persist`]) says where the state lives:
//!
//! * `"replay"`: in memory only. The capabilities answer
//!   `requires_request_replay`, and the daemon, which records every
//!   network's pools and every endpoint's addresses in its own store
//!   anyway, requests them all again when it starts (Docker's default
//!   IPAM). Nothing is written, so an address costs no disk flush. berthd's
//!   embedded configuration uses this mode. The serial cursor is not
//!   replayed (requests name their addresses): after a restart a serial
//!   pool starts again from the lowest free address, as Docker's does.
//! * `"journal"` (the default): durable by itself, for a caller that never
//!   replays (dockerd, with the driver served as a remote plugin). Nothing
//!   is answered before it is on disk (see `src/state.rs` and
//!   `src/journal.rs`):
//!   * a pool request or release rewrites the snapshot
//!     `<root>/ipam-state.json` atomically (temporary file, fsync, rename,
//!     fsync of the directory);
//!   * an address request or release appends one line to
//!     `<root>/ipam-journal` and `fdatasync`s it. Callers at the same time
//!     share one `fdatasync` (group commit), so the cost per address is one
//!     disk flush at most;
//!   * every [`COMPACT_AFTER`] records (and at load) the journal is folded
//!     into a new snapshot.
//!
//!   A change that cannot be written is undone and reported; a failed
//!   `fdatasync` stops the driver (every call is an error until a
//!   restart). A crash at any point loses no answered change: a torn last
//!   journal line belongs to a call that never answered. A new driver loads
//!   the snapshot and replays the journal; a corrupt file is an error
//!   naming it, never silently ignored.
//!
//! Switching a daemon that holds networks from `"journal"` to `"replay"` is
//! safe (the daemon replays its records; the files under the root are
//! neither read nor written any more, remove them). The other way is not:
//! a journal starts from whatever its files hold and nothing is replayed,
//! so remove the networks first.
//!
//! [`DefaultIpamDriver::in_memory`] is the `"replay"` driver built
//! directly, for tests, benchmarks and embedders.

#![deny(missing_docs)]

mod alloc;
pub mod export;
mod journal;
mod options;
mod pool;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, IpamDriver};
use ipnet::IpNet;

pub use crate::alloc::Policy;
pub use crate::journal::JOURNAL_FILE;
pub use crate::options::{AddressPool, DefaultPools, Opts, Persist, UnknownPersist};
pub use crate::pool::{GLOBAL, LOCAL};
pub use crate::state::{COMPACT_AFTER, STATE_FILE};

use crate::journal::{Op, Syncer};
use crate::pool::{address_space, overlap, parse_prefix, pool_id, Pool, Spot};
use crate::state::{Pools, Store};

/// The request option that selects the serial reuse policy (in a pool
/// request: for the pool; in an address request: for that request).
pub const SERIAL_OPTION: &str = "com.docker.network.ipam.serial";

/// The default IPAM driver. See the [crate documentation](crate).
pub struct DefaultIpamDriver {
    defaults: DefaultPools,
    state: Mutex<State>,
    /// Makes journal records durable outside the state lock (none in
    /// memory).
    syncer: Option<Arc<Syncer>>,
}

/// What the state lock guards: the pools and the writing end of the store.
struct State {
    pools: Pools,
    store: Store,
}

impl fmt::Debug for DefaultIpamDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultIpamDriver")
            .field("defaults", &self.defaults)
            .field("persistent", &self.syncer.is_some())
            .finish_non_exhaustive()
    }
}

impl DefaultIpamDriver {
    /// Builds the driver: decodes and validates the options; with
    /// `persist = "journal"` (the default) loads `<root>/ipam-state.json`
    /// and replays `<root>/ipam-journal`, with `persist = "replay"` starts
    /// empty in memory and touches no file.
    pub fn new(req: InitRequest) -> DriverResult<Init<DefaultIpamDriver>> {
        let opts: Opts = req.decode_options()?;
        let defaults = DefaultPools::from_options(&opts)
            .map_err(|e| e.context(format_args!("options of driver {:?}", req.name)))?;
        if opts.persist == Persist::Replay {
            return Ok(Init::Ready(DefaultIpamDriver::with_store(defaults, Store::Memory, Pools::new())));
        }
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(
                "the IPAM driver needs a root directory for its state, and none was given",
            ));
        }
        let root = Path::new(&req.root);
        fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create IPAM root {}", root.display()), &e))?;
        let (store, pools) = Store::open(root)?;
        Ok(Init::Ready(DefaultIpamDriver::with_store(defaults, store, pools)))
    }

    /// A driver whose state lives in memory only and dies with it, as
    /// Docker's default IPAM: its capabilities answer
    /// `requires_request_replay`, so a daemon replays its pool and address
    /// requests after a restart. What `persist = "replay"` builds (whatever
    /// `opts.persist` says), for tests, benchmarks and embedders.
    pub fn in_memory(opts: &Opts) -> DriverResult<DefaultIpamDriver> {
        let defaults = DefaultPools::from_options(opts)?;
        Ok(DefaultIpamDriver::with_store(defaults, Store::Memory, Pools::new()))
    }

    fn with_store(defaults: DefaultPools, store: Store, pools: Pools) -> DefaultIpamDriver {
        let syncer = store.syncer();
        DefaultIpamDriver { defaults, state: Mutex::new(State { pools, store }), syncer }
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, State>> {
        if let Some(s) = &self.syncer {
            s.check()?;
        }
        self.state.lock().map_err(|_| {
            DriverError::internal("IPAM state is unusable after an earlier panic; restart the daemon")
        })
    }

    /// Waits until journal record `seq` is durable.
    fn sync(&self, seq: Option<u64>) -> DriverResult<()> {
        match (seq, &self.syncer) {
            (Some(seq), Some(s)) => s.sync(seq),
            _ => Ok(()),
        }
    }

    /// Unit tests: make journal writes fail (or work again).
    #[cfg(test)]
    fn fail_writes(&self, fail: bool) {
        self.state.lock().unwrap().store.fail_writes(fail);
    }
}

/// The reuse policy an options map asks for, if any.
fn policy(options: &BTreeMap<String, String>) -> DriverResult<Option<Policy>> {
    match options.get(SERIAL_OPTION).map(|v| v.to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v == "true" => Ok(Some(Policy::Serial)),
        Some(v) if v == "false" || v.is_empty() => Ok(Some(Policy::FirstFree)),
        Some(v) => Err(DriverError::invalid_argument(format!(
            "option {SERIAL_OPTION} is {v:?}; expected \"true\" or \"false\""
        ))),
    }
}

fn parse_ip(text: &str) -> DriverResult<IpAddr> {
    text.parse().map_err(|_| {
        DriverError::invalid_argument(format!(
            "address {text:?} is not an IP address (give a bare address such as 10.1.0.5)"
        ))
    })
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

impl DefaultIpamDriver {
    /// The prefix and sub-pool a request names, or a free default subnet.
    fn choose(
        &self,
        req: &RequestPoolRequest,
        space: &str,
        pools: &Pools,
    ) -> DriverResult<(IpNet, Option<IpNet>)> {
        let live =
            || -> Vec<IpNet> { pools.values().filter(|p| p.space == space).map(|p| p.prefix).collect() };
        let exhausted = |v6: bool| {
            DriverError::resource_exhausted(format!(
                "no free {} subnet left in the default address pools of address space {space}; \
                 release a pool or configure more default address pools",
                family(v6)
            ))
        };
        if req.pool.is_empty() {
            if !req.sub_pool.is_empty() {
                return Err(DriverError::invalid_argument(format!(
                    "sub-pool {} given without a pool; name the pool it belongs to",
                    req.sub_pool
                )));
            }
            let prefix = self.defaults.pick(req.v6, None, &live())?.ok_or_else(|| exhausted(req.v6))?;
            return Ok((prefix, None));
        }
        let prefix = parse_prefix("pool", &req.pool)?;
        if prefix.addr().is_ipv6() != req.v6 {
            return Err(DriverError::invalid_argument(format!(
                "pool {prefix} is an {} prefix but the request says V6={}",
                family(prefix.addr().is_ipv6()),
                req.v6
            )));
        }
        if prefix.addr().is_unspecified() {
            // `0.0.0.0/24`: any free /24 of the default pools.
            if !req.sub_pool.is_empty() {
                return Err(DriverError::invalid_argument(format!(
                    "sub-pool {} given with pool {prefix}, which asks for any subnet of length /{}; \
                     name a specific pool to use a sub-pool",
                    req.sub_pool,
                    prefix.prefix_len()
                )));
            }
            let picked = self
                .defaults
                .pick(req.v6, Some(prefix.prefix_len()), &live())?
                .ok_or_else(|| exhausted(req.v6))?;
            return Ok((picked, None));
        }
        if req.sub_pool.is_empty() {
            return Ok((prefix, None));
        }
        let sub = parse_prefix("sub-pool", &req.sub_pool)?;
        if !prefix.contains(&sub) {
            return Err(DriverError::invalid_argument(format!("sub-pool {sub} is outside pool {prefix}")));
        }
        Ok((prefix, Some(sub)))
    }
}

impl IpamDriver for DefaultIpamDriver {
    fn capabilities(&self, _req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        // No MAC wanted; state kept on disk needs no replay, state in
        // memory does.
        let mut caps = IpamCapabilities::default();
        caps.requires_request_replay = self.syncer.is_none();
        Ok(caps)
    }

    fn default_address_spaces(&self, _req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        Ok(AddressSpaces::new(LOCAL, GLOBAL))
    }

    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        let space = address_space(&req.address_space)?;
        let policy = policy(&req.options)?.unwrap_or(Policy::FirstFree);
        let mut state = self.lock()?;
        let State { pools, store } = &mut *state;
        let (prefix, sub_pool) = self.choose(&req, space, pools)?;
        if let Some(live) = pools.values().find(|p| p.space == space && overlap(&p.prefix, &prefix)) {
            let message = if live.prefix == prefix {
                format!(
                    "pool {prefix} is already live in address space {space} (pool id {}); \
                     release it before requesting it again",
                    live.id()
                )
            } else {
                format!("pool {prefix} overlaps live pool {} in address space {space}", live.prefix)
            };
            return Err(DriverError::conflict(message));
        }
        let id = pool_id(space, &prefix, sub_pool.as_ref());
        pools.insert(id.clone(), Pool::new(space, prefix, sub_pool, policy));
        if let Err(e) = store.snapshot(pools) {
            pools.remove(&id);
            return Err(e);
        }
        Ok(RequestPoolResponse::new(id, prefix.to_string()))
    }

    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        let mut state = self.lock()?;
        let State { pools, store } = &mut *state;
        let pool = pools.remove(&req.pool_id).ok_or_else(|| {
            DriverError::not_found(format!(
                "pool {:?} is not live (never requested, or released)",
                req.pool_id
            ))
        })?;
        if let Err(e) = store.snapshot(pools) {
            pools.insert(req.pool_id, pool);
            return Err(e);
        }
        Ok(())
    }

    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let asked = policy(&req.options)?;
        let specific = (!req.address.is_empty()).then(|| parse_ip(&req.address)).transpose()?;
        let gateway = req.is_gateway();
        let mut state = self.lock()?;
        let State { pools, store } = &mut *state;
        let pool = pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
        let (last, held_gateway) = (pool.alloc.last(), pool.gateway);
        // Where a specific address falls is checked first: a bad address
        // is a bad request whatever the pool holds.
        let located = match specific.map(|ip| pool.locate(ip)).transpose()? {
            Some(Spot::Reserved(what)) => {
                return Err(DriverError::invalid_argument(format!(
                    "address {} is out of range: it is {what} of pool {}",
                    req.address,
                    pool.describe()
                )))
            }
            Some(Spot::Usable(off)) => Some(off),
            None => None,
        };
        if let (true, Some(g)) = (gateway, held_gateway) {
            return Err(DriverError::conflict(format!(
                "pool {} already has gateway {}; release it before requesting another",
                pool.describe(),
                pool.address(g)
            )));
        }
        let (offset, op) = if let (Some(ip), Some(off)) = (specific, located) {
            if !pool.alloc.take(off) {
                return Err(DriverError::conflict(format!(
                    "address {ip} is already in use in pool {}",
                    pool.describe()
                )));
            }
            (off, if gateway { Op::Gateway } else { Op::Take })
        } else if gateway {
            let Some((first, _)) = pool.alloc.range() else { return Err(no_addresses(pool)) };
            if !pool.alloc.take(first) {
                return Err(DriverError::conflict(format!(
                    "the default gateway {} (first host address) of pool {} is already in use; \
                     request a specific gateway address",
                    pool.address(first),
                    pool.describe()
                )));
            }
            (first, Op::Gateway)
        } else {
            let policy = asked.unwrap_or(pool.alloc.policy());
            (pool.alloc.take_any(policy).ok_or_else(|| no_addresses(pool))?, Op::Any)
        };
        if gateway {
            pool.gateway = Some(offset);
        }
        let answer = RequestAddressResponse::new(pool.cidr(pool.address(offset)));
        let bare = answer.address.split('/').next().unwrap_or_default();
        let seq = match store.append(&req.pool_id, op, bare) {
            Ok(seq) => seq,
            Err(e) => {
                pool.alloc.free(offset);
                pool.alloc.set_last(last);
                pool.gateway = held_gateway;
                return Err(e);
            }
        };
        store.maybe_compact(pools);
        drop(state);
        self.sync(seq)?;
        Ok(answer)
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        let ip = parse_ip(&req.address)?;
        let mut state = self.lock()?;
        let State { pools, store } = &mut *state;
        let pool = pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
        let Spot::Usable(offset) = pool.locate(ip)? else {
            return Ok(()); // reserved: never allocated
        };
        let held_gateway = pool.gateway;
        if !pool.alloc.free(offset) {
            return Ok(());
        }
        if held_gateway == Some(offset) {
            pool.gateway = None;
        }
        let seq = match store.append(&req.pool_id, Op::Free, &ip.to_string()) {
            Ok(seq) => seq,
            Err(e) => {
                pool.alloc.take(offset);
                pool.gateway = held_gateway;
                return Err(e);
            }
        };
        store.maybe_compact(pools);
        drop(state);
        self.sync(seq)
    }
}

fn not_live(pool_id: &str) -> DriverError {
    DriverError::not_found(format!("pool {pool_id:?} is not live; request it first"))
}

fn no_addresses(pool: &Pool) -> DriverError {
    DriverError::resource_exhausted(format!("no available addresses in pool {}", pool.describe()))
}

#[cfg(test)]
mod tests;
