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
use std::sync::{Arc, Condvar, Mutex};

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
/// Writes are **group-committed**: [`Store::intent`] and [`Store::finish`]
/// hand their change to one committer thread, which applies everything
/// queued meanwhile in a single durable transaction and then wakes every
/// caller. A caller returns only once its change is on disk; concurrent
/// callers share one fsync instead of queueing behind each other's.
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    next_seq: AtomicU64,
    queue: Arc<Queue>,
    committer: Option<std::thread::JoinHandle<()>>,
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
    done: std::sync::mpsc::SyncSender<Result<(), String>>,
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<(Vec<Job>, bool)>,
    ready: Condvar,
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
        let db = Arc::new(db);
        let queue = Arc::new(Queue::default());
        let committer = {
            let (db, queue) = (Arc::clone(&db), Arc::clone(&queue));
            std::thread::Builder::new()
                .name("berth-store".into())
                .spawn(move || commit_loop(&db, &queue))
                .map_err(|e| DriverError::io("start the state store's committer thread", &e))?
        };
        Ok(Store { db, path, next_seq: AtomicU64::new(last + 1), queue, committer: Some(committer) })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> DriverError {
        DriverError::internal(format!("state store {}: {what}: {e}", self.path.display()))
    }

    /// Queues `write` for the committer and waits until it is durable.
    fn submit(&self, write: Write) -> DriverResult<()> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        {
            let mut q = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            q.0.push(Job { write, done });
        }
        self.queue.ready.notify_one();
        match wait.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.err("commit", e)),
            Err(_) => Err(self.err("commit", "the committer thread is gone")),
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

impl Drop for Store {
    fn drop(&mut self) {
        {
            let mut q = self.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            q.1 = true;
        }
        self.queue.ready.notify_one();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}

/// The committer: takes everything queued, applies it in one transaction,
/// commits durably, answers every caller; until the store is dropped and
/// the queue is empty.
fn commit_loop(db: &Database, queue: &Queue) {
    loop {
        let jobs = {
            let mut q = queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
            while q.0.is_empty() && !q.1 {
                q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.0.is_empty() {
                return;
            }
            std::mem::take(&mut q.0)
        };
        let result = apply(db, &jobs);
        for job in jobs {
            let _ = job.done.send(result.clone());
        }
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
