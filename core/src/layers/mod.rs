//! # Layer tars: apply and diff
//!
//! The core's own implementation of a storage driver's diff capability, for
//! drivers without a [`DiffDriver`](berth_plugin_api::DiffDriver) and for
//! loading images:
//!
//! * [`apply`] unpacks an OCI / Docker layer tar (plain, gzip or zstd) onto
//!   a layer directory: regular files, directories, symlinks, hardlinks
//!   (also to files from lower layers), device nodes and fifos where
//!   [`ApplyOptions`] allow them, modes with setuid/setgid/sticky, owners
//!   (through an optional [`IdMap`]), nanosecond mtimes from PAX records,
//!   xattrs from PAX `SCHILY.xattr.*` records, and the OCI whiteouts:
//!   `.wh.<name>` deletes `<name>` from below, `.wh..wh..opq` makes its
//!   directory opaque (nothing from below shows through).
//! * [`diff`] writes the tar that turns a parent's tree into its child's
//!   (the naive diff of two mounted trees, as moby's `ChangesDirs` +
//!   `ExportChanges`), [`changes`] lists what changed, [`diff_size`] says how
//!   many bytes the diff adds.
//!
//! ## Safety against hostile layers
//!
//! Every path a tar names is resolved beneath the layer root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)`, never by joining strings. A tar is refused with an
//! [`ErrorKind::InvalidArgument`](berth_plugin_api::ErrorKind::InvalidArgument)
//! error, before anything outside the root can be touched, when it has:
//!
//! * an absolute path or a `..` component (entry names and hardlink targets);
//! * an entry, hardlink target or whiteout whose parent path passes through
//!   a symlink — one planted earlier in the same tar or one from a lower
//!   layer (a layer made by a differ never writes through a symlink);
//! * a symlink whose relative target climbs above the root (absolute
//!   targets are fine: a container resolves them inside its root);
//! * a hardlink to a directory or to a path that does not exist;
//! * a device node or fifo where [`ApplyOptions`] do not allow it;
//! * a malformed header, an unknown entry type or a truncated stream.
//!
//! An existing entry in the way of a new one is unlinked, never written
//! through: files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a
//! planted symlink or a hardlink to a foreign inode is replaced, not followed.
//! A failed apply may leave the layer half-written; the caller discards it.

mod apply;
mod compress;
mod diff;
mod resolve;
mod tree;
mod whiteout;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use berth_plugin_api::DriverResult;

pub use apply::apply;
pub use berth_plugin_api::storage::{Change, ChangeKind};
pub use compress::{decompress, Compression};
pub use diff::{changes, diff, diff_size};

/// The prefix of a whiteout: `.wh.<name>` deletes `<name>` from below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The prefix of whiteout metadata names, which are not deletions.
pub const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The opaque marker: the directory holding it hides everything below.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Maps the owner a layer records (`uid`, `gid`) to the owner on the host,
/// e.g. for a user-namespaced daemon. An error refuses the layer.
#[derive(Clone)]
pub struct IdMap(Arc<IdMapFn>);

/// The function behind an [`IdMap`].
type IdMapFn = dyn Fn(u32, u32) -> DriverResult<(u32, u32)> + Send + Sync;

impl IdMap {
    /// A mapping computed by `f`.
    pub fn new(f: impl Fn(u32, u32) -> DriverResult<(u32, u32)> + Send + Sync + 'static) -> Self {
        IdMap(Arc::new(f))
    }

    /// Maps one owner.
    pub fn map(&self, uid: u32, gid: u32) -> DriverResult<(u32, u32)> {
        (self.0)(uid, gid)
    }
}

impl fmt::Debug for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdMap(..)")
    }
}

/// How [`apply`] treats what a layer asks for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Create character and block devices. Off by default: a layer with one
    /// is refused with an invalid-argument error.
    pub allow_devices: bool,
    /// Create fifos. On by default; when off a layer with one is refused.
    pub allow_fifos: bool,
    /// Give entries the owner the tar records (mapped by `id_map`). By
    /// default on when the process runs as root; otherwise entries belong
    /// to the caller.
    pub same_owner: bool,
    /// Apply `trusted.*` xattrs. By default on when the process runs as root
    /// (only root may set them). `trusted.overlay.*` is never applied: it
    /// belongs to the overlay driver, not to layer content.
    pub trusted_xattrs: bool,
    /// Maps recorded owners to host owners; `None` keeps them.
    pub id_map: Option<IdMap>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            allow_devices: false,
            allow_fifos: true,
            same_owner: root,
            trusted_xattrs: root,
            id_map: None,
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyReport {
    /// Bytes of regular-file content the layer added (sum of regular file
    /// sizes; hardlinks count nothing). Equals [`diff_size`] for a layer
    /// made by [`diff`].
    pub size: u64,
    /// Tar entries applied, whiteouts included.
    pub entries: u64,
    /// Whiteouts and opaque markers among them.
    pub whiteouts: u64,
    /// Xattrs skipped: names outside the accepted namespaces, or ones the
    /// filesystem or the caller's privileges refused (logged as warnings).
    pub skipped_xattrs: u64,
}
