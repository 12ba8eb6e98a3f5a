//! berth IPAM driver `default`: pools and addresses, kept on disk.
//!
//! # Address spaces and pools
//!
//! Two address spaces, `local` and `global` (an empty space means `local`).
//! Live pools in one space never overlap — not exactly, not as superset or
//! subset, not partly, for IPv4 and IPv6 alike; the same prefix may be live
//! in the other space.
//!
//! * A request naming a `pool` (CIDR, no host bits) reserves exactly that
//!   prefix; an optional `sub_pool` inside it restricts the addresses handed
//!   out to the sub-pool.
//! * A request with an empty `pool` gets the first subnet of the default
//!   address pools (IPv4, or IPv6 when `V6` is set) that overlaps no live
//!   pool of its space. See [`Opts`] for the defaults.
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
//! (`10.1.2.3/16`), and come from the sub-pool when there is one. Reserved,
//! never handed out: in IPv4 the pool's network and broadcast addresses
//! (except in a /31 or /32, which hand out every address); in IPv6 only the
//! subnet-router anycast address, offset 0 (except in a /127 or /128).
//!
//! * A specific address: taken → conflict; outside the pool (or sub-pool)
//!   or reserved → invalid-argument ("out of range").
//! * The gateway (`RequestAddressType = com.docker.network.gateway`): the
//!   address given, else the first host address of the pool (or sub-pool);
//!   taken → conflict.
//! * Any address, by the pool's **reuse policy**:
//!   * *first free* (default): the lowest free address, so a released
//!     address is the next one handed out;
//!   * *serial* (`com.docker.network.ipam.serial = "true"` in the pool
//!     request's options): the next free address after the last one handed
//!     out, wrapping at the end, so a released address is reused as late as
//!     possible.
//! * Nothing free → resource-exhausted ("no available addresses in pool …").
//! * Releasing an address that is not allocated (or reserved) succeeds;
//!   one outside the pool is invalid-argument, and any address of a pool
//!   that is not live is not-found.
//!
//! Ranges of up to 2^24 addresses are tracked in a bitmap, bigger ones (an
//! IPv6 /64) in a sparse set (`src/alloc.rs`).
//!
//! # Persistence
//!
//! Every change rewrites `<root>/ipam-state.json` atomically (temporary
//! file, fsync, rename, fsync of the directory) before the call answers; a
//! change that cannot be saved is undone and reported. A new driver loads
//! the file; a corrupt file is an error naming it, never silently ignored.
//! Each change costs one fsync, which bounds throughput on real disks.

#![deny(missing_docs)]

mod alloc;
pub mod export;
mod options;
mod pool;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, IpamDriver};
use ipnet::IpNet;

pub use crate::alloc::Policy;
pub use crate::options::{AddressPool, DefaultPools, Opts};
pub use crate::pool::{GLOBAL, LOCAL};
pub use crate::state::STATE_FILE;

use crate::pool::{address_space, overlap, parse_prefix, pool_id, Pool, Spot};
use crate::state::{Pools, Store};

/// The request-pool option that selects the serial reuse policy.
pub const SERIAL_OPTION: &str = "com.docker.network.ipam.serial";

/// The default IPAM driver. See the [crate documentation](crate).
pub struct DefaultIpamDriver {
    defaults: DefaultPools,
    store: Store,
    pools: Mutex<Pools>,
}

impl fmt::Debug for DefaultIpamDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultIpamDriver")
            .field("defaults", &self.defaults)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl DefaultIpamDriver {
    /// Builds the driver: decodes and validates the options, loads
    /// `<root>/ipam-state.json`.
    pub fn new(req: InitRequest) -> DriverResult<Init<DefaultIpamDriver>> {
        let opts: Opts = req.decode_options()?;
        let defaults = DefaultPools::from_options(&opts)
            .map_err(|e| e.context(format_args!("options of driver {:?}", req.name)))?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(
                "the IPAM driver needs a root directory for its state, and none was given",
            ));
        }
        let root = Path::new(&req.root);
        fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create IPAM root {}", root.display()), &e))?;
        let store = Store::File(root.join(STATE_FILE));
        Ok(Init::Ready(DefaultIpamDriver::with_store(defaults, store)?))
    }

    fn with_store(defaults: DefaultPools, store: Store) -> DriverResult<DefaultIpamDriver> {
        let pools = store.load()?;
        Ok(DefaultIpamDriver { defaults, store, pools: Mutex::new(pools) })
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, Pools>> {
        self.pools.lock().map_err(|_| {
            DriverError::internal("IPAM state is unusable after an earlier panic; restart the daemon")
        })
    }
}

/// The reuse policy a pool request asks for.
fn policy(options: &BTreeMap<String, String>) -> DriverResult<Policy> {
    match options.get(SERIAL_OPTION).map(|v| v.to_ascii_lowercase()) {
        None => Ok(Policy::FirstFree),
        Some(v) if v == "true" => Ok(Policy::Serial),
        Some(v) if v == "false" || v.is_empty() => Ok(Policy::FirstFree),
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
        if req.pool.is_empty() {
            if !req.sub_pool.is_empty() {
                return Err(DriverError::invalid_argument(format!(
                    "sub-pool {} given without a pool; name the pool it belongs to",
                    req.sub_pool
                )));
            }
            let live: Vec<IpNet> = pools.values().filter(|p| p.space == space).map(|p| p.prefix).collect();
            let prefix = self.defaults.pick(req.v6, &live).ok_or_else(|| {
                DriverError::resource_exhausted(format!(
                    "no free {} subnet left in the default address pools of address space {space}; \
                     release a pool or configure more default address pools",
                    family(req.v6)
                ))
            })?;
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
        // State is kept on disk: no replay needed, no MAC wanted.
        Ok(IpamCapabilities::default())
    }

    fn default_address_spaces(&self, _req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        Ok(AddressSpaces::new(LOCAL, GLOBAL))
    }

    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        let space = address_space(&req.address_space)?;
        let policy = policy(&req.options)?;
        let mut pools = self.lock()?;
        let (prefix, sub_pool) = self.choose(&req, space, &pools)?;
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
        if let Err(e) = self.store.save(&pools) {
            pools.remove(&id);
            return Err(e);
        }
        Ok(RequestPoolResponse::new(id, prefix.to_string()))
    }

    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        let mut pools = self.lock()?;
        let pool = pools.remove(&req.pool_id).ok_or_else(|| {
            DriverError::not_found(format!(
                "pool {:?} is not live (never requested, or released)",
                req.pool_id
            ))
        })?;
        if let Err(e) = self.store.save(&pools) {
            pools.insert(req.pool_id, pool);
            return Err(e);
        }
        Ok(())
    }

    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let mut pools = self.lock()?;
        let pool = pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
        let last = pool.alloc.last();
        let offset = if !req.address.is_empty() {
            let ip = parse_ip(&req.address)?;
            let off = match pool.locate(ip)? {
                Spot::Usable(off) => off,
                Spot::Reserved(what) => {
                    return Err(DriverError::invalid_argument(format!(
                        "address {ip} is out of range: it is {what} of pool {}",
                        pool.describe()
                    )))
                }
            };
            if !pool.alloc.take(off) {
                return Err(DriverError::conflict(format!(
                    "address {ip} is already in use in pool {}",
                    pool.describe()
                )));
            }
            off
        } else if req.is_gateway() {
            if pool.alloc.max().is_none() {
                return Err(no_addresses(pool));
            }
            if !pool.alloc.take(0) {
                return Err(DriverError::conflict(format!(
                    "the default gateway {} (first host address) of pool {} is already in use; \
                     request a specific gateway address",
                    pool.address(0),
                    pool.describe()
                )));
            }
            0
        } else {
            pool.alloc.take_any().ok_or_else(|| no_addresses(pool))?
        };
        let ip = pool.address(offset);
        let answer = RequestAddressResponse::new(pool.cidr(ip));
        if let Err(e) = self.store.save(&pools) {
            if let Some(pool) = pools.get_mut(&req.pool_id) {
                pool.alloc.free(offset);
                pool.alloc.set_last(last);
            }
            return Err(e);
        }
        Ok(answer)
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        let mut pools = self.lock()?;
        let pool = pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
        let ip = parse_ip(&req.address)?;
        let Spot::Usable(offset) = pool.locate(ip)? else {
            return Ok(()); // reserved: never allocated
        };
        if !pool.alloc.free(offset) {
            return Ok(());
        }
        if let Err(e) = self.store.save(&pools) {
            if let Some(pool) = pools.get_mut(&req.pool_id) {
                pool.alloc.take(offset);
            }
            return Err(e);
        }
        Ok(())
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
