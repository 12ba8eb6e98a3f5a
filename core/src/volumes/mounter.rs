//! The volume service as the mount resolver's [`VolumeMounter`]: what a
//! container's `-v name:/dst`, anonymous volumes and `--mount type=volume`
//! turn into.

use berth_plugin_api::{DriverError, DriverResult};

use super::{CreateVolume, MountVolume, VolumeService};
use crate::mountspec::{MountedVolume, VolumeMountSpec, VolumeMounter};

impl VolumeMounter for VolumeService {
    /// Creates the volume when it does not exist (an anonymous one always),
    /// then takes one mount reference for `req.mount_id`. A volume this
    /// call created is removed again when its mount fails, so a failed
    /// container start leaves no anonymous volume behind.
    fn mount_volume(&self, req: &VolumeMountSpec) -> DriverResult<MountedVolume> {
        let existing = req.name.as_deref().and_then(|n| self.find(n).ok());
        let (name, driver, created) = match existing {
            Some(entry) => {
                if let Some(want) = req.driver.as_deref().filter(|d| *d != entry.record.driver) {
                    return Err(DriverError::conflict(format!(
                        "volume {:?} exists with driver {:?}, not {want:?}",
                        entry.record.name, entry.record.driver
                    )));
                }
                (entry.record.name, entry.record.driver, false)
            }
            None => {
                let v = self.create(CreateVolume {
                    name: req.name.clone().unwrap_or_default(),
                    driver: req.driver.clone().unwrap_or_default(),
                    driver_opts: req.driver_options.clone(),
                    labels: req.labels.clone(),
                    cluster_volume_spec: None,
                })?;
                (v.record.name, v.record.driver, true)
            }
        };
        match self.mount(MountVolume::new(&name, &req.mount_id).with_id(&req.mount_id)) {
            Ok(r) => Ok(MountedVolume::new(name, driver, r.mountpoint)),
            Err(e) if created => match self.remove(&name, false) {
                Ok(()) => Err(e),
                Err(rm) => {
                    Err(e.context(format!("(removing the volume {name} made for it failed too: {rm})")))
                }
            },
            Err(e) => Err(e),
        }
    }

    fn unmount_volume(&self, name: &str, mount_id: &str) -> DriverResult<()> {
        self.unmount(name, mount_id)
    }

    fn discard_volume(&self, name: &str) -> DriverResult<()> {
        self.remove(name, false)
    }
}
