//! berth volume driver `local`: volumes are directories under a data
//! directory.
//!
//! # Layout
//!
//! Volume `<name>` keeps its data in `<data_dir>/<name>/_data` (the path
//! `mount` and `path` answer), its metadata — options and creation time —
//! in `<data_dir>/<name>/opts.json`, and the ids of its active mounts in
//! `<data_dir>/<name>/mounts.json`, so a reopened driver still knows who
//! uses it. `data_dir` is an option; it defaults to the driver's root. See
//! `src/layout.rs` for how creates and removes stay atomic.
//!
//! # Rules
//!
//! * Names match `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (at most 255 bytes); anything
//!   else is invalid-argument.
//! * `create` of an existing name succeeds and changes nothing. This version
//!   takes no per-volume options: `type`, `o` and `device` (mount-backed
//!   volumes) are unsupported for now, any other key is invalid-argument.
//! * `mount(name, id)` records `id` among the volume's active mounts and
//!   answers the data path; mounting with an id already active answers the
//!   same path again. `unmount(name, id)` forgets `id`; an id that is not
//!   active is failed-precondition.
//! * `remove` of a volume with active mounts is a conflict; otherwise the
//!   volume's whole directory goes.
//! * Unknown volumes are not-found everywhere, `unmount` included.
//! * `get` and `list` (sorted by name) answer the data path, the creation
//!   time (RFC 3339, UTC) and an empty status; scope is `local`.
//!
//! One driver instance per data directory: opening one sweeps what an
//! interrupted create or remove left behind.

#![deny(missing_docs)]

pub mod export;
mod layout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, VolumeDriver};
use serde::{Deserialize, Serialize};

use crate::layout::{validate_name, Layout, Meta, RemoveOutcome, Volume};
pub use berth_plugin_api::util::rfc3339;

/// The driver's options from the configuration. An unknown key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// Where volumes live (an absolute path); defaults to the driver's root.
    #[serde(default)]
    pub data_dir: Option<String>,
}

/// The per-volume options (`--opt`) this driver knows of. None is
/// supported yet; an unknown key is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOpts {
    #[serde(rename = "type")]
    fs_type: Option<String>,
    o: Option<String>,
    device: Option<String>,
}

/// The local volume driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct LocalVolumeDriver {
    layout: Layout,
    volumes: Mutex<BTreeMap<String, Volume>>,
}

impl LocalVolumeDriver {
    /// Builds the driver: decodes the options, creates the data directory
    /// if needed and loads the volumes in it.
    pub fn new(req: InitRequest) -> DriverResult<Init<LocalVolumeDriver>> {
        let opts: Opts = req.decode_options()?;
        let data_dir =
            match (&opts.data_dir, req.root.as_str()) {
                (Some(dir), _) if !Path::new(dir).is_absolute() => {
                    return Err(DriverError::invalid_argument(format!(
                        "options of driver {:?}: data_dir {dir:?} is not an absolute path",
                        req.name
                    )))
                }
                (Some(dir), _) => PathBuf::from(dir),
                (None, "") => return Err(DriverError::invalid_argument(
                    "the local volume driver needs a root directory or a data_dir option, and got neither",
                )),
                (None, root) => PathBuf::from(root),
            };
        let layout = Layout::open(data_dir)?;
        let volumes = layout.load()?;
        Ok(Init::Ready(LocalVolumeDriver { layout, volumes: Mutex::new(volumes) }))
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, BTreeMap<String, Volume>>> {
        self.volumes.lock().map_err(|_| {
            DriverError::internal("volume state is unusable after an earlier panic; restart the daemon")
        })
    }

    fn data_path(&self, name: &str) -> String {
        self.layout.data(name).to_string_lossy().into_owned()
    }

    fn info(&self, name: &str, volume: &Volume) -> VolumeInfo {
        let mut info = VolumeInfo::new(name, self.data_path(name));
        info.created_at = volume.created_at.clone();
        info
    }
}

fn unknown(name: &str) -> DriverError {
    DriverError::not_found(format!("volume {name:?} not found"))
}

/// Refuses every per-volume option, saying which are coming.
fn check_create_options(name: &str, options: &BTreeMap<String, String>) -> DriverResult<()> {
    let value = serde_json::to_value(options)
        .map_err(|e| DriverError::internal(format!("encode options of volume {name}: {e}")))?;
    let opts: CreateOpts = serde_json::from_value(value).map_err(|e| {
        DriverError::invalid_argument(format!(
            "options of volume {name}: {e}; the local driver takes no options yet"
        ))
    })?;
    let given = [("type", &opts.fs_type), ("o", &opts.o), ("device", &opts.device)];
    if let Some((key, _)) = given.iter().find(|(_, v)| v.is_some()) {
        return Err(DriverError::unsupported(format!(
            "volume {name}: option {key:?} is not supported yet by the local driver \
             (mount-backed volumes with type/o/device come in a later version); create it without options"
        )));
    }
    Ok(())
}

fn mount_count(n: usize) -> String {
    if n == 1 {
        "1 mount".into()
    } else {
        format!("{n} mounts")
    }
}

impl VolumeDriver for LocalVolumeDriver {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        validate_name(&req.name)?;
        check_create_options(&req.name, &req.options)?;
        let mut volumes = self.lock()?;
        if volumes.contains_key(&req.name) {
            return Ok(());
        }
        let created_at = rfc3339(SystemTime::now());
        let meta = Meta { options: req.options.clone(), created_at: Some(created_at.clone()) };
        self.layout.create(&req.name, &meta)?;
        volumes.insert(req.name, Volume { created_at: Some(created_at), mounts: Default::default() });
        Ok(())
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let mut volumes = self.lock()?;
        let volume = volumes.get(&req.name).ok_or_else(|| unknown(&req.name))?;
        if !volume.mounts.is_empty() {
            return Err(DriverError::conflict(format!(
                "volume {} is in use by {}; unmount it first",
                req.name,
                mount_count(volume.mounts.len())
            )));
        }
        let outcome = self.layout.remove(&req.name)?;
        volumes.remove(&req.name);
        match outcome {
            RemoveOutcome::Done => Ok(()),
            RemoveOutcome::Leftover(e) => Err(e),
        }
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let mut volumes = self.lock()?;
        let volume = volumes.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?;
        if req.id.is_empty() {
            return Err(DriverError::invalid_argument(format!(
                "mount of volume {} without a mount id",
                req.name
            )));
        }
        let data = self.layout.data(&req.name);
        if !data.is_dir() {
            return Err(DriverError::failed_precondition(format!(
                "the data directory {} of volume {} is missing; remove and re-create the volume",
                data.display(),
                req.name
            )));
        }
        if volume.mounts.insert(req.id.clone()) {
            if let Err(e) = self.layout.save_mounts(&req.name, &volume.mounts) {
                volume.mounts.remove(&req.id);
                return Err(e);
            }
        }
        Ok(VolumeMountResponse::new(data.to_string_lossy()))
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let mut volumes = self.lock()?;
        let volume = volumes.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?;
        if !volume.mounts.remove(&req.id) {
            // Unmount is idempotent: an id that is not active (already
            // released, or never mounted) has nothing left to release.
            return Ok(());
        }
        if let Err(e) = self.layout.save_mounts(&req.name, &volume.mounts) {
            volume.mounts.insert(req.id);
            return Err(e);
        }
        Ok(())
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        let volumes = self.lock()?;
        volumes.get(&req.name).ok_or_else(|| unknown(&req.name))?;
        Ok(VolumePathResponse::new(self.data_path(&req.name)))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        let volumes = self.lock()?;
        let volume = volumes.get(&req.name).ok_or_else(|| unknown(&req.name))?;
        Ok(self.info(&req.name, volume))
    }

    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let volumes = self.lock()?;
        Ok(volumes.iter().map(|(name, v)| self.info(name, v)).collect())
    }

    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ffi::PluginModule;
    use berth_plugin_api::ErrorKind;

    #[test]
    fn the_abi_path_keeps_answers_and_error_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let init = InitRequest::new("local", dir.path().to_str().unwrap(), "");
        let Init::Ready(d) =
            PluginModule::linked(crate::export::berth_plugin_root()).new_volume(&init).unwrap()
        else {
            panic!("declined")
        };
        d.create(VolumeCreateRequest::new("v")).unwrap();
        let mut mount = VolumeMountRequest::default();
        mount.name = "v".into();
        mount.id = "a".repeat(64);
        let data = dir.path().join("v/_data");
        assert_eq!(d.mount(mount).unwrap().mountpoint, data.to_str().unwrap());
        let mut remove = VolumeRemoveRequest::default();
        remove.name = "v".into();
        assert_eq!(d.remove(remove.clone()).unwrap_err().kind, ErrorKind::Conflict);
        let mut get = VolumeGetRequest::default();
        get.name = "w".into();
        assert_eq!(d.get(get).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(d.create(VolumeCreateRequest::new("-v")).unwrap_err().kind, ErrorKind::InvalidArgument);
        let mut unmount = VolumeUnmountRequest::default();
        unmount.name = "v".into();
        unmount.id = "b".repeat(64);
        d.unmount(unmount).unwrap();
    }
}
