//! From a path and a body to an answer: the handshake, the per-subsystem
//! routes (one file each), and the shapes every answer shares.

use std::any::Any;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{graph, ipam, network, volume, Handlers};
use crate::remote::{tolerant, wire};
use crate::storage::DiffRequest;
use crate::{DriverError, DriverResult, StorageDriver};

/// What to send back for one request.
pub(super) enum Reply {
    /// A JSON answer (or an error body) with this status.
    Json {
        /// The HTTP status.
        status: u16,
        /// The newline-terminated JSON body.
        body: Vec<u8>,
    },
    /// `GraphDriver.Diff`: a tar streamed from the driver.
    Diff {
        /// The driver (it has a diff capability).
        driver: Arc<dyn StorageDriver>,
        /// What to diff.
        req: DiffRequest,
    },
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Json { status, body } => f
                .debug_struct("Json")
                .field("status", status)
                .field("body", &String::from_utf8_lossy(body))
                .finish(),
            Reply::Diff { req, .. } => f.debug_struct("Diff").field("req", req).finish_non_exhaustive(),
        }
    }
}

/// `{}`: the answer of calls that return nothing.
#[derive(Debug, Serialize)]
pub(super) struct Empty {}

impl Reply {
    /// `200` with `value` as JSON.
    pub(super) fn ok<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Reply::Json { status: 200, body }
            }
            Err(e) => Reply::error(
                wire::ERROR_STATUS,
                &DriverError::internal(format!("cannot encode the answer: {e}")),
            ),
        }
    }

    /// `status` with the error body of `e`.
    pub(super) fn error(status: u16, e: &DriverError) -> Reply {
        Reply::Json { status, body: wire::error_body(e) }
    }

    /// `500` with the error body of `e`: how every driver error travels.
    pub(super) fn failed(e: &DriverError) -> Reply {
        Reply::error(wire::ERROR_STATUS, e)
    }

    /// The answer for a driver call `name` that panicked.
    pub(super) fn panicked(name: &str, payload: &(dyn Any + Send)) -> Reply {
        Reply::failed(&panic_error(name, payload))
    }
}

/// The internal error a panic in driver call `name` becomes.
pub(super) fn panic_error(name: &str, payload: &(dyn Any + Send)) -> DriverError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_string());
    DriverError::internal(format!("{name}: the driver panicked: {what}"))
}

/// `404` for a method this server does not serve: dockerd reads it as
/// "not implemented" for its optional methods.
pub(super) fn not_implemented(name: &str) -> Reply {
    Reply::error(404, &DriverError::unsupported(format!("{name} is not implemented by this plugin")))
}

/// Decodes `body` into `Req` (Go's rules: any case, nulls, empty body),
/// calls `f`, and answers its result as JSON or its error as `500`. A body
/// that does not decode is `400` naming method `name`.
pub(super) fn call<Req, Resp>(name: &str, body: &[u8], f: impl FnOnce(Req) -> DriverResult<Resp>) -> Reply
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let req = match tolerant::from_slice::<Req>(body) {
        Ok(req) => req,
        Err(e) => return bad_request(name, &e),
    };
    match f(req) {
        Ok(resp) => Reply::ok(&resp),
        Err(e) => Reply::failed(&e),
    }
}

/// `400` for a body of method `name` that does not decode.
pub(super) fn bad_request(name: &str, e: &serde_json::Error) -> Reply {
    Reply::error(400, &DriverError::invalid_argument(format!("{name}: invalid request body: {e}")))
}

/// The `/Plugin.Activate` answer body for `handlers`.
pub(super) fn activate_body(handlers: &Handlers) -> Vec<u8> {
    let implements = handlers.subsystems().iter().map(|s| s.as_str().to_string()).collect();
    match Reply::ok(&wire::ActivateResponse { implements }) {
        Reply::Json { body, .. } => body,
        Reply::Diff { .. } => unreachable!("ok() answers JSON"),
    }
}

/// Routes one request: `path` is the URL path (`/VolumeDriver.Create`),
/// `query` what followed `?`, `body` the whole request body. `activate` is
/// the precomputed handshake answer.
pub(super) fn dispatch(handlers: &Handlers, activate: &[u8], path: &str, query: &str, body: &[u8]) -> Reply {
    if path == wire::ACTIVATE {
        return Reply::Json { status: 200, body: activate.to_vec() };
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    let routed =
        name.split_once('.').and_then(|(subsystem, method)| match wire::Subsystem::parse(subsystem)? {
            wire::Subsystem::Volume => volume::route(handlers.volume.as_deref()?, name, method, body),
            wire::Subsystem::Network => network::route(handlers.network.as_deref()?, name, method, body),
            wire::Subsystem::Ipam => ipam::route(handlers.ipam.as_deref()?, name, method, body),
            wire::Subsystem::Graph => graph::route(handlers.storage.as_ref()?, name, method, query, body),
        });
    routed.unwrap_or_else(|| not_implemented(name))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The status and body text of a JSON reply.
    pub(crate) fn json(reply: Reply) -> (u16, String) {
        match reply {
            Reply::Json { status, body } => {
                assert!(body.ends_with(b"\n"), "answers end with a newline");
                (status, String::from_utf8(body).unwrap().trim_end().to_string())
            }
            Reply::Diff { .. } => panic!("expected a JSON reply, got a diff stream"),
        }
    }

    #[test]
    fn unknown_paths_and_missing_handlers_are_404_not_implemented() {
        let h = Handlers::default();
        let activate = activate_body(&h);
        assert_eq!(String::from_utf8(activate.clone()).unwrap(), "{\"Implements\":[]}\n");
        for path in ["/VolumeDriver.Create", "/Nope.Create", "/", "/Plugin.Deactivate", "/VolumeDriver"] {
            let (status, body) = json(dispatch(&h, &activate, path, "", b"{}"));
            assert_eq!(status, 404, "{path}");
            assert!(body.contains("not implemented"), "{body}");
            assert!(body.contains("\"Kind\":\"unsupported\""), "{body}");
        }
    }

    #[test]
    fn panics_and_bad_bodies_name_the_method() {
        let e = panic_error("VolumeDriver.Get", &"boom");
        assert_eq!(e.message, "VolumeDriver.Get: the driver panicked: boom");
        let e = panic_error("X", &String::from("owned"));
        assert!(e.message.ends_with("owned"));
        let e = panic_error("X", &42);
        assert!(e.message.ends_with("a non-string payload"));
        let r: Reply =
            call("VolumeDriver.Get", b"{\"Name\":", |_: crate::volume::VolumeGetRequest| Ok(Empty {}));
        let (status, body) = json(r);
        assert_eq!(status, 400);
        assert!(body.starts_with("{\"Err\":\"VolumeDriver.Get: invalid request body:"), "{body}");
        assert!(body.ends_with("\"Kind\":\"invalid_argument\"}"), "{body}");
    }
}
