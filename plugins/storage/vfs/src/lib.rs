//! berth storage driver vfs: every layer a full copy of its parent.
//!
//! vfs needs nothing from the kernel or the file system beyond what every
//! Linux host has, which makes it the reference storage driver and the
//! fallback when no union file system is available. It is slow and uses
//! space freely: creating a layer copies its parent's whole tree (see
//! `copy.rs` for what is preserved and in which order).
//!
//! * A read-write layer ([`StorageDriver::create_rw`]) is its directory;
//!   `get` returns that directory.
//! * A read-only layer ([`StorageDriver::create`]) is exposed by `get` as a
//!   read-only, private, `nosuid`/`nodev` bind mount of its directory under
//!   the run root, so nothing can be written through the returned path.
//!
//! The driver offers no [`berth_plugin_api::DiffDriver`]: the core diffs two
//! mounted trees itself. It takes no options and no per-layer storage
//! options (`size` is a typed unsupported error). The SELinux mount label is
//! ignored.
//!
//! One driver instance per root: a new instance unmounts what a previous
//! one left mounted under the run root, and sweeps half-made layers.

#![deny(missing_docs)]

mod copy;
pub mod export;
mod layout;
mod mount;
mod sys;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{combine, name_list, path_string};
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, StorageDriver};
use serde::Deserialize;

use crate::layout::{remove_any, validate_id, LayerMeta, Layout};

/// The driver's options from the configuration: none yet, and an unknown
/// key is refused rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VfsOptions {}

/// The vfs storage driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct VfsDriver {
    layout: Layout,
    state: Mutex<State>,
}

/// What the driver knows, guarded by one lock. Copying a tree, the slow
/// part, runs outside the lock.
#[derive(Debug, Default)]
struct State {
    /// Every layer, loaded from disk at start.
    layers: BTreeMap<String, LayerMeta>,
    /// Ids whose create is under way.
    creating: HashSet<String>,
    /// Layers being copied into a new layer, with how many copies are
    /// running: they cannot be removed meanwhile.
    copying: HashMap<String, usize>,
    /// References taken by `get` and not yet released by `put`.
    refs: HashMap<String, usize>,
    /// Read-only layers whose bind mount exists.
    mounted: BTreeSet<String>,
}

impl VfsDriver {
    /// Opens (or sets up) the driver's state under `req.root` and
    /// `req.run_root`: unmounts what a crashed previous instance left
    /// mounted, removes half-made layers, and loads the layers.
    ///
    /// Declines ([`Init::Skipped`]) when not running as root, which it needs
    /// to preserve ownership and to mount.
    pub fn new(req: InitRequest) -> DriverResult<Init<VfsDriver>> {
        let _options: VfsOptions = req.decode_options()?;
        if sys::geteuid() != 0 {
            return Ok(Init::Skipped(
                "vfs must run as root to keep file ownership and to mount read-only layers".into(),
            ));
        }
        let layout = Layout::open(&req.root, &req.run_root)?;
        sweep_mounts(&layout)?;
        let layers = layout.reconcile()?;
        Ok(Init::Ready(VfsDriver { layout, state: Mutex::new(State { layers, ..State::default() }) }))
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
        check_storage_opt(&req)?;
        let reservation = self.reserve(id, parent)?;

        let tmp = self.layout.temp_path("create");
        let made = if parent.is_empty() {
            copy::make_empty_root(&tmp)
        } else {
            copy::copy_tree(&self.layout.dir(parent), &tmp)
        };
        if let Err(e) = made {
            let _ = remove_any(&tmp);
            return Err(match parent {
                "" => e.context(format_args!("create layer {id:?}")),
                _ => e.context(format_args!("create layer {id:?} from parent {parent:?}")),
            });
        }

        let mut state = self.lock();
        let dir = self.layout.dir(id);
        if let Err(e) = self.commit_tree(id, &tmp, &dir) {
            let _ = remove_any(&tmp);
            return Err(e);
        }
        let meta = LayerMeta { parent: parent.to_string(), read_write };
        if let Err(e) = self.layout.write_meta(id, &meta) {
            // Without its record the tree is debris; take it back out.
            let _ = fs::rename(&dir, &tmp).and_then(|()| remove_any(&tmp));
            return Err(e.context(format_args!("create layer {id:?}")));
        }
        state.layers.insert(id.to_string(), meta);
        drop(state);
        drop(reservation);
        Ok(())
    }

    /// Claims `id` for a create on top of `parent` (which must exist and is
    /// pinned until the returned guard drops).
    fn reserve<'a>(&'a self, id: &'a str, parent: &'a str) -> DriverResult<Reservation<'a>> {
        let mut state = self.lock();
        if state.layers.contains_key(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} already exists in {}",
                self.layout.dirs().display()
            )));
        }
        if state.creating.contains(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} is being created by another call"
            )));
        }
        if !parent.is_empty() && !state.layers.contains_key(parent) {
            return Err(DriverError::not_found(format!(
                "parent layer {parent:?} of new layer {id:?} not found in {}",
                self.layout.dirs().display()
            )));
        }
        state.creating.insert(id.to_string());
        if !parent.is_empty() {
            *state.copying.entry(parent.to_string()).or_default() += 1;
        }
        Ok(Reservation { driver: self, id, parent })
    }

    /// Renames the finished tree `tmp` to `dir`, never replacing anything.
    /// A tree already at `dir` has no record (the id is reserved and
    /// unknown), so it is the debris of an interrupted create or remove: it
    /// is set aside and the rename retried. On file systems without
    /// `RENAME_NOREPLACE` (`EINVAL`) the retry is a plain rename, safe
    /// because the caller holds the lock and the id is reserved.
    fn commit_tree(&self, id: &str, tmp: &Path, dir: &Path) -> DriverResult<()> {
        let ctx = || format!("move new layer {id:?} into place at {}", dir.display());
        match sys::rename_noreplace(tmp, dir) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::EINVAL)) => {}
            Err(e) => return Err(DriverError::io(ctx(), &e)),
        }
        if fs::symlink_metadata(dir).is_ok() {
            let debris = self.layout.temp_path("debris");
            fs::rename(dir, &debris).map_err(|e| DriverError::io(ctx(), &e))?;
            let _ = remove_any(&debris);
        }
        fs::rename(tmp, dir).map_err(|e| DriverError::io(ctx(), &e))
    }

    /// Unmounts the bind mount of read-only layer `id` and removes its
    /// mount point.
    fn unmount_layer(&self, id: &str) -> DriverResult<()> {
        let mp = self.layout.mount_point(id);
        mount::unmount(&mp)
            .map_err(|e| DriverError::io(format_args!("unmount layer {id:?} at {}", mp.display()), &e))?;
        // Cosmetic: an empty directory left here is swept at the next start
        // and reused by the next `get`.
        let _ = fs::remove_dir(&mp);
        Ok(())
    }

    /// The known layer `id`, or a not-found error naming where it was
    /// looked for.
    fn layer<'s>(&self, state: &'s State, id: &str) -> DriverResult<&'s LayerMeta> {
        state.layers.get(id).ok_or_else(|| {
            DriverError::not_found(format!("layer {id:?} not found in {}", self.layout.dirs().display()))
        })
    }
}

/// A create under way: the id is claimed and the parent pinned until drop.
struct Reservation<'a> {
    driver: &'a VfsDriver,
    id: &'a str,
    parent: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.driver.lock();
        state.creating.remove(self.id);
        if let Some(n) = state.copying.get_mut(self.parent) {
            *n -= 1;
            if *n == 0 {
                state.copying.remove(self.parent);
            }
        }
    }
}

impl StorageDriver for VfsDriver {
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
        if state.copying.contains_key(id) {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is being copied into a new layer; remove it once that create has finished"
            )));
        }
        let children: Vec<&str> =
            state.layers.iter().filter(|(_, m)| m.parent == id).map(|(c, _)| c.as_str()).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {}; remove the child layers first",
                name_list(&children)
            )));
        }
        let dir = self.layout.dir(id);
        let inner = mount::mounts_under(&dir)
            .map_err(|e| DriverError::io(format_args!("read mount table to remove layer {id:?}"), &e))?;
        if let Some(m) = inner.first() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is in use: {} is mounted inside it; unmount it first",
                m.display()
            )));
        }
        if state.mounted.contains(id) {
            self.unmount_layer(id)?;
            state.mounted.remove(id);
        }
        state.refs.remove(id);

        let trash = self.layout.temp_path("remove");
        match fs::rename(&dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DriverError::io(format_args!("remove layer {id:?} at {}", dir.display()), &e))
            }
        }
        if let Err(e) = self.layout.remove_meta(id) {
            let _ = fs::rename(&trash, &dir);
            return Err(e);
        }
        state.layers.remove(id);
        drop(state);
        remove_any(&trash).map_err(|e| {
            DriverError::io(
                format_args!(
                    "layer {id:?} is removed, but deleting its old tree {} failed (retried when the driver \
                     starts)",
                    trash.display()
                ),
                &e,
            )
        })
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        let read_write = self.layer(&state, id)?.read_write;
        let dir = self.layout.dir(id);
        let path = if read_write {
            dir
        } else {
            let mp = self.layout.mount_point(id);
            if !state.mounted.contains(id) {
                let ctx = || format!("mount layer {id:?} read-only at {}", mp.display());
                match fs::DirBuilder::new().mode(0o700).create(&mp) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(DriverError::io(ctx(), &e))
                    }
                    _ => {}
                }
                if let Err(e) = mount::bind_ro(&dir, &mp) {
                    let _ = fs::remove_dir(&mp);
                    return Err(DriverError::io(ctx(), &e));
                }
                state.mounted.insert(id.to_string());
            }
            mp
        };
        let path = path_string(&path)?;
        *state.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        let refs = state.refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            )));
        }
        if refs == 1 && state.mounted.contains(id) {
            // On failure the reference stays, so the put can be retried.
            self.unmount_layer(id)?;
            state.mounted.remove(id);
        }
        if refs == 1 {
            state.refs.remove(id);
        } else {
            state.refs.insert(id.to_string(), refs - 1);
        }
        Ok(())
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        // An invalid id names no layer: false, not an error.
        Ok(validate_id("layer id", &req.id).is_ok() && self.lock().layers.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let state = self.lock();
        Ok(StatusResponse::new(vec![
            ("Root Dir".into(), self.layout.root.display().to_string()),
            ("Run Dir".into(), self.layout.run_root.display().to_string()),
            ("Layers".into(), state.layers.len().to_string()),
            ("Mounted".into(), state.mounted.len().to_string()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let state = self.lock();
        let meta = self.layer(&state, id)?;
        Ok(MetadataResponse::new(BTreeMap::from([
            ("Dir".to_string(), path_string(&self.layout.dir(id))?),
            ("Parent".to_string(), meta.parent.clone()),
            ("ReadWrite".to_string(), meta.read_write.to_string()),
        ])))
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut state = self.lock();
        let mut errors = Vec::new();
        for id in state.mounted.clone() {
            match self.unmount_layer(&id) {
                Ok(()) => {
                    state.mounted.remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        state.refs.clear();
        // Anything else under our mount directory (none, unless a mount was
        // made behind the driver's back, or an unmount above failed and
        // succeeds on this second try).
        if let Err(e) = sweep_mounts(&self.layout) {
            errors.push(e);
        }
        // Forget the mounts that no longer exist, so a later `get` mounts
        // again instead of trusting a stale entry.
        let layout = &self.layout;
        state.mounted.retain(|id| mount::is_mount_point(&layout.mount_point(id)).unwrap_or(true));
        match combine(errors) {
            Some(e) => Err(e.context("vfs cleanup")),
            None => Ok(()),
        }
    }
}

/// Refuses every per-layer storage option: vfs has none, and no quota.
fn check_storage_opt(req: &CreateRequest) -> DriverResult<()> {
    match req.storage_opt.keys().next() {
        None => Ok(()),
        Some(key) if key.eq_ignore_ascii_case("size") => Err(DriverError::unsupported(format!(
            "vfs cannot limit the size of layer {:?}: it has no quota support; drop storage option \"size\" \
             or use a driver that has",
            req.id
        ))),
        Some(key) => Err(DriverError::invalid_argument(format!(
            "unknown storage option {key:?} for layer {:?}: vfs takes none",
            req.id
        ))),
    }
}

/// Unmounts everything under `<run_root>/mnt` and removes the mount
/// points: what a crashed instance (or anyone) left there. Tries every
/// mount and reports every failure.
fn sweep_mounts(layout: &Layout) -> DriverResult<()> {
    let dir = layout.mounts();
    let mut errors = Vec::new();
    match mount::mounts_under(&dir) {
        Ok(points) => {
            for m in points {
                if let Err(e) = mount::unmount(&m) {
                    errors.push(DriverError::io(format_args!("unmount stale mount {}", m.display()), &e));
                }
            }
        }
        Err(e) => errors.push(DriverError::io("read /proc/self/mountinfo", &e)),
    }
    for name in layout::read_dir(&dir)? {
        let path = dir.join(name);
        match fs::remove_dir(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                errors.push(DriverError::io(format_args!("remove stale mount point {}", path.display()), &e))
            }
            _ => {}
        }
    }
    combine(errors).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    struct Fixture {
        driver: VfsDriver,
        _root: tempfile::TempDir,
        _run: tempfile::TempDir,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = self.driver.cleanup(CleanupRequest::default());
        }
    }

    fn exists_req(id: &str) -> ExistsRequest {
        let mut r = ExistsRequest::default();
        r.id = id.into();
        r
    }

    fn remove_req(id: &str) -> RemoveRequest {
        let mut r = RemoveRequest::default();
        r.id = id.into();
        r
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let req = InitRequest::new("vfs", root.path().to_str().unwrap(), run.path().to_str().unwrap());
        let Init::Ready(driver) = VfsDriver::new(req).unwrap() else {
            panic!("vfs skipped: tests run as root")
        };
        Fixture { driver, _root: root, _run: run }
    }

    #[test]
    fn storage_options_are_refused_with_the_right_kind() {
        let f = fixture();
        let mut req = CreateRequest::new("a", "");
        req.storage_opt.insert("size".into(), "10G".into());
        assert_eq!(f.driver.create(req).unwrap_err().kind, ErrorKind::Unsupported);
        let mut req = CreateRequest::new("a", "");
        req.storage_opt.insert("bogus".into(), "1".into());
        let e = f.driver.create(req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("\"bogus\""), "{e}");
        assert!(!f.driver.exists(exists_req("a")).unwrap());
    }

    #[test]
    fn a_failed_create_releases_the_id_and_the_parent() {
        let f = fixture();
        f.driver.create_rw(CreateRequest::new("p", "")).unwrap();
        // A mount inside the parent makes the copy fail half-way.
        let inner = f.driver.layout.dir("p").join("proc");
        fs::create_dir(&inner).unwrap();
        sys::bind_mount(Path::new("/proc"), &inner).unwrap();
        let res = f.driver.create(CreateRequest::new("c", "p"));
        mount::unmount(&inner).unwrap();
        assert_eq!(res.unwrap_err().kind, ErrorKind::FailedPrecondition);
        let state = f.driver.lock();
        assert!(state.creating.is_empty() && state.copying.is_empty(), "{state:?}");
        assert!(!state.layers.contains_key("c"));
        drop(state);
        assert_eq!(layout::read_dir(&f.driver.layout.tmp()).unwrap().len(), 0);
        f.driver.create(CreateRequest::new("c", "p")).unwrap();
    }

    #[test]
    fn a_parent_being_copied_cannot_be_removed_and_its_id_is_claimed() {
        let f = fixture();
        f.driver.create(CreateRequest::new("p", "")).unwrap();
        let reservation = f.driver.reserve("c", "p").unwrap();
        let e = f.driver.remove(remove_req("p")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("being copied"), "{e}");
        let e = f.driver.create(CreateRequest::new("c", "")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
        assert!(!f.driver.exists(exists_req("c")).unwrap(), "not a layer until committed");
        drop(reservation);
        f.driver.remove(remove_req("p")).unwrap();
        f.driver.create(CreateRequest::new("c", "")).unwrap();
    }

    #[test]
    fn removing_a_layer_with_a_mount_inside_is_a_conflict() {
        let f = fixture();
        f.driver.create_rw(CreateRequest::new("rw", "")).unwrap();
        let inner = f.driver.layout.dir("rw").join("proc");
        fs::create_dir(&inner).unwrap();
        sys::bind_mount(Path::new("/proc"), &inner).unwrap();
        let res = f.driver.remove(remove_req("rw"));
        mount::unmount(&inner).unwrap();
        let e = res.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert!(e.message.contains("proc"), "{e}");
        f.driver.remove(remove_req("rw")).unwrap();
    }

    #[test]
    fn a_tree_left_by_an_interrupted_create_does_not_block_the_id() {
        let f = fixture();
        fs::create_dir(f.driver.layout.dir("x")).unwrap();
        fs::write(f.driver.layout.dir("x").join("junk"), b"j").unwrap();
        f.driver.create(CreateRequest::new("x", "")).unwrap();
        assert_eq!(fs::read_dir(f.driver.layout.dir("x")).unwrap().count(), 0);
    }

    #[test]
    fn combine_keeps_every_message() {
        assert!(combine(vec![]).is_none());
        let one = combine(vec![DriverError::conflict("a")]).unwrap();
        assert_eq!((one.kind, one.message.as_str()), (ErrorKind::Conflict, "a"));
        let same = combine(vec![DriverError::conflict("a"), DriverError::conflict("b")]).unwrap();
        assert_eq!((same.kind, same.message.as_str()), (ErrorKind::Conflict, "2 errors: a; b"));
        let mixed = combine(vec![DriverError::conflict("a"), DriverError::not_found("b")]).unwrap();
        assert_eq!(mixed.kind, ErrorKind::Internal);
    }

    #[test]
    fn name_list_is_bounded() {
        assert_eq!(name_list(&["a"]), "\"a\"");
        let many = ["1", "2", "3", "4", "5", "6", "7"];
        assert_eq!(name_list(&many), "\"1\", \"2\", \"3\", \"4\", \"5\" and 2 more");
    }
}
