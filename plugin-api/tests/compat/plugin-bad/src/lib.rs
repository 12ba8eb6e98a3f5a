//! Fixture plugin `compatbad`: a tiny in-memory volume driver exported
//! directly against the FFI traits, built against a 1.1.0 interface where
//! `FfiVolume::create` takes `u64` instead of `RStr`. A host must refuse it
//! (LoadError::Abi naming `create`).

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
    fn create(&self, req: u64) -> FfiResult {
        // The broken interface passes a number; make a name of it.
        self.0.create(&format!(r#"{{"Name":"v{req}"}}"#))
    }
    forward_volume_methods!();
}

volume_only_exports!("compatbad");

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
