//! Unit tests of the driver: the ABI path, and reference counting of
//! backing mounts against a fake mount table (unprivileged).

use std::fs;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::ErrorKind;

use super::*;
use crate::mounting::fake::FakeHost;

#[test]
fn the_abi_path_keeps_answers_and_error_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let init = InitRequest::new("local", dir.path().to_str().unwrap(), "");
    let Init::Ready(d) = PluginModule::linked(crate::export::berth_plugin_root()).new_volume(&init).unwrap()
    else {
        panic!("declined")
    };
    d.create(VolumeCreateRequest::new("v")).unwrap();
    let mut mount = VolumeMountRequest::default();
    mount.name = "v".into();
    mount.id = "a".repeat(64);
    let data = dir.path().join("v/_data");
    assert_eq!(d.mount(mount).unwrap().mountpoint, data.to_str().unwrap());
    let mut remove = VolumeRemoveRequest::default();
    remove.name = "v".into();
    assert_eq!(d.remove(remove.clone()).unwrap_err().kind, ErrorKind::Conflict);
    let mut get = VolumeGetRequest::default();
    get.name = "w".into();
    assert_eq!(d.get(get).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(d.create(VolumeCreateRequest::new("-v")).unwrap_err().kind, ErrorKind::InvalidArgument);
    let mut unmount = VolumeUnmountRequest::default();
    unmount.name = "v".into();
    unmount.id = "b".repeat(64);
    d.unmount(unmount).unwrap();
}

fn tmpfs(d: &LocalVolumeDriver, name: &str) {
    let mut req = VolumeCreateRequest::new(name);
    req.options = [("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    d.create(req).unwrap();
}

fn mount(d: &LocalVolumeDriver, name: &str, id: &str) -> DriverResult<String> {
    d.mount(VolumeMountRequest::new(name, id)).map(|r| r.mountpoint)
}

fn unmount(d: &LocalVolumeDriver, name: &str, id: &str) -> DriverResult<()> {
    d.unmount(VolumeUnmountRequest::new(name, id))
}

#[test]
fn the_first_mount_id_mounts_and_the_last_unmounts() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let d = LocalVolumeDriver::open(dir.path().to_path_buf(), host.clone()).unwrap();
    tmpfs(&d, "t");
    let data = dir.path().join("t/_data");
    assert_eq!(host.count(&data), 0, "create mounts nothing");
    for id in ["a", "b", "c", "a"] {
        mount(&d, "t", id).unwrap();
        assert_eq!(host.count(&data), 1);
    }
    assert_eq!(*host.calls.lock().unwrap(), 1);
    let status = d.get(VolumeGetRequest::new("t")).unwrap().status;
    assert_eq!((status["refs"].clone(), status["mounted"].clone()), (json!(3), json!(true)));
    assert_eq!((status["type"].clone(), status["device"].clone()), (json!("tmpfs"), json!("tmpfs")));
    assert_eq!(status["options"]["o"], json!("size=1m"));
    unmount(&d, "t", "a").unwrap();
    unmount(&d, "t", "b").unwrap();
    unmount(&d, "t", "nope").unwrap();
    assert_eq!(host.count(&data), 1);
    assert_eq!(d.remove(VolumeRemoveRequest::new("t")).unwrap_err().kind, ErrorKind::Conflict);
    unmount(&d, "t", "c").unwrap();
    assert_eq!(host.count(&data), 0);
    unmount(&d, "t", "c").unwrap();
    let status = d.get(VolumeGetRequest::new("t")).unwrap().status;
    assert_eq!((status["refs"].clone(), status["mounted"].clone()), (json!(0), json!(false)));
    d.remove(VolumeRemoveRequest::new("t")).unwrap();
}

#[test]
fn a_failed_mount_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let d = LocalVolumeDriver::open(dir.path().to_path_buf(), host.clone()).unwrap();
    tmpfs(&d, "t");
    *host.fail.lock().unwrap() = Some(libc::EINVAL);
    let e = mount(&d, "t", "a").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    for text in ["volume t", "type=tmpfs", "o=size=1m", "_data"] {
        assert!(e.message.contains(text), "{:?} lacks {text:?}", e.message);
    }
    assert_eq!(d.get(VolumeGetRequest::new("t")).unwrap().status["refs"], json!(0));
    assert!(!fs::read_to_string(dir.path().join("t/mounts.json")).unwrap_or_default().contains("\"a\""));
    // The next try mounts; the volume was removable all along.
    mount(&d, "t", "a").unwrap();
    unmount(&d, "t", "a").unwrap();
    d.remove(VolumeRemoveRequest::new("t")).unwrap();
}

#[test]
fn a_reopened_driver_keeps_a_used_mount_and_drops_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    {
        let d = LocalVolumeDriver::open(dir.path().to_path_buf(), host.clone()).unwrap();
        tmpfs(&d, "used");
        tmpfs(&d, "orphan");
        mount(&d, "used", "a").unwrap();
    }
    // A crash after mount(2), before the id was recorded.
    let orphan = dir.path().join("orphan/_data");
    host.table.lock().unwrap().push(table_path(&orphan));
    let used = dir.path().join("used/_data");
    let d = LocalVolumeDriver::open(dir.path().to_path_buf(), host.clone()).unwrap();
    assert_eq!((host.count(&used), host.count(&orphan)), (1, 0));
    mount(&d, "used", "b").unwrap();
    assert_eq!(host.count(&used), 1, "not mounted twice");
    assert_eq!(*host.calls.lock().unwrap(), 1);
    // The backing mount vanished under recorded ids: the next mount restores it.
    host.unmount(&used).unwrap();
    mount(&d, "used", "a").unwrap();
    assert_eq!(host.count(&used), 1);
    unmount(&d, "used", "a").unwrap();
    unmount(&d, "used", "b").unwrap();
    assert_eq!(host.count(&used), 0);
}

#[test]
fn removing_never_deletes_through_a_mount() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(FakeHost::default());
    let d = LocalVolumeDriver::open(dir.path().to_path_buf(), host.clone()).unwrap();
    d.create(VolumeCreateRequest::new("plain")).unwrap();
    // Someone else mounted something inside a plain volume.
    let inside = dir.path().join("plain/_data");
    host.table.lock().unwrap().push(table_path(&inside));
    let e = d.remove(VolumeRemoveRequest::new("plain")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::FailedPrecondition);
    assert!(e.message.contains(inside.to_str().unwrap()), "{}", e.message);
    assert!(inside.is_dir());
    host.unmount(&inside).unwrap();
    d.remove(VolumeRemoveRequest::new("plain")).unwrap();
}

#[test]
fn options_are_checked_before_anything_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = LocalVolumeDriver::open(dir.path().to_path_buf(), Arc::new(FakeHost::default())).unwrap();
    let mut req = VolumeCreateRequest::new("v");
    req.options.insert("type".into(), "tmpfs".into());
    let e = d.create(req).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("volume v") && e.message.contains("\"device\""), "{}", e.message);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}
