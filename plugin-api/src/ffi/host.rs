//! The host side of the ABI: a loaded root module turned back into
//! [`StorageDriver`], [`NetworkDriver`], [`IpamDriver`] and [`VolumeDriver`]
//! trait objects, so nothing above can tell a shared object from a linked
//! driver.

use std::io::{Read, Write};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::abi::*;
use super::ffi_err;
use crate::ipam::*;
use crate::network::*;
use crate::storage::*;
use crate::volume::*;
use crate::{DriverError, DriverResult, ErrorKind, Init, InitRequest, Kind, Manifest};

/// A plugin's root module with the host-side view of what it offers.
#[derive(Clone, Copy)]
pub struct PluginModule {
    module: PluginModRef,
    api_version: &'static str,
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule").field("api_version", &self.api_version).finish_non_exhaustive()
    }
}

impl PluginModule {
    /// Wraps a root module; `api_version` is the plugin-api version the
    /// plugin was built against (from its library header).
    pub fn new(module: PluginModRef, api_version: &'static str) -> Self {
        PluginModule { module, api_version }
    }

    /// Wraps a root module linked into this binary (tests, conformance).
    pub fn linked(module: PluginModRef) -> Self {
        PluginModule { module, api_version: env!("CARGO_PKG_VERSION") }
    }

    /// The plugin's manifest.
    pub fn manifest(&self) -> Manifest {
        let m = (self.module.manifest())();
        let mut kinds: Vec<Kind> = m.kinds.iter().map(|k| Kind::from(*k)).collect();
        kinds.sort();
        kinds.dedup();
        Manifest::new(m.name.into_string(), m.version.into_string(), kinds, self.api_version)
    }

    /// Free-form facts about the plugin (1.1+); `{}` for a 1.0 plugin.
    pub fn describe(&self) -> serde_json::Value {
        match self.module.describe() {
            Some(f) => serde_json::from_str(f().as_str()).unwrap_or(serde_json::Value::Null),
            None => serde_json::json!({}),
        }
    }

    /// Builds the plugin's storage driver.
    pub fn new_storage(&self, init: &InitRequest) -> DriverResult<Init<Arc<dyn StorageDriver>>> {
        let made = construct(self.module.new_storage(), init)?;
        Ok(made.map(|b| Arc::new(FfiStorageDriver::new(b)) as Arc<dyn StorageDriver>))
    }

    /// Builds the plugin's network driver.
    pub fn new_network(&self, init: &InitRequest) -> DriverResult<Init<Arc<dyn NetworkDriver>>> {
        let made = construct(self.module.new_network(), init)?;
        Ok(made.map(|b| Arc::new(FfiNetworkDriver(b)) as Arc<dyn NetworkDriver>))
    }

    /// Builds the plugin's IPAM driver.
    pub fn new_ipam(&self, init: &InitRequest) -> DriverResult<Init<Arc<dyn IpamDriver>>> {
        let made = construct(self.module.new_ipam(), init)?;
        Ok(made.map(|b| Arc::new(FfiIpamDriver(b)) as Arc<dyn IpamDriver>))
    }

    /// Builds the plugin's volume driver.
    pub fn new_volume(&self, init: &InitRequest) -> DriverResult<Init<Arc<dyn VolumeDriver>>> {
        let made = construct(self.module.new_volume(), init)?;
        Ok(made.map(|b| Arc::new(FfiVolumeDriver(b)) as Arc<dyn VolumeDriver>))
    }
}

fn construct<T>(ctor: FfiCtor<T>, init: &InitRequest) -> DriverResult<Init<T>> {
    let json = serde_json::to_string(init)
        .map_err(|e| DriverError::internal(format!("cannot encode init request: {e}")))?;
    match ctor(RStr::from_str(&json)) {
        RResult::ROk(FfiInit { driver: ROption::RSome(d), .. }) => Ok(Init::Ready(d)),
        RResult::ROk(FfiInit { driver: ROption::RNone, skipped }) => {
            let reason = skipped.into_string();
            Ok(Init::Skipped(if reason.is_empty() {
                "driver declined without a reason".into()
            } else {
                reason
            }))
        }
        RResult::RErr(e) => Err(e.into()),
    }
}

/// Encodes `req`, calls across the ABI, decodes the answer. A malformed
/// answer is the plugin's bug: an internal error naming the method.
fn call<Q: Serialize, R: DeserializeOwned>(
    method: &str,
    req: &Q,
    f: impl FnOnce(RStr<'_>) -> FfiResult,
) -> DriverResult<R> {
    let json = serde_json::to_string(req)
        .map_err(|e| DriverError::internal(format!("cannot encode {method} request: {e}")))?;
    match f(RStr::from_str(&json)) {
        RResult::ROk(answer) => serde_json::from_str(answer.as_str())
            .map_err(|e| DriverError::internal(format!("plugin answered {method} with malformed JSON: {e}"))),
        RResult::RErr(e) => Err(e.into()),
    }
}

/// A storage driver behind the ABI.
pub struct FfiStorageDriver {
    obj: FfiStorageBox,
    diff: Option<FfiDiffDriver>,
}

impl std::fmt::Debug for FfiStorageDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiStorageDriver").field("diff", &self.diff.is_some()).finish()
    }
}

impl FfiStorageDriver {
    /// Wraps a storage vtable (and asks once for its diff capability).
    pub fn new(obj: FfiStorageBox) -> Self {
        let diff = match obj.diff_driver() {
            ROption::RSome(d) => Some(FfiDiffDriver(d)),
            ROption::RNone => None,
        };
        FfiStorageDriver { obj, diff }
    }
}

impl StorageDriver for FfiStorageDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        call("create", &req, |r| self.obj.create(r))
    }
    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        call("create_rw", &req, |r| self.obj.create_rw(r))
    }
    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        call("remove", &req, |r| self.obj.remove(r))
    }
    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        call("get", &req, |r| self.obj.get(r))
    }
    fn put(&self, req: PutRequest) -> DriverResult<()> {
        call("put", &req, |r| self.obj.put(r))
    }
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        call("exists", &req, |r| self.obj.exists(r))
    }
    fn status(&self, req: StatusRequest) -> DriverResult<StatusResponse> {
        call("status", &req, |r| self.obj.status(r))
    }
    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        call("metadata", &req, |r| self.obj.metadata(r))
    }
    fn cleanup(&self, req: CleanupRequest) -> DriverResult<()> {
        call("cleanup", &req, |r| self.obj.cleanup(r))
    }
    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        self.diff.as_ref().map(|d| d as &dyn DiffDriver)
    }
}

struct FfiDiffDriver(FfiDiffBox);

/// A host `Write` offered to the plugin as an FFI writer.
struct HostWriter<'a>(&'a mut (dyn Write + Send));

impl FfiWriter for HostWriter<'_> {
    fn write_all(&mut self, buf: RSlice<'_, u8>) -> RResult<(), FfiError> {
        match self.0.write_all(buf.as_slice()) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(ffi_err(ErrorKind::Internal, format!("write diff stream: {e}"))),
        }
    }
}

/// A host `Read` offered to the plugin as an FFI reader.
struct HostReader<'a>(&'a mut (dyn Read + Send));

impl FfiReader for HostReader<'_> {
    fn read(&mut self, buf: RSliceMut<'_, u8>) -> RResult<usize, FfiError> {
        let mut buf = buf;
        match self.0.read(buf.as_mut_slice()) {
            Ok(n) => RResult::ROk(n),
            Err(e) => RResult::RErr(ffi_err(ErrorKind::Internal, format!("read diff stream: {e}"))),
        }
    }
}

impl DiffDriver for FfiDiffDriver {
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let w = FfiWriter_TO::from_value(HostWriter(out), TD_Opaque);
        call("diff", &req, |r| self.0.diff(r, w))
    }
    fn changes(&self, req: ChangesRequest) -> DriverResult<Vec<Change>> {
        call("changes", &req, |r| self.0.changes(r))
    }
    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let rd = FfiReader_TO::from_value(HostReader(input), TD_Opaque);
        call("apply_diff", &req, |r| self.0.apply_diff(r, rd))
    }
    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64> {
        call("diff_size", &req, |r| self.0.diff_size(r))
    }
}

struct FfiNetworkDriver(FfiNetworkBox);

impl NetworkDriver for FfiNetworkDriver {
    fn capabilities(&self, req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        call("capabilities", &req, |r| self.0.capabilities(r))
    }
    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        call("create_network", &req, |r| self.0.create_network(r))
    }
    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        call("delete_network", &req, |r| self.0.delete_network(r))
    }
    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        call("create_endpoint", &req, |r| self.0.create_endpoint(r))
    }
    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        call("endpoint_info", &req, |r| self.0.endpoint_info(r))
    }
    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        call("delete_endpoint", &req, |r| self.0.delete_endpoint(r))
    }
    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        call("join", &req, |r| self.0.join(r))
    }
    fn leave(&self, req: LeaveRequest) -> DriverResult<()> {
        call("leave", &req, |r| self.0.leave(r))
    }
    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        call("program_external_connectivity", &req, |r| self.0.program_external_connectivity(r))
    }
    fn revoke_external_connectivity(&self, req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        call("revoke_external_connectivity", &req, |r| self.0.revoke_external_connectivity(r))
    }
    fn gw_alloc_check(&self, req: GwAllocCheckRequest) -> DriverResult<GwAllocCheckResponse> {
        call("gw_alloc_check", &req, |r| self.0.gw_alloc_check(r))
    }
}

struct FfiIpamDriver(FfiIpamBox);

impl IpamDriver for FfiIpamDriver {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        call("capabilities", &req, |r| self.0.capabilities(r))
    }
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        call("default_address_spaces", &req, |r| self.0.default_address_spaces(r))
    }
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        call("request_pool", &req, |r| self.0.request_pool(r))
    }
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        call("release_pool", &req, |r| self.0.release_pool(r))
    }
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        call("request_address", &req, |r| self.0.request_address(r))
    }
    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        call("release_address", &req, |r| self.0.release_address(r))
    }
}

struct FfiVolumeDriver(FfiVolumeBox);

impl VolumeDriver for FfiVolumeDriver {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        call("create", &req, |r| self.0.create(r))
    }
    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        call("remove", &req, |r| self.0.remove(r))
    }
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        call("mount", &req, |r| self.0.mount(r))
    }
    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        call("unmount", &req, |r| self.0.unmount(r))
    }
    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        call("path", &req, |r| self.0.path(r))
    }
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        call("get", &req, |r| self.0.get(r))
    }
    fn list(&self, req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        call("list", &req, |r| self.0.list(r))
    }
    fn capabilities(&self, req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        call("capabilities", &req, |r| self.0.capabilities(r))
    }
}
