//! A small linked volume driver for the broken-driver tests: volumes are
//! directories under the root, the volume list with each volume's active
//! mount ids is kept in `<root>/volumes.json` (so a restarted driver knows
//! them), and each [`VolFlaws`] field plants one defect. With
//! `tmpfs_backed` every volume is mount-backed: a tmpfs mounted on its data
//! directory by the first active mount id and unmounted by the last (root
//! only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, VolumeDriver};

/// Defects to plant, one per field; `default()` is a correct driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolFlaws {
    /// `remove` ignores active mounts.
    pub remove_ignores_mounts: bool,
    /// `get` of an unknown name answers `Ok` with an empty `VolumeInfo`.
    pub get_unknown_answers_empty: bool,
    /// Not a defect: every volume is a tmpfs while it has users.
    pub tmpfs_backed: bool,
    /// With `tmpfs_backed`: the first unmount takes the tmpfs away, though
    /// other users remain.
    pub unmounts_backing_early: bool,
    /// `create` also writes a file into the temp dir, outside its root, and
    /// never removes it ([`litter`] names it).
    pub litters_temp_dir: bool,
}

/// The file a driver with `litters_temp_dir` leaves for volume `name`.
pub fn litter(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dirvol-litter-{}-{name}", std::process::id()))
}

type State = BTreeMap<String, BTreeSet<String>>;

/// The driver.
#[derive(Debug)]
pub struct DirVolumes {
    root: PathBuf,
    flaws: VolFlaws,
    state: Mutex<State>,
}

fn io_err(what: String, e: std::io::Error) -> DriverError {
    DriverError::io(what, &e)
}

fn unknown(name: &str) -> DriverError {
    DriverError::not_found(format!("volume {name:?} not found"))
}

impl DirVolumes {
    /// Opens the driver on `root`, loading what a previous instance saved.
    pub fn new(root: &str, flaws: VolFlaws) -> DriverResult<DirVolumes> {
        let root = PathBuf::from(root);
        let state = match std::fs::read(root.join("volumes.json")) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| DriverError::internal(format!("volumes.json: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
            Err(e) => return Err(io_err("read volumes.json".into(), e)),
        };
        Ok(DirVolumes { root, flaws, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn data(&self, name: &str) -> PathBuf {
        self.root.join("vols").join(name)
    }

    fn save(&self, state: &State) -> DriverResult<()> {
        let path = self.root.join("volumes.json");
        std::fs::write(&path, serde_json::to_vec(state).unwrap())
            .map_err(|e| io_err(format!("write {}", path.display()), e))
    }

    fn shown(&self, name: &str) -> String {
        self.data(name).display().to_string()
    }
}

fn cstr(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL in test paths")
}

fn mounted(p: &Path) -> bool {
    berth_plugin_api::util::mounts::mount_points().unwrap_or_default().iter().any(|m| m == p)
}

fn mount_tmpfs(p: &Path) -> DriverResult<()> {
    if mounted(p) {
        return Ok(());
    }
    let (src, dst, fs, data) =
        (cstr(Path::new("tmpfs")), cstr(p), cstr(Path::new("tmpfs")), cstr(Path::new("size=4m")));
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; mount(2) only reads them.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, data.as_ptr().cast()) };
    if rc != 0 {
        return Err(io_err(format!("mount tmpfs on {}", p.display()), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn unmount_tmpfs(p: &Path) -> DriverResult<()> {
    if !mounted(p) {
        return Ok(());
    }
    let c = cstr(p);
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        return Err(io_err(format!("unmount {}", p.display()), std::io::Error::last_os_error()));
    }
    Ok(())
}

fn remove_tree(p: &Path) -> DriverResult<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", p.display()), e)),
    }
}

impl VolumeDriver for DirVolumes {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        if let Some(key) = req.options.keys().next() {
            return Err(DriverError::invalid_argument(format!(
                "volume {}: unknown option {key:?}; this driver takes none",
                req.name
            )));
        }
        let mut st = self.lock();
        if st.contains_key(&req.name) {
            return Ok(());
        }
        let data = self.data(&req.name);
        std::fs::create_dir_all(&data).map_err(|e| io_err(format!("create {}", data.display()), e))?;
        if self.flaws.litters_temp_dir {
            let stray = litter(&req.name);
            std::fs::write(&stray, b"left behind")
                .map_err(|e| io_err(format!("write {}", stray.display()), e))?;
        }
        st.insert(req.name, BTreeSet::new());
        self.save(&st)
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let mut st = self.lock();
        let ids = st.get(&req.name).ok_or_else(|| unknown(&req.name))?;
        if !ids.is_empty() && !self.flaws.remove_ignores_mounts {
            return Err(DriverError::conflict(format!("volume {} is in use", req.name)));
        }
        remove_tree(&self.data(&req.name))?;
        st.remove(&req.name);
        self.save(&st)
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let mut st = self.lock();
        let ids = st.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?;
        if self.flaws.tmpfs_backed {
            mount_tmpfs(&self.data(&req.name))?;
        }
        ids.insert(req.id);
        self.save(&st)?;
        Ok(VolumeMountResponse::new(self.shown(&req.name)))
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let mut st = self.lock();
        let ids = st.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?;
        let released = ids.remove(&req.id);
        let last = ids.is_empty();
        if self.flaws.tmpfs_backed && released && (last || self.flaws.unmounts_backing_early) {
            unmount_tmpfs(&self.data(&req.name))?;
        }
        self.save(&st)
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        self.lock().get(&req.name).ok_or_else(|| unknown(&req.name))?;
        Ok(VolumePathResponse::new(self.shown(&req.name)))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        match self.lock().get(&req.name) {
            Some(_) => Ok(VolumeInfo::new(&req.name, self.shown(&req.name))),
            None if self.flaws.get_unknown_answers_empty => Ok(VolumeInfo::default()),
            None => Err(unknown(&req.name)),
        }
    }

    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        Ok(self.lock().keys().map(|n| VolumeInfo::new(n, self.shown(n))).collect())
    }

    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}
