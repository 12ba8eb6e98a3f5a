//! The driver's record of the pool: which thin device id each layer has,
//! the pool's transaction id, and the transaction in flight. One JSON file,
//! `<root>/metadata.json`, replaced atomically on every change.
//!
//! # Transactions (as moby's devmapper `DeviceSet` keeps them)
//!
//! The thin pool keeps a 64-bit transaction id that only changes when told
//! (`set_transaction_id <current> <new>`). Every change of the pool's
//! devices is one transaction:
//!
//! 1. [`Meta::open`] records `{transaction_id: current + 1, layer, device
//!    id}` and the record is saved;
//! 2. the pool is sent `create_thin`, `create_snap` or `delete`;
//! 3. the layer's record is added (or dropped) and saved;
//! 4. the pool is sent `set_transaction_id current current+1`, then
//!    [`Meta::close`] clears the open transaction, and the record is saved.
//!
//! After a crash, [`Meta::recover`] compares the open transaction with the
//! pool's id: equal, the pool took step 4 and only the record lags (it is
//! completed); lower, the change is undone (the device id is deleted from
//! the pool, the layer's record dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

/// The largest thin device id: ids are 24 bits.
pub(crate) const MAX_DEVICE_ID: u32 = 0xff_ffff;

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Meta {
    /// Format version, 1.
    pub(crate) version: u32,
    /// The pool these devices live in.
    pub(crate) pool: String,
    /// The filesystem of base devices, fixed by the first one made.
    pub(crate) filesystem: String,
    /// The last device id handed out; the next search starts after it.
    pub(crate) next_device_id: u32,
    /// The pool's transaction id as of the last closed transaction.
    pub(crate) transaction_id: u64,
    /// The transaction in flight, if any.
    pub(crate) open_transaction: Option<Transaction>,
    /// Every layer's device.
    pub(crate) devices: BTreeMap<String, Device>,
}

/// A transaction in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Transaction {
    /// The id the pool gets when it closes.
    pub(crate) transaction_id: u64,
    /// The layer whose device changes.
    pub(crate) layer: String,
    /// The device id made or deleted.
    pub(crate) device_id: u32,
}

/// One layer's thin device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Device {
    /// The thin device id in the pool.
    pub(crate) device_id: u32,
    /// Its virtual size in bytes (a multiple of 512).
    pub(crate) size: u64,
    /// The parent layer; empty for a base.
    pub(crate) parent: String,
    /// Whether it was made by `create_rw`.
    pub(crate) read_write: bool,
    /// The transaction that made it.
    pub(crate) transaction_id: u64,
    /// Whether its filesystem is complete (made, or grown to `size`); a
    /// device found uninitialized at start is a half-made layer.
    pub(crate) initialized: bool,
}

/// What [`Meta::recover`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// No transaction was open.
    Clean,
    /// The pool closed the open transaction; the record now says so.
    Completed,
    /// The open transaction did not close: the caller deletes this device
    /// id from the pool (it may not exist), then calls
    /// [`Meta::rolled_back`].
    RollBack(Transaction),
}

impl Meta {
    /// A fresh record for `pool`.
    pub(crate) fn new(pool: &str) -> Meta {
        Meta { version: 1, pool: pool.to_string(), ..Meta::default() }
    }

    /// Reads the record at `path`; `None` when there is none yet.
    pub(crate) fn load(path: &Path) -> DriverResult<Option<Meta>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DriverError::io(format_args!("read {}", path.display()), &e)),
        };
        let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| {
            DriverError::internal(format!("{} is not a devicemapper record: {e}", path.display()))
        })?;
        if meta.version != 1 {
            return Err(DriverError::failed_precondition(format!(
                "{} has format version {}; this driver reads version 1",
                path.display(),
                meta.version
            )));
        }
        Ok(Some(meta))
    }

    /// Replaces the record at `path` atomically.
    pub(crate) fn save(&self, path: &Path) -> DriverResult<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| DriverError::internal(format!("encode the devicemapper record: {e}")))?;
        berth_plugin_api::util::write_atomic(path, &json)
    }

    /// The next free device id after the last one handed out, wrapping
    /// at 2^24: not used by a layer, not in the open transaction, not in
    /// `taken` (ids the pool said exist though no layer has them).
    pub(crate) fn allocate_id(&mut self, taken: &BTreeSet<u32>) -> Option<u32> {
        self.allocate_where(|id| taken.contains(&id))
    }

    /// [`Meta::allocate_id`] with `taken` as a predicate.
    fn allocate_where(&mut self, taken: impl Fn(u32) -> bool) -> Option<u32> {
        let mut used: BTreeSet<u32> = self.devices.values().map(|d| d.device_id).collect();
        used.extend(self.open_transaction.as_ref().map(|t| t.device_id));
        for _ in 0..=MAX_DEVICE_ID {
            self.next_device_id = (self.next_device_id + 1) & MAX_DEVICE_ID;
            let id = self.next_device_id;
            if !used.contains(&id) && !taken(id) {
                return Some(id);
            }
        }
        None
    }

    /// Opens the transaction that changes `layer`'s device `device_id`;
    /// answers the transaction id it will close with.
    pub(crate) fn open(&mut self, layer: &str, device_id: u32) -> u64 {
        let id = self.transaction_id + 1;
        self.open_transaction = Some(Transaction { transaction_id: id, layer: layer.to_string(), device_id });
        id
    }

    /// Points the open transaction at another device id (the pool refused
    /// the first as already used).
    pub(crate) fn refresh(&mut self, device_id: u32) {
        if let Some(t) = &mut self.open_transaction {
            t.device_id = device_id;
        }
    }

    /// The `(current, new)` pair of the pool message that closes the open
    /// transaction.
    pub(crate) fn closing(&self) -> Option<(u64, u64)> {
        self.open_transaction.as_ref().map(|t| (self.transaction_id, t.transaction_id))
    }

    /// Records that the pool took the closing message.
    pub(crate) fn close(&mut self) {
        if let Some(t) = self.open_transaction.take() {
            self.transaction_id = t.transaction_id;
        }
    }

    /// Forgets the open transaction without closing it: the pool was never
    /// changed (its message failed).
    pub(crate) fn abandon(&mut self) {
        self.open_transaction = None;
    }

    /// Settles the record with the pool, whose transaction id is
    /// `pool_id`, after a start. Err when the pool is ahead of anything
    /// berth did: another program changes it.
    pub(crate) fn recover(&mut self, pool_id: u64) -> Result<Recovery, String> {
        let Some(open) = self.open_transaction.clone() else {
            // Nothing in flight: the pool's id is the truth (a fresh
            // record on a used pool, or a record that lagged by design).
            self.transaction_id = pool_id;
            return Ok(Recovery::Clean);
        };
        if pool_id == open.transaction_id {
            self.close();
            Ok(Recovery::Completed)
        } else if pool_id < open.transaction_id {
            self.transaction_id = pool_id;
            Ok(Recovery::RollBack(open))
        } else {
            Err(format!(
                "the pool is at transaction {pool_id}, ahead of berth's open transaction {}: another \
                 program changes this pool; give berth a thin pool of its own",
                open.transaction_id
            ))
        }
    }

    /// Finishes a roll back: drops the layer's record if it names the
    /// rolled-back device, and the open transaction.
    pub(crate) fn rolled_back(&mut self, t: &Transaction) {
        if self.devices.get(&t.layer).is_some_and(|d| d.device_id == t.device_id) {
            self.devices.remove(&t.layer);
        }
        self.open_transaction = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(id: u32) -> Device {
        Device { device_id: id, size: 1 << 30, initialized: true, ..Device::default() }
    }

    #[test]
    fn ids_start_at_one_skip_used_ones_and_wrap_to_reuse_freed_ones() {
        let mut m = Meta::new("pool");
        let none = BTreeSet::new();
        assert_eq!(m.allocate_id(&none), Some(1));
        m.devices.insert("a".into(), device(1));
        m.devices.insert("b".into(), device(2));
        m.next_device_id = 0;
        assert_eq!(m.allocate_id(&none), Some(3), "1 and 2 are used");
        m.open("c", 3);
        assert_eq!(
            m.allocate_id(&BTreeSet::from([4, 5])),
            Some(6),
            "3 is in flight, 4 and 5 taken in the pool"
        );
        // Near the top the search wraps; 0 is a valid id, a freed 1 is reused.
        m.devices.remove("a");
        m.abandon();
        m.next_device_id = MAX_DEVICE_ID - 1;
        assert_eq!(m.allocate_id(&none), Some(MAX_DEVICE_ID));
        assert_eq!(m.allocate_id(&none), Some(0));
        assert_eq!(m.allocate_id(&none), Some(1));
    }

    #[test]
    fn a_full_id_space_allocates_nothing() {
        let mut m = Meta::new("pool");
        assert_eq!(m.allocate_where(|_| true), None);
        assert_eq!(m.allocate_where(|id| id != 77), Some(77));
    }

    #[test]
    fn transactions_open_refresh_and_close() {
        let mut m = Meta::new("pool");
        m.transaction_id = 41;
        assert_eq!(m.open("x", 7), 42);
        m.refresh(8);
        assert_eq!(m.open_transaction.as_ref().unwrap().device_id, 8);
        assert_eq!(m.closing(), Some((41, 42)));
        m.close();
        assert_eq!((m.transaction_id, m.open_transaction.clone()), (42, None));
        assert_eq!(m.closing(), None);
    }

    #[test]
    fn recovery_completes_rolls_back_or_refuses() {
        let mut m = Meta::new("pool");
        m.transaction_id = 5;
        assert_eq!(m.recover(9), Ok(Recovery::Clean));
        assert_eq!(m.transaction_id, 9, "with nothing in flight the pool's id is adopted");

        m.open("x", 3);
        m.devices.insert("x".into(), device(3));
        assert_eq!(m.recover(10), Ok(Recovery::Completed));
        assert_eq!((m.transaction_id, m.devices.len()), (10, 1));

        let t = Transaction { transaction_id: 11, layer: "y".into(), device_id: 4 };
        m.open("y", 4);
        m.devices.insert("y".into(), device(4));
        assert_eq!(m.recover(10), Ok(Recovery::RollBack(t.clone())));
        m.rolled_back(&t);
        assert!(!m.devices.contains_key("y") && m.open_transaction.is_none());
        assert_eq!(m.transaction_id, 10);

        // A delete rolled back after its record was dropped: nothing else goes.
        m.open("x", 9);
        let Ok(Recovery::RollBack(t)) = m.recover(10) else { panic!() };
        m.rolled_back(&t);
        assert!(m.devices.contains_key("x"), "x has device 3, not 9");

        m.open("z", 5);
        let e = m.recover(12).unwrap_err();
        assert!(e.contains("another program changes this pool"), "{e}");
    }

    #[test]
    fn the_record_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.json");
        assert_eq!(Meta::load(&path).unwrap(), None);
        let mut m = Meta::new("berth-thinpool");
        m.devices.insert("a".into(), device(1));
        m.open("b", 2);
        m.save(&path).unwrap();
        assert_eq!(Meta::load(&path).unwrap(), Some(m));
        std::fs::write(&path, b"{\"version\": 2}").unwrap();
        assert_eq!(Meta::load(&path).unwrap_err().kind, berth_plugin_api::ErrorKind::FailedPrecondition);
        std::fs::write(&path, b"not json").unwrap();
        let e = Meta::load(&path).unwrap_err();
        assert_eq!(e.kind, berth_plugin_api::ErrorKind::Internal);
        assert!(e.message.contains("metadata.json"), "{e}");
    }
}
