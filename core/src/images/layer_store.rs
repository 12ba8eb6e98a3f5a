//! The layer store: image layers keyed by chain ID over the configured
//! storage driver.
//!
//! A layer's id in the driver is the hex of its chain ID, its parent's id
//! the hex of the parent chain ID, so a layer shared by two images is
//! stored once. Every driver create and remove is bracketed by a ledger
//! intent (`layer.create`, `layer.remove`); reconcile removes what an
//! interrupted create made and finishes an interrupted remove.
//!
//! A layer's content arrives in one of two ways, as the conformance suite
//! imports layers:
//!
//! * the driver has a [`DiffDriver`](berth_plugin_api::DiffDriver):
//!   `create` (read-only) then `apply_diff` — and when `apply_diff`
//!   answers `unsupported` (a remote driver offers the capability whatever
//!   the driver behind it has), the layer is removed and made the other way;
//! * otherwise `create_rw`, `get`, the core's [`layers::apply`] onto the
//!   path, `put` (a read-only layer's mount cannot be written).
//!
//! Either way the uncompressed stream is hashed while it is applied and
//! must hash to the diff ID `read_archive` verified; a failed apply removes
//! the half-made layer (both errors are reported when that fails too, and
//! the intent then stays for reconcile to finish the job).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use berth_plugin_api::storage::{ApplyDiffRequest, CreateRequest, GetRequest, PutRequest, RemoveRequest};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, StorageDriver};
use sha2::{Digest as _, Sha256};

use super::records::{hex_of, layer_key, LayerRecord};
use super::service::{ImageService, OP_LAYER_CREATE, OP_LAYER_REMOVE};
use super::{hex, LayerRef};
use crate::call::Driver;
use crate::layers::{self, ApplyOptions, Compression};
use crate::store::{now_secs, Change};

/// How long one layer apply may take in the driver.
const APPLY_DEADLINE: Duration = Duration::from_secs(3600);
/// How often progress is reported while a layer is applied.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Read buffer for layer blobs.
const BUF: usize = 1 << 20;

/// A failed layer make: the error, and whether the driver was left clean.
struct Failure {
    error: DriverError,
    clean: bool,
}

impl Failure {
    fn clean(error: DriverError) -> Failure {
        // A driver call that timed out may still finish inside the driver.
        let clean = error.kind != ErrorKind::Timeout;
        Failure { error, clean }
    }
}

impl ImageService {
    /// Makes layer `chain` on `parent` from `layer`'s blob in the storage
    /// driver, recorded with no image reference yet. `tick` hears how many
    /// bytes of the blob were read so far.
    pub(super) fn create_layer(
        &self,
        driver: &Driver<dyn StorageDriver>,
        chain: &str,
        parent: Option<&str>,
        layer: &LayerRef,
        tick: &mut dyn FnMut(u64),
    ) -> DriverResult<LayerRecord> {
        let id = hex_of(chain).to_string();
        let parent_id = parent.map(|p| hex_of(p).to_string()).unwrap_or_default();
        let data = serde_json::json!({
            "chain_id": chain, "id": id, "parent": parent, "diff_id": layer.diff_id.to_string(),
        });
        let seq = self.intent(OP_LAYER_CREATE, layer_key(chain), driver.name(), data)?;
        self.crash_point("layer.create:after-intent");
        let size = match make(driver, &id, &parent_id, layer, tick) {
            Ok(size) => size,
            Err(Failure { error, clean }) => {
                if clean {
                    self.store().abandon(seq)?;
                }
                return Err(error.context(format!("layer {} (diff id {})", chain, layer.diff_id)));
            }
        };
        self.crash_point("layer.create:after-driver");
        let record = LayerRecord {
            chain_id: chain.to_string(),
            diff_id: layer.diff_id.to_string(),
            parent: parent.map(str::to_string),
            size,
            refs: 0,
            driver: driver.name().to_string(),
            created_at: now_secs(),
        };
        self.store().finish(seq, &[Change::Put(layer_key(chain), super::records::encode(&record)?)])?;
        self.write().layers.insert(chain.to_string(), record.clone());
        Ok(record)
    }

    /// Removes layer `chain` from its driver and its record.
    pub(super) fn remove_layer(&self, chain: &str) -> DriverResult<()> {
        let record = self
            .read()
            .layers
            .get(chain)
            .cloned()
            .ok_or_else(|| DriverError::not_found(format!("no record of layer {chain}")))?;
        let driver = self.drivers().storage(&record.driver)?;
        let id = hex_of(chain).to_string();
        let data = serde_json::json!({ "chain_id": chain, "id": id });
        let seq = self.intent(OP_LAYER_REMOVE, layer_key(chain), &record.driver, data)?;
        self.crash_point("layer.remove:after-intent");
        if let Err(e) = remove(&driver, &id) {
            if e.kind != ErrorKind::Timeout {
                self.store().abandon(seq)?;
            }
            return Err(e.context(format!("remove layer {chain}")));
        }
        self.crash_point("layer.remove:after-driver");
        self.store().finish(seq, &[Change::Delete(layer_key(chain))])?;
        self.write().layers.remove(chain);
        Ok(())
    }

    /// Removes, in the order given (callers pass children first), every
    /// layer of `chains` no image uses and no other layer sits on. Answers
    /// the chain IDs removed; a failure stops the walk (the parents below
    /// cannot go either) and is answered too — the start-up sweep retries.
    pub(super) fn release(&self, chains: &[String]) -> (Vec<String>, Option<DriverError>) {
        let mut removed = Vec::new();
        for chain in chains {
            let unused = {
                let index = self.read();
                index.layers.get(chain).is_some_and(|l| l.refs == 0) && !index.has_children(chain)
            };
            if !unused {
                continue;
            }
            match self.remove_layer(chain) {
                Ok(()) => removed.push(chain.clone()),
                Err(e) => return (removed, Some(e)),
            }
        }
        (removed, None)
    }
}

/// Removes layer `id` from `driver`; one that is not there is no error.
pub(super) fn remove(driver: &Driver<dyn StorageDriver>, id: &str) -> DriverResult<()> {
    let req = RemoveRequest::new(id);
    match driver.call("remove", move |d| d.remove(req)) {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes layer `id` on `parent` (driver ids) from `layer`'s blob; answers
/// the bytes it adds. On failure the layer is removed again (`clean` says
/// whether that worked).
fn make(
    driver: &Driver<dyn StorageDriver>,
    id: &str,
    parent: &str,
    layer: &LayerRef,
    tick: &mut dyn FnMut(u64),
) -> Result<u64, Failure> {
    let native = driver.call("as_diff", |d| Ok(d.as_diff().is_some())).map_err(Failure::clean)?;
    if native {
        create(driver, id, parent, false)?;
        match native_apply(driver, id, parent, layer, tick) {
            Ok(size) => return Ok(size),
            Err(e) if e.kind == ErrorKind::Unsupported => {
                tracing::debug!(layer = id, "apply_diff unsupported after all: naive apply instead");
                remove(driver, id).map_err(|r| Failure {
                    error: r.context(format!("remove layer {id} after apply_diff answered unsupported")),
                    clean: false,
                })?;
            }
            Err(e) => return Err(discard(driver, id, e)),
        }
    }
    create(driver, id, parent, true)?;
    naive_apply(driver, id, layer, tick).map_err(|e| discard(driver, id, e))
}

/// Creates layer `id` (read-only, or read-write for the naive apply). A
/// leftover of the same id the daemon has no record of (a removal that
/// failed earlier) is removed and the create tried once more.
fn create(driver: &Driver<dyn StorageDriver>, id: &str, parent: &str, rw: bool) -> Result<(), Failure> {
    let attempt = || {
        let req = CreateRequest::new(id, parent);
        let method = if rw { "create_rw" } else { "create" };
        driver.call(method, move |d| if rw { d.create_rw(req) } else { d.create(req) })
    };
    match attempt() {
        Err(e) if e.kind == ErrorKind::AlreadyExists => {
            tracing::warn!(
                layer = id,
                "the driver has a leftover layer of this id with no record: replacing it"
            );
            remove(driver, id)
                .map_err(|r| Failure::clean(r.context(format!("remove leftover layer {id}"))))?;
            attempt().map_err(Failure::clean)
        }
        other => other.map_err(Failure::clean),
    }
}

/// Removes the half-made layer `id` after `error`; both errors when that
/// fails too.
fn discard(driver: &Driver<dyn StorageDriver>, id: &str, error: DriverError) -> Failure {
    match remove(driver, id) {
        Ok(()) => Failure { error, clean: true },
        Err(r) => Failure {
            error: DriverError::new(
                error.kind,
                format!("{}; removing the half-made layer {id} failed too: {}", error.message, r.message),
            ),
            clean: false,
        },
    }
}

/// `create` + `apply_diff` of the uncompressed stream.
fn native_apply(
    driver: &Driver<dyn StorageDriver>,
    id: &str,
    parent: &str,
    layer: &LayerRef,
    tick: &mut dyn FnMut(u64),
) -> DriverResult<u64> {
    let counter = Arc::new(AtomicU64::new(0));
    let mut stream = Hashing::open(&layer.path, layer.compression, Arc::clone(&counter))?;
    let req = ApplyDiffRequest::new(id, parent);
    let driver = driver.clone();
    let (size, digest) = with_progress(&counter, tick, move || {
        driver.call_with_deadline("apply_diff", APPLY_DEADLINE, move |d| {
            let diff = d
                .as_diff()
                .ok_or_else(|| DriverError::unsupported("the driver no longer offers its diff capability"))?;
            let size = diff.apply_diff(req, &mut stream)?.size;
            Ok((size, stream.finish()?))
        })
    })?;
    check_digest(layer, &digest)?;
    Ok(size)
}

/// `get` + [`layers::apply`] onto the path + `put`.
fn naive_apply(
    driver: &Driver<dyn StorageDriver>,
    id: &str,
    layer: &LayerRef,
    tick: &mut dyn FnMut(u64),
) -> DriverResult<u64> {
    let get = GetRequest::new(id);
    let path = driver.call("get", move |d| d.get(get))?.path;
    let counter = Arc::new(AtomicU64::new(0));
    let applied =
        Hashing::open(&layer.path, layer.compression, Arc::clone(&counter)).and_then(|mut stream| {
            with_progress(&counter, tick, move || {
                let report = layers::apply(Path::new(&path), &mut stream, &ApplyOptions::default())?;
                Ok((report.size, stream.finish()?))
            })
        });
    let put = PutRequest::new(id);
    let released = driver.call("put", move |d| d.put(put));
    let (size, digest) = match (applied, released) {
        (Ok(done), Ok(())) => done,
        (Err(e), Ok(())) | (Ok(_), Err(e)) => return Err(e),
        (Err(e), Err(p)) => {
            return Err(DriverError::new(
                e.kind,
                format!("{}; and releasing its mount failed: {}", e.message, p.message),
            ))
        }
    };
    check_digest(layer, &digest)?;
    Ok(size)
}

/// An invalid-argument error unless the applied stream hashed to the
/// layer's (verified) diff ID: the blob changed after verification.
fn check_digest(layer: &LayerRef, hex: &str) -> DriverResult<()> {
    if layer.diff_id.digest() == hex {
        Ok(())
    } else {
        Err(DriverError::invalid_argument(format!(
            "the layer applied from {} hashes to sha256:{hex}, not to its verified diff id {}: \
             the blob changed after verification",
            layer.path.display(),
            layer.diff_id
        )))
    }
}

/// Runs `work` on a scoped thread while this one reports `counter` to
/// `tick` every [`PROGRESS_EVERY`].
fn with_progress<T: Send>(
    counter: &AtomicU64,
    tick: &mut dyn FnMut(u64),
    work: impl FnOnce() -> DriverResult<T> + Send,
) -> DriverResult<T> {
    let (done_tx, done) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let out = work();
            let _ = done_tx.send(());
            out
        });
        let mut last = 0;
        while let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(PROGRESS_EVERY) {
            let now = counter.load(Ordering::Relaxed);
            if now != last {
                last = now;
                tick(now);
            }
        }
        handle.join().unwrap_or_else(|_| Err(DriverError::internal("applying a layer panicked")))
    })
}

/// A blob file read through, counting the bytes read.
struct Counting {
    inner: File,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The uncompressed stream of a layer blob, hashed as it is read.
struct Hashing {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
}

impl Hashing {
    /// Opens the blob at `path`, compressed with `compression`.
    fn open(path: &Path, compression: Compression, count: Arc<AtomicU64>) -> DriverResult<Hashing> {
        let file = File::open(path)
            .map_err(|e| DriverError::io(format_args!("open layer blob {}", path.display()), &e))?;
        let raw = BufReader::with_capacity(BUF, Counting { inner: file, count });
        let inner: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw).map_err(|e| {
                DriverError::io(format_args!("start zstd decoder for {}", path.display()), &e)
            })?),
        };
        Ok(Hashing { inner, hasher: Sha256::new() })
    }

    /// Reads what the applier left (tar padding) and answers the hex
    /// sha256 of the whole uncompressed stream.
    fn finish(&mut self) -> DriverResult<String> {
        std::io::copy(self, &mut std::io::sink())
            .map_err(|e| DriverError::invalid_argument(format!("read the end of the layer stream: {e}")))?;
        Ok(hex(&std::mem::take(&mut self.hasher).finalize()))
    }
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
