//! `GraphDriver.*`: section 7 of the protocol reference (storage).
//!
//! The driver is constructed before the server starts, so `Init` only
//! acknowledges. `Diff` streams a tar (see the connection code);
//! `ApplyDiff` reads one from the request body. The four diff methods need
//! the driver's [`crate::DiffDriver`] capability and are `unsupported`
//! without it.

use std::io::Read;
use std::sync::Arc;

use serde::Serialize;

use super::routes::{call, Empty, Reply};
use crate::storage::*;
use crate::{DiffDriver, DriverError, StorageDriver};

/// `{"Capabilities": {"ReproducesExactDiffs": false}}`.
#[derive(Debug, Serialize)]
struct CapabilitiesReply {
    #[serde(rename = "Capabilities")]
    capabilities: GraphCapabilities,
}

#[derive(Debug, Serialize)]
struct GraphCapabilities {
    #[serde(rename = "ReproducesExactDiffs")]
    reproduces_exact_diffs: bool,
}

/// `{"Exists": bool}`.
#[derive(Debug, Serialize)]
struct ExistsReply {
    #[serde(rename = "Exists")]
    exists: bool,
}

/// `{"Changes": [...]}`.
#[derive(Debug, Serialize)]
struct ChangesReply {
    #[serde(rename = "Changes")]
    changes: Vec<Change>,
}

/// `{"Size": n}`.
#[derive(Debug, Serialize)]
struct SizeReply {
    #[serde(rename = "Size")]
    size: u64,
}

/// The error of a diff method on a driver without the capability.
pub(super) fn no_diff(name: &str) -> DriverError {
    DriverError::unsupported(format!("{name}: this storage driver has no diff capability"))
}

fn diff_of<'a>(d: &'a Arc<dyn StorageDriver>, name: &str) -> Result<&'a dyn DiffDriver, Reply> {
    d.as_diff().ok_or_else(|| Reply::failed(&no_diff(name)))
}

/// Answers `GraphDriver.<method>`; `None` for a method the protocol lacks.
/// `query` matters to `ApplyDiff` only, whose tar is `body` here (the
/// connection code streams big ones through [`apply_diff`] instead).
pub(super) fn route(
    d: &Arc<dyn StorageDriver>,
    name: &str,
    method: &str,
    query: &str,
    body: &[u8],
) -> Option<Reply> {
    Some(match method {
        "Init" => call(name, body, |_: serde_json::Value| Ok(Empty {})),
        "Capabilities" => call(name, body, |_: serde_json::Value| {
            Ok(CapabilitiesReply { capabilities: GraphCapabilities { reproduces_exact_diffs: false } })
        }),
        "Create" => call(name, body, |r: CreateRequest| d.create(r).map(|()| Empty {})),
        "CreateReadWrite" => call(name, body, |r: CreateRequest| d.create_rw(r).map(|()| Empty {})),
        "Remove" => call(name, body, |r: RemoveRequest| d.remove(r).map(|()| Empty {})),
        "Get" => call(name, body, |r: GetRequest| d.get(r)),
        "Put" => call(name, body, |r: PutRequest| d.put(r).map(|()| Empty {})),
        "Exists" => call(name, body, |r: ExistsRequest| d.exists(r).map(|exists| ExistsReply { exists })),
        "Status" => call(name, body, |r: StatusRequest| d.status(r)),
        "GetMetadata" => call(name, body, |r: MetadataRequest| d.metadata(r)),
        "Cleanup" => call(name, body, |r: CleanupRequest| d.cleanup(r).map(|()| Empty {})),
        "Diff" => match (d.as_diff(), crate::remote::tolerant::from_slice::<DiffRequest>(body)) {
            (None, _) => Reply::failed(&no_diff(name)),
            (Some(_), Ok(req)) => Reply::Diff { driver: Arc::clone(d), req },
            (Some(_), Err(e)) => super::routes::bad_request(name, &e),
        },
        "Changes" => match diff_of(d, name) {
            Ok(diff) => {
                call(name, body, |r: ChangesRequest| diff.changes(r).map(|changes| ChangesReply { changes }))
            }
            Err(reply) => reply,
        },
        "ApplyDiff" => apply_diff(d.as_ref(), name, query, &mut &body[..]),
        "DiffSize" => match diff_of(d, name) {
            Ok(diff) => {
                call(name, body, |r: DiffSizeRequest| diff.diff_size(r).map(|size| SizeReply { size }))
            }
            Err(reply) => reply,
        },
        _ => return None,
    })
}

/// `GraphDriver.ApplyDiff?id=<id>&parent=<parent>`: applies the tar read
/// from `input` and answers `{"Size": n}`.
pub(super) fn apply_diff(
    d: &dyn StorageDriver,
    name: &str,
    query: &str,
    input: &mut (dyn Read + Send),
) -> Reply {
    let Some(diff) = d.as_diff() else {
        return Reply::failed(&no_diff(name));
    };
    let mut req = ApplyDiffRequest::default();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "id" => req.id = percent_decode(value),
            "parent" => req.parent = percent_decode(value),
            _ => {}
        }
    }
    if req.id.is_empty() {
        return Reply::error(
            400,
            &DriverError::invalid_argument(format!("{name}: the query names no layer (id=)")),
        );
    }
    match diff.apply_diff(req, input) {
        Ok(resp) => Reply::ok(&resp),
        Err(e) => Reply::failed(&e),
    }
}

/// Decodes `%XX` escapes (dockerd sends none: ids are hex).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::sync::Mutex;

    use super::super::routes::tests::json;
    use super::*;
    use crate::DriverResult;

    /// Layers in memory; `diff` on or off.
    #[derive(Default)]
    struct Layers {
        diff: bool,
        applied: Mutex<Vec<(ApplyDiffRequest, Vec<u8>)>>,
    }

    impl StorageDriver for Layers {
        fn create(&self, req: CreateRequest) -> DriverResult<()> {
            assert_eq!(req.storage_opt, BTreeMap::from([("size".into(), "1G".into())]));
            Ok(())
        }
        fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
            Err(DriverError::already_exists(format!("layer {:?} exists", req.id)))
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
            Ok(req.id == "a")
        }
        fn status(&self, _: StatusRequest) -> DriverResult<StatusResponse> {
            Ok(StatusResponse::new(vec![("Layers".into(), "1".into())]))
        }
        fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
            Ok(MetadataResponse::new(BTreeMap::from([("Dir".into(), format!("/layers/{}", req.id))])))
        }
        fn cleanup(&self, _: CleanupRequest) -> DriverResult<()> {
            Ok(())
        }
        fn as_diff(&self) -> Option<&dyn DiffDriver> {
            self.diff.then_some(self as &dyn DiffDriver)
        }
    }

    impl DiffDriver for Layers {
        fn diff(&self, _: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
            out.write_all(b"tar").map_err(|e| DriverError::io("write", &e))
        }
        fn changes(&self, _: ChangesRequest) -> DriverResult<Vec<Change>> {
            Ok(vec![Change::new("/etc/hosts", ChangeKind::Modify), Change::new("/new", ChangeKind::Add)])
        }
        fn apply_diff(
            &self,
            req: ApplyDiffRequest,
            input: &mut (dyn Read + Send),
        ) -> DriverResult<ApplyDiffResponse> {
            let mut bytes = Vec::new();
            input.read_to_end(&mut bytes).map_err(|e| DriverError::io("read", &e))?;
            let size = bytes.len() as u64;
            self.applied.lock().unwrap().push((req, bytes));
            Ok(ApplyDiffResponse::new(size))
        }
        fn diff_size(&self, _: DiffSizeRequest) -> DriverResult<u64> {
            Ok(1234)
        }
    }

    fn call(d: &Arc<dyn StorageDriver>, method: &str, query: &str, body: &str) -> Reply {
        route(d, &format!("GraphDriver.{method}"), method, query, body.as_bytes()).expect("routed")
    }

    #[test]
    fn every_graph_endpoint_answers_its_wire_shape() {
        let layers = Arc::new(Layers { diff: true, ..Layers::default() });
        let d: Arc<dyn StorageDriver> = layers.clone();
        let ok = |s: &str| (200, s.to_string());
        let j = |method: &str, body: &str| json(call(&d, method, "", body));
        assert_eq!(j("Init", r#"{"Home":"/x","Opts":null,"UIDMaps":null,"GIDMaps":null}"#), ok("{}"));
        assert_eq!(j("Capabilities", "{}"), ok(r#"{"Capabilities":{"ReproducesExactDiffs":false}}"#));
        assert_eq!(
            j("Create", r#"{"ID":"a","Parent":"","MountLabel":"","StorageOpt":{"size":"1G"}}"#),
            ok("{}")
        );
        assert_eq!(
            j("CreateReadWrite", r#"{"ID":"a"}"#),
            (500, r#"{"Err":"layer \"a\" exists","Kind":"already_exists"}"#.to_string())
        );
        assert_eq!(j("Remove", r#"{"ID":"a"}"#), ok("{}"));
        assert_eq!(j("Get", r#"{"ID":"a","MountLabel":""}"#), ok(r#"{"Dir":"/layers/a"}"#));
        assert_eq!(j("Put", r#"{"ID":"a"}"#), ok("{}"));
        assert_eq!(j("Exists", r#"{"id":"a"}"#), ok(r#"{"Exists":true}"#));
        assert_eq!(j("Exists", r#"{"ID":"b"}"#), ok(r#"{"Exists":false}"#));
        assert_eq!(j("Status", "{}"), ok(r#"{"Status":[["Layers","1"]]}"#));
        assert_eq!(j("GetMetadata", r#"{"ID":"a"}"#), ok(r#"{"Metadata":{"Dir":"/layers/a"}}"#));
        assert_eq!(j("Cleanup", "{}"), ok("{}"));
        assert_eq!(
            j("Changes", r#"{"ID":"a","Parent":""}"#),
            ok(r#"{"Changes":[{"Path":"/etc/hosts","Kind":0},{"Path":"/new","Kind":1}]}"#)
        );
        assert_eq!(j("DiffSize", r#"{"ID":"a","Parent":"p"}"#), ok(r#"{"Size":1234}"#));
        match call(&d, "Diff", "", r#"{"ID":"a","Parent":"p"}"#) {
            Reply::Diff { req, .. } => assert_eq!(req, DiffRequest::new("a", "p")),
            other => panic!("{other:?}"),
        }
        assert_eq!(json(call(&d, "ApplyDiff", "id=a%2Fb&parent=p", "TARBYTES")), ok(r#"{"Size":8}"#));
        assert_eq!(
            layers.applied.lock().unwrap()[0],
            (ApplyDiffRequest::new("a/b", "p"), b"TARBYTES".to_vec())
        );
        assert_eq!(json(call(&d, "ApplyDiff", "parent=p", "")).0, 400);
        assert!(route(&d, "GraphDriver.Nope", "Nope", "", b"{}").is_none());
    }

    #[test]
    fn diff_methods_are_unsupported_without_the_capability() {
        let d: Arc<dyn StorageDriver> = Arc::new(Layers::default());
        for method in ["Diff", "Changes", "ApplyDiff", "DiffSize"] {
            let (status, body) = json(call(&d, method, "id=a", r#"{"ID":"a"}"#));
            assert_eq!(status, 500, "{method}");
            assert!(
                body.contains("no diff capability") && body.contains("\"Kind\":\"unsupported\""),
                "{body}"
            );
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("abc"), "abc");
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }
}
