//! ABI evolution: how this host (plugin-api 1.1) treats plugins built
//! against other versions of the interface.
//!
//! The fixture plugins live in `plugin-api/tests/compat/` (see its README);
//! each is built against its own copy of `berth-plugin-api`:
//!
//! | fixture | interface | expected |
//! |---|---|---|
//! | `libcompat10.so` | frozen 1.0.0 (no `describe`, no `gw_alloc_check`) | loads, `Compat::OlderMinor`, drivers work |
//! | `libcompat20.so` | today's layout, version 2.0.0 | `LoadError::Version` |
//! | `libcompatbad.so` | 1.1.0 with `FfiVolume::create(u64)` | `LoadError::Abi` naming `create` |
//!
//! The first run builds the fixtures with cargo (about a minute); later runs
//! reuse `<target>/compat`.

#[path = "../../plugin-api/tests/compat/fixtures.rs"]
mod fixtures;

use std::path::PathBuf;

use berth_core::{load_library, Compat, ErrorKind, LoadError};
use berth_plugin_api::network::{CapabilitiesRequest, GwAllocCheckRequest};
use berth_plugin_api::volume::{
    VolumeCreateRequest, VolumeGetRequest, VolumeListRequest, VolumeMountRequest, VolumeRemoveRequest,
    VolumeUnmountRequest,
};
use berth_plugin_api::{Init, InitRequest, Kind};

fn fixture(name: &str) -> PathBuf {
    fixtures::build().join(name)
}

fn init(dir: &tempfile::TempDir) -> InitRequest {
    let root = dir.path().join("root");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    InitRequest::new("compat10", root.display().to_string(), run.display().to_string())
}

#[test]
fn a_1_0_plugin_loads_as_an_older_minor_and_its_drivers_work() {
    let lib = load_library(&fixture("libcompat10.so")).expect("a 1.0 plugin loads in a 1.1 host");
    assert_eq!(lib.compat, Compat::OlderMinor);
    assert_eq!(lib.manifest.name, "compat10");
    assert_eq!(lib.manifest.api_version, "1.0.0");
    assert_eq!(lib.manifest.kinds, vec![Kind::Network, Kind::Volume]);
    // The root field appended in 1.1 reads as absent.
    assert_eq!(lib.module.describe(), serde_json::json!({}));

    let dir = tempfile::tempdir().unwrap();
    let vol = match lib.module.new_volume(&init(&dir)).expect("volume driver constructs") {
        Init::Ready(d) => d,
        Init::Skipped(r) => panic!("the 1.0 volume driver declined: {r}"),
    };
    vol.create(VolumeCreateRequest::new("data")).unwrap();
    vol.create(VolumeCreateRequest::new("logs")).unwrap();
    let mut get = VolumeGetRequest::default();
    get.name = "data".into();
    let info = vol.get(get.clone()).unwrap();
    assert_eq!(info.name, "data");
    assert_eq!(info.mountpoint, "/compat/data");
    let names: Vec<String> =
        vol.list(VolumeListRequest::default()).unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["data", "logs"]);

    let mut mount = VolumeMountRequest::default();
    mount.name = "data".into();
    mount.id = "m1".into();
    assert_eq!(vol.mount(mount).unwrap().mountpoint, "/compat/data");
    let mut remove = VolumeRemoveRequest::default();
    remove.name = "data".into();
    let busy = vol.remove(remove.clone()).unwrap_err();
    assert_eq!(busy.kind, ErrorKind::Conflict, "{busy:?}");
    let mut unmount = VolumeUnmountRequest::default();
    unmount.name = "data".into();
    unmount.id = "m1".into();
    vol.unmount(unmount).unwrap();
    vol.remove(remove).unwrap();
    let gone = vol.get(get).unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone:?}");

    // A kind the plugin does not provide keeps its error kind across the ABI.
    let Err(no_storage) = lib.module.new_storage(&init(&dir)) else {
        panic!("compat10 provides no storage driver, yet one was constructed");
    };
    assert_eq!(no_storage.kind, ErrorKind::Unsupported, "{no_storage:?}");

    // The method appended in 1.1 is missing from the plugin's vtable: its
    // default body runs on the host and answers `unsupported`, no panic.
    let net = match lib.module.new_network(&init(&dir)).expect("network driver constructs") {
        Init::Ready(d) => d,
        Init::Skipped(r) => panic!("the 1.0 network driver declined: {r}"),
    };
    net.capabilities(CapabilitiesRequest::default()).expect("a 1.0 method answers");
    let missing = net.gw_alloc_check(GwAllocCheckRequest::default()).unwrap_err();
    assert_eq!(missing.kind, ErrorKind::Unsupported, "{missing:?}");
    assert!(missing.message.contains("plugin-api < 1.1"), "{}", missing.message);
    println!("gw_alloc_check on a 1.0 plugin: {}: {}", missing.kind, missing.message);
}

#[test]
fn a_plugin_of_another_major_version_is_refused_in_one_line() {
    let path = fixture("libcompat20.so");
    let err = load_library(&path).expect_err("a 2.0 plugin must not load in a 1.1 host");
    println!("refused: {err}");
    match &err {
        LoadError::Version { plugin, host, .. } => {
            assert_eq!(plugin, "2.0.0");
            assert_eq!(host, berth_plugin_api::API_VERSION);
        }
        other => panic!("expected LoadError::Version, got {other:?}"),
    }
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("2.0.0") && text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_plugin_with_a_changed_signature_is_refused_naming_the_method() {
    let err = load_library(&fixture("libcompatbad.so")).expect_err("a changed signature must be refused");
    let LoadError::Abi { summary, plugin, host, .. } = &err else {
        panic!("expected LoadError::Abi, got {err:?}");
    };
    println!("mismatch summary ({} line(s)):", summary.lines().count());
    for line in summary.lines() {
        println!("  {line}");
    }
    println!("whole error: {err}");
    assert_eq!((plugin.as_str(), host.as_str()), ("1.1.0", berth_plugin_api::API_VERSION));
    assert!(!summary.trim().is_empty());
    assert!(summary.lines().count() <= 2, "summary longer than two lines:\n{summary}");
    assert!(err.to_string().lines().count() <= 2, "{err}");
    assert!(summary.contains("create"), "the summary must name the changed method `create`: {summary}");
    assert!(
        summary.contains("at new_volume.driver.create.param_1: type RStr<'a> vs u64"),
        "the summary must give the path to the changed parameter: {summary}"
    );
    assert!(summary.contains("u64"), "the summary should show the wrong type: {summary}");
}

#[test]
fn good_bad_and_foreign_plugins_load_side_by_side_in_one_process() {
    let first = load_library(&fixture("libcompat10.so")).unwrap();
    assert!(matches!(load_library(&fixture("libcompatbad.so")), Err(LoadError::Abi { .. })));
    assert!(matches!(load_library(&fixture("libcompat20.so")), Err(LoadError::Version { .. })));
    // Loading the same file again answers the same module and verdict.
    let again = load_library(&fixture("libcompat10.so")).unwrap();
    assert_eq!(again.compat, Compat::OlderMinor);
    assert_eq!(again.manifest, first.manifest);
    let dir = tempfile::tempdir().unwrap();
    let Init::Ready(vol) = first.module.new_volume(&init(&dir)).unwrap() else { panic!("declined") };
    vol.create(VolumeCreateRequest::new("still-works")).unwrap();
}
