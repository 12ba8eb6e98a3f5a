//! The state on disk: a snapshot (`ipam-state.json`: every live pool and
//! its taken addresses, rewritten whole and atomically) and a journal of
//! the address changes since (`ipam-journal`, see [`crate::journal`]).
//!
//! ```json
//! { "version": 1, "generation": 7,
//!   "pools": [ { "address_space": "local", "pool": "10.1.0.0/16",
//!                "sub_pool": "10.1.2.0/24", "serial": false,
//!                "last": "10.1.2.7", "gateway": "10.1.2.0",
//!                "allocated": [["10.1.2.0", "10.1.2.5"], ["10.1.2.7", "10.1.2.7"]] } ] }
//! ```
//!
//! Taken addresses are stored as inclusive runs, so a fully allocated /16
//! is one entry. Reserved addresses are not stored: they follow from the
//! pool.
//!
//! When what is written:
//! * a pool request or release writes a snapshot (the next generation),
//!   then empties the journal;
//! * an address request or release appends one journal record (made
//!   durable before the call answers);
//! * every [`COMPACT_AFTER`] records, and at load when the journal is not
//!   empty, the state is snapshotted and the journal emptied.

use std::collections::BTreeMap;
use std::fs::{self};
use std::io::{self};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::alloc::Policy;
use crate::journal::{self, Journal, Op, Record, Syncer, JOURNAL_FILE};
use crate::pool::{address_space, overlap, parse_prefix, Pool, Spot};

/// The name of the state file under the driver's root.
pub const STATE_FILE: &str = "ipam-state.json";

const VERSION: u32 = 1;

/// After this many journal records the state is snapshotted again, which
/// bounds the journal (about 80 bytes a record) and the replay at load.
pub const COMPACT_AFTER: u64 = 16_384;

/// A sparse pool restored with more taken addresses than this is corrupt:
/// nobody hands out that many one by one.
const RESTORE_LIMIT: u128 = 1 << 24;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Journal records of this generation apply over this snapshot.
    #[serde(default)]
    generation: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(default)]
    allocated: Vec<[String; 2]>,
}

/// The live pools by id.
pub type Pools = BTreeMap<String, Pool>;

/// Where the state lives.
#[derive(Debug)]
pub enum Store {
    /// In `<root>/ipam-state.json` and `<root>/ipam-journal`.
    Disk {
        /// The snapshot file.
        snapshot: PathBuf,
        /// The journal's writing end.
        journal: Journal,
        /// The generation of the snapshot on disk.
        generation: u64,
    },
    /// Nowhere: the state lives as long as the driver.
    Memory,
}

impl Store {
    /// Loads the state under `root`: the snapshot, then the journal's
    /// records of its generation. A missing file is an empty state; an
    /// unreadable or corrupt one an error naming the file. A journal with
    /// records is folded into a new snapshot at once.
    pub fn open(root: &Path) -> DriverResult<(Store, Pools)> {
        let snapshot = root.join(STATE_FILE);
        let journal_path = root.join(JOURNAL_FILE);
        let (mut pools, generation) = load(&snapshot)?;
        let (records, torn) = journal::read(&journal_path)?;
        for (n, r) in records.iter().enumerate().filter(|(_, r)| r.g == generation) {
            replay(&mut pools, r).map_err(|e| {
                DriverError::internal(format!(
                    "corrupt IPAM journal {}: line {}: {}; repair it, or move it aside to lose the \
                     address changes since the last snapshot",
                    journal_path.display(),
                    n + 1,
                    e.message
                ))
            })?;
        }
        let journal = Journal::open(&journal_path)?;
        let mut store = Store::Disk { snapshot, journal, generation };
        if !records.is_empty() || torn {
            store.snapshot(&pools)?;
        }
        Ok((store, pools))
    }

    /// The syncing end of the journal (none in memory).
    pub fn syncer(&self) -> Option<Arc<Syncer>> {
        match self {
            Store::Disk { journal, .. } => Some(journal.syncer()),
            Store::Memory => None,
        }
    }

    /// Writes a snapshot of `pools` (the next generation) and empties the
    /// journal. On an error nothing changed on disk.
    pub fn snapshot(&mut self, pools: &Pools) -> DriverResult<()> {
        let Store::Disk { snapshot, journal, generation } = self else { return Ok(()) };
        journal.syncer().check()?;
        save(snapshot, pools, *generation + 1)?;
        *generation += 1;
        journal.reset();
        Ok(())
    }

    /// Journals one address change (`addr` bare); answers the sequence
    /// number to sync (none in memory).
    pub fn append(&mut self, pool: &str, op: Op, addr: &str) -> DriverResult<Option<u64>> {
        let Store::Disk { journal, generation, .. } = self else { return Ok(None) };
        journal.append_parts(*generation, pool, op, addr).map(Some)
    }

    /// Snapshots when the journal has grown long. Best effort: on an error
    /// the journal keeps everything and the next attempt comes
    /// [`COMPACT_AFTER`] records later.
    pub fn maybe_compact(&mut self, pools: &Pools) {
        let due = matches!(self, Store::Disk { journal, .. } if journal.records >= COMPACT_AFTER);
        if due && self.snapshot(pools).is_err() {
            if let Store::Disk { journal, .. } = self {
                journal.records = 0;
            }
        }
    }

    /// Unit tests: make journal writes fail (or work again).
    #[cfg(test)]
    pub fn fail_writes(&mut self, fail: bool) {
        if let Store::Disk { journal, .. } = self {
            journal.fail_writes = fail;
        }
    }
}

/// Applies one journal record. Replay is idempotent: taking a taken
/// address or freeing a free one changes nothing.
fn replay(pools: &mut Pools, r: &Record) -> DriverResult<()> {
    let pool = pools
        .get_mut(&r.pool)
        .ok_or_else(|| DriverError::invalid_argument(format!("pool {:?} is not in the snapshot", r.pool)))?;
    let ip: IpAddr = r
        .addr
        .parse()
        .map_err(|_| DriverError::invalid_argument(format!("{:?} is not an IP address", r.addr)))?;
    let Spot::Usable(off) = pool.locate(ip)? else {
        return Err(DriverError::invalid_argument(format!("{ip} is reserved in pool {}", pool.describe())));
    };
    match r.op {
        Op::Take | Op::Any | Op::Gateway => {
            pool.alloc.take(off);
        }
        Op::Free => {
            pool.alloc.free(off);
            if pool.gateway == Some(off) {
                pool.gateway = None;
            }
        }
    }
    match r.op {
        Op::Any => pool.alloc.set_last(Some(off)),
        Op::Gateway => pool.gateway = Some(off),
        _ => {}
    }
    Ok(())
}

fn save(path: &Path, pools: &Pools, generation: u64) -> DriverResult<()> {
    let file = StateFile { version: VERSION, generation, pools: pools.values().map(record).collect() };
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
        gateway: pool.gateway.map(addr),
        allocated: pool.alloc.runs().into_iter().map(|(a, b)| [addr(a), addr(b)]).collect(),
    }
}

fn load(path: &Path) -> DriverResult<(Pools, u64)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Pools::new(), 0)),
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
    Ok((pools, file.generation))
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
        if !pool.alloc.take_run(a, b) {
            return Err(DriverError::invalid_argument(format!("run {first}..{last} overlaps another")));
        }
    }
    let last = rec.last.as_deref().map(|l| offset(&pool, l)).transpose()?;
    pool.alloc.set_last(last);
    if let Some(gw) = rec.gateway.as_deref() {
        let off = offset(&pool, gw)?;
        if !pool.alloc.is_taken(off) {
            return Err(DriverError::invalid_argument(format!("gateway {gw} is not allocated")));
        }
        pool.gateway = Some(off);
    }
    Ok(pool)
}

pub use berth_plugin_api::util::write_atomic;
