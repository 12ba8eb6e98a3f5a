//! The volume service over a recording in-memory driver: the call sequence
//! a driver sees is exactly what these tests pin. (The daemon's end-to-end
//! tests run the same paths over the real `local` driver.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind, VolumeDriver};

use super::*;
use crate::call::{Driver, Metrics};

/// A volume driver that keeps volumes in memory and records every call.
#[derive(Debug, Default)]
struct Recorder {
    volumes: Mutex<BTreeMap<String, BTreeSet<String>>>,
    calls: Mutex<Vec<String>>,
    fail_mount: Mutex<bool>,
    scope: Option<Scope>,
}

impl Recorder {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self, prefix: &str) -> Vec<String> {
        self.calls.lock().unwrap().iter().filter(|c| c.starts_with(prefix)).cloned().collect()
    }
    fn forget(&self, name: &str) {
        self.volumes.lock().unwrap().remove(name);
    }
}

impl VolumeDriver for Recorder {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        self.log(format!("create {}", req.name));
        if req.options.contains_key("bad") {
            return Err(DriverError::invalid_argument("option bad is bad"));
        }
        self.volumes.lock().unwrap().entry(req.name).or_default();
        Ok(())
    }
    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        self.log(format!("remove {}", req.name));
        let mut v = self.volumes.lock().unwrap();
        match v.get(&req.name) {
            None => Err(DriverError::not_found(req.name)),
            Some(ids) if !ids.is_empty() => Err(DriverError::conflict("in use")),
            Some(_) => {
                v.remove(&req.name);
                Ok(())
            }
        }
    }
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        self.log(format!("mount {} {}", req.name, req.id));
        if *self.fail_mount.lock().unwrap() {
            return Err(DriverError::unavailable("the backing store is offline"));
        }
        let mut v = self.volumes.lock().unwrap();
        let ids = v.get_mut(&req.name).ok_or_else(|| DriverError::not_found(req.name.clone()))?;
        ids.insert(req.id);
        Ok(VolumeMountResponse::new(format!("/mnt/{}", req.name)))
    }
    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        self.log(format!("unmount {} {}", req.name, req.id));
        if let Some(ids) = self.volumes.lock().unwrap().get_mut(&req.name) {
            ids.remove(&req.id);
        }
        Ok(())
    }
    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        Ok(VolumePathResponse::new(format!("/mnt/{}", req.name)))
    }
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        self.log(format!("get {}", req.name));
        let v = self.volumes.lock().unwrap();
        let ids =
            v.get(&req.name).ok_or_else(|| DriverError::not_found(format!("{} not found", req.name)))?;
        let mut info = VolumeInfo::new(&req.name, format!("/mnt/{}", req.name));
        info.status.insert("mounts".into(), ids.len().into());
        Ok(info)
    }
    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let v = self.volumes.lock().unwrap();
        Ok(v.keys().map(|n| VolumeInfo::new(n, format!("/mnt/{n}"))).collect())
    }
    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        self.log("capabilities".into());
        Ok(VolumeCapabilities::new(self.scope.unwrap_or(Scope::Local)))
    }
}

struct World {
    dir: tempfile::TempDir,
    a: Arc<Recorder>,
    b: Arc<Recorder>,
}

fn wrap(d: &Arc<Recorder>, name: &str) -> Driver<dyn VolumeDriver> {
    let inner: Arc<dyn VolumeDriver> = Arc::clone(d) as Arc<dyn VolumeDriver>;
    Driver::new(inner, name, Kind::Volume, Duration::from_secs(5), Arc::new(Metrics::default()))
}

impl World {
    fn new() -> World {
        let b = Recorder { scope: Some(Scope::Global), ..Default::default() };
        World { dir: tempfile::tempdir().unwrap(), a: Arc::default(), b: Arc::new(b) }
    }
    /// A service on the world's store (a fresh one each call: a restart).
    fn service(&self) -> VolumeService {
        let store = Arc::new(Store::open(self.dir.path()).unwrap());
        let set = DriverSet::new().with(wrap(&self.a, "a")).with(wrap(&self.b, "b"));
        VolumeService::new(Arc::new(set), store, "a".into(), None).unwrap()
    }
}

fn create(svc: &VolumeService, name: &str, driver: &str) -> DriverResult<Volume> {
    svc.create(CreateVolume { name: name.into(), driver: driver.into(), ..Default::default() })
}

#[test]
fn names_are_unique_across_drivers_and_same_driver_creates_are_idempotent() {
    let w = World::new();
    let svc = w.service();
    let v = create(&svc, "data", "").unwrap();
    assert_eq!((v.record.driver.as_str(), v.record.mountpoint.as_str()), ("a", "/mnt/data"));
    let e = create(&svc, "data", "b").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(w.b.calls("create").is_empty(), "the other driver was never asked");
    create(&svc, "data", "a").unwrap();
    assert_eq!(w.a.calls("create"), ["create data"], "an existing volume is not created twice");
}

#[test]
fn capabilities_are_asked_once_and_scope_shows_in_inspect() {
    let w = World::new();
    let svc = w.service();
    create(&svc, "g", "b").unwrap();
    create(&svc, "h", "b").unwrap();
    assert_eq!(svc.inspect("g").unwrap().scope, "global");
    svc.list(&Filters::none()).unwrap();
    assert_eq!(w.b.calls("capabilities").len(), 1);
    assert_eq!(svc.inspect("h").unwrap().scope, "global");
    assert_eq!(w.b.calls("capabilities").len(), 1);
}

#[test]
fn n_users_get_n_mounts_with_distinct_ids_and_n_unmounts() {
    let w = World::new();
    let svc = w.service();
    create(&svc, "v", "").unwrap();
    let refs: Vec<MountRef> = (0..3).map(|_| svc.mount(MountVolume::new("v", "test")).unwrap()).collect();
    let ids: BTreeSet<&str> = refs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert!(refs.iter().all(|r| r.id.len() == 64 && r.mountpoint == "/mnt/v"));
    assert_eq!(w.a.calls("mount").len(), 3);
    assert_eq!(svc.inspect("v").unwrap().usage.ref_count, 3);
    let e = svc.remove("v", true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "force does not override use: {e}");
    for r in &refs {
        svc.unmount("v", &r.id).unwrap();
    }
    let unmounts = w.a.calls("unmount");
    assert_eq!(unmounts.len(), 3);
    for r in &refs {
        assert!(unmounts.contains(&format!("unmount v {}", r.id)));
    }
    assert_eq!(svc.unmount("v", &refs[0].id).unwrap_err().kind, ErrorKind::NotFound);
    svc.remove("v", false).unwrap();
    assert_eq!(svc.inspect("v").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn a_failed_mount_records_nothing_and_is_never_followed_by_an_unmount() {
    let w = World::new();
    let svc = w.service();
    create(&svc, "v", "").unwrap();
    *w.a.fail_mount.lock().unwrap() = true;
    let e = svc.mount(MountVolume::new("v", "t")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("offline"), "the driver's text reaches the user: {e}");
    assert!(w.a.calls("unmount").is_empty());
    assert_eq!(svc.inspect("v").unwrap().usage.ref_count, 0);
    svc.remove("v", false).unwrap();
}

#[test]
fn references_survive_a_restart_exactly() {
    let w = World::new();
    let id = {
        let svc = w.service();
        create(&svc, "v", "").unwrap();
        svc.mount(MountVolume::new("v", "t").with_id("user-1")).unwrap();
        svc.mount(MountVolume::new("v", "t").with_id("user-2")).unwrap().id
    };
    let svc = w.service();
    let refs = svc.refs("v").unwrap();
    assert_eq!(refs.keys().collect::<Vec<_>>(), ["user-1", "user-2"]);
    assert_eq!(svc.remove("v", false).unwrap_err().kind, ErrorKind::Conflict);
    svc.unmount("v", &id).unwrap();
    svc.unmount("v", "user-1").unwrap();
    svc.remove("v", false).unwrap();
}

#[test]
fn a_forgotten_volume_is_made_again_by_create() {
    let w = World::new();
    let svc = w.service();
    create(&svc, "v", "").unwrap();
    w.a.forget("v");
    let status = svc.inspect("v").unwrap().status.unwrap();
    assert!(status["Error"].as_str().unwrap().contains("no longer has"), "{status:?}");
    create(&svc, "v", "").unwrap();
    assert_eq!(w.a.calls("create"), ["create v", "create v"]);
    svc.mount(MountVolume::new("v", "t")).unwrap();
}

#[test]
fn a_failed_create_leaves_nothing_half_registered() {
    let w = World::new();
    let svc = w.service();
    let mut req = CreateVolume { name: "v".into(), ..Default::default() };
    req.driver_opts.insert("bad".into(), "1".into());
    let e = svc.create(req).unwrap_err();
    assert!(e.message.contains("option bad is bad"), "{e}");
    assert_eq!(svc.inspect("v").unwrap_err().kind, ErrorKind::NotFound);
    assert!(svc.store.pending().unwrap().is_empty());
    create(&svc, "v", "").unwrap();
}

#[test]
fn list_filters_by_dangling_driver_label_and_name() {
    let w = World::new();
    let svc = w.service();
    let mut labelled = CreateVolume { name: "db-data".into(), ..Default::default() };
    labelled.labels.insert("tier".into(), "db".into());
    svc.create(labelled).unwrap();
    create(&svc, "web-data", "b").unwrap();
    svc.mount(MountVolume::new("web-data", "t")).unwrap();
    let names = |pairs: &[&str]| -> Vec<String> {
        let f = Filters::from_pairs(pairs.iter().copied(), LIST_FILTERS).unwrap();
        svc.list(&f).unwrap().volumes.into_iter().map(|v| v.record.name).collect()
    };
    assert_eq!(names(&[]), ["db-data", "web-data"]);
    assert_eq!(names(&["dangling=true"]), ["db-data"]);
    assert_eq!(names(&["dangling=false"]), ["web-data"]);
    assert_eq!(names(&["driver=b"]), ["web-data"]);
    assert_eq!(names(&["label=tier=db"]), ["db-data"]);
    assert_eq!(names(&["label=tier"]), ["db-data"]);
    assert_eq!(names(&["name=^web"]), ["web-data"]);
    assert_eq!(names(&["name=data", "driver=a"]), ["db-data"]);
}

#[test]
fn prune_removes_unused_volumes_within_filters() {
    let w = World::new();
    let svc = w.service();
    let mut anon = CreateVolume::default();
    anon.labels.insert(ANONYMOUS_LABEL.into(), String::new());
    let anon = svc.create(anon).unwrap().record.name;
    let mut keep = CreateVolume { name: "keep".into(), ..Default::default() };
    keep.labels.insert("keep".into(), "yes".into());
    svc.create(keep).unwrap();
    create(&svc, "named", "").unwrap();
    create(&svc, "used", "").unwrap();
    svc.mount(MountVolume::new("used", "t")).unwrap();

    let report = svc.prune(&Filters::none(), true).unwrap();
    assert_eq!(report.volumes_deleted, [anon], "API ≥ 1.42: only anonymous volumes by default");
    let f = Filters::from_pairs(["label!=keep"], PRUNE_FILTERS).unwrap();
    let report = svc.prune(&f, false).unwrap();
    assert_eq!(report.volumes_deleted, ["named"]);
    let f = Filters::from_pairs(["all=true"], PRUNE_FILTERS).unwrap();
    assert_eq!(svc.prune(&f, true).unwrap().volumes_deleted, ["keep"]);
    assert_eq!(svc.list(&Filters::none()).unwrap().volumes.len(), 1, "the used volume stays");
}

#[test]
fn interrupted_mounts_roll_back_and_interrupted_unmounts_finish() {
    let w = World::new();
    {
        let svc = w.service();
        create(&svc, "v", "").unwrap();
        svc.mount(MountVolume::new("v", "t").with_id("kept")).unwrap();
        svc.mount(MountVolume::new("v", "t").with_id("going")).unwrap();
        // Simulate crashes: intents recorded, nothing finished.
        svc.intent(
            OP_MOUNT,
            super::refs::ref_key("v", "half"),
            "a",
            serde_json::json!({"name":"v","id":"half"}),
        )
        .unwrap();
        svc.intent(
            OP_UNMOUNT,
            super::refs::ref_key("v", "going"),
            "a",
            serde_json::json!({"name":"v","id":"going"}),
        )
        .unwrap();
    }
    let svc = w.service();
    let pending = svc.store.pending().unwrap();
    assert_eq!(pending.len(), 2);
    for (seq, intent) in pending {
        svc.reconcile(seq, &intent).unwrap();
    }
    assert!(svc.store.pending().unwrap().is_empty());
    assert_eq!(svc.refs("v").unwrap().keys().collect::<Vec<_>>(), ["kept"]);
    assert!(w.a.calls("unmount").contains(&"unmount v half".to_string()));
    assert!(w.a.calls("unmount").contains(&"unmount v going".to_string()));
    drop(svc);
    let again = w.service();
    assert_eq!(again.refs("v").unwrap().len(), 1);
}

#[test]
fn volumes_a_driver_already_has_are_listed_and_adopted_on_use() {
    let w = World::new();
    w.b.create(VolumeCreateRequest::new("outside")).unwrap();
    let svc = w.service();
    let list = svc.list(&Filters::none()).unwrap();
    assert_eq!(list.volumes.iter().map(|v| v.record.driver.as_str()).collect::<Vec<_>>(), ["b"]);
    svc.mount(MountVolume::new("outside", "t")).unwrap();
    assert_eq!(svc.inspect("outside").unwrap().usage.ref_count, 1);
    assert_eq!(svc.count(), 1);
}

#[test]
fn create_requests_are_decoded_like_dockers() {
    let ok: CreateVolume =
        serde_json::from_str(r#"{"Name":"a","DriverOpts":{"k":"v"},"Labels":null,"ClusterVolumeSpec":null}"#)
            .unwrap();
    assert_eq!(ok.driver_opts.get("k").map(String::as_str), Some("v"));
    assert!(serde_json::from_str::<CreateVolume>(r#"{"Name":"a","Colour":"red"}"#).is_err());
    let w = World::new();
    let cluster: CreateVolume =
        serde_json::from_str(r#"{"Name":"a","ClusterVolumeSpec":{"Group":"g"}}"#).unwrap();
    assert_eq!(w.service().create(cluster).unwrap_err().kind, ErrorKind::Unsupported);
}

#[test]
fn volume_names_follow_dockers_rule() {
    assert!(valid_volume_name("data_1.x-y"));
    assert!(!valid_volume_name(""));
    assert!(!valid_volume_name("-x"));
    assert!(!valid_volume_name("a/b"));
    assert!(!valid_volume_name("../etc"));
}

#[test]
fn container_mount_specs_resolve_through_the_service_and_release_their_references() {
    use crate::mountspec::{parse_mount, parse_tmpfs, parse_volume, resolve};
    let w = World::new();
    let svc = w.service();
    create(&svc, "named", "").unwrap();
    let specs = vec![
        parse_volume("named:/data:ro").unwrap(),
        parse_volume("/cache").unwrap(),
        parse_mount("type=volume,source=fresh,target=/fresh,volume-driver=b").unwrap(),
        parse_tmpfs("/tmp:size=1m").unwrap(),
    ];
    let resolved = resolve(&specs, &svc, "c0ffee").unwrap();
    let targets: Vec<String> =
        resolved.mounts.iter().map(|m| m.destination().to_string_lossy().into_owned()).collect();
    assert_eq!(targets, ["/data", "/cache", "/fresh", "/tmp"]);
    let data = &resolved.mounts[0];
    assert_eq!(data.source().as_ref().unwrap().to_str().unwrap(), "/mnt/named");
    assert!(data.options().as_ref().unwrap().contains(&"ro".to_string()), "{data:?}");
    assert_eq!(svc.refs("named").unwrap().keys().collect::<Vec<_>>(), ["c0ffee"]);
    assert_eq!(svc.inspect("fresh").unwrap().record.driver, "b", "created on the requested driver");
    let anon = resolved.volumes.iter().find(|v| v.anonymous).unwrap().name.clone();
    assert!(svc.inspect(&anon).unwrap().record.labels.contains_key(ANONYMOUS_LABEL));

    resolved.release(&svc).unwrap();
    for name in ["named", "fresh", anon.as_str()] {
        assert_eq!(svc.inspect(name).unwrap().usage.ref_count, 0, "{name}");
    }
    let report = svc.prune(&Filters::none(), true).unwrap();
    assert_eq!(report.volumes_deleted, [anon], "the anonymous volume is what prune takes");
}

#[test]
fn a_failed_mount_list_leaves_no_reference_and_no_new_anonymous_volume() {
    use crate::mountspec::{parse_volume, resolve};
    let w = World::new();
    let svc = w.service();
    create(&svc, "ok", "").unwrap();
    create(&svc, "broken", "b").unwrap();
    w.b.forget("broken");
    let specs = vec![
        parse_volume("ok:/a").unwrap(),
        parse_volume("/anon").unwrap(),
        parse_volume("broken:/b").unwrap(),
    ];
    let e = resolve(&specs, &svc, "c1").unwrap_err();
    assert!(e.message.contains("broken"), "{e}");
    assert_eq!(svc.inspect("ok").unwrap().usage.ref_count, 0);
    let left: Vec<String> =
        svc.list(&Filters::none()).unwrap().volumes.into_iter().map(|v| v.record.name).collect();
    assert_eq!(left, ["broken", "ok"], "the anonymous volume made for the failed list is gone");
}

#[test]
fn an_empty_get_answer_is_not_found_and_adopts_nothing() {
    #[derive(Debug)]
    struct Liar;
    impl VolumeDriver for Liar {
        fn create(&self, _: VolumeCreateRequest) -> DriverResult<()> {
            Ok(())
        }
        fn remove(&self, _: VolumeRemoveRequest) -> DriverResult<()> {
            Ok(())
        }
        fn mount(&self, _: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
            Ok(VolumeMountResponse::new("/x"))
        }
        fn unmount(&self, _: VolumeUnmountRequest) -> DriverResult<()> {
            Ok(())
        }
        fn path(&self, _: VolumePathRequest) -> DriverResult<VolumePathResponse> {
            Ok(VolumePathResponse::new(""))
        }
        fn get(&self, _: VolumeGetRequest) -> DriverResult<VolumeInfo> {
            Ok(VolumeInfo::default())
        }
        fn list(&self, _: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
            Ok(vec![])
        }
        fn capabilities(&self, _: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
            Ok(VolumeCapabilities::new(Scope::Local))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let liar: Arc<dyn VolumeDriver> = Arc::new(Liar);
    let set = DriverSet::new().with(Driver::new(
        liar,
        "liar",
        Kind::Volume,
        Duration::from_secs(5),
        Arc::default(),
    ));
    let svc = VolumeService::new(Arc::new(set), store, "liar".into(), None).unwrap();
    assert_eq!(svc.mount(MountVolume::new("ghost", "t")).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(svc.count(), 0);
}
