//! Fixture plugin `compat20`: a tiny in-memory volume driver exported
//! directly against the FFI traits, built against an interface whose layout
//! equals the host's but whose version is 2.0.0. A 1.x host must refuse it
//! (LoadError::Version).

use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use berth_plugin_api::ffi::abi::*;

#[path = "../../shared/volume.rs"]
mod volume;

struct Driver(volume::Volumes);

impl FfiVolume for Driver {
    fn create(&self, req: RStr<'_>) -> FfiResult {
        self.0.create(req.as_str())
    }
    fn remove(&self, req: RStr<'_>) -> FfiResult {
        self.0.remove(req.as_str())
    }
    fn mount(&self, req: RStr<'_>) -> FfiResult {
        self.0.mount(req.as_str())
    }
    fn unmount(&self, req: RStr<'_>) -> FfiResult {
        self.0.unmount(req.as_str())
    }
    fn path(&self, req: RStr<'_>) -> FfiResult {
        self.0.path(req.as_str())
    }
    fn get(&self, req: RStr<'_>) -> FfiResult {
        self.0.get(req.as_str())
    }
    fn list(&self, req: RStr<'_>) -> FfiResult {
        self.0.list(req.as_str())
    }
    fn capabilities(&self, req: RStr<'_>) -> FfiResult {
        self.0.capabilities(req.as_str())
    }
}

extern "C" fn manifest() -> FfiManifest {
    FfiManifest {
        name: RString::from("compat20"),
        version: RString::from(env!("CARGO_PKG_VERSION")),
        kinds: RVec::from(vec![FfiKind::Volume]),
    }
}

extern "C" fn unsupported<T>(_req: RStr<'_>) -> RResult<FfiInit<T>, FfiError> {
    RResult::RErr(FfiError {
        kind: ErrorKind::Unsupported,
        message: RString::from("compat20 provides only a volume driver"),
    })
}

extern "C" fn new_volume(_req: RStr<'_>) -> RResult<FfiInit<FfiVolumeBox>, FfiError> {
    let driver = FfiVolume_TO::from_value(Driver(volume::Volumes::default()), TD_Opaque);
    RResult::ROk(FfiInit { driver: ROption::RSome(driver), skipped: RString::new() })
}

extern "C" fn describe() -> RString {
    RString::from(r#"{"description":"compat fixture"}"#)
}

/// The root module abi_stable looks for.
#[export_root_module]
pub fn berth_plugin_root() -> PluginModRef {
    PluginMod {
        manifest,
        new_storage: unsupported,
        new_network: unsupported,
        new_ipam: unsupported,
        new_volume,
        describe,
    }
    .leak_into_prefix()
}
