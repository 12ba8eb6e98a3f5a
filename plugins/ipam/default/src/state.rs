//! The state file: every live pool and its taken addresses, rewritten
//! whole and atomically after every change.
//!
//! ```json
//! { "version": 1,
//!   "pools": [ { "address_space": "local", "pool": "10.1.0.0/16",
//!                "sub_pool": "10.1.2.0/24", "serial": false,
//!                "last": "10.1.2.7",
//!                "allocated": [["10.1.2.0", "10.1.2.5"], ["10.1.2.7", "10.1.2.7"]] } ] }
//! ```
//!
//! Taken addresses are stored as inclusive runs, so a fully allocated /16
//! is one entry. Reserved addresses are not stored: they follow from the
//! pool.

use std::collections::BTreeMap;
use std::fs::{self};
use std::io::{self};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::alloc::Policy;
use crate::pool::{address_space, overlap, parse_prefix, Pool, Spot};

/// The name of the state file under the driver's root.
pub const STATE_FILE: &str = "ipam-state.json";

const VERSION: u32 = 1;

/// A sparse pool restored with more taken addresses than this is corrupt:
/// nobody hands out that many one by one.
const RESTORE_LIMIT: u128 = 1 << 24;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    pools: Vec<PoolRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PoolRecord {
    address_space: String,
    pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub_pool: Option<String>,
    #[serde(default)]
    serial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<String>,
    #[serde(default)]
    allocated: Vec<[String; 2]>,
}

/// The live pools by id.
pub type Pools = BTreeMap<String, Pool>;

/// Where the state lives.
#[derive(Debug)]
pub enum Store {
    /// In `<root>/ipam-state.json`.
    File(PathBuf),
    /// Nowhere: unit tests that measure the allocator, not the disk.
    #[cfg(test)]
    Memory,
}

impl Store {
    /// Loads the pools; a missing file is an empty state, an unreadable or
    /// corrupt one an error naming the file.
    pub fn load(&self) -> DriverResult<Pools> {
        match self {
            Store::File(path) => load(path),
            #[cfg(test)]
            Store::Memory => Ok(Pools::new()),
        }
    }

    /// Writes the pools.
    pub fn save(&self, pools: &Pools) -> DriverResult<()> {
        match self {
            Store::File(path) => save(path, pools),
            #[cfg(test)]
            Store::Memory => Ok(()),
        }
    }
}

fn save(path: &Path, pools: &Pools) -> DriverResult<()> {
    let file = StateFile { version: VERSION, pools: pools.values().map(record).collect() };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| DriverError::internal(format!("encode IPAM state for {}: {e}", path.display())))?;
    write_atomic(path, &json)
}

fn record(pool: &Pool) -> PoolRecord {
    let addr = |off: u128| pool.address(off).to_string();
    PoolRecord {
        address_space: pool.space.to_string(),
        pool: pool.prefix.to_string(),
        sub_pool: pool.sub_pool.map(|s| s.to_string()),
        serial: pool.alloc.policy() == Policy::Serial,
        last: pool.alloc.last().map(addr),
        allocated: pool.alloc.runs().into_iter().map(|(a, b)| [addr(a), addr(b)]).collect(),
    }
}

fn load(path: &Path) -> DriverResult<Pools> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Pools::new()),
        Err(e) => return Err(DriverError::io(format!("read IPAM state file {}", path.display()), &e)),
    };
    let corrupt = |detail: String| {
        DriverError::internal(format!(
            "corrupt IPAM state file {}: {detail}; repair it, or move it aside to start with no pools",
            path.display()
        ))
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(format!("version {} is not the supported {VERSION}", file.version)));
    }
    let mut pools = Pools::new();
    for rec in file.pools {
        let what = format!("pool {:?}", rec.pool);
        let pool = restore(&rec, &pools).map_err(|e| corrupt(format!("{what}: {}", e.message)))?;
        pools.insert(pool.id(), pool);
    }
    Ok(pools)
}

/// Rebuilds one pool, checked as strictly as a request.
fn restore(rec: &PoolRecord, live: &Pools) -> DriverResult<Pool> {
    let space = address_space(&rec.address_space)?;
    let prefix = parse_prefix("pool", &rec.pool)?;
    let sub_pool = rec.sub_pool.as_deref().map(|s| parse_prefix("sub-pool", s)).transpose()?;
    if let Some(sub) = sub_pool {
        if !prefix.contains(&sub) {
            return Err(DriverError::invalid_argument(format!("sub-pool {sub} is outside the pool")));
        }
    }
    if let Some(other) = live.values().find(|p| p.space == space && overlap(&p.prefix, &prefix)) {
        return Err(DriverError::invalid_argument(format!("overlaps pool {}", other.prefix)));
    }
    let policy = if rec.serial { Policy::Serial } else { Policy::FirstFree };
    let mut pool = Pool::new(space, prefix, sub_pool, policy);
    let offset = |pool: &Pool, text: &str| -> DriverResult<u128> {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| DriverError::invalid_argument(format!("{text:?} is not an IP address")))?;
        match pool.locate(ip)? {
            Spot::Usable(off) => Ok(off),
            Spot::Reserved(what) => Err(DriverError::invalid_argument(format!("{ip} is {what}"))),
        }
    };
    let mut restored = 0u128;
    for [first, last] in &rec.allocated {
        let (a, b) = (offset(&pool, first)?, offset(&pool, last)?);
        if a > b {
            return Err(DriverError::invalid_argument(format!("run {first}..{last} is backwards")));
        }
        restored = restored.saturating_add(b - a).saturating_add(1);
        if restored > RESTORE_LIMIT {
            return Err(DriverError::invalid_argument(format!(
                "more than {RESTORE_LIMIT} addresses allocated"
            )));
        }
        for off in a..=b {
            if !pool.alloc.take(off) {
                return Err(DriverError::invalid_argument(format!("runs overlap at {}", pool.address(off))));
            }
        }
    }
    let last = rec.last.as_deref().map(|l| offset(&pool, l)).transpose()?;
    pool.alloc.set_last(last);
    Ok(pool)
}

pub use berth_plugin_api::util::write_atomic;
