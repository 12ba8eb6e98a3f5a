//! # Images: archives, layers, records
//!
//! Two halves:
//!
//! * [`read_archive`] takes the archive `berth image load` is given and
//!   answers a typed [`Archive`], every digest verified (below);
//! * [`ImageService`] stores what an archive holds and serves Docker's image
//!   endpoints (`load`, `list`, `inspect`, `remove`, `save`, name
//!   resolution).
//!
//! ## The model
//!
//! An **image** is its config blob; its ID is the config's sha256. Its
//! layers are identified by **diff ID** (sha256 of the uncompressed tar) and
//! stacked by **chain ID** ([`chain_id`]): the chain ID names a layer *and
//! everything below it*, so two images whose first layers are the same
//! share those layers, stored once.
//!
//! * The **layer store** keeps one storage-driver layer per chain ID (the
//!   driver id is the chain ID's hex, its parent the parent chain ID's hex),
//!   with a record `layer/<chain id>` (diff ID, parent, size, the number of
//!   images using it). Every driver create and remove is bracketed by a
//!   ledger intent (`layer.create`, `layer.remove`), so a crash leaves
//!   nothing the start-up reconcile cannot finish or undo. A layer is
//!   applied natively when the driver has a diff capability, else with the
//!   core's [`crate::layers::apply`] onto a read-write layer; either way the
//!   stream applied is hashed and must match its verified diff ID.
//! * The **content store** keeps the blobs as loaded (layers compressed or
//!   not, configs) under `<daemon root>/images/blobs/sha256/<hex>`, as
//!   containerd does, so `save` writes byte-identical blobs and a saved
//!   image loads back with the same IDs. Loads spool archives under
//!   `<daemon root>/images/tmp/`, removed whatever happens.
//! * **Image records** `image/<id>` (config JSON, chain and diff IDs, the
//!   blobs, tags, times, size) and **tags** `tag/<name:tag>` → ID live in
//!   the state store, changed together in one transaction and mirrored by
//!   an in-memory index, so listing and inspecting never touch the disk.
//!   A tag given to a newly loaded image moves off the image that had it;
//!   that image stays, untagged (dangling), as in Docker.
//! * Removing an image releases its layers: a layer no image uses any more
//!   is removed from the driver top-down, a blob no image names from the
//!   content store. What a crash or a driver failure leaves unused is
//!   removed by [`ImageService::sweep`] at the next start.
//!
//! ## Archives
//!
//! [`read_archive`] answers the images an archive holds, each with its
//! tags, its configuration (typed with `oci-spec`) and its layers, spooled
//! to a directory the caller chooses. Nothing there touches a storage
//! driver.
//!
//! Two layouts are accepted, as a plain tar or one compressed with gzip or
//! zstd (recognised by the magic bytes, not by a name):
//!
//! * a `docker save` archive: `manifest.json` (a list of `Config`,
//!   `RepoTags`, `Layers`), with layers as `<id>/layer.tar` (older Docker,
//!   shared layers as symlinks) or as `blobs/sha256/<hex>` (Docker 25 on);
//! * an OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/<hex>`,
//!   with nested indexes (multi-platform images) followed. Tags come from the
//!   `io.containerd.image.name` or `org.opencontainers.image.ref.name`
//!   annotation of the index entry. Attestation manifests are skipped.
//!
//! When an archive has both `manifest.json` and `index.json` (Docker 25 on
//! writes both, and so does [`ImageService::save`]), `manifest.json` is
//! read: it names the tags directly.
//!
//! ## Verification
//!
//! Every check below fails with an
//! [`ErrorKind::InvalidArgument`](berth_plugin_api::ErrorKind::InvalidArgument)
//! error naming the file (and both digests, for a mismatch):
//!
//! * every `blobs/sha256/<hex>` file hashes to `<hex>` (and a Docker config
//!   named `<hex>.json` hashes to `<hex>`); a descriptor's digest and size
//!   match the blob it names;
//! * the uncompressed stream of each layer hashes to the config's
//!   `rootfs.diff_ids` entry at its position, and there are as many layers as
//!   diff IDs;
//! * manifests, indexes and configs are well-formed JSON of their type;
//! * every file named by a manifest is in the archive;
//! * no entry of the archive is an absolute path or has a `..` component, no
//!   symlink or hardlink points outside the archive, and there are no device
//!   nodes or fifos.
//!
//! A layer tar itself is checked as it is applied (see [`crate::layers`]):
//! a hostile one is refused with an invalid-argument error and the load
//! leaves no layer, record or blob behind.

mod content;
mod formats;
mod inspect;
mod layer_store;
mod reconcile;
mod records;
mod save;
mod service;
mod spool;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use oci_spec::image::{Digest, ImageConfiguration, MediaType};
use sha2::{Digest as _, Sha256};

use crate::layers::Compression;

pub use inspect::{
    ContainerConfig, GraphDriverData, ImageInspect, ImageMetadata, ImageSummary, RootFs, LIST_FILTERS,
};
pub use service::{
    images_dir, DeleteItem, ImageService, LayerState, LoadProgress, LoadedImage, StorageDrivers,
    OP_IMAGE_LOAD, OP_IMAGE_REMOVE, OP_IMAGE_SWEEP, OP_LAYER_CREATE, OP_LAYER_REMOVE,
};

/// The images found in an archive, in the order the archive lists them.
#[derive(Debug, Clone)]
pub struct Archive {
    /// One entry per image (per platform, for a multi-platform OCI index).
    pub images: Vec<ImageEntry>,
}

/// One image of an archive.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    /// The references the archive gives the image (`name:tag`), possibly none.
    pub tags: Vec<String>,
    /// The image configuration, as parsed from its blob.
    pub config: ImageConfiguration,
    /// The sha256 of the configuration blob: the image ID.
    pub config_digest: Digest,
    /// The layers, base first.
    pub layers: Vec<LayerRef>,
}

impl ImageEntry {
    /// The chain ID of each layer, base first (see [`chain_id`]).
    pub fn chain_ids(&self) -> Vec<Digest> {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        (1..=diff_ids.len()).map(|n| chain_id(&diff_ids[..n]).expect("non-empty prefix")).collect()
    }
}

/// One layer of an image, spooled to a file.
#[derive(Debug, Clone)]
pub struct LayerRef {
    /// The spooled blob, as it was in the archive (possibly compressed).
    pub path: PathBuf,
    /// The sha256 of the blob as stored (compressed bytes, if compressed).
    pub digest: Digest,
    /// The size of the blob in bytes.
    pub size: u64,
    /// The sha256 of the uncompressed tar, verified against the config.
    pub diff_id: Digest,
    /// The media type: the descriptor's for an OCI layout, derived from the
    /// compression for a Docker archive.
    pub media_type: MediaType,
    /// The compression found in the blob's first bytes.
    pub compression: Compression,
}

/// Reads an image archive (`docker save` or OCI layout; plain, gzip or zstd)
/// from `reader`, spools its files into `spool_dir` (which must exist; files
/// are named `sha256-<hex>` after their content) and verifies every digest.
/// See the [module documentation](self) for what is checked.
///
/// The caller owns `spool_dir`: on an error, files spooled so far stay there
/// for the caller to remove with the directory.
pub fn read_archive(reader: impl Read, spool_dir: &Path) -> DriverResult<Archive> {
    let files = spool::spool(reader, spool_dir)?;
    let images = if files.contains("manifest.json") {
        formats::docker(&files)?
    } else if files.contains("index.json") {
        formats::oci(&files)?
    } else {
        return Err(DriverError::invalid_argument(
            "image archive has neither manifest.json (docker save) nor index.json (OCI layout) at its root",
        ));
    };
    Ok(Archive { images })
}

/// The chain ID of the top of a layer stack given by its diff IDs, base
/// first, as the OCI image spec defines it: `ChainID(L0) = DiffID(L0)`,
/// `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`. An empty list is
/// an invalid-argument error.
pub fn chain_id(diff_ids: &[Digest]) -> DriverResult<Digest> {
    let (first, rest) = diff_ids
        .split_first()
        .ok_or_else(|| DriverError::invalid_argument("chain id of an empty layer list"))?;
    let mut chain = first.clone();
    for diff_id in rest {
        let mut h = Sha256::new();
        h.update(chain.to_string().as_bytes());
        h.update(b" ");
        h.update(diff_id.to_string().as_bytes());
        chain = sha256_digest(&hex(&h.finalize()));
    }
    Ok(chain)
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest `sha256:<hex>`; `hex` must be 64 lower-case hex digits.
fn sha256_digest(hex: &str) -> Digest {
    Digest::try_from(format!("sha256:{hex}")).expect("a sha256 hex string is a valid digest")
}

/// Whether `s` is 64 lower-case hex digits.
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
