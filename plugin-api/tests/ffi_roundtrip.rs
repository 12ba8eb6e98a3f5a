//! The shared-object path exercised in-process: a driver exported with
//! `export_plugin!` and called back through the host-side wrappers, exactly
//! the vtables a loaded `.so` exposes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::network::*;
use berth_plugin_api::storage::*;
use berth_plugin_api::{
    DiffDriver, DriverError, DriverResult, ErrorKind, Init, InitRequest, Kind, NetworkDriver, StorageDriver,
};

/// A storage driver keeping layers as byte blobs, with a diff capability.
#[derive(Default)]
struct Blobs {
    layers: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Blobs {
    fn new(req: InitRequest) -> DriverResult<Init<Blobs>> {
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Opts {
            #[serde(default)]
            skip: Option<String>,
        }
        let opts: Opts = req.decode_options()?;
        match opts.skip {
            Some(reason) => Ok(Init::Skipped(reason)),
            None => Ok(Init::Ready(Blobs::default())),
        }
    }
}

impl StorageDriver for Blobs {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        if req.id == "boom" {
            panic!("planted panic for {}", req.id);
        }
        let mut l = self.layers.lock().unwrap();
        if l.contains_key(&req.id) {
            return Err(DriverError::already_exists(format!("layer {:?} exists", req.id)));
        }
        l.insert(req.id, Vec::new());
        Ok(())
    }
    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create(req)
    }
    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        self.layers.lock().unwrap().remove(&req.id).map(|_| ()).ok_or_else(|| DriverError::not_found("gone"))
    }
    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        Ok(GetResponse::new(format!("/blobs/{}", req.id)))
    }
    fn put(&self, _req: PutRequest) -> DriverResult<()> {
        Ok(())
    }
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        Ok(self.layers.lock().unwrap().contains_key(&req.id))
    }
    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        Ok(StatusResponse::new(vec![("Layers".into(), self.layers.lock().unwrap().len().to_string())]))
    }
    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        Ok(MetadataResponse::new([("Id".to_string(), req.id)].into()))
    }
    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        Ok(())
    }
    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        Some(self)
    }
}

impl DiffDriver for Blobs {
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let data = self.layers.lock().unwrap().get(&req.id).cloned().unwrap_or_default();
        for chunk in data.chunks(7) {
            out.write_all(chunk).map_err(|e| DriverError::io("write", &e))?;
        }
        Ok(())
    }
    fn changes(&self, _req: ChangesRequest) -> DriverResult<Vec<Change>> {
        Ok(vec![Change::new("/a", ChangeKind::Add), Change::new("/b", ChangeKind::Delete)])
    }
    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let mut buf = Vec::new();
        input.read_to_end(&mut buf).map_err(|e| DriverError::io("read", &e))?;
        let n = buf.len() as u64;
        self.layers.lock().unwrap().insert(req.id, buf);
        Ok(ApplyDiffResponse::new(n))
    }
    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64> {
        Ok(self.layers.lock().unwrap().get(&req.id).map(|b| b.len() as u64).unwrap_or(0))
    }
}

/// A network driver that only answers capabilities; `gw_alloc_check` is
/// left to the trait's default body.
struct Plain;

impl Plain {
    fn new(_req: InitRequest) -> DriverResult<Init<Plain>> {
        Ok(Init::Ready(Plain))
    }
}

impl NetworkDriver for Plain {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Global))
    }
    fn create_network(&self, _req: CreateNetworkRequest) -> DriverResult<()> {
        Ok(())
    }
    fn delete_network(&self, _req: DeleteNetworkRequest) -> DriverResult<()> {
        Ok(())
    }
    fn create_endpoint(&self, _req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        Ok(CreateEndpointResponse::default())
    }
    fn endpoint_info(&self, _req: EndpointInfoRequest) -> DriverResult<Options> {
        Ok(Options::new())
    }
    fn delete_endpoint(&self, _req: DeleteEndpointRequest) -> DriverResult<()> {
        Ok(())
    }
    fn join(&self, _req: JoinRequest) -> DriverResult<JoinResponse> {
        Ok(JoinResponse::default())
    }
    fn leave(&self, _req: LeaveRequest) -> DriverResult<()> {
        Ok(())
    }
    fn program_external_connectivity(&self, _req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        Ok(())
    }
    fn revoke_external_connectivity(&self, _req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        Ok(())
    }
}

mod export {
    berth_plugin_api::export_plugin! {
        name: "blobs",
        version: "9.9.9",
        description: "test double",
        storage: crate::Blobs::new,
        network: crate::Plain::new,
    }
}

fn module() -> PluginModule {
    PluginModule::linked(export::berth_plugin_root())
}

fn storage() -> std::sync::Arc<dyn StorageDriver> {
    match module().new_storage(&InitRequest::new("blobs", "/r", "/e")).unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(r) => panic!("skipped: {r}"),
    }
}

#[test]
fn the_manifest_and_description_cross_the_boundary() {
    let m = module().manifest();
    assert_eq!(m.name, "blobs");
    assert_eq!(m.version, "9.9.9");
    assert_eq!(m.kinds, vec![Kind::Storage, Kind::Network]);
    assert_eq!(m.api_version, berth_plugin_api::API_VERSION);
    assert_eq!(module().describe()["description"], "test double");
}

#[test]
fn answers_and_error_kinds_survive_the_abi() {
    let d = storage();
    d.create(CreateRequest::new("a", "")).unwrap();
    assert!(d.exists(ExistsRequest::new("a")).unwrap());
    assert!(!d.exists(ExistsRequest::new("b")).unwrap());
    let e = d.create(CreateRequest::new("a", "")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert_eq!(e.message, "layer \"a\" exists");
    assert_eq!(d.remove(RemoveRequest::new("zz")).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(d.get(GetRequest::new("a")).unwrap().path, "/blobs/a");
    assert_eq!(d.status(StatusRequest::default()).unwrap().status, vec![("Layers".into(), "1".into())]);
    assert_eq!(d.metadata(MetadataRequest::new("a")).unwrap().metadata["Id"], "a");
}

#[test]
fn a_panic_in_the_driver_is_an_internal_error_and_the_driver_keeps_working() {
    let d = storage();
    let e = d.create(CreateRequest::new("boom", "")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("driver panicked in create: planted panic for boom"), "{}", e.message);
    d.create(CreateRequest::new("after", "")).unwrap();
}

#[test]
fn tar_streams_cross_as_reader_and_writer_objects() {
    let d = storage();
    let diff = d.as_diff().expect("diff capability offered");
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let n = diff.apply_diff(ApplyDiffRequest::new("x", ""), &mut payload.as_slice()).unwrap();
    assert_eq!(n.size, 10_000);
    let mut out = Vec::new();
    diff.diff(DiffRequest::new("x", ""), &mut out).unwrap();
    assert_eq!(out, payload);
    assert_eq!(diff.diff_size(DiffSizeRequest::new("x", "")).unwrap(), 10_000);
    let changes = diff.changes(ChangesRequest::new("x", "")).unwrap();
    assert_eq!(changes[1], Change::new("/b", ChangeKind::Delete));
    assert_eq!(serde_json::to_string(&changes[0]).unwrap(), r#"{"Path":"/a","Kind":1}"#);
}

#[test]
fn init_skips_and_option_errors_are_reported() {
    let mut init = InitRequest::new("blobs", "/r", "/e");
    init.options = serde_json::json!({"skip": "no blob support in this kernel"});
    match module().new_storage(&init).unwrap() {
        Init::Skipped(r) => assert_eq!(r, "no blob support in this kernel"),
        Init::Ready(_) => panic!("should skip"),
    }
    init.options = serde_json::json!({"colour": "red"});
    let e = module().new_storage(&init).err().expect("unknown option refused");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("colour"), "{}", e.message);
}

#[test]
fn a_kind_the_plugin_lacks_is_unsupported_and_defaults_answer_unsupported() {
    let e = module().new_volume(&InitRequest::new("blobs", "/r", "/e")).err().expect("no volume driver");
    assert_eq!(e.kind, ErrorKind::Unsupported);
    let net = match module().new_network(&InitRequest::new("blobs", "/r", "/e")).unwrap() {
        Init::Ready(n) => n,
        Init::Skipped(r) => panic!("{r}"),
    };
    assert_eq!(net.capabilities(CapabilitiesRequest::default()).unwrap().scope, Scope::Global);
    let e = net.gw_alloc_check(GwAllocCheckRequest::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
}

#[test]
fn requests_use_dockers_wire_names() {
    let mut r = CreateRequest::new("id1", "p0");
    r.storage_opt.insert("size".into(), "1G".into());
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        serde_json::json!({"ID": "id1", "Parent": "p0", "MountLabel": "", "StorageOpt": {"size": "1G"}})
    );
    let j = JoinResponse::default();
    let v = serde_json::to_value(&j).unwrap();
    assert!(v.get("InterfaceName").is_some() && v.get("StaticRoutes").is_some());
}
