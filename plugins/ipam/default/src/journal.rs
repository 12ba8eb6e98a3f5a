//! The journal: one line per address change, appended to
//! `<root>/ipam-journal` and made durable before the call answers, then
//! replayed over the snapshot (`ipam-state.json`) at load.
//!
//! ```text
//! {"g":7,"pool":"local/10.1.0.0/16","op":"any","addr":"10.1.0.5"}
//! {"g":7,"pool":"local/10.1.0.0/16","op":"free","addr":"10.1.0.5"}
//! ```
//!
//! * `g` is the generation of the snapshot the record applies over. Every
//!   snapshot gets the next generation and is written (atomically) before
//!   the journal is emptied, so a crash in between leaves records of an
//!   older generation, which the load ignores: the snapshot has them.
//! * A record is written (one `write(2)` on an `O_APPEND` file) while the
//!   state lock is held, so records are in the order of the changes; it is
//!   made durable with `fdatasync(2)` after the lock is released, and one
//!   `fdatasync` covers every record written before it started, so callers
//!   running at the same time share it (group commit).
//! * A write that fails is cut off again and the change undone. A sync
//!   that fails leaves the driver unusable (every call answers an error
//!   naming the journal): after a failed `fdatasync` the kernel may have
//!   dropped the data, and a later one may report success.
//! * A last line without its newline is a write cut short by a crash: the
//!   call never answered, so it is ignored. Any other line that does not
//!   parse makes the journal corrupt.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

/// The name of the journal under the driver's root.
pub const JOURNAL_FILE: &str = "ipam-journal";

/// What a record did to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Op {
    /// A specific address was taken.
    Take,
    /// Any address was handed out (it moves the serial cursor).
    Any,
    /// The pool's gateway was taken.
    Gateway,
    /// An address was released.
    Free,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The snapshot generation the record applies over.
    pub g: u64,
    /// The pool id.
    pub pool: String,
    /// What happened.
    pub op: Op,
    /// The address, bare.
    pub addr: String,
}

/// Reads the journal: its complete records, and whether a torn last line
/// was dropped. A missing journal is empty.
pub(crate) fn read(path: &Path) -> DriverResult<(Vec<Record>, bool)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(DriverError::io(format!("read IPAM journal {}", path.display()), &e)),
    };
    let mut records = Vec::new();
    let lines = bytes.split_inclusive(|b| *b == b'\n').enumerate();
    let mut torn = false;
    for (n, line) in lines {
        let Some(line) = line.strip_suffix(b"\n") else {
            // No newline: the last write, cut short by a crash.
            torn = true;
            break;
        };
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => records.push(r),
            Err(e) => {
                return Err(DriverError::internal(format!(
                    "corrupt IPAM journal {}: line {}: {e}; repair it, or move it aside to lose the \
                     address changes since the last snapshot ({})",
                    path.display(),
                    n + 1,
                    crate::STATE_FILE
                )))
            }
        }
    }
    Ok((records, torn))
}

/// The journal's writing end. Lives under the driver's state lock.
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
    /// The file's length.
    len: u64,
    /// Records written since the last snapshot (or attempt at one).
    pub records: u64,
    buf: Vec<u8>,
    sync: std::sync::Arc<Syncer>,
    /// Unit tests: make the next writes fail.
    #[cfg(test)]
    pub fail_writes: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating) the journal for appending; its directory entry is
    /// made durable.
    pub fn open(path: &Path) -> DriverResult<Journal> {
        let what = |e: io::Error| DriverError::io(format!("open IPAM journal {}", path.display()), &e);
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(what)?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(what)?;
        }
        let len = file.metadata().map_err(what)?.len();
        let sync = Syncer {
            file: file.try_clone().map_err(what)?,
            path: path.to_path_buf(),
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            broken: OnceLock::new(),
        };
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            len,
            records: 0,
            buf: Vec::with_capacity(128),
            sync: std::sync::Arc::new(sync),
            #[cfg(test)]
            fail_writes: false,
        })
    }

    /// The syncing end, shared outside the state lock.
    pub fn syncer(&self) -> std::sync::Arc<Syncer> {
        std::sync::Arc::clone(&self.sync)
    }

    /// Writes one record; see [`Journal::append_parts`].
    #[cfg(test)]
    pub fn append(&mut self, record: &Record) -> DriverResult<u64> {
        self.append_parts(record.g, &record.pool, record.op, &record.addr)
    }

    /// Writes one record, encoded straight into the buffer (`addr` is an IP
    /// address, which needs no escaping); answers the sequence number to
    /// pass to [`Syncer::sync`]. On an error nothing is left in the file
    /// (or, if the torn record cannot be cut off, the driver is made
    /// unusable).
    pub fn append_parts(&mut self, g: u64, pool: &str, op: Op, addr: &str) -> DriverResult<u64> {
        self.sync.check()?;
        self.buf.clear();
        let op = match op {
            Op::Take => "take",
            Op::Any => "any",
            Op::Gateway => "gateway",
            Op::Free => "free",
        };
        let _ = write!(self.buf, "{{\"g\":{g},\"pool\":");
        serde_json::to_writer(&mut self.buf, pool)
            .map_err(|e| DriverError::internal(format!("encode an IPAM journal record: {e}")))?;
        let _ = writeln!(self.buf, ",\"op\":\"{op}\",\"addr\":\"{addr}\"}}");
        #[cfg(test)]
        let injected = self.fail_writes.then(|| io::Error::other("no space left on device (injected)"));
        #[cfg(not(test))]
        let injected: Option<io::Error> = None;
        let written = match injected {
            Some(e) => Err(e),
            None => self.file.write_all(&self.buf),
        };
        if let Err(e) = written {
            if let Err(cut) = self.file.set_len(self.len) {
                self.sync.mark_broken(format!(
                    "a failed write left a torn record in IPAM journal {} that cannot be cut off ({cut})",
                    self.path.display()
                ));
            }
            return Err(DriverError::io(format!("append to IPAM journal {}", self.path.display()), &e));
        }
        self.len += self.buf.len() as u64;
        self.records += 1;
        Ok(self.sync.written.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Empties the journal after a snapshot made its records redundant.
    /// Best effort: records left behind are of an older generation.
    pub fn reset(&mut self) {
        self.records = 0;
        if self.file.set_len(0).and_then(|()| self.file.sync_all()).is_ok() {
            self.len = 0;
        } else if let Ok(m) = self.file.metadata() {
            self.len = m.len();
        }
    }
}

/// Makes journal records durable, sharing one `fdatasync` between every
/// caller waiting at the time.
#[derive(Debug)]
pub(crate) struct Syncer {
    file: File,
    path: PathBuf,
    /// The sequence number of the last record written.
    written: AtomicU64,
    /// The sequence number up to which records are durable.
    synced: Mutex<u64>,
    /// Why the journal can no longer be trusted.
    broken: OnceLock<String>,
}

impl Syncer {
    /// An error when the journal can no longer be trusted.
    pub fn check(&self) -> DriverResult<()> {
        match self.broken.get() {
            Some(why) => Err(DriverError::internal(format!(
                "the IPAM driver stopped taking changes: {why}; restart the daemon once the disk is healthy"
            ))),
            None => Ok(()),
        }
    }

    fn mark_broken(&self, why: String) {
        let _ = self.broken.set(why);
    }

    /// Returns once record `seq` (and every one before it) is durable.
    pub fn sync(&self, seq: u64) -> DriverResult<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        self.check()?;
        if *synced >= seq {
            return Ok(());
        }
        // Everything written before this point is covered by the sync.
        let target = self.written.load(Ordering::SeqCst);
        match self.file.sync_data() {
            Ok(()) => {
                *synced = target;
                Ok(())
            }
            Err(e) => {
                self.mark_broken(format!("fdatasync of IPAM journal {} failed: {e}", self.path.display()));
                Err(DriverError::io(format!("fdatasync IPAM journal {}", self.path.display()), &e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(g: u64, op: Op, addr: &str) -> Record {
        Record { g, pool: "local/10.0.0.0/24".into(), op, addr: addr.into() }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        assert_eq!(read(&path).unwrap(), (vec![], false));
        let mut j = Journal::open(&path).unwrap();
        let sync = j.syncer();
        assert_eq!(j.append(&rec(3, Op::Any, "10.0.0.1")).unwrap(), 1);
        assert_eq!(j.append(&rec(3, Op::Free, "10.0.0.1")).unwrap(), 2);
        sync.sync(2).unwrap();
        sync.sync(1).unwrap();
        let line = fs::read_to_string(&path).unwrap();
        assert!(line.starts_with(r#"{"g":3,"pool":"local/10.0.0.0/24","op":"any","addr":"10.0.0.1"}"#));
        OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"g":3,"po"#).unwrap();
        let (records, torn) = read(&path).unwrap();
        assert_eq!(records, vec![rec(3, Op::Any, "10.0.0.1"), rec(3, Op::Free, "10.0.0.1")]);
        assert!(torn);
        // A bad complete line is corruption, naming the file and line.
        fs::write(&path, "{\"g\":1}\n").unwrap();
        let e = read(&path).unwrap_err();
        assert!(e.message.contains("corrupt IPAM journal") && e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_reset_empties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let mut j = Journal::open(&path).unwrap();
        j.append(&rec(0, Op::Take, "10.0.0.9")).unwrap();
        j.fail_writes = true;
        assert!(j.append(&rec(0, Op::Take, "10.0.0.8")).is_err());
        j.fail_writes = false;
        assert_eq!(read(&path).unwrap().0, vec![rec(0, Op::Take, "10.0.0.9")]);
        j.reset();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        j.append(&rec(1, Op::Take, "10.0.0.7")).unwrap();
        assert_eq!(read(&path).unwrap().0, vec![rec(1, Op::Take, "10.0.0.7")]);
        j.syncer().mark_broken("test".into());
        assert!(j
            .append(&rec(1, Op::Take, "10.0.0.6"))
            .unwrap_err()
            .message
            .contains("stopped taking changes"));
    }
}
