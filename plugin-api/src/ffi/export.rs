//! The plugin side of the ABI: adapters that serve any driver through the
//! `#[sabi_trait]` vtables, decoding JSON requests, encoding answers, and
//! turning a panic into an [`ErrorKind::Internal`] error instead of unwinding
//! across the boundary (which would abort the daemon).

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::abi::*;
use super::ffi_err;
use crate::{
    DiffDriver, DriverError, DriverResult, ErrorKind, Init, InitRequest, IpamDriver, NetworkDriver,
    StorageDriver, VolumeDriver,
};

/// Runs `f` with panics caught; a panic becomes an internal error that
/// names the method and carries the panic message.
fn guarded<R>(method: &str, f: impl FnOnce() -> DriverResult<R>) -> Result<R, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.into()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            Err(ffi_err(ErrorKind::Internal, format!("driver panicked in {method}: {what}")))
        }
    }
}

/// Serves one method: decode the request, call, encode the answer.
fn serve<Q: DeserializeOwned, R: Serialize>(
    method: &str,
    req: RStr<'_>,
    f: impl FnOnce(Q) -> DriverResult<R>,
) -> FfiResult {
    let out = guarded(method, || {
        let q: Q = serde_json::from_str(req.as_str())
            .map_err(|e| DriverError::invalid_argument(format!("malformed {method} request: {e}")))?;
        let r = f(q)?;
        serde_json::to_string(&r)
            .map_err(|e| DriverError::internal(format!("cannot encode {method} answer: {e}")))
    });
    match out {
        Ok(s) => RResult::ROk(RString::from(s)),
        Err(e) => RResult::RErr(e),
    }
}

/// Builds a driver of any kind with panics caught.
fn construct<T, B>(
    kind: &str,
    req: RStr<'_>,
    ctor: impl FnOnce(InitRequest) -> DriverResult<Init<T>>,
    wrap: impl FnOnce(T) -> B,
) -> RResult<FfiInit<B>, FfiError> {
    let out = guarded(&format!("new {kind} driver"), || {
        let init: InitRequest = serde_json::from_str(req.as_str())
            .map_err(|e| DriverError::invalid_argument(format!("malformed init request: {e}")))?;
        ctor(init)
    });
    match out {
        Ok(Init::Ready(d)) => {
            RResult::ROk(FfiInit { driver: ROption::RSome(wrap(d)), skipped: RString::new() })
        }
        Ok(Init::Skipped(reason)) => {
            RResult::ROk(FfiInit { driver: ROption::RNone, skipped: RString::from(reason) })
        }
        Err(e) => RResult::RErr(e),
    }
}

/// Constructor body for a kind the plugin does not provide.
pub extern "C" fn unsupported_ctor<T>(_req: RStr<'_>) -> RResult<FfiInit<T>, FfiError> {
    RResult::RErr(ffi_err(ErrorKind::Unsupported, "this plugin does not provide that kind of driver"))
}

/// Serves a storage driver.
pub fn storage<T: StorageDriver + 'static>(
    req: RStr<'_>,
    ctor: impl FnOnce(InitRequest) -> DriverResult<Init<T>>,
) -> RResult<FfiInit<FfiStorageBox>, FfiError> {
    construct("storage", req, ctor, |d| FfiStorage_TO::from_value(StorageExport(Arc::new(d)), TD_Opaque))
}

/// Serves a network driver.
pub fn network<T: NetworkDriver + 'static>(
    req: RStr<'_>,
    ctor: impl FnOnce(InitRequest) -> DriverResult<Init<T>>,
) -> RResult<FfiInit<FfiNetworkBox>, FfiError> {
    construct("network", req, ctor, |d| FfiNetwork_TO::from_value(NetworkExport(d), TD_Opaque))
}

/// Serves an IPAM driver.
pub fn ipam<T: IpamDriver + 'static>(
    req: RStr<'_>,
    ctor: impl FnOnce(InitRequest) -> DriverResult<Init<T>>,
) -> RResult<FfiInit<FfiIpamBox>, FfiError> {
    construct("ipam", req, ctor, |d| FfiIpam_TO::from_value(IpamExport(d), TD_Opaque))
}

/// Serves a volume driver.
pub fn volume<T: VolumeDriver + 'static>(
    req: RStr<'_>,
    ctor: impl FnOnce(InitRequest) -> DriverResult<Init<T>>,
) -> RResult<FfiInit<FfiVolumeBox>, FfiError> {
    construct("volume", req, ctor, |d| FfiVolume_TO::from_value(VolumeExport(d), TD_Opaque))
}

/// Wraps a linked driver in the same vtable a loaded plugin exposes, so a
/// test can exercise the ABI path without a shared object.
pub fn storage_box<T: StorageDriver + 'static>(driver: T) -> FfiStorageBox {
    FfiStorage_TO::from_value(StorageExport(Arc::new(driver)), TD_Opaque)
}

struct StorageExport<T>(Arc<T>);

impl<T: StorageDriver + 'static> FfiStorage for StorageExport<T> {
    fn create(&self, req: RStr<'_>) -> FfiResult {
        serve("create", req, |q| self.0.create(q))
    }
    fn create_rw(&self, req: RStr<'_>) -> FfiResult {
        serve("create_rw", req, |q| self.0.create_rw(q))
    }
    fn remove(&self, req: RStr<'_>) -> FfiResult {
        serve("remove", req, |q| self.0.remove(q))
    }
    fn get(&self, req: RStr<'_>) -> FfiResult {
        serve("get", req, |q| self.0.get(q))
    }
    fn put(&self, req: RStr<'_>) -> FfiResult {
        serve("put", req, |q| self.0.put(q))
    }
    fn exists(&self, req: RStr<'_>) -> FfiResult {
        serve("exists", req, |q| self.0.exists(q))
    }
    fn status(&self, req: RStr<'_>) -> FfiResult {
        serve("status", req, |q| self.0.status(q))
    }
    fn metadata(&self, req: RStr<'_>) -> FfiResult {
        serve("metadata", req, |q| self.0.metadata(q))
    }
    fn cleanup(&self, req: RStr<'_>) -> FfiResult {
        serve("cleanup", req, |q| self.0.cleanup(q))
    }
    fn diff_driver(&self) -> ROption<FfiDiffBox> {
        let has = catch_unwind(AssertUnwindSafe(|| self.0.as_diff().is_some())).unwrap_or(false);
        if has {
            ROption::RSome(FfiDiff_TO::from_value(DiffExport(Arc::clone(&self.0)), TD_Opaque))
        } else {
            ROption::RNone
        }
    }
}

struct DiffExport<T>(Arc<T>);

impl<T: StorageDriver + 'static> DiffExport<T> {
    fn diff_impl(&self) -> DriverResult<&dyn DiffDriver> {
        self.0.as_diff().ok_or_else(|| DriverError::unsupported("driver no longer offers diff"))
    }
}

/// An FFI writer seen as `std::io::Write` by the driver.
struct FfiWrite<'a>(FfiWriter_TO<'a, RBox<()>>);

impl Write for FfiWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.write_all(RSlice::from_slice(buf)) {
            RResult::ROk(()) => Ok(buf.len()),
            RResult::RErr(e) => Err(std::io::Error::other(e.message.into_string())),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An FFI reader seen as `std::io::Read` by the driver.
struct FfiRead<'a>(FfiReader_TO<'a, RBox<()>>);

impl Read for FfiRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(RSliceMut::from_mut_slice(buf)) {
            RResult::ROk(n) => Ok(n),
            RResult::RErr(e) => Err(std::io::Error::other(e.message.into_string())),
        }
    }
}

impl<T: StorageDriver + 'static> FfiDiff for DiffExport<T> {
    fn diff(&self, req: RStr<'_>, out: FfiWriter_TO<'_, RBox<()>>) -> FfiResult {
        let mut out = FfiWrite(out);
        serve("diff", req, |q| self.diff_impl()?.diff(q, &mut out))
    }
    fn changes(&self, req: RStr<'_>) -> FfiResult {
        serve("changes", req, |q| self.diff_impl()?.changes(q))
    }
    fn apply_diff(&self, req: RStr<'_>, input: FfiReader_TO<'_, RBox<()>>) -> FfiResult {
        let mut input = FfiRead(input);
        serve("apply_diff", req, |q| self.diff_impl()?.apply_diff(q, &mut input))
    }
    fn diff_size(&self, req: RStr<'_>) -> FfiResult {
        serve("diff_size", req, |q| self.diff_impl()?.diff_size(q))
    }
}

struct NetworkExport<T>(T);

impl<T: NetworkDriver + 'static> FfiNetwork for NetworkExport<T> {
    fn capabilities(&self, req: RStr<'_>) -> FfiResult {
        serve("capabilities", req, |q| self.0.capabilities(q))
    }
    fn create_network(&self, req: RStr<'_>) -> FfiResult {
        serve("create_network", req, |q| self.0.create_network(q))
    }
    fn delete_network(&self, req: RStr<'_>) -> FfiResult {
        serve("delete_network", req, |q| self.0.delete_network(q))
    }
    fn create_endpoint(&self, req: RStr<'_>) -> FfiResult {
        serve("create_endpoint", req, |q| self.0.create_endpoint(q))
    }
    fn endpoint_info(&self, req: RStr<'_>) -> FfiResult {
        serve("endpoint_info", req, |q| self.0.endpoint_info(q))
    }
    fn delete_endpoint(&self, req: RStr<'_>) -> FfiResult {
        serve("delete_endpoint", req, |q| self.0.delete_endpoint(q))
    }
    fn join(&self, req: RStr<'_>) -> FfiResult {
        serve("join", req, |q| self.0.join(q))
    }
    fn leave(&self, req: RStr<'_>) -> FfiResult {
        serve("leave", req, |q| self.0.leave(q))
    }
    fn program_external_connectivity(&self, req: RStr<'_>) -> FfiResult {
        serve("program_external_connectivity", req, |q| self.0.program_external_connectivity(q))
    }
    fn revoke_external_connectivity(&self, req: RStr<'_>) -> FfiResult {
        serve("revoke_external_connectivity", req, |q| self.0.revoke_external_connectivity(q))
    }
    fn gw_alloc_check(&self, req: RStr<'_>) -> FfiResult {
        serve("gw_alloc_check", req, |q| self.0.gw_alloc_check(q))
    }
}

struct IpamExport<T>(T);

impl<T: IpamDriver + 'static> FfiIpam for IpamExport<T> {
    fn capabilities(&self, req: RStr<'_>) -> FfiResult {
        serve("capabilities", req, |q| self.0.capabilities(q))
    }
    fn default_address_spaces(&self, req: RStr<'_>) -> FfiResult {
        serve("default_address_spaces", req, |q| self.0.default_address_spaces(q))
    }
    fn request_pool(&self, req: RStr<'_>) -> FfiResult {
        serve("request_pool", req, |q| self.0.request_pool(q))
    }
    fn release_pool(&self, req: RStr<'_>) -> FfiResult {
        serve("release_pool", req, |q| self.0.release_pool(q))
    }
    fn request_address(&self, req: RStr<'_>) -> FfiResult {
        serve("request_address", req, |q| self.0.request_address(q))
    }
    fn release_address(&self, req: RStr<'_>) -> FfiResult {
        serve("release_address", req, |q| self.0.release_address(q))
    }
}

struct VolumeExport<T>(T);

impl<T: VolumeDriver + 'static> FfiVolume for VolumeExport<T> {
    fn create(&self, req: RStr<'_>) -> FfiResult {
        serve("create", req, |q| self.0.create(q))
    }
    fn remove(&self, req: RStr<'_>) -> FfiResult {
        serve("remove", req, |q| self.0.remove(q))
    }
    fn mount(&self, req: RStr<'_>) -> FfiResult {
        serve("mount", req, |q| self.0.mount(q))
    }
    fn unmount(&self, req: RStr<'_>) -> FfiResult {
        serve("unmount", req, |q| self.0.unmount(q))
    }
    fn path(&self, req: RStr<'_>) -> FfiResult {
        serve("path", req, |q| self.0.path(q))
    }
    fn get(&self, req: RStr<'_>) -> FfiResult {
        serve("get", req, |q| self.0.get(q))
    }
    fn list(&self, req: RStr<'_>) -> FfiResult {
        serve("list", req, |q| self.0.list(q))
    }
    fn capabilities(&self, req: RStr<'_>) -> FfiResult {
        serve("capabilities", req, |q| self.0.capabilities(q))
    }
}

/// Exports a plugin: its root module, manifest and one constructor per kind
/// it provides. Each constructor is a function
/// `fn(InitRequest) -> DriverResult<Init<D>>` where `D` implements the
/// kind's trait. Put it in the crate's `export.rs`:
///
/// ```ignore
/// berth_plugin_api::export_plugin! {
///     name: "vfs",
///     version: env!("CARGO_PKG_VERSION"),
///     description: "copy-based layers; works on any filesystem",
///     storage: crate::VfsDriver::new,
/// }
/// ```
///
/// The macro defines `pub fn berth_plugin_root() -> PluginModRef`, also
/// usable directly by tests that link the crate.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr
        $(, description: $desc:expr)?
        $(, storage: $storage:path)?
        $(, network: $network:path)?
        $(, ipam: $ipam:path)?
        $(, volume: $volume:path)?
        $(,)?
    ) => {
        /// The plugin's root module, as `abi_stable` loads it.
        pub fn berth_plugin_root() -> $crate::ffi::PluginModRef {
            use $crate::ffi::reexports::abi_stable::prefix_type::PrefixTypeTrait as _;
            use $crate::ffi::reexports::abi_stable::std_types::{RStr, RResult, RString, RVec};
            use $crate::ffi::abi::*;

            extern "C" fn manifest() -> FfiManifest {
                let mut kinds = RVec::new();
                $( let _ = stringify!($storage); kinds.push(FfiKind::Storage); )?
                $( let _ = stringify!($network); kinds.push(FfiKind::Network); )?
                $( let _ = stringify!($ipam); kinds.push(FfiKind::Ipam); )?
                $( let _ = stringify!($volume); kinds.push(FfiKind::Volume); )?
                FfiManifest { name: RString::from($name), version: RString::from($version), kinds }
            }
            extern "C" fn describe() -> RString {
                #[allow(unused_mut)]
                let mut d = String::new();
                $( d = String::from($desc); )?
                RString::from($crate::ffi::reexports::serde_json::json!({ "description": d }).to_string())
            }
            PluginMod {
                manifest,
                new_storage: $crate::export_plugin!(@ctor storage $($storage)?),
                new_network: $crate::export_plugin!(@ctor network $($network)?),
                new_ipam: $crate::export_plugin!(@ctor ipam $($ipam)?),
                new_volume: $crate::export_plugin!(@ctor volume $($volume)?),
                describe,
            }
            .leak_into_prefix()
        }

        /// The library header abi_stable's loader looks up by this exact
        /// symbol name (`abi_stable::library::ROOT_MODULE_LOADER_NAME`).
        /// Written out here instead of `#[export_root_module]` so plugin
        /// crates need no direct `abi_stable` dependency.
        #[no_mangle]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::ffi::reexports::abi_stable::library::LibHeader = {
            extern "C" fn erased() -> $crate::ffi::reexports::abi_stable::library::RootModuleResult {
                $crate::ffi::reexports::abi_stable::library::__call_root_module_loader(berth_plugin_root)
            }
            // SAFETY: this is exactly what `#[export_root_module]` expands to:
            // the constructor returns the root module type named here, and
            // the layout is checked by the loader before use.
            unsafe {
                $crate::ffi::reexports::abi_stable::library::LibHeader::from_constructor::<
                    $crate::ffi::PluginModRef,
                >(erased, $crate::ffi::reexports::abi_stable::library::CheckTypeLayout::Yes)
            }
        };
    };
    (@ctor $kind:ident) => {
        $crate::ffi::export::unsupported_ctor
    };
    (@ctor $kind:ident $ctor:path) => {{
        extern "C" fn ctor(
            req: $crate::ffi::reexports::abi_stable::std_types::RStr<'_>,
        ) -> $crate::ffi::reexports::abi_stable::std_types::RResult<
            $crate::ffi::abi::FfiInit<$crate::export_plugin!(@box $kind)>,
            $crate::ffi::abi::FfiError,
        > {
            $crate::ffi::export::$kind(req, $ctor)
        }
        ctor
    }};
    (@box storage) => { $crate::ffi::abi::FfiStorageBox };
    (@box network) => { $crate::ffi::abi::FfiNetworkBox };
    (@box ipam) => { $crate::ffi::abi::FfiIpamBox };
    (@box volume) => { $crate::ffi::abi::FfiVolumeBox };
}
