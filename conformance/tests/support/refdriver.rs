//! A small copy-based storage driver for the suite's own tests, with
//! switchable flaws. Without flaws it keeps the contract (read-only layers
//! are read-only bind mounts, so it needs root), which shows the suite
//! passes a correct driver; each flaw breaks one rule, which shows the
//! right case fails with a helpful message. It is a test double for the
//! suite, never evidence that a real driver works (`tests/vfs.rs` is).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    flaws: Flaws,
    state: Mutex<State>,
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> DriverError {
    DriverError::io(what, &e)
}

impl RefDriver {
    /// A driver keeping its layers under `root`.
    pub fn new(root: &str, flaws: Flaws) -> Self {
        RefDriver { root: PathBuf::from(root), flaws, state: Mutex::default() }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("layers").join(id)
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
            self.copy_tree(&src, &dir).map_err(|e| io_err(format!("copy {}", src.display()), e))?;
            self.copy_meta(&src, &dir).map_err(|e| io_err("copy root metadata", e))?;
        }
        st.layers.insert(id.clone(), Layer { parent: req.parent, rw, refs: 0, mounted: false });
        st.removed.remove(&id);
        st.ever += 1;
        Ok(())
    }

    fn copy_tree(&self, src: &Path, dst: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let t = entry.file_type()?;
            if t.is_dir() {
                std::fs::create_dir(&to)?;
                self.copy_tree(&from, &to)?;
            } else if t.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
            } else {
                std::fs::copy(&from, &to)?;
            }
            self.copy_meta(&from, &to)?;
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
