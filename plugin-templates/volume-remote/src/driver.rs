//! {{driver_name}}: a small but complete berth volume driver, served over
//! Docker's plugin protocol by `main.rs`.
//!
//! Each volume is a directory `<root>/<name>/_data`; each active mount id
//! is an empty file `<root>/<name>/mounts/<id>`, so mounts survive a
//! restart of the daemon (and of the driver). Replace the directory work
//! with your storage system's calls; keep the rules the conformance suite
//! checks (see `berth-conformance list --kind volume`):
//!
//! * `get` of an unknown name is `NotFound` (VL-01);
//! * `create` of an existing name succeeds (idempotent, VL-02);
//! * one `mount` per id, released by `unmount` with the same id; `unmount`
//!   of an id that is not active succeeds (VL-03, VL-05);
//! * `remove` while any id is active is `Conflict` (VL-04);
//! * errors name the volume and say what to do (VL-06);
//! * a driver reopened on the same root sees the same volumes and mounts
//!   (VL-08).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The driver's name, as operators write it.
pub const DRIVER: &str = "{{driver_name}}";

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, VolumeDriver};

/// The driver: a root directory, and one lock for the whole driver (a real
/// driver would lock per volume).
#[derive(Debug)]
pub struct DirVolumes {
    root: PathBuf,
    lock: Mutex<()>,
}

impl DirVolumes {
    /// Builds the driver from an init request: on `req.root`, or on the
    /// `data_dir` option when set (the same constructor a shared object
    /// exports, so the driver can ship either way).
    pub fn new(req: InitRequest) -> DriverResult<Init<DirVolumes>> {
        let root = match req.options.get("data_dir").and_then(|v| v.as_str()) {
            Some(dir) => PathBuf::from(dir),
            None if !req.root.is_empty() => PathBuf::from(&req.root),
            None => {
                return Err(DriverError::invalid_argument(format!(
                    "{DRIVER} needs a root directory or a data_dir option"
                )))
            }
        };
        if let Some(obj) = req.options.as_object() {
            if let Some(key) = obj.keys().find(|k| *k != "data_dir") {
                return Err(DriverError::invalid_argument(format!(
                    "{DRIVER}: unknown option {key:?}; the only option is data_dir"
                )));
            }
        }
        Ok(Init::Ready(DirVolumes::open(root)?))
    }

    /// A driver on `root`, made if missing.
    pub fn open(root: impl Into<PathBuf>) -> DriverResult<DirVolumes> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| DriverError::io(format_args!("create {}", root.display()), &e))?;
        Ok(DirVolumes { root, lock: Mutex::new(()) })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self, name: &str) -> DriverResult<PathBuf> {
        let ok = !name.is_empty()
            && name.len() <= 255
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(DriverError::invalid_argument(format!(
                "volume name {name:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        Ok(self.root.join(name))
    }

    fn existing(&self, name: &str) -> DriverResult<PathBuf> {
        let dir = self.dir(name)?;
        if dir.join("_data").is_dir() {
            Ok(dir)
        } else {
            Err(DriverError::not_found(format!("volume {name:?} not found under {}", self.root.display())))
        }
    }

    fn mount_ids(dir: &Path) -> DriverResult<Vec<String>> {
        let mounts = dir.join("mounts");
        match std::fs::read_dir(&mounts) {
            Ok(entries) => Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(DriverError::io(format_args!("read {}", mounts.display()), &e)),
        }
    }

    fn info(&self, name: &str, dir: &Path) -> DriverResult<VolumeInfo> {
        let mut info = VolumeInfo::new(name, dir.join("_data").display().to_string());
        let mounts = Self::mount_ids(dir)?.len();
        info.status = BTreeMap::from([("mounts".to_string(), serde_json::Value::from(mounts))]);
        Ok(info)
    }
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> DriverError {
    DriverError::io(what, &e)
}

impl VolumeDriver for DirVolumes {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        if let Some(key) = req.options.keys().next() {
            return Err(DriverError::invalid_argument(format!(
                "volume {:?}: unknown option {key:?}: {DRIVER} takes no options",
                req.name
            )));
        }
        let dir = self.dir(&req.name)?;
        let _g = self.guard();
        let data = dir.join("_data");
        std::fs::create_dir_all(&data).map_err(|e| io(format_args!("create {}", data.display()), e))
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let _g = self.guard();
        let dir = self.existing(&req.name)?;
        let ids = Self::mount_ids(&dir)?;
        if !ids.is_empty() {
            return Err(DriverError::conflict(format!(
                "volume {:?} is in use by {} mount(s); unmount it first",
                req.name,
                ids.len()
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| io(format_args!("remove {}", dir.display()), e))
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        if req.id.is_empty() || !req.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(DriverError::invalid_argument(format!("mount id {:?} is invalid", req.id)));
        }
        let _g = self.guard();
        let dir = self.existing(&req.name)?;
        let mounts = dir.join("mounts");
        std::fs::create_dir_all(&mounts).map_err(|e| io(format_args!("create {}", mounts.display()), e))?;
        let marker = mounts.join(&req.id);
        std::fs::write(&marker, b"").map_err(|e| io(format_args!("write {}", marker.display()), e))?;
        Ok(VolumeMountResponse::new(dir.join("_data").display().to_string()))
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let _g = self.guard();
        let dir = self.existing(&req.name)?;
        if req.id.contains('/') || req.id.is_empty() {
            return Ok(());
        }
        let marker = dir.join("mounts").join(&req.id);
        match std::fs::remove_file(&marker) {
            Ok(()) => Ok(()),
            // Not active (released already, or never mounted): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format_args!("remove {}", marker.display()), e)),
        }
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        let dir = self.existing(&req.name)?;
        Ok(VolumePathResponse::new(dir.join("_data").display().to_string()))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        let dir = self.existing(&req.name)?;
        self.info(&req.name, &dir)
    }

    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| io(format_args!("read {}", self.root.display()), e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(format_args!("read {}", self.root.display()), e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if entry.path().join("_data").is_dir() {
                out.push(self.info(&name, &entry.path())?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    #[test]
    fn a_volume_lives_through_mounts_and_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DirVolumes::open(tmp.path()).unwrap();
        assert_eq!(d.get(VolumeGetRequest::new("v")).unwrap_err().kind, ErrorKind::NotFound);
        d.create(VolumeCreateRequest::new("v")).unwrap();
        d.create(VolumeCreateRequest::new("v")).unwrap();
        let m = d.mount(VolumeMountRequest::new("v", "a1")).unwrap();
        assert!(Path::new(&m.mountpoint).is_dir());
        let d = DirVolumes::open(tmp.path()).unwrap();
        assert_eq!(d.remove(VolumeRemoveRequest::new("v")).unwrap_err().kind, ErrorKind::Conflict);
        d.unmount(VolumeUnmountRequest::new("v", "a1")).unwrap();
        d.unmount(VolumeUnmountRequest::new("v", "a1")).unwrap();
        d.remove(VolumeRemoveRequest::new("v")).unwrap();
        assert!(d.list(VolumeListRequest::default()).unwrap().is_empty());
    }

    #[test]
    fn bad_names_and_options_are_invalid_arguments() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DirVolumes::open(tmp.path()).unwrap();
        assert_eq!(d.create(VolumeCreateRequest::new("../x")).unwrap_err().kind, ErrorKind::InvalidArgument);
        let mut req = VolumeCreateRequest::new("v");
        req.options.insert("size".into(), "1G".into());
        assert_eq!(d.create(req).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
