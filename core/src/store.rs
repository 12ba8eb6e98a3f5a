//! The state store (`redb`, one file under the daemon root) and the
//! **resource ledger** it holds.
//!
//! Every change a driver makes on the daemon's behalf is bracketed:
//!
//! 1. [`Store::intent`] durably records what is about to happen (a ledger
//!    entry: operation, object key, driver, data) *before* the driver call;
//! 2. [`Store::finish`] removes the entry and applies the object change in
//!    one transaction *after* the call succeeded, or [`Store::abandon`]
//!    removes it when the call failed.
//!
//! An entry still present at start-up is an operation a crash interrupted;
//! the engine's reconcile step finishes or rolls it back (see
//! [`crate::engine`]). Objects live in one table keyed `"<kind>/<name>"`,
//! values JSON.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use berth_plugin_api::{DriverError, DriverResult};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const LEDGER: TableDefinition<u64, &str> = TableDefinition::new("ledger");
const OBJECTS: TableDefinition<&str, &str> = TableDefinition::new("objects");

/// The store's file name under the daemon root.
pub const STORE_FILE: &str = "berth.redb";

/// One in-flight operation, as recorded before the driver call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// The operation, e.g. `volume.create`.
    pub op: String,
    /// The object it concerns, e.g. `volume/data1`.
    pub key: String,
    /// The driver that is being called.
    pub driver: String,
    /// What reconcile needs to finish or undo it.
    #[serde(default)]
    pub data: serde_json::Value,
    /// When it was recorded (seconds since the epoch).
    #[serde(default)]
    pub at: u64,
}

/// An object change applied together with finishing an intent.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Store `value` (JSON) under `key`.
    Put(String, serde_json::Value),
    /// Remove `key`.
    Delete(String),
}

/// The state store.
///
/// Writes are **group-committed** (leader/follower): a caller of
/// [`Store::intent`] or [`Store::finish`] that finds no commit running
/// becomes the committer and applies its own change and everything queued
/// meanwhile in one durable transaction, then keeps committing while more
/// is queued; callers arriving during a commit queue their change and wait
/// for the committer to answer. A caller returns only once its change is
/// on disk; concurrent callers share one fsync, and a lone caller commits
/// on its own thread with no hand-off.
pub struct Store {
    db: Database,
    path: PathBuf,
    next_seq: AtomicU64,
    queue: Queue,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// One write a caller waits for.
enum Write {
    Intent(u64, String),
    Finish(u64, Vec<(String, Option<String>)>),
}

struct Job {
    write: Write,
    done: std::sync::mpsc::SyncSender<Answer>,
}

/// What a waiting writer hears.
enum Answer {
    /// Its write was committed (or the commit failed).
    Done(Result<(), String>),
    /// Commit the queue yourself: the last committer handed over.
    Lead,
}

/// Writes waiting for a commit, and whether a caller is committing.
#[derive(Default)]
struct Queue {
    state: Mutex<(Vec<Job>, bool)>,
}

impl Store {
    /// Opens (or creates) the store under `root`. A store another daemon
    /// holds open is an `unavailable` error naming the file.
    pub fn open(root: &Path) -> DriverResult<Store> {
        std::fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format!("create {}", root.display()), &e))?;
        let path = root.join(STORE_FILE);
        let db = Database::create(&path).map_err(|e| {
            DriverError::unavailable(format!(
                "open state store {}: {e} (is another berthd using this root?)",
                path.display()
            ))
        })?;
        let err = |what: &str, e: &dyn std::fmt::Display| {
            DriverError::internal(format!("state store {}: {what}: {e}", path.display()))
        };
        // Make sure both tables exist, and find the next ledger sequence.
        let tx = db.begin_write().map_err(|e| err("begin", &e))?;
        let last = {
            tx.open_table(OBJECTS).map_err(|e| err("open objects", &e))?;
            let ledger = tx.open_table(LEDGER).map_err(|e| err("open ledger", &e))?;
            let last = ledger.last().map_err(|e| err("read ledger", &e))?;
            last.map(|(k, _)| k.value()).unwrap_or(0)
        };
        tx.commit().map_err(|e| err("commit", &e))?;
        Ok(Store { db, path, next_seq: AtomicU64::new(last + 1), queue: Queue::default() })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> DriverError {
        DriverError::internal(format!("state store {}: {what}: {e}", self.path.display()))
    }

    /// Makes `write` durable: commits it (with whatever else is queued)
    /// when no commit is running, else queues it and waits. Each caller
    /// commits at most one batch: a leader that finds more queued after
    /// its commit hands the lead to the oldest waiter, so no caller serves
    /// others for long.
    fn submit(&self, write: Write) -> DriverResult<()> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let mut lead = {
            let mut q = self.queue.state.lock().unwrap_or_else(|p| p.into_inner());
            q.0.push(Job { write, done });
            !std::mem::replace(&mut q.1, true)
        };
        loop {
            if lead {
                let jobs = std::mem::take(&mut self.queue.state.lock().unwrap_or_else(|p| p.into_inner()).0);
                // A panic inside the store must not leave the lead taken
                // forever (every later write would wait): it fails this
                // batch like any other commit error.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(&self.db, &jobs)))
                        .unwrap_or_else(|_| Err("the commit panicked".to_string()));
                for job in jobs {
                    let _ = job.done.send(Answer::Done(result.clone()));
                }
                let mut q = self.queue.state.lock().unwrap_or_else(|p| p.into_inner());
                match q.0.first() {
                    None => q.1 = false,
                    Some(next) => {
                        let _ = next.done.send(Answer::Lead);
                    }
                }
            }
            match wait.recv() {
                Ok(Answer::Done(Ok(()))) => return Ok(()),
                Ok(Answer::Done(Err(e))) => return Err(self.err("commit", e)),
                Ok(Answer::Lead) => lead = true,
                Err(_) => return Err(self.err("commit", "the committing thread vanished without an answer")),
            }
        }
    }

    /// Durably records `intent`; answers its sequence number.
    pub fn intent(&self, intent: &Intent) -> DriverResult<u64> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let json = serde_json::to_string(intent).map_err(|e| self.err("encode intent", e))?;
        self.submit(Write::Intent(seq, json))?;
        Ok(seq)
    }

    /// Marks intent `seq` done and applies `changes`, atomically.
    pub fn finish(&self, seq: u64, changes: &[Change]) -> DriverResult<()> {
        let encoded = changes
            .iter()
            .map(|c| match c {
                Change::Put(k, v) => serde_json::to_string(v).map(|j| (k.clone(), Some(j))),
                Change::Delete(k) => Ok((k.clone(), None)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err("encode object", e))?;
        self.submit(Write::Finish(seq, encoded))
    }

    /// Drops intent `seq` without changing any object (the call failed or
    /// was rolled back).
    pub fn abandon(&self, seq: u64) -> DriverResult<()> {
        self.finish(seq, &[])
    }

    /// Intents a crash left behind, oldest first.
    pub fn pending(&self) -> DriverResult<Vec<(u64, Intent)>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin read", e))?;
        let t = tx.open_table(LEDGER).map_err(|e| self.err("open ledger", e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| self.err("read ledger", e))? {
            let (k, v) = item.map_err(|e| self.err("read ledger", e))?;
            let intent: Intent = serde_json::from_str(v.value())
                .map_err(|e| self.err(&format!("decode ledger entry {}", k.value()), e))?;
            out.push((k.value(), intent));
        }
        Ok(out)
    }

    /// The object under `key`, decoded.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> DriverResult<Option<T>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin read", e))?;
        let t = tx.open_table(OBJECTS).map_err(|e| self.err("open objects", e))?;
        let Some(v) = t.get(key).map_err(|e| self.err("read object", e))? else {
            return Ok(None);
        };
        serde_json::from_str(v.value()).map(Some).map_err(|e| self.err(&format!("decode {key}"), e))
    }

    /// Every object whose key starts with `prefix`, in key order.
    pub fn list<T: DeserializeOwned>(&self, prefix: &str) -> DriverResult<Vec<(String, T)>> {
        let tx = self.db.begin_read().map_err(|e| self.err("begin read", e))?;
        let t = tx.open_table(OBJECTS).map_err(|e| self.err("open objects", e))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|e| self.err("read objects", e))? {
            let (k, v) = item.map_err(|e| self.err("read objects", e))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let value = serde_json::from_str(v.value()).map_err(|e| self.err(&format!("decode {key}"), e))?;
            out.push((key.to_string(), value));
        }
        Ok(out)
    }
}

fn apply(db: &Database, jobs: &[Job]) -> Result<(), String> {
    apply_tx(db, jobs).map_err(|e| e.to_string())
}

fn apply_tx(db: &Database, jobs: &[Job]) -> Result<(), Box<redb::Error>> {
    let tx = db.begin_write().map_err(|e| Box::new(e.into()))?;
    {
        let mut ledger = tx.open_table(LEDGER).map_err(|e| Box::new(e.into()))?;
        let mut objects = tx.open_table(OBJECTS).map_err(|e| Box::new(e.into()))?;
        for job in jobs {
            match &job.write {
                Write::Intent(seq, json) => {
                    ledger.insert(*seq, json.as_str()).map_err(|e| Box::new(e.into()))?;
                }
                Write::Finish(seq, changes) => {
                    ledger.remove(*seq).map_err(|e| Box::new(e.into()))?;
                    for (key, value) in changes {
                        match value {
                            Some(json) => objects.insert(key.as_str(), json.as_str()),
                            None => objects.remove(key.as_str()),
                        }
                        .map_err(|e| Box::new(e.into()))?;
                    }
                }
            }
        }
    }
    tx.commit().map_err(|e| Box::new(e.into()))?;
    Ok(())
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn intent(op: &str, key: &str) -> Intent {
        Intent { op: op.into(), key: key.into(), driver: "local".into(), data: serde_json::json!({}), at: 1 }
    }

    #[test]
    fn finished_intents_leave_objects_and_no_ledger_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let seq = store.intent(&intent("volume.create", "volume/a")).unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
        store.finish(seq, &[Change::Put("volume/a".into(), serde_json::json!({"n": 1}))]).unwrap();
        assert!(store.pending().unwrap().is_empty());
        assert_eq!(store.get::<serde_json::Value>("volume/a").unwrap(), Some(serde_json::json!({"n": 1})));
    }

    #[test]
    fn pending_intents_survive_reopen_in_order_and_sequences_continue() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.intent(&intent("volume.create", "volume/a")).unwrap();
            store.intent(&intent("volume.remove", "volume/b")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(
            pending.iter().map(|(s, i)| (*s, i.op.as_str())).collect::<Vec<_>>(),
            [(1, "volume.create"), (2, "volume.remove")]
        );
        assert_eq!(store.intent(&intent("x", "y")).unwrap(), 3);
    }

    #[test]
    fn list_returns_only_the_prefix_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let seq = store.intent(&intent("t", "t")).unwrap();
        let puts: Vec<Change> = ["volume/b", "volume/a", "network/x", "volumez/c"]
            .iter()
            .map(|k| Change::Put(k.to_string(), serde_json::json!(k)))
            .collect();
        store.finish(seq, &puts).unwrap();
        let keys: Vec<String> =
            store.list::<String>("volume/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["volume/a", "volume/b"]);
    }

    #[test]
    fn concurrent_writers_all_land_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            let key = format!("volume/{t}-{i}");
                            let seq = store.intent(&intent("volume.create", &key)).unwrap();
                            store.finish(seq, &[Change::Put(key, serde_json::json!(i))]).unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(store.pending().unwrap().is_empty());
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.list::<u32>("volume/").unwrap().len(), 400);
        assert_eq!(store.get::<u32>("volume/7-49").unwrap(), Some(49));
    }

    #[test]
    fn a_second_open_of_the_same_root_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert_eq!(err.kind, berth_plugin_api::ErrorKind::Unavailable, "{err}");
    }
}
