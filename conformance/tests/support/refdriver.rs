//! A small copy-based storage driver for the suite's own tests, with
//! switchable flaws. Without flaws it keeps the contract (read-only layers
//! are read-only bind mounts, so it needs root), which shows the suite
//! passes a correct driver; each flaw breaks one rule, which shows the
//! right case fails with a helpful message. It is a test double for the
//! suite, never evidence that a real driver works (`tests/vfs.rs` is).
//!
//! A child starts as a copy of its parent made with berth-core's layer
//! engine (`layers::diff` of the parent against nothing, applied to the new
//! directory), which keeps owners, modes, times, xattrs, hardlinks, fifos
//! and device nodes. Layers are recorded in `<root>/meta/<id>` (`rw` or
//! `ro`, a newline, the parent), so a driver reopened on the root knows
//! them. With `native_diff` it offers a `DiffDriver` (`refdiff.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_core::layers::{self, ApplyOptions};
use berth_plugin_api::storage::*;
use berth_plugin_api::{DriverError, DriverResult};

/// Rules the driver breaks on purpose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flaws {
    /// `get` of a read-only layer answers its writable directory.
    pub writable_read_only: bool,
    /// Copying a parent into a child drops setuid, setgid and sticky bits.
    pub drops_special_bits: bool,
    /// `create` of an existing id succeeds (and changes nothing).
    pub allows_duplicate_ids: bool,
    /// `remove` ignores children.
    pub removes_parents: bool,
    /// `exists` keeps answering `true` after `remove`.
    pub exists_after_remove: bool,
    /// `status` counts every layer ever created.
    pub stale_layer_count: bool,
    /// Nothing is ever unmounted.
    pub leaks_mounts: bool,
    /// `status` panics.
    pub panics_in_status: bool,
    /// A new empty layer's root is 0700.
    pub root_mode_0700: bool,
    /// Copying a parent into a child drops every xattr.
    pub drops_xattrs: bool,
    /// `size=` is accepted and ignored (no quota, no error).
    pub ignores_size: bool,
    /// A reopened driver does not load the layers of its root.
    pub forgets_layers: bool,
    /// Not a flaw: offer a native `DiffDriver` (berth-core's engine over
    /// the layer directories).
    pub native_diff: bool,
    /// With `native_diff`: exported diffs leave out every `.wh.*` entry.
    pub diff_ignores_whiteouts: bool,
    /// With `native_diff`: `changes` leaves out deletions.
    pub changes_miss_deletions: bool,
    /// With `native_diff`: `apply_diff` joins tar paths to the layer
    /// directory as strings and follows every symlink (device nodes
    /// refused), as a naive untar would.
    pub naive_untar: bool,
}

#[derive(Debug)]
struct Layer {
    parent: String,
    rw: bool,
    refs: usize,
    mounted: bool,
}

#[derive(Debug, Default)]
struct State {
    layers: BTreeMap<String, Layer>,
    removed: BTreeSet<String>,
    ever: usize,
}

/// The driver.
#[derive(Debug)]
pub struct RefDriver {
    root: PathBuf,
    pub(crate) flaws: Flaws,
    state: Mutex<State>,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> DriverError {
    DriverError::io(what, &e)
}

impl RefDriver {
    /// A driver keeping its layers under `root`: unmounts what a previous
    /// instance left mounted and loads the layers recorded there.
    pub fn new(root: &str, flaws: Flaws) -> DriverResult<Self> {
        let d = RefDriver { root: PathBuf::from(root), flaws, state: Mutex::default() };
        if let Ok(entries) = std::fs::read_dir(d.root.join("mnt")) {
            for e in entries.flatten() {
                let _ = umount(&e.path());
            }
        }
        if !flaws.forgets_layers {
            let mut st = d.state();
            for e in std::fs::read_dir(d.root.join("meta")).into_iter().flatten().flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path()).map_err(|e| io_err("read layer record", e))?;
                let (kind, parent) = text.split_once('\n').unwrap_or((text.as_str(), ""));
                let layer = Layer { parent: parent.to_string(), rw: kind == "rw", refs: 0, mounted: false };
                st.layers.insert(id, layer);
            }
            st.ever = st.layers.len();
        }
        Ok(d)
    }

    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
    }

    fn meta(&self, id: &str) -> PathBuf {
        self.root.join("meta").join(id)
    }

    fn mnt(&self, id: &str) -> PathBuf {
        self.root.join("mnt").join(id)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make(&self, req: CreateRequest, rw: bool) -> DriverResult<()> {
        let id = req.id;
        if id.is_empty() || id.contains('/') {
            return Err(DriverError::invalid_argument(format!("bad layer id {id:?}")));
        }
        if req.storage_opt.contains_key("size") && !self.flaws.ignores_size {
            return Err(DriverError::unsupported(format!(
                "ref cannot limit the size of layer {id:?}: no quotas"
            )));
        }
        let mut st = self.state();
        if st.layers.contains_key(&id) {
            if self.flaws.allows_duplicate_ids {
                return Ok(());
            }
            return Err(DriverError::already_exists(format!("layer {id:?} exists")));
        }
        if !req.parent.is_empty() && !st.layers.contains_key(&req.parent) {
            return Err(DriverError::not_found(format!("parent layer {:?} not found", req.parent)));
        }
        let dir = self.dir(&id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(format!("create {}", dir.display()), e))?;
        if req.parent.is_empty() {
            let mode = if self.flaws.root_mode_0700 { 0o700 } else { 0o755 };
            set_mode(&dir, mode).map_err(|e| io_err("chmod layer root", e))?;
        } else {
            let src = self.dir(&req.parent);
            self.copy_tree(&src, &dir)?;
            self.copy_meta(&src, &dir).map_err(|e| io_err("copy root metadata", e))?;
        }
        let record = format!("{}\n{}", if rw { "rw" } else { "ro" }, req.parent);
        std::fs::create_dir_all(self.root.join("meta")).map_err(|e| io_err("create the record dir", e))?;
        std::fs::write(self.meta(&id), record).map_err(|e| io_err("write the layer record", e))?;
        st.layers.insert(id.clone(), Layer { parent: req.parent, rw, refs: 0, mounted: false });
        st.removed.remove(&id);
        st.ever += 1;
        Ok(())
    }

    /// Copies `src` into the existing `dst` with berth-core's engine, then
    /// plants the copy flaws.
    fn copy_tree(&self, src: &Path, dst: &Path) -> DriverResult<()> {
        let mut tar = Vec::new();
        layers::diff(None, src, &mut tar)?;
        let mut opts = ApplyOptions::default();
        opts.allow_devices = true;
        layers::apply(dst, tar.as_slice(), &opts)?;
        if self.flaws.drops_special_bits || self.flaws.drops_xattrs {
            self.spoil(dst).map_err(|e| io_err(format!("spoil {}", dst.display()), e))?;
        }
        Ok(())
    }

    /// The copy flaws, on every entry below `dir`.
    fn spoil(&self, dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            let m = std::fs::symlink_metadata(&p)?;
            if self.flaws.drops_xattrs {
                let mut buf = vec![0u8; 1 << 16];
                let n = rustix::fs::llistxattr(&p, &mut buf[..])?;
                for name in buf[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
                    rustix::fs::lremovexattr(&p, std::ffi::OsStr::from_bytes(name))?;
                }
            }
            if self.flaws.drops_special_bits && !m.file_type().is_symlink() {
                set_mode(&p, m.mode() & 0o777)?;
            }
            if m.is_dir() {
                self.spoil(&p)?;
            }
        }
        Ok(())
    }

    fn copy_meta(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(from)?;
        std::os::unix::fs::lchown(to, Some(m.uid()), Some(m.gid()))?;
        if !m.file_type().is_symlink() {
            let keep = if self.flaws.drops_special_bits { 0o777 } else { 0o7777 };
            set_mode(to, m.mode() & keep)?;
        }
        Ok(())
    }

    fn unmount(&self, id: &str, layer: &mut Layer) -> DriverResult<()> {
        if layer.mounted && !self.flaws.leaks_mounts {
            umount(&self.mnt(id)).map_err(|e| io_err(format!("unmount layer {id:?}"), e))?;
            layer.mounted = false;
        }
        Ok(())
    }
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("test paths have no NUL")
}

/// A read-only bind mount of `src` at `dst`.
fn bind_read_only(src: &Path, dst: &Path) -> std::io::Result<()> {
    let (s, d) = (cstr(src), cstr(dst));
    // SAFETY: both strings are valid and NUL-terminated for the call's
    // duration; the null fstype and data pointers are allowed for MS_BIND.
    let rc =
        unsafe { libc::mount(s.as_ptr(), d.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    // SAFETY: as above; a remount of the bind mount just made.
    let rc = unsafe { libc::mount(std::ptr::null(), d.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let _ = umount(dst);
        return Err(e);
    }
    Ok(())
}

fn umount(p: &Path) -> std::io::Result<()> {
    let c = cstr(p);
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl StorageDriver for RefDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.make(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.make(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let mut st = self.state();
        let has_children = st.layers.values().any(|l| l.parent == req.id);
        let Some(layer) = st.layers.get_mut(&req.id) else {
            return Err(DriverError::not_found(format!("layer {:?} not found", req.id)));
        };
        if has_children && !self.flaws.removes_parents {
            return Err(DriverError::conflict(format!("layer {:?} has children", req.id)));
        }
        self.unmount(&req.id, layer)?;
        let dir = self.dir(&req.id);
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(format!("remove {}", dir.display()), e))?;
        let _ = std::fs::remove_file(self.meta(&req.id));
        st.layers.remove(&req.id);
        st.removed.insert(req.id);
        Ok(())
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let mut st = self.state();
        let Some(layer) = st.layers.get_mut(&req.id) else {
            return Err(DriverError::not_found(format!("layer {:?} not found", req.id)));
        };
        let dir = self.dir(&req.id);
        if layer.rw || self.flaws.writable_read_only {
            layer.refs += 1;
            return Ok(GetResponse::new(dir.display().to_string()));
        }
        let mnt = self.mnt(&req.id);
        if !layer.mounted {
            std::fs::create_dir_all(&mnt).map_err(|e| io_err(format!("create {}", mnt.display()), e))?;
            bind_read_only(&dir, &mnt).map_err(|e| io_err(format!("mount layer {:?}", req.id), e))?;
            layer.mounted = true;
        }
        layer.refs += 1;
        Ok(GetResponse::new(mnt.display().to_string()))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let mut st = self.state();
        let Some(layer) = st.layers.get_mut(&req.id) else {
            return Err(DriverError::not_found(format!("layer {:?} not found", req.id)));
        };
        if layer.refs == 0 {
            return Err(DriverError::failed_precondition(format!("layer {:?} is not mounted", req.id)));
        }
        layer.refs -= 1;
        if layer.refs == 0 {
            self.unmount(&req.id, layer)?;
        }
        Ok(())
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        let st = self.state();
        Ok(st.layers.contains_key(&req.id)
            || (self.flaws.exists_after_remove && st.removed.contains(&req.id)))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        if self.flaws.panics_in_status {
            panic!("refdriver: status exploded");
        }
        let st = self.state();
        let n = if self.flaws.stale_layer_count { st.ever } else { st.layers.len() };
        Ok(StatusResponse::new(vec![("Layers".into(), n.to_string())]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let mut m = BTreeMap::new();
        m.insert("Dir".to_string(), self.dir(&req.id).display().to_string());
        Ok(MetadataResponse::new(m))
    }

    fn as_diff(&self) -> Option<&dyn berth_plugin_api::DiffDriver> {
        self.flaws.native_diff.then_some(self as &dyn berth_plugin_api::DiffDriver)
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut st = self.state();
        let ids: Vec<String> = st.layers.keys().cloned().collect();
        let mut errors = Vec::new();
        for id in ids {
            if let Some(layer) = st.layers.get_mut(&id) {
                layer.refs = 0;
                if let Err(e) = self.unmount(&id, layer) {
                    errors.push(e.message);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DriverError::internal(errors.join("; ")))
        }
    }
}
