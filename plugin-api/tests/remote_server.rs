//! The remote server over real sockets: raw HTTP/1.1 written by hand
//! against small in-test drivers, on a temporary unix socket and on TCP.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plugin_api::network::Scope;
use berth_plugin_api::remote::server::{Handlers, Listen, Server, ServerHandle};
use berth_plugin_api::remote::wire::{self, Subsystem};
use berth_plugin_api::storage::*;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DiffDriver, DriverError, DriverResult, ErrorKind, StorageDriver, VolumeDriver};
use serde_json::{json, Value};

// ---------------------------------------------------------------- drivers

/// One volume: its options and its active mount ids.
type Vol = (BTreeMap<String, String>, BTreeSet<String>);

/// Volumes in memory by name. A volume named `panic` makes every call on
/// it panic.
#[derive(Default)]
struct MemVolumes {
    volumes: Mutex<BTreeMap<String, Vol>>,
}

impl MemVolumes {
    fn check(name: &str) {
        if name == "panic" {
            panic!("volume {name:?} made the driver panic");
        }
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Vol) -> DriverResult<T>) -> DriverResult<T> {
        Self::check(name);
        let mut volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get_mut(name)
            .ok_or_else(|| DriverError::not_found(format!("volume {name:?} not found")))?;
        f(v)
    }
}

impl VolumeDriver for MemVolumes {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        Self::check(&req.name);
        if req.name.is_empty() {
            return Err(DriverError::invalid_argument("a volume needs a name"));
        }
        self.volumes.lock().unwrap().entry(req.name).or_insert((req.options, BTreeSet::new()));
        Ok(())
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        self.with(&req.name, |v| match v.1.is_empty() {
            true => Ok(()),
            false => Err(DriverError::conflict(format!("volume {:?} is in use", req.name))),
        })?;
        self.volumes.lock().unwrap().remove(&req.name);
        Ok(())
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        self.with(&req.name, |v| {
            v.1.insert(req.id.clone());
            Ok(VolumeMountResponse::new(format!("/vols/{}", req.name)))
        })
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        self.with(&req.name, |v| {
            v.1.remove(&req.id);
            Ok(())
        })
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        self.with(&req.name, |v| {
            Ok(VolumePathResponse::new(if v.1.is_empty() {
                String::new()
            } else {
                format!("/vols/{}", req.name)
            }))
        })
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        self.with(&req.name, |v| {
            let mut info = VolumeInfo::new(&req.name, format!("/vols/{}", req.name));
            info.status.insert("options".into(), json!(v.0));
            info.status.insert("refs".into(), json!(v.1.len()));
            Ok(info)
        })
    }

    fn list(&self, _: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let volumes = self.volumes.lock().unwrap();
        Ok(volumes.keys().map(|n| VolumeInfo::new(n, format!("/vols/{n}"))).collect())
    }

    fn capabilities(&self, _: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}

/// Layers that only record the tars applied to them; `Diff` of a layer
/// answers the bytes applied to it, or for `big` a 300 kB pattern.
#[derive(Default)]
struct TarLayers {
    applied: Mutex<BTreeMap<String, Vec<u8>>>,
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

impl StorageDriver for TarLayers {
    fn create(&self, _: CreateRequest) -> DriverResult<()> {
        Ok(())
    }
    fn create_rw(&self, _: CreateRequest) -> DriverResult<()> {
        Ok(())
    }
    fn remove(&self, _: RemoveRequest) -> DriverResult<()> {
        Ok(())
    }
    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        Ok(GetResponse::new(format!("/layers/{}", req.id)))
    }
    fn put(&self, _: PutRequest) -> DriverResult<()> {
        Ok(())
    }
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        Ok(self.applied.lock().unwrap().contains_key(&req.id))
    }
    fn status(&self, _: StatusRequest) -> DriverResult<StatusResponse> {
        Ok(StatusResponse::new(vec![("Layers".into(), self.applied.lock().unwrap().len().to_string())]))
    }
    fn metadata(&self, _: MetadataRequest) -> DriverResult<MetadataResponse> {
        Ok(MetadataResponse::default())
    }
    fn cleanup(&self, _: CleanupRequest) -> DriverResult<()> {
        Ok(())
    }
    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        Some(self)
    }
}

impl DiffDriver for TarLayers {
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let bytes = match req.id.as_str() {
            "big" => pattern(300_000),
            "fails-early" => return Err(DriverError::not_found("layer \"fails-early\" not found")),
            "fails-late" => {
                out.write_all(&pattern(200_000)).map_err(|e| DriverError::io("write", &e))?;
                return Err(DriverError::internal("the disk went away"));
            }
            id => self.applied.lock().unwrap().get(id).cloned().ok_or_else(|| DriverError::not_found(id))?,
        };
        for piece in bytes.chunks(10_000) {
            out.write_all(piece).map_err(|e| DriverError::io("write the diff", &e))?;
        }
        Ok(())
    }
    fn changes(&self, _: ChangesRequest) -> DriverResult<Vec<Change>> {
        Ok(vec![Change::new("/a", ChangeKind::Add)])
    }
    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let mut bytes = Vec::new();
        if req.parent == "read-nothing" {
            return Err(DriverError::invalid_argument("refusing without reading"));
        }
        input.read_to_end(&mut bytes).map_err(|e| DriverError::io("read the tar", &e))?;
        let size = bytes.len() as u64;
        self.applied.lock().unwrap().insert(req.id, bytes);
        Ok(ApplyDiffResponse::new(size))
    }
    fn diff_size(&self, _: DiffSizeRequest) -> DriverResult<u64> {
        Ok(7)
    }
}

// ------------------------------------------------------------- the client

/// One parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A hand-written HTTP/1.1 client on any stream.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
    chunk: Box<[u8]>,
}

impl<S: Read + Write> Client<S> {
    fn new(stream: S) -> Self {
        Client { stream, buf: Vec::new(), chunk: vec![0; 64 * 1024].into_boxed_slice() }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn post(&mut self, path: &str, body: &str) -> Answer {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.raw(req.as_bytes());
        self.answer()
    }

    fn fill(&mut self) -> usize {
        let n = self.stream.read(&mut self.chunk).unwrap_or(0);
        self.buf.extend_from_slice(&self.chunk[..n]);
        n
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill() > 0, "connection closed mid-line");
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one answer (skipping `100 Continue`).
    fn answer(&mut self) -> Answer {
        loop {
            let status_line = self.line();
            let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
            let mut headers = Vec::new();
            loop {
                let line = self.line();
                if line.is_empty() {
                    break;
                }
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
            if status == 100 {
                continue;
            }
            let mut a = Answer { status, headers, body: Vec::new() };
            if let Some(len) = a.header("content-length") {
                a.body = self.take(len.parse().unwrap());
            } else if a.header("transfer-encoding") == Some("chunked") {
                loop {
                    let size = usize::from_str_radix(&self.line(), 16).unwrap();
                    if size == 0 {
                        assert_eq!(self.line(), "");
                        break;
                    }
                    let data = self.take(size);
                    a.body.extend_from_slice(&data);
                    assert_eq!(self.line(), "");
                }
            } else {
                while self.fill() > 0 {}
                a.body = std::mem::take(&mut self.buf);
            }
            return a;
        }
    }

    /// Whether the server closed the connection (nothing more to read).
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }
}

// ---------------------------------------------------------------- helpers

struct Running {
    handle: ServerHandle,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    volumes: Arc<MemVolumes>,
    layers: Arc<TarLayers>,
}

fn serve_with(configure: impl FnOnce(Server) -> Server) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins/test.sock");
    let volumes = Arc::new(MemVolumes::default());
    let layers = Arc::new(TarLayers::default());
    let handlers = Handlers {
        volume: Some(volumes.clone() as Arc<dyn VolumeDriver>),
        storage: Some(layers.clone() as Arc<dyn StorageDriver>),
        ..Handlers::default()
    };
    let server = configure(Server::bind(&Listen::Unix(path.clone()), handlers).unwrap());
    let handle = server.spawn().unwrap();
    Running { handle, _dir: dir, path, volumes, layers }
}

fn serve() -> Running {
    serve_with(|s| s)
}

impl Running {
    fn client(&self) -> Client<UnixStream> {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client::new(s)
    }
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ------------------------------------------------------------------ tests

#[test]
fn activate_lists_the_served_subsystems_in_order() {
    let s = serve();
    assert_eq!(s.handle.address(), format!("unix://{}", s.path.display()));
    let a = s.client().post(wire::ACTIVATE, "");
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "{\"Implements\":[\"GraphDriver\",\"VolumeDriver\"]}\n");
    assert_eq!(a.header("content-type"), Some(wire::CONTENT_TYPE));
}

#[test]
fn every_volume_endpoint_works_over_a_unix_socket() {
    let s = serve();
    let mut c = s.client();
    let ok = |a: Answer| {
        assert_eq!(a.status, 200, "{}", a.text());
        assert!(a.body.ends_with(b"\n"));
        assert_eq!(a.header("content-type"), Some(wire::CONTENT_TYPE));
        assert_eq!(a.header("content-length"), Some(a.body.len().to_string().as_str()));
        a.json()
    };
    assert_eq!(ok(c.post("/VolumeDriver.Create", r#"{"Name":"v1","Opts":{"size":"1G"}}"#)), json!({}));
    assert_eq!(ok(c.post("/VolumeDriver.Create", r#"{"Name":"v2","Opts":null}"#)), json!({}));
    assert_eq!(
        ok(c.post("/VolumeDriver.Get", r#"{"Name":"v1"}"#)),
        json!({"Volume": {"Name": "v1", "Mountpoint": "/vols/v1", "Status": {"options": {"size": "1G"}, "refs": 0}}})
    );
    assert_eq!(
        ok(c.post("/VolumeDriver.List", "{}")),
        json!({"Volumes": [{"Name": "v1", "Mountpoint": "/vols/v1"}, {"Name": "v2", "Mountpoint": "/vols/v2"}]})
    );
    assert_eq!(ok(c.post("/VolumeDriver.Path", r#"{"Name":"v1"}"#)), json!({"Mountpoint": ""}));
    let id = "a".repeat(64);
    let mount = format!(r#"{{"Name":"v1","ID":"{id}"}}"#);
    assert_eq!(ok(c.post("/VolumeDriver.Mount", &mount)), json!({"Mountpoint": "/vols/v1"}));
    assert_eq!(ok(c.post("/VolumeDriver.Path", r#"{"Name":"v1"}"#)), json!({"Mountpoint": "/vols/v1"}));
    assert_eq!(ok(c.post("/VolumeDriver.Unmount", &mount)), json!({}));
    assert_eq!(ok(c.post("/VolumeDriver.Capabilities", "{}")), json!({"Capabilities": {"Scope": "local"}}));
    assert_eq!(ok(c.post("/VolumeDriver.Remove", r#"{"Name":"v1"}"#)), json!({}));
    assert_eq!(s.volumes.volumes.lock().unwrap().keys().collect::<Vec<_>>(), ["v2"]);
}

#[test]
fn driver_errors_are_500_and_carry_their_kind() {
    let s = serve();
    let mut c = s.client();
    let a = c.post("/VolumeDriver.Get", r#"{"Name":"ghost"}"#);
    assert_eq!(a.status, 500);
    assert_eq!(a.json(), json!({"Err": "volume \"ghost\" not found", "Kind": "not_found"}));
    let e = wire::failure(Subsystem::Volume, a.status, &a.body).unwrap();
    assert_eq!((e.kind, e.message.as_str()), (ErrorKind::NotFound, "volume \"ghost\" not found"));

    c.post("/VolumeDriver.Create", r#"{"Name":"busy"}"#);
    c.post("/VolumeDriver.Mount", r#"{"Name":"busy","ID":"m"}"#);
    let a = c.post("/VolumeDriver.Remove", r#"{"Name":"busy"}"#);
    assert_eq!((a.status, a.json()["Kind"].as_str()), (500, Some("conflict")));
    let a = c.post("/VolumeDriver.Create", r#"{}"#);
    assert_eq!((a.status, a.json()["Kind"].as_str()), (500, Some("invalid_argument")));
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let s = serve();
    let mut c = s.client();
    for path in
        ["/VolumeDriver.Frobnicate", "/NetworkDriver.Join", "/IpamDriver.RequestPool", "/nothing", "/"]
    {
        let a = c.post(path, "{}");
        assert_eq!(a.status, 404, "{path}");
        assert!(
            a.json()["Err"].as_str().unwrap().ends_with("not implemented by this plugin"),
            "{}",
            a.text()
        );
    }
    c.raw(b"GET /VolumeDriver.List HTTP/1.1\r\nHost: x\r\n\r\n");
    let a = c.answer();
    assert_eq!((a.status, a.header("allow")), (405, Some("POST")));
    // The connection survives all of it.
    assert_eq!(c.post("/VolumeDriver.List", "{}").status, 200);
}

#[test]
fn malformed_json_is_400_naming_the_method() {
    let s = serve();
    let mut c = s.client();
    for body in [r#"{"Name":"#, r#"{"Name":5}"#, "[1,2]"] {
        let a = c.post("/VolumeDriver.Create", body);
        assert_eq!(a.status, 400, "{body}");
        let v = a.json();
        assert_eq!(v["Kind"], "invalid_argument");
        assert!(v["Err"].as_str().unwrap().starts_with("VolumeDriver.Create: invalid request body"), "{v}");
    }
    assert!(s.volumes.volumes.lock().unwrap().is_empty());
}

#[test]
fn request_fields_match_in_any_case_and_nulls_are_zero_values() {
    let s = serve();
    let mut c = s.client();
    // No Content-Type, an odd Host, lower-case keys, nulls, unknown keys.
    let body = r#"{"name":"v","OPTS":null,"Extra":{"x":1}}"#;
    c.raw(
        format!(
            "POST /VolumeDriver.Create HTTP/1.1\r\nHost: %2Frun%2Fx.sock\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.answer().status, 200);
    let a = c.post("/VolumeDriver.Mount", r#"{"NAME":"v","id":null}"#);
    assert_eq!((a.status, a.json()), (200, json!({"Mountpoint": "/vols/v"})));
    assert!(s.volumes.volumes.lock().unwrap()["v"].1.contains(""));
    // Empty bodies decode as {}.
    assert_eq!(c.post("/VolumeDriver.List", "").status, 200);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = serve();
    let mut c = s.client();
    for i in 0..50 {
        let a = c.post("/VolumeDriver.Create", &format!(r#"{{"Name":"v{i}"}}"#));
        assert_eq!(a.status, 200);
        assert_eq!(a.header("connection"), None);
    }
    // Two pipelined requests in one write.
    let one = r#"{"Name":"v1"}"#;
    let req = format!("POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: {}\r\n\r\n{one}", one.len());
    c.raw(format!("{req}{req}").as_bytes());
    assert_eq!(c.answer().json()["Volume"]["Name"], "v1");
    assert_eq!(c.answer().json()["Volume"]["Name"], "v1");
    assert_eq!(c.post("/VolumeDriver.List", "{}").json()["Volumes"].as_array().unwrap().len(), 50);

    // Connection: close is honoured.
    c.raw(b"POST /VolumeDriver.List HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
    let a = c.answer();
    assert_eq!((a.status, a.header("connection")), (200, Some("close")));
    assert!(c.closed());

    // HTTP/1.0 closes unless asked otherwise.
    let mut c = s.client();
    c.raw(b"POST /VolumeDriver.List HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(c.answer().status, 200);
    assert!(c.closed());
    let mut c = s.client();
    c.raw(b"POST /VolumeDriver.List HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(c.answer().status, 200);
    assert_eq!(c.post("/VolumeDriver.List", "{}").status, 200);
}

#[test]
fn chunked_request_bodies_and_expect_continue_work() {
    let s = serve();
    let mut c = s.client();
    let body = br#"{"Name":"chunky","Opts":{"a":"b"}}"#;
    let mut req = b"POST /VolumeDriver.Create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(body, 5));
    c.raw(&req);
    assert_eq!(c.answer().status, 200);
    let a = c.post("/VolumeDriver.Get", r#"{"Name":"chunky"}"#);
    assert_eq!(a.json()["Volume"]["Status"]["options"], json!({"a": "b"}));

    let body = r#"{"Name":"patient"}"#;
    c.raw(
        format!(
            "POST /VolumeDriver.Create HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.line(), "HTTP/1.1 100 Continue");
    assert_eq!(c.line(), "");
    c.raw(body.as_bytes());
    assert_eq!(c.answer().status, 200);
}

#[test]
fn apply_diff_streams_a_chunked_tar_in_and_diff_streams_it_back() {
    let s = serve();
    let mut c = s.client();
    let tar = pattern(1_000_003);
    let mut req =
        b"POST /GraphDriver.ApplyDiff?id=layer1&parent= HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&chunked(&tar, 32 * 1024 + 7));
    c.raw(&req);
    let a = c.answer();
    assert_eq!((a.status, a.json()), (200, json!({"Size": 1_000_003})));
    assert!(s.layers.applied.lock().unwrap()["layer1"] == tar);

    // A sized body works too.
    let small = b"0123456789";
    c.raw(
        format!(
            "POST /GraphDriver.ApplyDiff?id=layer2&parent=layer1 HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            small.len()
        )
        .as_bytes(),
    );
    c.raw(small);
    assert_eq!(c.answer().json(), json!({"Size": 10}));

    let a = c.post("/GraphDriver.Diff", r#"{"ID":"layer1","Parent":""}"#);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert_eq!(a.header("content-type"), Some("application/x-tar"));
    assert!(a.body == tar, "the diff comes back whole ({} bytes)", a.body.len());
    let a = c.post("/GraphDriver.Diff", r#"{"ID":"big"}"#);
    assert!(a.body == pattern(300_000));

    // A driver that refuses without reading: the body is drained and the
    // connection stays usable.
    c.raw(b"POST /GraphDriver.ApplyDiff?id=x&parent=read-nothing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.raw(&chunked(&pattern(5000), 1000));
    let a = c.answer();
    assert_eq!((a.status, a.json()["Kind"].as_str()), (500, Some("invalid_argument")));
    assert_eq!(c.post("/GraphDriver.Exists", r#"{"ID":"layer2"}"#).json(), json!({"Exists": true}));
    assert_eq!(c.post("/GraphDriver.Status", "{}").json(), json!({"Status": [["Layers", "2"]]}));
    assert_eq!(c.post("/GraphDriver.DiffSize", r#"{"ID":"layer2"}"#).json(), json!({"Size": 7}));
    assert_eq!(
        c.post("/GraphDriver.Changes", r#"{"ID":"layer2"}"#).json(),
        json!({"Changes": [{"Path": "/a", "Kind": 1}]})
    );
    assert_eq!(
        c.post("/GraphDriver.Capabilities", "{}").json(),
        json!({"Capabilities": {"ReproducesExactDiffs": false}})
    );
}

#[test]
fn diff_errors_are_answers_before_the_first_byte_and_a_cut_stream_after() {
    let s = serve();
    let mut c = s.client();
    let a = c.post("/GraphDriver.Diff", r#"{"ID":"fails-early"}"#);
    assert_eq!((a.status, a.json()["Kind"].as_str()), (500, Some("not_found")));
    assert_eq!(c.post("/VolumeDriver.List", "{}").status, 200);

    let body = r#"{"ID":"fails-late"}"#;
    c.raw(
        format!("POST /GraphDriver.Diff HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(c.line(), "HTTP/1.1 200 OK");
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    let all = [c.buf.as_slice(), rest.as_slice()].concat();
    assert!(!all.ends_with(b"0\r\n\r\n"), "a failed stream must not look complete");
}

#[test]
fn bodies_over_the_limit_are_413() {
    let s = serve();
    let mut c = s.client();
    c.raw(format!("POST /VolumeDriver.Create HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 17 << 20).as_bytes());
    let a = c.answer();
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["Kind"], "invalid_argument");
    assert!(a.json()["Err"].as_str().unwrap().contains("larger than 16777216 bytes"));
    assert_eq!(a.header("connection"), Some("close"));

    let s = serve_with(|server| server.with_body_limit(1024));
    let mut c = s.client();
    let mut req = b"POST /VolumeDriver.Create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&vec![b' '; 4096], 512));
    c.raw(&req);
    assert_eq!(c.answer().status, 413);
    assert_eq!(s.client().post("/VolumeDriver.Create", r#"{"Name":"fits"}"#).status, 200);
}

#[test]
fn a_panicking_driver_is_a_500_and_the_server_keeps_serving() {
    let s = serve();
    let mut c = s.client();
    let a = c.post("/VolumeDriver.Create", r#"{"Name":"panic"}"#);
    assert_eq!(a.status, 500);
    let v = a.json();
    assert_eq!(v["Kind"], "internal");
    assert!(
        v["Err"].as_str().unwrap().starts_with("VolumeDriver.Create: the driver panicked: volume \"panic\""),
        "{v}"
    );
    // Same connection, then a new one.
    assert_eq!(c.post("/VolumeDriver.Create", r#"{"Name":"fine"}"#).status, 200);
    assert_eq!(s.client().post("/VolumeDriver.Get", r#"{"Name":"fine"}"#).status, 200);
}

#[test]
fn a_tcp_server_serves_the_same_protocol() {
    let volumes = Arc::new(MemVolumes::default());
    let handlers = Handlers { volume: Some(volumes as Arc<dyn VolumeDriver>), ..Handlers::default() };
    let server = Server::bind(&"tcp://127.0.0.1:0".parse().unwrap(), handlers).unwrap();
    let address = server.address();
    let handle = server.spawn().unwrap();
    let addr = address.strip_prefix("tcp://").unwrap();
    let mut c = Client::new(TcpStream::connect(addr).unwrap());
    assert_eq!(c.post(wire::ACTIVATE, "").json(), json!({"Implements": ["VolumeDriver"]}));
    assert_eq!(c.post("/VolumeDriver.Create", r#"{"Name":"t"}"#).status, 200);
    assert_eq!(
        c.post("/VolumeDriver.List", "{}").json(),
        json!({"Volumes": [{"Name": "t", "Mountpoint": "/vols/t"}]})
    );
    assert_eq!(c.post("/GraphDriver.Create", "{}").status, 404);
    handle.shutdown();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn shutdown_removes_the_socket_and_refuses_new_connections() {
    let s = serve();
    let mut c = s.client();
    assert_eq!(c.post("/VolumeDriver.List", "{}").status, 200);
    let path = s.path.clone();
    s.handle.shutdown();
    assert!(!path.exists());
    assert!(c.closed(), "an idle connection is closed");
    assert!(UnixStream::connect(&path).is_err());
}

/// Round trips on one keep-alive connection; the target is p50 ≤ 60 µs in
/// a release build. Debug builds and busy machines are slower, hence the
/// loose bound.
#[test]
fn round_trip_latency() {
    let s = serve();
    let mut c = s.client();
    c.post("/VolumeDriver.Create", r#"{"Name":"lat"}"#);
    let req = b"POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"Name\":\"lat\"}";
    let mut times = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        c.raw(req);
        assert_eq!(c.answer().status, 200);
        times.push(t.elapsed());
    }
    times.sort();
    let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
    println!("round trip over a unix socket: p50 {p50:?}, p99 {p99:?}");
    let bound = if cfg!(debug_assertions) { Duration::from_millis(2) } else { Duration::from_micros(500) };
    assert!(p50 < bound, "p50 {p50:?}");
}
