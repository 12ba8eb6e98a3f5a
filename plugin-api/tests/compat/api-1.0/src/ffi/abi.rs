//! The binary interface between berthd and a shared-object plugin.
//!
//! Everything in this module is part of the stable ABI and is checked by
//! `abi_stable` before any plugin code runs. Rules for changing it within
//! major version 1 (see `shared/reference/abi-evolution.md`):
//!
//! * never change, reorder or remove a field, method or variant;
//! * append new vtable methods and root-module fields only *after* the
//!   `#[sabi(last_prefix_field)]` markers, and give every appended trait
//!   method a default body that answers [`ErrorKind::Unsupported`];
//! * bump the crate's minor version.
//!
//! Requests and responses cross the boundary as JSON text (the same
//! documents the remote transport sends), so request structs can grow new
//! fields without an ABI change; byte streams cross as reader/writer trait
//! objects; errors cross as [`FfiError`] with a [`ErrorKind`] that survives.
//!
//! FROZEN COPY of `plugin-api/src/ffi/abi.rs` as of plugin-api 1.0.0: the
//! 1.1 file without the appended root field `describe` and the appended
//! `FfiNetwork::gw_alloc_check` method. Do not edit: it stands for plugins
//! already built against 1.0 (see `plugin-api/tests/compat/README.md`).

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    StableAbi,
};

/// The closed vocabulary of error kinds. It survives every hop: as this
/// `#[repr(u8)]` enum over FFI, as `{"Err": "...", "Kind": "not_found"}` over
/// HTTP, and as one HTTP status chosen by the daemon.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The named object does not exist.
    NotFound,
    /// An object with that name or id exists already.
    AlreadyExists,
    /// The request is malformed or names something impossible.
    InvalidArgument,
    /// The object is in use or the request conflicts with current state.
    Conflict,
    /// The system is not in a state where the request can run.
    FailedPrecondition,
    /// The driver or a resource it needs cannot be reached now; retry later.
    Unavailable,
    /// The call did not finish before its deadline.
    Timeout,
    /// The driver does not implement this method or option.
    Unsupported,
    /// The caller may not do this.
    PermissionDenied,
    /// A finite resource (addresses, pools, space) is used up.
    ResourceExhausted,
    /// A bug or an unexpected failure inside the driver.
    Internal,
}

/// An error as it crosses the ABI: its kind and a one-line message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiError {
    /// What went wrong, in the closed vocabulary.
    pub kind: ErrorKind,
    /// Lower-case, names the object, says what to do when not obvious.
    pub message: RString,
}

/// The answer of every driver method: a JSON document, or an error.
pub type FfiResult = RResult<RString, FfiError>;

/// The kinds of driver a plugin may provide.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FfiKind {
    /// A [`crate::StorageDriver`].
    Storage,
    /// A [`crate::NetworkDriver`].
    Network,
    /// An [`crate::IpamDriver`].
    Ipam,
    /// A [`crate::VolumeDriver`].
    Volume,
}

/// Who a plugin is, read before any driver is constructed.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiManifest {
    /// The plugin's name, e.g. `vfs`.
    pub name: RString,
    /// The plugin's own version (its crate version).
    pub version: RString,
    /// The driver kinds it provides.
    pub kinds: RVec<FfiKind>,
}

/// What a constructor answers: a driver, or the reason it declines to run on
/// this host (`driver` is `RNone` and `skipped` holds the reason).
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct FfiInit<T> {
    /// The ready driver, if it runs here.
    pub driver: ROption<T>,
    /// Why the driver declined (missing kernel feature, tool, ...).
    pub skipped: RString,
}

/// A byte source, e.g. a tar stream being applied to a layer.
#[sabi_trait]
pub trait FfiReader: Send {
    /// Reads up to `buf.len()` bytes; `0` means end of stream.
    #[sabi(last_prefix_field)]
    fn read(&mut self, buf: RSliceMut<'_, u8>) -> RResult<usize, FfiError>;
}

/// A byte sink, e.g. a tar stream being produced from a layer.
#[sabi_trait]
pub trait FfiWriter: Send {
    /// Writes the whole of `buf`.
    #[sabi(last_prefix_field)]
    fn write_all(&mut self, buf: RSlice<'_, u8>) -> RResult<(), FfiError>;
}

/// The storage driver vtable; each request and answer is JSON of the types
/// in [`crate::storage`].
#[sabi_trait]
pub trait FfiStorage: Send + Sync {
    /// [`crate::StorageDriver::create`].
    fn create(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::create_rw`].
    fn create_rw(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::remove`].
    fn remove(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::get`].
    fn get(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::put`].
    fn put(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::exists`].
    fn exists(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::status`].
    fn status(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::metadata`].
    fn metadata(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::StorageDriver::cleanup`].
    fn cleanup(&self, req: RStr<'_>) -> FfiResult;
    /// The optional diff capability, as its own object.
    #[sabi(last_prefix_field)]
    fn diff_driver(&self) -> ROption<FfiDiffBox>;
}

/// The optional [`crate::DiffDriver`] vtable.
#[sabi_trait]
pub trait FfiDiff: Send + Sync {
    /// [`crate::DiffDriver::diff`]: writes a tar stream into `out`.
    fn diff(&self, req: RStr<'_>, out: FfiWriter_TO<'_, RBox<()>>) -> FfiResult;
    /// [`crate::DiffDriver::changes`].
    fn changes(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::DiffDriver::apply_diff`]: reads a tar stream from `input`.
    fn apply_diff(&self, req: RStr<'_>, input: FfiReader_TO<'_, RBox<()>>) -> FfiResult;
    /// [`crate::DiffDriver::diff_size`].
    #[sabi(last_prefix_field)]
    fn diff_size(&self, req: RStr<'_>) -> FfiResult;
}

/// The network driver vtable (libnetwork's remote driver model).
#[sabi_trait]
pub trait FfiNetwork: Send + Sync {
    /// [`crate::NetworkDriver::capabilities`].
    fn capabilities(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::create_network`].
    fn create_network(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::delete_network`].
    fn delete_network(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::create_endpoint`].
    fn create_endpoint(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::endpoint_info`].
    fn endpoint_info(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::delete_endpoint`].
    fn delete_endpoint(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::join`].
    fn join(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::leave`].
    fn leave(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::program_external_connectivity`].
    fn program_external_connectivity(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::NetworkDriver::revoke_external_connectivity`].
    #[sabi(last_prefix_field)]
    fn revoke_external_connectivity(&self, req: RStr<'_>) -> FfiResult;
}

/// The IPAM driver vtable.
#[sabi_trait]
pub trait FfiIpam: Send + Sync {
    /// [`crate::IpamDriver::capabilities`].
    fn capabilities(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::IpamDriver::default_address_spaces`].
    fn default_address_spaces(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::IpamDriver::request_pool`].
    fn request_pool(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::IpamDriver::release_pool`].
    fn release_pool(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::IpamDriver::request_address`].
    fn request_address(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::IpamDriver::release_address`].
    #[sabi(last_prefix_field)]
    fn release_address(&self, req: RStr<'_>) -> FfiResult;
}

/// The volume driver vtable.
#[sabi_trait]
pub trait FfiVolume: Send + Sync {
    /// [`crate::VolumeDriver::create`].
    fn create(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::remove`].
    fn remove(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::mount`].
    fn mount(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::unmount`].
    fn unmount(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::path`].
    fn path(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::get`].
    fn get(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::list`].
    fn list(&self, req: RStr<'_>) -> FfiResult;
    /// [`crate::VolumeDriver::capabilities`].
    #[sabi(last_prefix_field)]
    fn capabilities(&self, req: RStr<'_>) -> FfiResult;
}

/// An owned storage driver behind the ABI.
pub type FfiStorageBox = FfiStorage_TO<'static, RBox<()>>;
/// An owned diff capability behind the ABI.
pub type FfiDiffBox = FfiDiff_TO<'static, RBox<()>>;
/// An owned network driver behind the ABI.
pub type FfiNetworkBox = FfiNetwork_TO<'static, RBox<()>>;
/// An owned IPAM driver behind the ABI.
pub type FfiIpamBox = FfiIpam_TO<'static, RBox<()>>;
/// An owned volume driver behind the ABI.
pub type FfiVolumeBox = FfiVolume_TO<'static, RBox<()>>;

/// A driver constructor: takes the [`crate::InitRequest`] as JSON.
pub type FfiCtor<T> = extern "C" fn(RStr<'_>) -> RResult<FfiInit<T>, FfiError>;

/// The root module every plugin exports (see [`crate::export_plugin!`]).
/// Kinds a plugin does not provide have constructors that answer
/// [`ErrorKind::Unsupported`].
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[allow(missing_debug_implementations)]
pub struct PluginMod {
    /// Who the plugin is.
    pub manifest: extern "C" fn() -> FfiManifest,
    /// Builds the storage driver.
    pub new_storage: extern "C" fn(RStr<'_>) -> RResult<FfiInit<FfiStorageBox>, FfiError>,
    /// Builds the network driver.
    pub new_network: extern "C" fn(RStr<'_>) -> RResult<FfiInit<FfiNetworkBox>, FfiError>,
    /// Builds the IPAM driver.
    pub new_ipam: extern "C" fn(RStr<'_>) -> RResult<FfiInit<FfiIpamBox>, FfiError>,
    /// Builds the volume driver.
    #[sabi(last_prefix_field)]
    pub new_volume: extern "C" fn(RStr<'_>) -> RResult<FfiInit<FfiVolumeBox>, FfiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "berth_plugin";
    const NAME: &'static str = "berth plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
