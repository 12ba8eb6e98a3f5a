//! Fixture plugin `compat10`: a tiny in-memory volume driver exported
//! directly against the FFI traits (plus a do-nothing network driver), built
//! against the frozen 1.0.0 interface: it lacks the 1.1 root field `describe`
//! and the 1.1 method `FfiNetwork::gw_alloc_check`. A 1.1 host must load it
//! (Compat::OlderMinor).

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

/// A do-nothing network driver: its 1.0 vtable lacks `gw_alloc_check`, so
/// the host must run that method's default body (answering `unsupported`).
struct Network;

fn null() -> FfiResult {
    RResult::ROk(RString::from("null"))
}

impl FfiNetwork for Network {
    fn capabilities(&self, _req: RStr<'_>) -> FfiResult {
        RResult::ROk(RString::from(r#"{"Scope":"local"}"#))
    }
    fn create_network(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
    fn delete_network(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
    fn create_endpoint(&self, _req: RStr<'_>) -> FfiResult {
        RResult::ROk(RString::from("{}"))
    }
    fn endpoint_info(&self, _req: RStr<'_>) -> FfiResult {
        RResult::ROk(RString::from("{}"))
    }
    fn delete_endpoint(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
    fn join(&self, _req: RStr<'_>) -> FfiResult {
        RResult::ROk(RString::from("{}"))
    }
    fn leave(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
    fn program_external_connectivity(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
    fn revoke_external_connectivity(&self, _req: RStr<'_>) -> FfiResult {
        null()
    }
}

extern "C" fn manifest() -> FfiManifest {
    FfiManifest {
        name: RString::from("compat10"),
        version: RString::from(env!("CARGO_PKG_VERSION")),
        kinds: RVec::from(vec![FfiKind::Network, FfiKind::Volume]),
    }
}

extern "C" fn unsupported<T>(_req: RStr<'_>) -> RResult<FfiInit<T>, FfiError> {
    RResult::RErr(FfiError {
        kind: ErrorKind::Unsupported,
        message: RString::from("compat10 provides only network and volume drivers"),
    })
}

extern "C" fn new_network(_req: RStr<'_>) -> RResult<FfiInit<FfiNetworkBox>, FfiError> {
    let driver = FfiNetwork_TO::from_value(Network, TD_Opaque);
    RResult::ROk(FfiInit { driver: ROption::RSome(driver), skipped: RString::new() })
}

extern "C" fn new_volume(_req: RStr<'_>) -> RResult<FfiInit<FfiVolumeBox>, FfiError> {
    let driver = FfiVolume_TO::from_value(Driver(volume::Volumes::default()), TD_Opaque);
    RResult::ROk(FfiInit { driver: ROption::RSome(driver), skipped: RString::new() })
}

/// The root module abi_stable looks for.
#[export_root_module]
pub fn berth_plugin_root() -> PluginModRef {
    PluginMod { manifest, new_storage: unsupported, new_network, new_ipam: unsupported, new_volume }
        .leak_into_prefix()
}
