//! A plugin that lies: its vtable answers documents that are not what the
//! contract says (malformed JSON, the wrong shape). The host must turn each
//! into an `internal` error naming the method, never crash or invent data.

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RStr, RString, RVec};
use berth_plugin_api::ffi::abi::*;
use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::volume::*;
use berth_plugin_api::{ErrorKind, Init, InitRequest, VolumeDriver};

struct Liar;

fn answer(text: &str) -> FfiResult {
    RResult::ROk(RString::from(text))
}

impl FfiVolume for Liar {
    fn create(&self, _req: RStr<'_>) -> FfiResult {
        answer("this is not json")
    }
    fn remove(&self, _req: RStr<'_>) -> FfiResult {
        answer("null")
    }
    fn mount(&self, _req: RStr<'_>) -> FfiResult {
        answer(r#"{"Mountpoint": 42}"#)
    }
    fn unmount(&self, _req: RStr<'_>) -> FfiResult {
        answer("")
    }
    fn path(&self, _req: RStr<'_>) -> FfiResult {
        answer(r#"{"Mountpoint": "/x", "Surprise": true}"#)
    }
    fn get(&self, _req: RStr<'_>) -> FfiResult {
        answer("[1, 2, 3]")
    }
    fn list(&self, _req: RStr<'_>) -> FfiResult {
        answer(r#"{"Volumes": []}"#)
    }
    fn capabilities(&self, _req: RStr<'_>) -> FfiResult {
        answer(r#"{"Scope": "galactic"}"#)
    }
}

extern "C" fn manifest() -> FfiManifest {
    FfiManifest { name: "liar".into(), version: "0.0.1".into(), kinds: RVec::from(vec![FfiKind::Volume]) }
}

extern "C" fn new_volume(_req: RStr<'_>) -> RResult<FfiInit<FfiVolumeBox>, FfiError> {
    RResult::ROk(FfiInit {
        driver: ROption::RSome(FfiVolume_TO::from_value(Liar, TD_Opaque)),
        skipped: "".into(),
    })
}

extern "C" fn describe() -> RString {
    "not json either".into()
}

fn driver() -> std::sync::Arc<dyn VolumeDriver> {
    let module = PluginMod {
        manifest,
        new_storage: berth_plugin_api::ffi::export::unsupported_ctor,
        new_network: berth_plugin_api::ffi::export::unsupported_ctor,
        new_ipam: berth_plugin_api::ffi::export::unsupported_ctor,
        new_volume,
        describe,
    }
    .leak_into_prefix();
    let m = PluginModule::linked(module);
    // A description that is not JSON reads as null, not a crash.
    assert_eq!(m.describe(), serde_json::Value::Null);
    match m.new_volume(&InitRequest::new("liar", "/r", "/e")).unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(r) => panic!("{r}"),
    }
}

#[track_caller]
fn internal<T: std::fmt::Debug>(r: berth_plugin_api::DriverResult<T>, method: &str) {
    let e = r.expect_err("a lie must not pass as an answer");
    assert_eq!(e.kind, ErrorKind::Internal, "{e:?}");
    assert!(e.message.contains(&format!("plugin answered {method} with malformed JSON")), "{}", e.message);
}

#[test]
fn malformed_or_mistyped_answers_are_internal_errors_naming_the_method() {
    let d = driver();
    internal(d.create(VolumeCreateRequest::new("a")), "create");
    internal(d.mount(VolumeMountRequest::new("a", "id1")), "mount");
    internal(d.unmount(VolumeUnmountRequest::new("a", "id1")), "unmount");
    internal(d.get(VolumeGetRequest::new("a")), "get");
    internal(d.list(VolumeListRequest::default()), "list");
    internal(d.capabilities(VolumeCapabilitiesRequest::default()), "capabilities");
}

#[test]
fn tolerable_answers_are_accepted() {
    let d = driver();
    // `null` is the unit answer; unknown fields are ignored.
    d.remove(VolumeRemoveRequest::new("a")).unwrap();
    assert_eq!(d.path(VolumePathRequest::new("a")).unwrap().mountpoint, "/x");
}
