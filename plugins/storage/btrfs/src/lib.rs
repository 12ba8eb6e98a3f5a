//! berth storage driver btrfs: layers as btrfs subvolumes and snapshots.
//!
//! Every layer is a subvolume, `<root>/subvolumes/<id>` (moby's layout; see
//! `layout.rs` for the files), made with the kernel's ioctls, never the
//! `btrfs` command:
//!
//! | layer                 | made with                                               |
//! |-----------------------|---------------------------------------------------------|
//! | no parent, read-write | `BTRFS_IOC_SUBVOL_CREATE`; root set to `0755` root:root |
//! | no parent, read-only  | the same, then flagged `BTRFS_SUBVOL_RDONLY`            |
//! | parent, read-write    | `BTRFS_IOC_SNAP_CREATE_V2` of the parent                |
//! | parent, read-only     | `BTRFS_IOC_SNAP_CREATE_V2` of the parent, `BTRFS_SUBVOL_RDONLY` |
//!
//! A snapshot shares all of its parent's data until either side changes it,
//! so creating a layer costs the same whatever its parent holds. `get`
//! answers the subvolume's path: nothing is mounted, and a read-only layer
//! refuses every write with `EROFS` because the subvolume itself is
//! read-only. `get`/`put` are reference counted all the same. `remove`
//! destroys the subvolume (`BTRFS_IOC_SNAP_DESTROY`), after any subvolume
//! nested in it (one a container made); a layer with children is a
//! conflict, although a btrfs snapshot would outlive its parent.
//!
//! * The driver declines ([`Init::Skipped`]) when not root, and when its
//!   root is not on btrfs (`statfs(2)` magic `BTRFS_SUPER_MAGIC`); the
//!   reason names the filesystem the root is on.
//! * `size=` (per layer storage option) limits the bytes the layer's
//!   subvolume references (`BTRFS_IOC_QGROUP_LIMIT` on qgroup `0/<subvolume
//!   id>`, `max_rfer`, as moby does: a snapshot's shared data counts) when
//!   quotas are enabled on the filesystem; otherwise it is a typed
//!   unsupported error telling the operator to run `btrfs quota enable
//!   <mount point>`. The driver never enables quotas itself. Qgroups of
//!   removed layers are removed where the kernel allows it.
//! * No [`berth_plugin_api::DiffDriver`]: the core diffs two trees itself.
//!   No driver options (an unknown key is `invalid_argument`); the SELinux
//!   mount label is ignored.
//! * One driver instance per root: a new one destroys the subvolumes a
//!   crash left half-made, drops records without a subvolume, and sets each
//!   layer's read-only flag as its record says.

#![deny(missing_docs)]

pub mod export;
mod layout;
mod subvol;
mod sys;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{combine, name_list, path_string};
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, StorageDriver};

use crate::layout::{validate_id, LayerMeta, Layout};

/// The btrfs storage driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct BtrfsDriver {
    layout: Layout,
    /// Where the btrfs filesystem holding the root is mounted, for the
    /// operator's instructions (`btrfs quota enable <mount>`).
    mount: PathBuf,
    state: Mutex<State>,
}

/// What the driver knows, guarded by one lock. Every call is short (a few
/// ioctls), so it runs whole under the lock.
#[derive(Debug, Default)]
struct State {
    /// Every layer, loaded from disk at start.
    layers: BTreeMap<String, LayerMeta>,
    /// References taken by `get` and not yet released by `put`.
    refs: HashMap<String, usize>,
}

impl BtrfsDriver {
    /// Opens (or sets up) the driver's state under `req.root`: destroys
    /// what a crashed previous instance left half-made and loads the
    /// layers.
    ///
    /// Declines ([`Init::Skipped`]) when not running as root or when the
    /// root is not on a btrfs filesystem, saying which filesystem it is on.
    pub fn new(req: InitRequest) -> DriverResult<Init<BtrfsDriver>> {
        check_options(&req)?;
        if sys::geteuid() != 0 {
            return Ok(Init::Skipped(
                "btrfs must run as root to create and destroy subvolumes and keep file ownership".into(),
            ));
        }
        let root = Path::new(&req.root);
        if !root.is_absolute() {
            return Err(DriverError::invalid_argument(format!(
                "btrfs root {:?} is not an absolute path",
                req.root
            )));
        }
        // The root itself, or the directory it will be made in.
        let probe = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
        let magic = sys::open_dir(probe).and_then(|fd| sys::fs_magic(&fd)).map_err(|e| {
            DriverError::io(format_args!("find the filesystem of btrfs root {}", root.display()), &e)
        })?;
        if magic != sys::BTRFS_SUPER_MAGIC {
            let fs = berth_plugin_api::util::quota::filesystem_name(probe)
                .unwrap_or_else(|_| format!("filesystem 0x{magic:x}"));
            return Ok(Init::Skipped(format!(
                "btrfs needs its root {} on a btrfs filesystem, but it is on {fs}; mount a btrfs filesystem \
                 there, or choose another storage driver (overlay2, vfs)",
                root.display()
            )));
        }
        let layout = Layout::open(&req.root)?;
        let layers = layout.reconcile()?;
        let mount = mount_point_of(&layout.root);
        Ok(Init::Ready(BtrfsDriver {
            layout,
            mount,
            state: Mutex::new(State { layers, refs: HashMap::new() }),
        }))
    }

    /// The state, even if a panicking thread poisoned the lock: every
    /// critical section leaves the state consistent before anything that
    /// can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `create` and `create_rw`.
    fn create_layer(&self, req: CreateRequest, read_write: bool) -> DriverResult<()> {
        let (id, parent) = (req.id.as_str(), req.parent.as_str());
        validate_id("layer id", id)?;
        if !parent.is_empty() {
            validate_id("parent layer id", parent)?;
        }
        let size = self.storage_opt(&req)?;
        let mut state = self.lock();
        if state.layers.contains_key(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} already exists in {}",
                self.layout.subvolumes().display()
            )));
        }
        if !parent.is_empty() && !state.layers.contains_key(parent) {
            return Err(DriverError::not_found(format!(
                "parent layer {parent:?} of new layer {id:?} not found in {}",
                self.layout.subvolumes().display()
            )));
        }
        let staged = self.layout.staging();
        let made = self.make_subvolume(id, parent, read_write, size, &staged).and_then(|()| {
            let dir = self.layout.dir(id);
            self.commit(id, &staged, &dir)
        });
        if let Err(e) = made {
            let _ = subvol::remove_any(&staged);
            return Err(e);
        }
        let meta = LayerMeta { parent: parent.to_string(), read_write, size: size.unwrap_or(0) };
        if let Err(e) = self.layout.write_meta(id, &meta) {
            // Without its record the subvolume is debris; take it back out.
            let _ = subvol::destroy(&self.layout.dir(id));
            return Err(e.context(format_args!("create layer {id:?}")));
        }
        state.layers.insert(id.to_string(), meta);
        Ok(())
    }

    /// Makes the subvolume of new layer `id` at the staging path `staged`:
    /// an empty one, or a snapshot of `parent`; read-only unless
    /// `read_write`; limited to `size` bytes when given.
    fn make_subvolume(
        &self,
        id: &str,
        parent: &str,
        read_write: bool,
        size: Option<u64>,
        staged: &Path,
    ) -> DriverResult<()> {
        let subvolumes = self.layout.subvolumes();
        let name = staged.file_name().unwrap_or_default();
        let dir = sys::open_dir(&subvolumes)
            .map_err(|e| DriverError::io(format_args!("open {}", subvolumes.display()), &e))?;
        if parent.is_empty() {
            let made = sys::create_subvolume(&dir, name).and_then(|()| {
                // The kernel applies the umask to a new subvolume's root:
                // a layer root is 0755 root:root whatever it is.
                fs::set_permissions(staged, fs::Permissions::from_mode(0o755))?;
                std::os::unix::fs::lchown(staged, Some(0), Some(0))?;
                if !read_write {
                    sys::set_read_only(&sys::open_dir(staged)?, true)?;
                }
                Ok(())
            });
            made.map_err(|e| {
                DriverError::io(format_args!("create subvolume {} for layer {id:?}", staged.display()), &e)
            })?;
        } else {
            let source = self.layout.dir(parent);
            sys::open_dir(&source).and_then(|src| sys::snapshot(&src, &dir, name, !read_write)).map_err(
                |e| {
                    DriverError::io(
                        format_args!("snapshot layer {parent:?} ({}) for new layer {id:?}", source.display()),
                        &e,
                    )
                },
            )?;
        }
        if let Some(bytes) = size {
            let limited = sys::open_dir(staged).and_then(|fd| sys::subvolume_id(&fd)).and_then(|subvol_id| {
                // Issued on the writable `subvolumes/`, naming the qgroup,
                // so a read-only subvolume can be limited too.
                sys::qgroup_limit(&dir, subvol_id, bytes)
            });
            match limited {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Err(self.no_quota(id)),
                Err(e) => {
                    return Err(DriverError::io(
                        format_args!("limit the size of layer {id:?} to {bytes} bytes"),
                        &e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Renames the finished subvolume `staged` to `dir`, never replacing
    /// anything. A subvolume already at `dir` has no record (the id is
    /// unknown and the lock is held), so it is debris of an interrupted
    /// create or remove: it is destroyed and the rename retried.
    fn commit(&self, id: &str, staged: &Path, dir: &Path) -> DriverResult<()> {
        let ctx = || format!("move new layer {id:?} into place at {}", dir.display());
        match sys::rename_noreplace(staged, dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(DriverError::io(ctx(), &e)),
        }
        subvol::remove_debris(dir).map_err(|e| DriverError::io(ctx(), &e))?;
        sys::rename_noreplace(staged, dir).map_err(|e| DriverError::io(ctx(), &e))
    }

    /// The `size` storage option in bytes, if given. Any other option is
    /// invalid; `size` without quotas enabled is unsupported.
    fn storage_opt(&self, req: &CreateRequest) -> DriverResult<Option<u64>> {
        let mut size = None;
        for (key, value) in &req.storage_opt {
            if !key.eq_ignore_ascii_case("size") {
                return Err(DriverError::invalid_argument(format!(
                    "unknown storage option {key:?} for layer {:?}: btrfs takes only \"size\"",
                    req.id
                )));
            }
            let bytes = berth_plugin_api::util::parse_size(value).map_err(|e| {
                DriverError::invalid_argument(format!("storage option size of layer {:?}: {e}", req.id))
            })?;
            if bytes == 0 {
                return Err(DriverError::invalid_argument(format!(
                    "storage option size of layer {:?} is 0; give a limit of at least one byte",
                    req.id
                )));
            }
            if !self.quota_enabled()? {
                return Err(self.no_quota(&req.id));
            }
            size = Some(bytes);
        }
        Ok(size)
    }

    /// Whether quotas are enabled on the filesystem of the root.
    fn quota_enabled(&self) -> DriverResult<bool> {
        let root = &self.layout.root;
        sys::open_dir(root).and_then(|fd| sys::quota_enabled(&fd)).map_err(|e| {
            DriverError::io(
                format_args!("find whether quotas are enabled on the filesystem of {}", root.display()),
                &e,
            )
        })
    }

    /// The error for `size=` while quotas are disabled.
    fn no_quota(&self, id: &str) -> DriverError {
        let mount = self.mount.display();
        DriverError::unsupported(format!(
            "btrfs cannot limit the size of layer {id:?}: quotas are not enabled on the btrfs filesystem \
             mounted at {mount}; run `btrfs quota enable {mount}` and try again"
        ))
    }

    /// The known layer `id`, or a not-found error naming where it was
    /// looked for.
    fn layer<'s>(&self, state: &'s State, id: &str) -> DriverResult<&'s LayerMeta> {
        state.layers.get(id).ok_or_else(|| {
            DriverError::not_found(format!(
                "layer {id:?} not found in {}",
                self.layout.subvolumes().display()
            ))
        })
    }
}

impl StorageDriver for BtrfsDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        let children: Vec<&str> =
            state.layers.iter().filter(|(_, m)| m.parent == id).map(|(c, _)| c.as_str()).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {}; remove the child layers first",
                name_list(&children)
            )));
        }
        let dir = self.layout.dir(id);
        let inner = berth_plugin_api::util::mounts::mounts_under(&dir)
            .map_err(|e| DriverError::io(format_args!("read mount table to remove layer {id:?}"), &e))?;
        if let Some(m) = inner.first() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is in use: {} is mounted inside it; unmount it first",
                m.display()
            )));
        }
        let subvol_id = sys::open_dir(&dir).and_then(|fd| sys::subvolume_id(&fd)).ok();
        match subvol::destroy(&dir) {
            // Gone already (deleted behind the driver's back): only the
            // record is left to drop.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DriverError::io(
                    format_args!("remove layer {id:?}: destroy subvolume {}", dir.display()),
                    &e,
                ))
            }
            Ok(()) => {}
        }
        state.layers.remove(id);
        state.refs.remove(id);
        let mut errors = Vec::new();
        if let Err(e) = self.layout.remove_meta(id) {
            errors.push(e);
        }
        drop(state);
        // Best effort: the kernel refuses while the subvolume is still
        // being dropped, and drops the qgroup itself where it can.
        if let (Some(n), Ok(true)) = (subvol_id, self.quota_enabled()) {
            let _ = sys::open_dir(&self.layout.subvolumes()).and_then(|fd| sys::qgroup_remove(&fd, n));
        }
        match combine(errors) {
            Some(e) => Err(e.context(format_args!(
                "layer {id:?} is removed, but its record is left (dropped when the driver starts)"
            ))),
            None => Ok(()),
        }
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        let path = path_string(&self.layout.dir(id))?;
        *state.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        match state.refs.get(id).copied().unwrap_or(0) {
            0 => Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            ))),
            1 => {
                state.refs.remove(id);
                Ok(())
            }
            n => {
                state.refs.insert(id.to_string(), n - 1);
                Ok(())
            }
        }
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        // An invalid id names no layer: false, not an error.
        Ok(validate_id("layer id", &req.id).is_ok() && self.lock().layers.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let quota = match self.quota_enabled() {
            Ok(true) => {
                "enabled (qgroups): storage option size= limits a layer's referenced bytes".to_string()
            }
            Ok(false) => {
                format!(
                    "disabled: run `btrfs quota enable {}` to use storage option size=",
                    self.mount.display()
                )
            }
            Err(e) => format!("unknown ({e})"),
        };
        let state = self.lock();
        Ok(StatusResponse::new(vec![
            ("Backing Filesystem".into(), "btrfs".into()),
            ("Mount Point".into(), self.mount.display().to_string()),
            ("Quota".into(), quota),
            ("Root Dir".into(), self.layout.root.display().to_string()),
            ("Layers".into(), state.layers.len().to_string()),
            ("In Use".into(), state.refs.len().to_string()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let state = self.lock();
        let meta = self.layer(&state, id)?;
        let dir = self.layout.dir(id);
        let mut out = BTreeMap::from([
            ("Dir".to_string(), path_string(&dir)?),
            ("Parent".to_string(), meta.parent.clone()),
            ("ReadWrite".to_string(), meta.read_write.to_string()),
        ]);
        if let Ok(n) = sys::open_dir(&dir).and_then(|fd| sys::subvolume_id(&fd)) {
            out.insert("SubvolumeId".into(), n.to_string());
        }
        if meta.size > 0 {
            out.insert("Size".into(), meta.size.to_string());
        }
        Ok(MetadataResponse::new(out))
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        // Nothing is mounted: a layer is its subvolume. Forget the
        // references, as a daemon shutting down releases them all.
        self.lock().refs.clear();
        Ok(())
    }
}

/// Refuses every driver option: btrfs has none yet.
fn check_options(req: &InitRequest) -> DriverResult<()> {
    let bad = |why: String| DriverError::invalid_argument(format!("options of driver {:?}: {why}", req.name));
    if req.options.is_null() {
        return Ok(());
    }
    let Some(table) = req.options.as_object() else {
        return Err(bad("expected a table of options".into()));
    };
    match table.keys().next() {
        None => Ok(()),
        Some(key) => Err(bad(format!("unknown option {key:?}; btrfs takes no options"))),
    }
}

/// The mount point of the filesystem `path` is on: the longest mount point
/// that contains it (`path` itself when the mount table cannot be read).
fn mount_point_of(path: &Path) -> PathBuf {
    let points = berth_plugin_api::util::mounts::mount_points().unwrap_or_default();
    points
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    #[test]
    fn options_are_refused() {
        let mut req = InitRequest::new("btrfs", "/nonexistent", "/nonexistent-run");
        check_options(&req).unwrap();
        req.options = serde_json::json!({});
        check_options(&req).unwrap();
        req.options = serde_json::json!({ "bogus": 1 });
        let e = check_options(&req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("bogus"), "{e}");
        req.options = serde_json::json!([1]);
        assert_eq!(check_options(&req).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn the_mount_point_is_the_longest_containing_mount() {
        assert_eq!(mount_point_of(Path::new("/")), Path::new("/"));
        let proc_self = mount_point_of(Path::new("/proc/self"));
        assert_eq!(proc_self, Path::new("/proc"));
    }

    #[test]
    fn combine_keeps_every_message() {
        assert!(combine(vec![]).is_none());
        let same = combine(vec![DriverError::conflict("a"), DriverError::conflict("b")]).unwrap();
        assert_eq!((same.kind, same.message.as_str()), (ErrorKind::Conflict, "2 errors: a; b"));
        let mixed = combine(vec![DriverError::conflict("a"), DriverError::not_found("b")]).unwrap();
        assert_eq!(mixed.kind, ErrorKind::Internal);
        assert_eq!(
            name_list(&["1", "2", "3", "4", "5", "6"]),
            "\"1\", \"2\", \"3\", \"4\", \"5\" and 1 more"
        );
    }
}
