//! [`ImageService`]: load, remove and resolve images; the state they live
//! in. Listing and inspecting are in `inspect.rs`, saving in `save.rs`,
//! start-up recovery in `reconcile.rs`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use berth_plugin_api::{DriverError, DriverResult, StorageDriver};
use serde::{Deserialize, Serialize};

use super::content::ContentStore;
use super::records::{
    hex_of, image_key, normalize_reference, repository, Batch, BlobRef, ImageRecord, Index,
};
use super::{is_sha256_hex, read_archive, ImageEntry};
use crate::call::Driver;
use crate::registry::Registry;
use crate::store::{now_secs, Intent, Store};

/// Ledger operation: a layer is being made in the storage driver.
pub const OP_LAYER_CREATE: &str = "layer.create";
/// Ledger operation: a layer is being removed from the storage driver.
pub const OP_LAYER_REMOVE: &str = "layer.remove";
/// Ledger operation: an image's records are being written after a load.
pub const OP_IMAGE_LOAD: &str = "image.load";
/// Ledger operation: an image is being untagged or deleted.
pub const OP_IMAGE_REMOVE: &str = "image.remove";
/// Ledger operation: the start-up sweep corrects layer reference counts.
pub const OP_IMAGE_SWEEP: &str = "image.sweep";

/// Where the image service finds the storage driver its layers live in:
/// the registry in the daemon, one linked driver in tests.
pub trait StorageDrivers: Send + Sync + std::fmt::Debug {
    /// The ready storage driver `name`.
    fn storage(&self, name: &str) -> DriverResult<Driver<dyn StorageDriver>>;
}

impl StorageDrivers for Registry {
    fn storage(&self, name: &str) -> DriverResult<Driver<dyn StorageDriver>> {
        Registry::storage(self, name)
    }
}

impl StorageDrivers for Driver<dyn StorageDriver> {
    fn storage(&self, name: &str) -> DriverResult<Driver<dyn StorageDriver>> {
        if name == self.name() {
            Ok(self.clone())
        } else {
            Err(DriverError::not_found(format!("no storage driver named {name:?} is configured")))
        }
    }
}

/// An image `load` stored, with the tags it now has from the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// `sha256:<hex>` of its config.
    pub id: String,
    /// The references the archive gave it (`name:tag`, familiar form).
    pub tags: Vec<String>,
}

/// What happens to one layer during a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerState {
    /// Being applied to the storage driver (`bytes` of `total_bytes` read).
    Loading,
    /// Already stored (same chain ID): nothing to do.
    Exists,
    /// Applied and recorded.
    Applied,
}

/// One step of a load, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadProgress {
    /// Which image of the archive (1-based).
    pub image: usize,
    /// How many images the archive holds.
    pub images: usize,
    /// Which layer of that image (1-based).
    pub layer: usize,
    /// How many layers the image has.
    pub layers: usize,
    /// The layer's diff ID.
    pub diff_id: String,
    /// Bytes of the layer blob (as stored in the archive) read so far.
    pub bytes: u64,
    /// The blob's size.
    pub total_bytes: u64,
    /// What is happening to the layer.
    pub state: LayerState,
}

/// One line of Docker's `DELETE /images/{name}` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteItem {
    /// A reference that was removed.
    #[serde(rename = "Untagged", default, skip_serializing_if = "Option::is_none")]
    pub untagged: Option<String>,
    /// An image ID or layer chain ID that was deleted.
    #[serde(rename = "Deleted", default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

impl DeleteItem {
    fn untagged(reference: &str) -> DeleteItem {
        DeleteItem { untagged: Some(reference.to_string()), deleted: None }
    }

    fn deleted(id: &str) -> DeleteItem {
        DeleteItem { untagged: None, deleted: Some(id.to_string()) }
    }
}

/// Images over one storage driver. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    drivers: Arc<dyn StorageDrivers>,
    driver_name: String,
    store: Arc<Store>,
    content: ContentStore,
    crash_at: Option<String>,
    index: RwLock<Index>,
    /// Held by every operation that changes records or layers (load,
    /// remove, the sweep), so they never interleave; readers take only
    /// the index lock.
    ops: Mutex<()>,
}

/// The refusal for a name that resolves to nothing.
pub(super) fn no_such(name: &str) -> DriverError {
    DriverError::not_found(format!("no such image: {name}"))
}

impl ImageService {
    /// A service keeping layers in storage driver `driver_name` (found
    /// through `drivers` when first needed, so an unavailable driver does
    /// not stop the daemon), records in `store` and blobs under `dir`
    /// (`<daemon root>/images`). Loads every record; empties `dir/tmp`.
    /// `crash_at` is a test hook (`BERTH_CRASH_AT`): abort the process at
    /// the named point of an operation, to prove reconcile.
    pub fn new(
        drivers: Arc<dyn StorageDrivers>,
        driver_name: impl Into<String>,
        store: Arc<Store>,
        dir: &Path,
        crash_at: Option<String>,
    ) -> DriverResult<ImageService> {
        let content = ContentStore::open(dir)?;
        let index = Index::load(&store)?;
        Ok(ImageService {
            inner: Arc::new(Inner {
                drivers,
                driver_name: driver_name.into(),
                store,
                content,
                crash_at,
                index: RwLock::new(index),
                ops: Mutex::new(()),
            }),
        })
    }

    /// The storage driver new layers go to.
    pub fn driver_name(&self) -> &str {
        &self.inner.driver_name
    }

    pub(super) fn drivers(&self) -> &Arc<dyn StorageDrivers> {
        &self.inner.drivers
    }

    pub(super) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(super) fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.inner.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_ops(&self) -> MutexGuard<'_, ()> {
        self.inner.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn crash_point(&self, point: &str) {
        if self.inner.crash_at.as_deref() == Some(point) {
            tracing::error!(point, "BERTH_CRASH_AT reached: aborting");
            std::process::abort();
        }
    }

    pub(super) fn intent(
        &self,
        op: &str,
        key: String,
        driver: &str,
        data: serde_json::Value,
    ) -> DriverResult<u64> {
        self.inner.store.intent(&Intent { op: op.into(), key, driver: driver.into(), data, at: now_secs() })
    }

    /// Writes `batch` under a ledger intent `op` on `key`, then mirrors it
    /// into the index. `crash` names the crash point between the two.
    pub(super) fn commit(&self, op: &str, key: String, batch: Batch, crash: &str) -> DriverResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let changes = batch.changes()?;
        let data = serde_json::json!({ "key": key });
        let seq = self.intent(op, key, &self.inner.driver_name, data)?;
        self.crash_point(crash);
        self.inner.store.finish(seq, &changes)?;
        batch.apply(&mut self.write());
        Ok(())
    }

    /// How many images there are (for `berth info`).
    pub fn count(&self) -> usize {
        self.read().images.len()
    }

    /// Loads every image of a docker-save archive or OCI layout (plain,
    /// gzip or zstd) read from `reader`; every digest is verified before
    /// anything is stored. Layers already stored (same chain ID) are not
    /// stored again; tags move from older images to the new one (the older
    /// image stays, untagged, as in Docker). Calls `progress` as work
    /// advances. On failure, what this load made and no image uses is
    /// removed again, and the archive's spool is always removed.
    pub fn load(
        &self,
        reader: &mut dyn Read,
        progress: &mut dyn FnMut(&LoadProgress),
    ) -> DriverResult<Vec<LoadedImage>> {
        let spool = self.inner.content.spool()?;
        let archive = read_archive(reader, spool.path())?;
        // Every tag is checked before anything is stored.
        let mut plans = Vec::with_capacity(archive.images.len());
        for entry in &archive.images {
            let mut tags: Vec<String> = Vec::new();
            for raw in &entry.tags {
                let t = normalize_reference(raw).map_err(|e| e.context("image archive"))?;
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            plans.push((entry, tags));
        }
        let _ops = self.lock_ops();
        let total = plans.len();
        let mut made = Vec::new();
        let mut new_blobs = Vec::new();
        let mut loaded = Vec::with_capacity(total);
        for (n, (entry, tags)) in plans.into_iter().enumerate() {
            let step = Step { image: n + 1, images: total };
            match self.load_one(step, entry, tags, spool.path(), progress, &mut made, &mut new_blobs) {
                Ok(image) => loaded.push(image),
                Err(e) => return Err(self.undo_load(e, &made, &new_blobs)),
            }
        }
        Ok(loaded)
    }

    /// Stores one image of an archive: its layers, its blobs, its records.
    #[allow(clippy::too_many_arguments)]
    fn load_one(
        &self,
        step: Step,
        entry: &ImageEntry,
        tags: Vec<String>,
        spool: &Path,
        progress: &mut dyn FnMut(&LoadProgress),
        made: &mut Vec<String>,
        new_blobs: &mut Vec<String>,
    ) -> DriverResult<LoadedImage> {
        let id = entry.config_digest.to_string();
        let chains: Vec<String> = entry.chain_ids().iter().map(|d| d.to_string()).collect();
        let mut driver = None;
        for (j, layer) in entry.layers.iter().enumerate() {
            let chain = &chains[j];
            let parent = j.checked_sub(1).map(|p| chains[p].as_str());
            let base = LoadProgress {
                image: step.image,
                images: step.images,
                layer: j + 1,
                layers: entry.layers.len(),
                diff_id: layer.diff_id.to_string(),
                bytes: 0,
                total_bytes: layer.size,
                state: LayerState::Loading,
            };
            let stored = self.read().layers.get(chain).map(|l| l.driver.clone());
            match stored {
                Some(d) if d != self.inner.driver_name => {
                    return Err(DriverError::failed_precondition(format!(
                        "layer {chain} is stored by storage driver {d:?}, but the daemon now uses {:?}: \
                         remove the images using it first",
                        self.inner.driver_name
                    )))
                }
                Some(_) => {
                    progress(&LoadProgress { state: LayerState::Exists, bytes: layer.size, ..base });
                }
                None => {
                    progress(&base);
                    if driver.is_none() {
                        driver = Some(self.inner.drivers.storage(&self.inner.driver_name)?);
                    }
                    let d = driver.as_ref().expect("set above");
                    let mut tick = |bytes: u64| progress(&LoadProgress { bytes, ..base.clone() });
                    self.create_layer(d, chain, parent, layer, &mut tick)?;
                    made.push(chain.clone());
                    progress(&LoadProgress { state: LayerState::Applied, bytes: layer.size, ..base });
                }
            }
            let blob = layer.digest.digest();
            if self.inner.content.put(blob, &layer.path)? {
                new_blobs.push(blob.to_string());
            }
        }
        let config_hex = entry.config_digest.digest();
        let config_path = spool.join(format!("sha256-{config_hex}"));
        let config_bytes = std::fs::read(&config_path).map_err(|e| {
            DriverError::io(format_args!("read spooled config {}", config_path.display()), &e)
        })?;
        let config: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| DriverError::invalid_argument(format!("image config {id} is not JSON: {e}")))?;
        if self.inner.content.put(config_hex, &config_path)? {
            new_blobs.push(config_hex.to_string());
        }
        let blobs = entry
            .layers
            .iter()
            .map(|l| BlobRef {
                digest: l.digest.to_string(),
                size: l.size,
                media_type: l.media_type.to_string(),
            })
            .collect();
        let diff_ids = entry.layers.iter().map(|l| l.diff_id.to_string()).collect();
        let fresh = ImageRecord {
            id: id.clone(),
            created: config
                .get("created")
                .and_then(|c| c.as_str())
                .and_then(super::inspect::unix_seconds)
                .unwrap_or(0),
            config,
            config_size: config_bytes.len() as u64,
            chain_ids: chains,
            diff_ids,
            blobs,
            tags: Vec::new(),
            size: 0,
            loaded_at: now_secs(),
            last_tag_time: None,
        };
        self.store_image(fresh, &tags)?;
        Ok(LoadedImage { id, tags })
    }

    /// Writes the records of a loaded image: the image (unless it exists),
    /// one more reference on each of its layers, and `tags` moved to it.
    fn store_image(&self, fresh: ImageRecord, tags: &[String]) -> DriverResult<()> {
        let id = fresh.id.clone();
        let mut batch = Batch::default();
        let mut changed: std::collections::BTreeMap<String, ImageRecord> = Default::default();
        {
            let index = self.read();
            let mut record = match index.images.get(&id) {
                Some(existing) => existing.clone(),
                None => {
                    let mut r = fresh;
                    let mut size = 0;
                    for chain in &r.chain_ids {
                        let mut layer = index.layers.get(chain).cloned().ok_or_else(|| {
                            DriverError::internal(format!("layer {chain} of image {id} has no record"))
                        })?;
                        layer.refs += 1;
                        size += layer.size;
                        batch.layers_put.push(layer);
                    }
                    r.size = size;
                    changed.insert(id.clone(), r.clone());
                    r
                }
            };
            let now = berth_plugin_api::util::rfc3339(std::time::SystemTime::now());
            for tag in tags {
                match index.tags.get(tag) {
                    Some(old) if *old == id => continue,
                    Some(old) => {
                        let mut prev = match changed.get(old) {
                            Some(r) => r.clone(),
                            None => index.images.get(old).cloned().ok_or_else(|| {
                                DriverError::internal(format!(
                                    "tag {tag} points at {old}, which has no record"
                                ))
                            })?,
                        };
                        prev.tags.retain(|t| t != tag);
                        tracing::info!(%tag, from = %old, to = %id, "tag moved to the loaded image");
                        changed.insert(old.clone(), prev);
                    }
                    None => {}
                }
                record.tags.push(tag.clone());
                record.last_tag_time = Some(now.clone());
                batch.tags_put.push((tag.clone(), id.clone()));
                changed.insert(id.clone(), record.clone());
            }
        }
        batch.images_put.extend(changed.into_values());
        self.commit(OP_IMAGE_LOAD, image_key(&id), batch, "image.load:after-intent")
    }

    /// After a failed load: removes the layers it made and the blobs it
    /// stored that no image uses; answers the error (with what the undo
    /// could not do, if anything).
    fn undo_load(&self, error: DriverError, made: &[String], new_blobs: &[String]) -> DriverError {
        let top_down: Vec<String> = made.iter().rev().cloned().collect();
        let (_, failed) = self.release(&top_down);
        self.drop_unused_blobs(new_blobs);
        match failed {
            None => error,
            Some(f) => DriverError::new(
                error.kind,
                format!(
                    "{}; removing the layers this load made failed too (the next start retries): {}",
                    error.message, f.message
                ),
            ),
        }
    }

    /// Removes each blob of `hexes` no image record names.
    pub(super) fn drop_unused_blobs(&self, hexes: &[String]) {
        let used = self.used_blobs();
        for h in hexes {
            if !used.contains(h.as_str()) {
                if let Err(e) = self.inner.content.remove(h) {
                    tracing::warn!(blob = %h, "cannot remove unused blob: {e}");
                }
            }
        }
    }

    /// The hex of every blob an image record names.
    pub(super) fn used_blobs(&self) -> BTreeSet<String> {
        let index = self.read();
        let mut used = BTreeSet::new();
        for img in index.images.values() {
            used.insert(hex_of(&img.id).to_string());
            used.extend(img.blobs.iter().map(|b| hex_of(&b.digest).to_string()));
        }
        used
    }

    /// Docker's `DELETE /images/{name}`. By tag: untags (and deletes the
    /// image when that was its last tag). By ID: deletes the image; one
    /// tagged in several repositories needs `force` (a conflict otherwise,
    /// as in Docker). Layers no image uses any more are removed from the
    /// storage driver top-down, and blobs no image uses from the content
    /// store. A layer the driver fails to remove stays recorded, unused,
    /// and the next start's sweep removes it.
    pub fn remove(&self, name: &str, force: bool) -> DriverResult<Vec<DeleteItem>> {
        let _ops = self.lock_ops();
        let (id, by_tag) = lookup(&self.read(), name)?;
        let record = self.read().images.get(&id).cloned().ok_or_else(|| no_such(name))?;
        let (untag, delete) = match by_tag {
            Some(tag) => {
                let last = record.tags.len() <= 1;
                (vec![tag], last)
            }
            None => {
                let repos: BTreeSet<&str> = record.tags.iter().map(|t| repository(t)).collect();
                if repos.len() > 1 && !force {
                    return Err(DriverError::conflict(format!(
                        "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        &hex_of(&id)[..12]
                    )));
                }
                (record.tags.clone(), true)
            }
        };
        let mut items: Vec<DeleteItem> = untag.iter().map(|t| DeleteItem::untagged(t)).collect();
        let mut batch = Batch { tags_del: untag.clone(), ..Batch::default() };
        if delete {
            batch.images_del.push(id.clone());
            let index = self.read();
            for chain in &record.chain_ids {
                if let Some(layer) = index.layers.get(chain) {
                    let mut layer = layer.clone();
                    layer.refs = layer.refs.saturating_sub(1);
                    batch.layers_put.push(layer);
                }
            }
            items.push(DeleteItem::deleted(&id));
        } else {
            let mut kept = record.clone();
            kept.tags.retain(|t| !untag.contains(t));
            batch.images_put.push(kept);
        }
        self.commit(OP_IMAGE_REMOVE, image_key(&id), batch, "image.remove:after-intent")?;
        if delete {
            let top_down: Vec<String> = record.chain_ids.iter().rev().cloned().collect();
            let (removed, failed) = self.release(&top_down);
            items.extend(removed.iter().map(|c| DeleteItem::deleted(c)));
            if let Some(e) = failed {
                tracing::warn!(image = %id, "a layer of the deleted image stays until the next start: {e}");
            }
            let mut blobs = vec![hex_of(&id).to_string()];
            blobs.extend(record.blobs.iter().map(|b| hex_of(&b.digest).to_string()));
            self.drop_unused_blobs(&blobs);
        }
        Ok(items)
    }

    /// The ID (`sha256:<hex>`) `name` refers to: `name:tag`, `name` (→
    /// `name:latest`), a full ID with or without `sha256:`, or a unique ID
    /// prefix. A tag wins over an ID prefix, as in Docker. An ambiguous
    /// prefix is an invalid-argument error; no match is not-found.
    pub fn resolve(&self, name: &str) -> DriverResult<String> {
        lookup(&self.read(), name).map(|(id, _)| id)
    }
}

/// Which image of how many a load is at.
#[derive(Debug, Clone, Copy)]
struct Step {
    image: usize,
    images: usize,
}

/// Resolves `name` in `index`: the image ID, and the (normalized) tag when
/// `name` was a reference.
pub(super) fn lookup(index: &Index, name: &str) -> DriverResult<(String, Option<String>)> {
    let prefixed = name.starts_with("sha256:");
    let hex = hex_of(name);
    if is_sha256_hex(hex) {
        let id = format!("sha256:{hex}");
        if index.images.contains_key(&id) {
            return Ok((id, None));
        }
    }
    if !prefixed {
        if let Ok(reference) = normalize_reference(name) {
            if let Some(id) = index.tags.get(&reference) {
                return Ok((id.clone(), Some(reference)));
            }
        }
    }
    let is_hex = !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_hex {
        let prefix = format!("sha256:{hex}");
        let matches: Vec<&String> = index
            .images
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .collect();
        match matches.len() {
            0 => {}
            1 => return Ok((matches[0].clone(), None)),
            n => {
                return Err(DriverError::invalid_argument(format!(
                    "image id prefix {hex:?} is ambiguous: it matches {n} images; give more digits"
                )))
            }
        }
    }
    Err(no_such(name))
}

/// `PathBuf` of the images directory under a daemon root.
pub fn images_dir(daemon_root: &Path) -> PathBuf {
    daemon_root.join("images")
}
