//! The suite's own volume driver: volumes in memory, standing in for "some
//! other vendor's driver" next to the driver under test (VL-02). It follows
//! every rule of the contract, and keeps no data (its mount path is the
//! case root, which exists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, VolumeDriver};

/// An in-memory volume driver that follows the contract.
#[derive(Debug)]
pub struct MemoryVolumeDriver {
    path: PathBuf,
    volumes: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl MemoryVolumeDriver {
    /// A driver with no volumes, answering `path` as every volume's data
    /// path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        MemoryVolumeDriver { path: path.into(), volumes: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.volumes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

fn unknown(name: &str) -> DriverError {
    DriverError::not_found(format!("volume {name:?} not found in the suite's memory driver"))
}

impl VolumeDriver for MemoryVolumeDriver {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        if let Some(key) = req.options.keys().next() {
            return Err(DriverError::invalid_argument(format!(
                "volume {}: the suite's memory driver takes no options, got {key:?}",
                req.name
            )));
        }
        self.lock().entry(req.name).or_default();
        Ok(())
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let mut v = self.lock();
        let ids = v.get(&req.name).ok_or_else(|| unknown(&req.name))?;
        if !ids.is_empty() {
            return Err(DriverError::conflict(format!("volume {} is in use: unmount it first", req.name)));
        }
        v.remove(&req.name);
        Ok(())
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let mut v = self.lock();
        v.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?.insert(req.id);
        Ok(VolumeMountResponse::new(self.shown()))
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let mut v = self.lock();
        v.get_mut(&req.name).ok_or_else(|| unknown(&req.name))?.remove(&req.id);
        Ok(())
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        self.lock().get(&req.name).ok_or_else(|| unknown(&req.name))?;
        Ok(VolumePathResponse::new(self.shown()))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        self.lock().get(&req.name).ok_or_else(|| unknown(&req.name))?;
        Ok(VolumeInfo::new(req.name, self.shown()))
    }

    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        Ok(self.lock().keys().map(|n| VolumeInfo::new(n, self.shown())).collect())
    }

    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}
