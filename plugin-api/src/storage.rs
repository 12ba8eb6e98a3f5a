//! The storage driver contract: layers (Docker's graph driver).
//!
//! # Vocabulary
//!
//! * A **layer** is a directory tree identified by an **id** chosen by the
//!   caller (the core uses chain ids for image layers and random ids for
//!   container layers). Ids are opaque, non-empty, and contain no `/`.
//! * A layer may have a **parent**. A new layer starts as an exact copy of its
//!   parent's tree (ownership, modes, timestamps, xattrs, hardlinks, symlinks,
//!   device nodes, fifos and sockets all preserved), or empty with a root of
//!   mode `0755` owned by `root:root` when it has none.
//! * A layer made by [`StorageDriver::create`] is **read-only**: once mounted
//!   with [`StorageDriver::get`] nothing can be written through the returned
//!   path. Image layers are read-only; their content arrives through
//!   [`DiffDriver::apply_diff`] (or the core's naive apply). A layer made by
//!   [`StorageDriver::create_rw`] is **read-write**: a container's layer.
//! * A layer is **mounted** by `get`, which returns a path, and released by
//!   `put`. Calls are reference counted per id: N `get`s need N `put`s before
//!   the driver may really unmount.
//!
//! # Lifecycle
//!
//! ```text
//! create/create_rw ──► get ──► (use the path) ──► put ──► remove
//!        ▲                                                    │
//!        └──────────── the id may be used again ◄─────────────┘
//! ```
//!
//! * `create` of an id that exists is [`ErrorKind::AlreadyExists`]; of a
//!   parent that does not exist, [`ErrorKind::NotFound`].
//! * `remove` of a layer that has children is [`ErrorKind::Conflict`]; of an
//!   unknown id, [`ErrorKind::NotFound`]. Layers are removed top-down.
//! * `exists` never fails for an unknown id: it answers `false`.
//! * `cleanup` is called when the daemon stops: it unmounts everything the
//!   driver mounted. A driver reopened on the same root lists the same layers.
//!
//! Optional features live in their own small traits reached through a
//! capability accessor: [`DiffDriver`] via [`StorageDriver::as_diff`].
//!
//! [`ErrorKind::AlreadyExists`]: crate::ErrorKind::AlreadyExists
//! [`ErrorKind::NotFound`]: crate::ErrorKind::NotFound
//! [`ErrorKind::Conflict`]: crate::ErrorKind::Conflict

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::DriverResult;

/// A storage driver. Every method may be called from many threads at once.
pub trait StorageDriver: Send + Sync {
    /// Creates the read-only layer `req.id` on top of `req.parent`.
    fn create(&self, req: CreateRequest) -> DriverResult<()>;

    /// Creates the read-write layer `req.id` on top of `req.parent`.
    fn create_rw(&self, req: CreateRequest) -> DriverResult<()>;

    /// Removes layer `req.id` and everything the driver kept for it.
    /// A layer that is still mounted is unmounted first.
    fn remove(&self, req: RemoveRequest) -> DriverResult<()>;

    /// Mounts layer `req.id` (one more reference) and returns its path.
    fn get(&self, req: GetRequest) -> DriverResult<GetResponse>;

    /// Releases one reference taken by [`StorageDriver::get`]; the last one
    /// unmounts. A `put` with no reference left is [`crate::ErrorKind::FailedPrecondition`].
    fn put(&self, req: PutRequest) -> DriverResult<()>;

    /// Whether layer `req.id` exists. Never fails for an unknown id.
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool>;

    /// Facts about the driver as `(name, value)` pairs, in display order.
    fn status(&self, req: StatusRequest) -> DriverResult<StatusResponse>;

    /// Driver-specific facts about layer `req.id` (paths, devices, ...).
    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse>;

    /// Unmounts everything this driver mounted; called at daemon shutdown.
    fn cleanup(&self, req: CleanupRequest) -> DriverResult<()>;

    /// The diff capability, when the driver computes diffs natively.
    /// Without it the core diffs two mounted trees itself.
    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        None
    }
}

/// The optional diff capability of a storage driver.
pub trait DiffDriver: Send + Sync {
    /// Writes the changes of `req.id` relative to `req.parent` as an OCI
    /// layer tar (whiteouts `.wh.<name>`, opaque dirs `.wh..wh..opq`).
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()>;

    /// Lists the paths added, modified and deleted in `req.id` relative to
    /// `req.parent`.
    fn changes(&self, req: ChangesRequest) -> DriverResult<Vec<Change>>;

    /// Applies an OCI layer tar read from `input` onto layer `req.id` and
    /// returns the number of bytes the diff added.
    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse>;

    /// The size in bytes of the diff between `req.id` and `req.parent`.
    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64>;
}

/// [`StorageDriver::create`] and [`StorageDriver::create_rw`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CreateRequest {
    /// The new layer's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The parent layer's id; empty for a base layer.
    #[serde(rename = "Parent")]
    pub parent: String,
    /// SELinux mount label, if any.
    #[serde(rename = "MountLabel")]
    pub mount_label: String,
    /// Per-layer options such as `size` (quota), typed by the driver.
    #[serde(rename = "StorageOpt")]
    pub storage_opt: BTreeMap<String, String>,
}

impl CreateRequest {
    /// A request for layer `id` on top of `parent` (empty: no parent).
    pub fn new(id: impl Into<String>, parent: impl Into<String>) -> Self {
        CreateRequest { id: id.into(), parent: parent.into(), ..Default::default() }
    }
}

/// A request that names only a layer: [`StorageDriver::remove`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RemoveRequest {
    /// The layer's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// [`StorageDriver::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GetRequest {
    /// The layer's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// SELinux mount label, if any.
    #[serde(rename = "MountLabel")]
    pub mount_label: String,
}

/// The answer of [`StorageDriver::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GetResponse {
    /// Absolute path of the mounted layer's root.
    #[serde(rename = "Dir")]
    pub path: String,
}

impl GetResponse {
    /// An answer with `path`.
    pub fn new(path: impl Into<String>) -> Self {
        GetResponse { path: path.into() }
    }
}

/// [`StorageDriver::put`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PutRequest {
    /// The layer's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// [`StorageDriver::exists`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ExistsRequest {
    /// The layer's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// [`StorageDriver::status`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StatusRequest {}

/// The answer of [`StorageDriver::status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StatusResponse {
    /// `(name, value)` pairs in display order, e.g. `("Layers", "12")`.
    #[serde(rename = "Status")]
    pub status: Vec<(String, String)>,
}

impl StatusResponse {
    /// An answer with these pairs.
    pub fn new(status: Vec<(String, String)>) -> Self {
        StatusResponse { status }
    }
}

/// [`StorageDriver::metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetadataRequest {
    /// The layer's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// The answer of [`StorageDriver::metadata`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetadataResponse {
    /// Driver-specific facts, e.g. `{"Dir": "/var/lib/berth/vfs/dir/abc"}`.
    #[serde(rename = "Metadata")]
    pub metadata: BTreeMap<String, String>,
}

impl MetadataResponse {
    /// An answer with these facts.
    pub fn new(metadata: BTreeMap<String, String>) -> Self {
        MetadataResponse { metadata }
    }
}

/// [`StorageDriver::cleanup`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CleanupRequest {}

/// [`DiffDriver::diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DiffRequest {
    /// The upper layer.
    #[serde(rename = "ID")]
    pub id: String,
    /// The lower layer; empty means "against nothing" (the whole tree).
    #[serde(rename = "Parent")]
    pub parent: String,
}

/// [`DiffDriver::changes`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ChangesRequest {
    /// The upper layer.
    #[serde(rename = "ID")]
    pub id: String,
    /// The lower layer; empty means "against nothing".
    #[serde(rename = "Parent")]
    pub parent: String,
}

/// [`DiffDriver::apply_diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ApplyDiffRequest {
    /// The layer the tar is applied to.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its parent.
    #[serde(rename = "Parent")]
    pub parent: String,
}

/// The answer of [`DiffDriver::apply_diff`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ApplyDiffResponse {
    /// Bytes of content the diff added.
    #[serde(rename = "Size")]
    pub size: u64,
}

impl ApplyDiffResponse {
    /// An answer of `size` bytes.
    pub fn new(size: u64) -> Self {
        ApplyDiffResponse { size }
    }
}

/// [`DiffDriver::diff_size`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DiffSizeRequest {
    /// The upper layer.
    #[serde(rename = "ID")]
    pub id: String,
    /// The lower layer.
    #[serde(rename = "Parent")]
    pub parent: String,
}

/// How a path changed between two layers (Docker's numbering on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ChangeKind {
    /// Content or metadata changed (`0`).
    Modify,
    /// The path is new (`1`).
    Add,
    /// The path is gone (`2`).
    Delete,
}

impl From<ChangeKind> for u8 {
    fn from(k: ChangeKind) -> u8 {
        match k {
            ChangeKind::Modify => 0,
            ChangeKind::Add => 1,
            ChangeKind::Delete => 2,
        }
    }
}

impl TryFrom<u8> for ChangeKind {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(ChangeKind::Modify),
            1 => Ok(ChangeKind::Add),
            2 => Ok(ChangeKind::Delete),
            other => Err(format!("unknown change kind {other}")),
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// Absolute path inside the layer, e.g. `/etc/hosts`.
    #[serde(rename = "Path")]
    pub path: String,
    /// What happened to it.
    #[serde(rename = "Kind")]
    pub kind: ChangeKind,
}

impl Change {
    /// A change of `kind` at `path`.
    pub fn new(path: impl Into<String>, kind: ChangeKind) -> Self {
        Change { path: path.into(), kind }
    }
}

macro_rules! id_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            /// A request for layer `id`.
            pub fn new(id: impl Into<String>) -> Self {
                $t { id: id.into(), ..Default::default() }
            }
        }
    )*};
}
id_ctor!(RemoveRequest, GetRequest, PutRequest, ExistsRequest, MetadataRequest);

macro_rules! pair_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            /// A request for layer `id` against `parent`.
            pub fn new(id: impl Into<String>, parent: impl Into<String>) -> Self {
                $t { id: id.into(), parent: parent.into() }
            }
        }
    )*};
}
pair_ctor!(DiffRequest, ChangesRequest, ApplyDiffRequest, DiffSizeRequest);
