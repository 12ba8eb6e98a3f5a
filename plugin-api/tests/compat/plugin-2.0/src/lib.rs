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
#[macro_use]
mod volume;

struct Driver(volume::Volumes);

impl FfiVolume for Driver {
    fn create(&self, req: RStr<'_>) -> FfiResult {
        self.0.create(req.as_str())
    }
    forward_volume_methods!();
}

volume_only_exports!("compat20");

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
