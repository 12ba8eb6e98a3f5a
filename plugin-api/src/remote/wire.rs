//! The shape of Docker's v1 plugin protocol that both ends share: media
//! types, subsystem names, the handshake, and how errors travel.
//!
//! Errors go out as `500` with `{"Err": "<message>", "Kind": "<kind>"}`:
//! dockerd reads `Err` from any non-200 body and ignores `Kind`; berth reads
//! `Kind` back so the [`ErrorKind`] survives the hop. (Never `404`: dockerd
//! reads a 404 as "method not implemented" for the optional methods.)

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::remote::tolerant;
use crate::{DriverError, ErrorKind, Kind};

/// The `Accept` header dockerd sends (since Docker 1.10).
pub const ACCEPT: &str = "application/vnd.docker.plugins.v1.2+json";

/// The `Content-Type` plugins answer with (what go-plugins-helpers sends).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.1+json";

/// The handshake path.
pub const ACTIVATE: &str = "/Plugin.Activate";

/// The status every error answer carries.
pub const ERROR_STATUS: u16 = 500;

/// A subsystem of the protocol: one per driver kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsystem {
    /// `VolumeDriver`.
    Volume,
    /// `NetworkDriver`.
    Network,
    /// `IpamDriver`.
    Ipam,
    /// `GraphDriver` (storage).
    Graph,
}

impl Subsystem {
    /// Every subsystem.
    pub const ALL: [Subsystem; 4] =
        [Subsystem::Graph, Subsystem::Network, Subsystem::Ipam, Subsystem::Volume];

    /// The name in `Implements` and in paths: `VolumeDriver`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Subsystem::Volume => "VolumeDriver",
            Subsystem::Network => "NetworkDriver",
            Subsystem::Ipam => "IpamDriver",
            Subsystem::Graph => "GraphDriver",
        }
    }

    /// Parses an `Implements` entry (exact, case-sensitive, as dockerd does).
    pub fn parse(name: &str) -> Option<Subsystem> {
        Subsystem::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The driver kind this subsystem serves.
    pub fn kind(self) -> Kind {
        match self {
            Subsystem::Volume => Kind::Volume,
            Subsystem::Network => Kind::Network,
            Subsystem::Ipam => Kind::Ipam,
            Subsystem::Graph => Kind::Storage,
        }
    }

    /// The subsystem serving `kind`.
    pub fn of(kind: Kind) -> Subsystem {
        match kind {
            Kind::Volume => Subsystem::Volume,
            Kind::Network => Subsystem::Network,
            Kind::Ipam => Subsystem::Ipam,
            Kind::Storage => Subsystem::Graph,
        }
    }

    /// The in-band error field of a 200 answer: `Error` for IPAM, `Err`
    /// for the rest.
    pub fn error_field(self) -> &'static str {
        match self {
            Subsystem::Ipam => "Error",
            _ => "Err",
        }
    }

    /// The path of `method`: `/VolumeDriver.Get`.
    pub fn path(self, method: &str) -> String {
        format!("/{}.{method}", self.as_str())
    }
}

impl std::fmt::Display for Subsystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to `/Plugin.Activate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivateResponse {
    /// The subsystems served, e.g. `["VolumeDriver"]`.
    #[serde(rename = "Implements")]
    pub implements: Vec<String>,
}

/// An error answer body: `{"Err": "...", "Kind": "not_found"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message (what dockerd shows).
    #[serde(rename = "Err")]
    pub err: String,
    /// berth's error kind (ignored by dockerd).
    #[serde(rename = "Kind", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

/// The body of an error answer for `e`, newline-terminated as Go's encoder
/// writes it.
pub fn error_body(e: &DriverError) -> Vec<u8> {
    let mut body = serde_json::to_vec(&ErrorBody { err: e.message.clone(), kind: Some(e.kind) })
        .expect("an error body serializes");
    body.push(b'\n');
    body
}

/// Reads a failure out of an answer, or `None` when it is a success.
///
/// * Any status but 200 is a failure: the message is the body's `Err` (any
///   letter case) when it is a JSON object carrying one, else the body's
///   text, else `HTTP <status>`.
/// * A 200 is a failure when it is a JSON object whose error field is a
///   non-empty string: `Err` for every subsystem, and for IPAM also
///   `Error` (dockerd reads only `Error` there; a plugin that sends `Err`
///   surely means an error too).
///
/// The kind is the body's `Kind` when it names one (a berth plugin), else
/// a guess from the message and status ([`guess_kind`]).
pub fn failure(subsystem: Subsystem, status: u16, body: &[u8]) -> Option<DriverError> {
    let json: Option<serde_json::Map<String, Value>> =
        tolerant::from_slice::<Value>(body).ok().and_then(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        });
    let text_of = |key: &str| -> Option<String> {
        json.as_ref()
            .and_then(|m| tolerant::get_field(m, key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let message = if status == 200 {
        match subsystem {
            Subsystem::Ipam => text_of("Error").or_else(|| text_of("Err"))?,
            _ => text_of("Err")?,
        }
    } else {
        text_of("Err").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                truncate(&text, 512)
            }
        })
    };
    let kind =
        text_of("Kind").and_then(|k| ErrorKind::parse(&k)).unwrap_or_else(|| guess_kind(status, &message));
    Some(DriverError::new(kind, message))
}

/// The kind of an error from a plugin that does not send `Kind` (any
/// Docker plugin): `404` is a method the plugin does not implement;
/// otherwise the message's usual phrases decide, then the status (`400`
/// invalid argument, `409` conflict, `503` unavailable, ...), and
/// `internal` is the rest.
pub fn guess_kind(status: u16, message: &str) -> ErrorKind {
    if status == 404 {
        return ErrorKind::Unsupported;
    }
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["not found", "no such", "does not exist", "doesn't exist", "not exist", "unknown volume"]) {
        ErrorKind::NotFound
    } else if has(&["already exists", "exists already", "already in use"]) {
        ErrorKind::AlreadyExists
    } else if has(&["in use", "busy", "conflict", "still mounted", "has active"]) {
        ErrorKind::Conflict
    } else if has(&["invalid", "bad request", "malformed", "unknown option", "cannot parse", "missing"]) {
        ErrorKind::InvalidArgument
    } else if has(&["permission denied", "not permitted", "forbidden"]) {
        ErrorKind::PermissionDenied
    } else if has(&["not implemented", "not supported", "unsupported"]) {
        ErrorKind::Unsupported
    } else if has(&["no space", "exhausted", "no available", "no more"]) {
        ErrorKind::ResourceExhausted
    } else if has(&["timeout", "timed out", "deadline"]) {
        ErrorKind::Timeout
    } else {
        match status {
            400 | 422 => ErrorKind::InvalidArgument,
            401 | 403 => ErrorKind::PermissionDenied,
            409 => ErrorKind::Conflict,
            503 => ErrorKind::Unavailable,
            504 | 408 => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip_with_their_kind() {
        let e = DriverError::conflict("volume \"a\" is in use");
        let body = error_body(&e);
        assert!(body.ends_with(b"\n"));
        assert_eq!(failure(Subsystem::Volume, 500, &body), Some(e));
    }

    #[test]
    fn a_200_with_err_is_a_failure_and_ipam_also_reads_error() {
        assert!(failure(Subsystem::Volume, 200, br#"{"Err":""}"#).is_none());
        assert!(failure(Subsystem::Volume, 200, br#"{}"#).is_none());
        assert!(failure(Subsystem::Volume, 200, br#"{"Mountpoint":"/x"}"#).is_none());
        let e = failure(Subsystem::Volume, 200, br#"{"err":"volume x not found"}"#).unwrap();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::NotFound, "volume x not found"));
        let e = failure(Subsystem::Ipam, 200, br#"{"Error":"no available address"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted);
        assert!(failure(Subsystem::Ipam, 200, br#"{"Err":"boom"}"#).is_some());
        // Only IPAM reads `Error`.
        assert!(failure(Subsystem::Volume, 200, br#"{"Error":"boom"}"#).is_none());
    }

    #[test]
    fn non_200_uses_err_then_the_text_then_the_status() {
        let e = failure(Subsystem::Network, 500, br#"{"Err":"bad things"}"#).unwrap();
        assert_eq!(e.message, "bad things");
        let e = failure(Subsystem::Network, 400, b"json: cannot unmarshal string").unwrap();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::InvalidArgument, "json: cannot unmarshal string")
        );
        let e = failure(Subsystem::Network, 503, b"").unwrap();
        assert_eq!(e.message, "HTTP 503");
        let e = failure(Subsystem::Graph, 404, b"404 page not found\n").unwrap();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        let long = vec![b'x'; 10_000];
        assert!(failure(Subsystem::Volume, 500, &long).unwrap().message.len() < 600);
    }

    #[test]
    fn an_unknown_kind_falls_back_to_a_guess() {
        let e = failure(Subsystem::Volume, 500, br#"{"Err":"no such volume","Kind":"exploded"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn subsystems_name_paths_and_kinds() {
        assert_eq!(Subsystem::Volume.path("Get"), "/VolumeDriver.Get");
        assert_eq!(Subsystem::parse("IpamDriver"), Some(Subsystem::Ipam));
        assert_eq!(Subsystem::parse("ipamdriver"), None);
        for s in Subsystem::ALL {
            assert_eq!(Subsystem::of(s.kind()), s);
        }
    }
}
