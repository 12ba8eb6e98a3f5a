//! Shared by the ABI benchmarks.

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverResult, VolumeDriver};

/// A volume driver whose `capabilities` does nothing, like the faulty
/// fixture's: the linked side of the `trivial` pair.
pub struct Trivial;

impl VolumeDriver for Trivial {
    fn create(&self, _: VolumeCreateRequest) -> DriverResult<()> {
        Ok(())
    }
    fn remove(&self, _: VolumeRemoveRequest) -> DriverResult<()> {
        Ok(())
    }
    fn mount(&self, _: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        Ok(VolumeMountResponse::default())
    }
    fn unmount(&self, _: VolumeUnmountRequest) -> DriverResult<()> {
        Ok(())
    }
    fn path(&self, _: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        Ok(VolumePathResponse::default())
    }
    fn get(&self, _: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        Ok(VolumeInfo::default())
    }
    fn list(&self, _: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        Ok(Vec::new())
    }
    fn capabilities(&self, _: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}
