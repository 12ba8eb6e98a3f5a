//! {{driver_name}}: a small but complete berth storage (graph) driver.
//!
//! Every layer is a full copy of its parent, like berth's `vfs`: nothing is
//! needed from the kernel beyond bind mounts, so it works on any file
//! system. It is slow and uses space freely; replace the copying with your
//! storage system's snapshots, and keep the rules the conformance suite
//! checks (`berth-conformance list --kind storage`):
//!
//! * a layer without parent starts empty, its root `0755` `root:root`
//!   (ST-01); a child starts as an exact copy of its parent: modes, owners,
//!   xattrs, hardlinks, times (ST-02, ST-07..ST-14; see `copy.rs`);
//! * `create` of an existing id is `AlreadyExists`, and the id is reusable
//!   after `remove` (ST-04); `remove` of a layer with children is
//!   `Conflict` (ST-05); an unknown id is `NotFound`;
//! * a layer made by `create` is read-only: `get` answers a read-only bind
//!   mount of it, so a write through it really fails (ST-06); a layer made
//!   by `create_rw` is its directory;
//! * `get`/`put` are counted per layer, the last `put` unmounts, and a
//!   `put` with no reference left is `FailedPrecondition` (ST-03);
//! * `size=` is a typed `Unsupported` error, and `status` says `Quota:
//!   unsupported` (ST-16);
//! * a driver reopened on the same root has the same layers, and `cleanup`
//!   unmounts everything it mounted (ST-19).
//!
//! Diffs are left to berth: without a [`berth_plugin_api::DiffDriver`] it
//! compares a layer with its parent itself. Where things live on disk, and
//! how a crash is recovered from: `layout.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{path_string, validate_id};
use berth_plugin_api::util::mounts;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, StorageDriver};
use serde::Deserialize;

use crate::layout::{remove_tree, Layer, Layout};

mod copy;
mod export;
mod layout;
mod sys;
pub use export::berth_plugin_root;

/// The driver's options from berth's configuration: none yet. An unknown
/// key is refused rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

/// What the driver knows, behind one lock.
#[derive(Debug, Default)]
struct State {
    layers: BTreeMap<String, Layer>,
    /// References taken by `get` and not yet released by `put`.
    refs: HashMap<String, usize>,
    /// Read-only layers whose bind mount exists.
    mounted: BTreeSet<String>,
}

/// The driver. One lock guards everything and is held while a layer is
/// copied: simple and safe. A faster driver copies outside the lock
/// (berth's vfs shows how).
#[derive(Debug)]
pub struct CopyDriver {
    layout: Layout,
    state: Mutex<State>,
}

impl CopyDriver {
    /// The constructor berth calls (see `export.rs`), on the directories
    /// berth gives the driver. Declines (`Init::Skipped`, with the reason)
    /// when not running as root, which it needs to keep file owners and to
    /// mount.
    pub fn new(req: InitRequest) -> DriverResult<Init<CopyDriver>> {
        let _options: Options = req.decode_options()?;
        if sys::geteuid() != 0 {
            let why = "it must run as root to keep file owners and to mount read-only layers";
            return Ok(Init::Skipped(why.into()));
        }
        if req.root.is_empty() || req.run_root.is_empty() {
            return Err(DriverError::invalid_argument("the driver needs a root and a run root"));
        }
        Ok(Init::Ready(CopyDriver::open(Path::new(&req.root), Path::new(&req.run_root))?))
    }

    /// Opens the driver on `root` and `run_root` (made if missing):
    /// unmounts what a previous instance left mounted, sweeps half-made
    /// layers and loads the rest.
    pub fn open(root: &Path, run_root: &Path) -> DriverResult<CopyDriver> {
        let layout = Layout::open(root, run_root)?;
        layout.unmount_all()?;
        let layers = layout.recover()?;
        Ok(CopyDriver { layout, state: Mutex::new(State { layers, ..State::default() }) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole before anything
        // that can panic, so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Layer `id`, or `NotFound` naming where it was looked for.
    fn known<'s>(&self, state: &'s State, id: &str) -> DriverResult<&'s Layer> {
        validate_id("layer id", id)?;
        state.layers.get(id).ok_or_else(|| {
            DriverError::not_found(format!("layer {id:?} not found in {}", self.layout.root.display()))
        })
    }

    /// `create` and `create_rw`: build the tree aside in `tmp/`, move it
    /// into place with one rename, then write the record.
    fn create_layer(&self, req: CreateRequest, read_write: bool) -> DriverResult<()> {
        let (id, parent) = (req.id.as_str(), req.parent.as_str());
        validate_id("layer id", id)?;
        check_storage_opt(&req)?;
        let mut state = self.lock();
        if state.layers.contains_key(id) {
            return Err(DriverError::already_exists(format!("layer {id:?} already exists")));
        }
        if !parent.is_empty() {
            self.known(&state, parent).map_err(|e| e.context(format_args!("parent of layer {id:?}")))?;
        }
        let (tmp, dir) = (self.layout.temp("create"), self.layout.dir(id));
        let built = match parent {
            "" => copy::make_empty_root(&tmp),
            _ => copy::copy_tree(&self.layout.dir(parent), &tmp),
        };
        let placed = built.and_then(|()| {
            let into = |e| DriverError::io(format_args!("move the new tree to {}", dir.display()), &e);
            fs::rename(&tmp, &dir).map_err(into)
        });
        if let Err(e) = placed {
            let _ = remove_tree(&tmp);
            return Err(e.context(format_args!("create layer {id:?}")));
        }
        let layer = Layer { parent: parent.to_string(), read_write };
        if let Err(e) = self.layout.write_record(id, &layer) {
            let _ = remove_tree(&dir);
            return Err(e.context(format_args!("create layer {id:?}")));
        }
        state.layers.insert(id.to_string(), layer);
        Ok(())
    }

    /// Unmounts read-only layer `id` and removes its mount point.
    fn unmount_layer(&self, id: &str) -> DriverResult<()> {
        let mp = self.layout.mount_point(id);
        sys::unmount(&mp).map_err(|e| DriverError::io(format_args!("unmount {}", mp.display()), &e))?;
        let _ = fs::remove_dir(&mp); // an empty directory left here is harmless
        Ok(())
    }
}

impl StorageDriver for CopyDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        let mut state = self.lock();
        self.known(&state, id)?;
        let children: Vec<&String> =
            state.layers.iter().filter(|(_, l)| l.parent == id).map(|(c, _)| c).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {children:?}; remove those first"
            )));
        }
        let dir = self.layout.dir(id);
        let inside = mounts::mounts_under(&dir).map_err(|e| DriverError::io("read the mount table", &e))?;
        if let Some(m) = inside.first() {
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
        // Move the tree out, forget the layer, then delete the tree: a
        // crash at any point leaves debris `Layout::recover` sweeps.
        let trash = self.layout.temp("remove");
        fs::rename(&dir, &trash)
            .map_err(|e| DriverError::io(format_args!("remove {}", dir.display()), &e))?;
        if let Err(e) = self.layout.remove_record(id) {
            let _ = fs::rename(&trash, &dir);
            return Err(e);
        }
        state.layers.remove(id);
        drop(state);
        // The layer is gone; what is left in `tmp/` is swept at the next start.
        remove_tree(&trash)
            .map_err(|e| e.context(format_args!("layer {id:?} is removed, deleting its old tree failed")))
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        let mut state = self.lock();
        let path = if self.known(&state, id)?.read_write {
            self.layout.dir(id)
        } else {
            let mp = self.layout.mount_point(id);
            if !state.mounted.contains(id) {
                let err =
                    |e| DriverError::io(format_args!("mount layer {id:?} read-only at {}", mp.display()), &e);
                fs::create_dir_all(&mp).map_err(err)?;
                sys::bind_mount_read_only(&self.layout.dir(id), &mp).map_err(err)?;
                state.mounted.insert(id.to_string());
            }
            mp
        };
        *state.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path_string(&path)?))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        let mut state = self.lock();
        self.known(&state, id)?;
        let refs = state.refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            )));
        }
        if refs == 1 && state.mounted.contains(id) {
            self.unmount_layer(id)?; // on failure the reference stays: put again
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
        // Never an error: an id that is not even valid names no layer.
        Ok(self.lock().layers.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let state = self.lock();
        Ok(StatusResponse::new(vec![
            ("Root Dir".into(), self.layout.root.display().to_string()),
            ("Run Dir".into(), self.layout.run_root.display().to_string()),
            ("Layers".into(), state.layers.len().to_string()),
            ("Mounted".into(), state.mounted.len().to_string()),
            ("Quota".into(), "unsupported".into()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let state = self.lock();
        let layer = self.known(&state, &req.id)?;
        Ok(MetadataResponse::new(BTreeMap::from([
            ("Dir".to_string(), path_string(&self.layout.dir(&req.id))?),
            ("Parent".to_string(), layer.parent.clone()),
            ("ReadWrite".to_string(), layer.read_write.to_string()),
        ])))
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut state = self.lock();
        let result = self.layout.unmount_all();
        state.mounted.clear();
        state.refs.clear();
        result
    }
}

/// Refuses every per-layer storage option: `size` (a quota) is a typed
/// unsupported error, anything else an invalid argument.
fn check_storage_opt(req: &CreateRequest) -> DriverResult<()> {
    let id = &req.id;
    match req.storage_opt.keys().next() {
        None => Ok(()),
        Some(key) if key.eq_ignore_ascii_case("size") => Err(DriverError::unsupported(format!(
            "layer {id:?}: this driver has no quota support; drop storage option \"size\""
        ))),
        Some(key) => {
            Err(DriverError::invalid_argument(format!("layer {id:?}: unknown storage option {key:?}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    /// A driver on fresh directories, or `None` (the test is skipped) when
    /// not running as root.
    fn driver() -> Option<(CopyDriver, tempfile::TempDir)> {
        if sys::geteuid() != 0 {
            eprintln!("skipped: the driver needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = CopyDriver::open(&dir.path().join("root"), &dir.path().join("run")).unwrap();
        Some((d, dir))
    }

    fn get(d: &CopyDriver, id: &str) -> std::path::PathBuf {
        d.get(GetRequest::new(id)).unwrap().path.into()
    }

    #[test]
    fn a_layer_lives_through_get_put_a_child_and_a_reopen() {
        let Some((d, dir)) = driver() else { return };
        d.create_rw(CreateRequest::new("base", "")).unwrap();
        let kind = d.create(CreateRequest::new("base", "")).unwrap_err().kind;
        assert_eq!(kind, ErrorKind::AlreadyExists);
        fs::write(get(&d, "base").join("f"), b"from base").unwrap();
        d.put(PutRequest::new("base")).unwrap();
        assert_eq!(d.put(PutRequest::new("base")).unwrap_err().kind, ErrorKind::FailedPrecondition);

        d.create(CreateRequest::new("child", "base")).unwrap();
        assert_eq!(d.remove(RemoveRequest::new("base")).unwrap_err().kind, ErrorKind::Conflict);
        let child = get(&d, "child");
        assert_eq!(fs::read(child.join("f")).unwrap(), b"from base");
        let write = fs::write(child.join("g"), b"x").unwrap_err();
        assert_eq!(write.raw_os_error(), Some(libc::EROFS), "a read-only layer refuses writes");
        d.cleanup(CleanupRequest::default()).unwrap();
        drop(d);

        let d = CopyDriver::open(&dir.path().join("root"), &dir.path().join("run")).unwrap();
        assert!(d.exists(ExistsRequest::new("child")).unwrap());
        d.remove(RemoveRequest::new("child")).unwrap();
        d.remove(RemoveRequest::new("base")).unwrap();
        assert!(!d.exists(ExistsRequest::new("base")).unwrap());
        assert_eq!(d.get(GetRequest::new("base")).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn an_empty_layer_is_0755_root_root() {
        use std::os::unix::fs::MetadataExt;
        let Some((d, _dir)) = driver() else { return };
        d.create(CreateRequest::new("empty", "")).unwrap();
        let m = fs::metadata(get(&d, "empty")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
        d.remove(RemoveRequest::new("empty")).unwrap(); // unmounts first
        assert!(d.layout.unmount_all().is_ok());
    }

    #[test]
    fn a_mount_inside_a_layer_blocks_its_removal() {
        let Some((d, dir)) = driver() else { return };
        d.create_rw(CreateRequest::new("busy", "")).unwrap();
        let inner = get(&d, "busy").join("proc");
        fs::create_dir(&inner).unwrap();
        sys::bind_mount_read_only(dir.path(), &inner).unwrap();
        let refused = d.remove(RemoveRequest::new("busy"));
        sys::unmount(&inner).unwrap();
        assert_eq!(refused.unwrap_err().kind, ErrorKind::Conflict);
        d.remove(RemoveRequest::new("busy")).unwrap();
    }

    #[test]
    fn storage_options_are_refused_with_the_right_kind() {
        let Some((d, _dir)) = driver() else { return };
        let mut req = CreateRequest::new("q", "");
        req.storage_opt.insert("size".into(), "10G".into());
        assert_eq!(d.create_rw(req).unwrap_err().kind, ErrorKind::Unsupported);
        let mut req = CreateRequest::new("q", "");
        req.storage_opt.insert("bogus".into(), "1".into());
        assert_eq!(d.create_rw(req).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(d.create(CreateRequest::new("../x", "")).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(d.create(CreateRequest::new("c", "missing")).unwrap_err().kind, ErrorKind::NotFound);
        assert!(!d.exists(ExistsRequest::new("q")).unwrap());
    }
}
