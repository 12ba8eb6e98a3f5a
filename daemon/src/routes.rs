//! Request → typed command. Everything HTTP-shaped about a request (method,
//! path, version prefix, query, body) is decided here; the handlers in
//! [`crate::api`] only see a [`Command`].

use berth_core::images::LIST_FILTERS as IMAGE_LIST_FILTERS;
use berth_core::network::{LIST_FILTERS as NETWORK_LIST_FILTERS, PRUNE_FILTERS as NETWORK_PRUNE_FILTERS};
use berth_core::volumes::{LIST_FILTERS, PRUNE_FILTERS};
use berth_core::{
    ConnectRequest, CreateNetwork, CreateSandbox, CreateVolume, DisconnectRequest, Filters, MountVolume,
};
use berth_plugin_api::ErrorKind;
use hyper::Method;

use crate::error::ApiError;

/// One API request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `GET|HEAD /_ping`.
    Ping {
        /// HEAD: headers only.
        head: bool,
    },
    /// `GET /version`.
    Version,
    /// `GET /info`.
    Info,
    /// `GET /plugins`.
    PluginList,
    /// `GET /plugins/{name}` or `/plugins/{name}/json`.
    PluginInspect(String),
    /// `GET /volumes?filters=`.
    VolumeList(Filters),
    /// `POST /volumes/create`.
    VolumeCreate(CreateVolume),
    /// `GET /volumes/{name}`.
    VolumeInspect(String),
    /// `POST /volumes/prune?filters=`.
    VolumePrune {
        /// `label`, `label!`, `all`.
        filters: Filters,
        /// Without `all`, spare named volumes (API 1.42 and later).
        anonymous_only: bool,
    },
    /// `POST /volumes/{name}/mount` (berth): take one mount reference.
    VolumeMount(MountVolume),
    /// `POST /volumes/{name}/unmount` (berth): release one.
    VolumeUnmount {
        /// The volume.
        name: String,
        /// The reference's id.
        id: String,
    },
    /// `DELETE /volumes/{name}?force=1`.
    VolumeRemove {
        /// The volume.
        name: String,
        /// Remove the record even when the driver refuses.
        force: bool,
    },
    /// `GET /networks?filters=`.
    NetworkList(Filters),
    /// `POST /networks/create`.
    NetworkCreate(Box<CreateNetwork>),
    /// `GET /networks/{id or name}`.
    NetworkInspect(String),
    /// `DELETE /networks/{id or name}`.
    NetworkRemove(String),
    /// `POST /networks/{id}/connect`.
    NetworkConnect {
        /// The network.
        network: String,
        /// The sandbox and how to attach it.
        req: Box<ConnectRequest>,
    },
    /// `POST /networks/{id}/disconnect`.
    NetworkDisconnect {
        /// The network.
        network: String,
        /// The sandbox.
        req: DisconnectRequest,
    },
    /// `POST /networks/prune?filters=`.
    NetworkPrune(Filters),
    /// `POST /sandboxes/create` (berth).
    SandboxCreate(CreateSandbox),
    /// `GET /sandboxes` (berth).
    SandboxList,
    /// `GET /sandboxes/{id or name}` (berth).
    SandboxInspect(String),
    /// `DELETE /sandboxes/{id or name}` (berth).
    SandboxRemove(String),
    /// `POST /images/load?quiet=`: the request body is the archive, handed
    /// to the handler unread (see [`streams_body`]).
    ImageLoad {
        /// Only the final `Loaded image` messages, no progress.
        quiet: bool,
    },
    /// `GET /images/json?all=&filters=`.
    ImageList {
        /// `before`, `dangling`, `label`, `reference`, `since`.
        filters: Filters,
        /// Intermediate images too.
        all: bool,
    },
    /// `GET /images/{name}/json`.
    ImageInspect(String),
    /// `GET /images/{name}/get` or `GET /images/get?names=a&names=b`: a
    /// `docker save` tar.
    ImageSave(Vec<String>),
    /// `DELETE /images/{name}?force=&noprune=`.
    ImageRemove {
        /// A reference (`name:tag`) or an ID (full or a unique prefix).
        name: String,
        /// Remove an image with several tags by ID, untagging them all.
        force: bool,
        /// Accepted for Docker's clients; berth keeps no parent images, so
        /// there is nothing to prune.
        noprune: bool,
    },
}

/// Whether the request's body is a payload the handler streams (an image
/// archive) rather than a small JSON document read before routing.
pub fn streams_body(method: &Method, path: &str) -> bool {
    let (bare, _) = strip_version(path);
    method == Method::POST && matches!(bare.trim_end_matches('/'), "/images/load")
}

/// Strips an API version prefix (`/v1.47`, `/v1.24`, `/v2`) from `path`;
/// answers the rest (starting with `/`) and the version when there was one.
pub fn strip_version(path: &str) -> (&str, Option<&str>) {
    let Some(rest) = path.strip_prefix("/v") else { return (path, None) };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    let mut parts = version.splitn(2, '.');
    let major_ok = parts.next().is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
    let minor_ok = parts.next().map_or(true, |m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
    if major_ok && minor_ok {
        let tail = &rest[end..];
        (if tail.is_empty() { "/" } else { tail }, Some(version))
    } else {
        (path, None)
    }
}

/// The value of query parameter `name`, if present, percent-decoded
/// (`+` is a space, as in HTML forms).
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return decode_segment(&v.replace('+', " ")).map(|v| Some(v.into_owned()));
        }
    }
    Ok(None)
}

/// Every value of query parameter `name` (`names=a&names=b`), decoded.
fn query_params(query: Option<&str>, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(query) = query else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            out.push(decode_segment(&v.replace('+', " "))?.into_owned());
        }
    }
    Ok(out)
}

/// The `filters` parameter, checked against the names `accepted`.
fn query_filters(query: Option<&str>, accepted: &[&str]) -> Result<Filters, ApiError> {
    let raw = query_param(query, "filters")?.unwrap_or_default();
    Filters::parse(&raw, accepted).map_err(ApiError::from)
}

/// Whether API `version` (the path prefix; none = the current one) is at
/// least `major.minor`.
fn at_least(version: Option<&str>, major: u32, minor: u32) -> bool {
    let Some(v) = version else { return true };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

/// Parses a boolean query parameter the way Docker does (`1`, `true`,
/// `0`, `false`, absent).
fn query_bool(query: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match query_param(query, name)?.as_deref() {
        None | Some("") | Some("0") | Some("false") | Some("False") => Ok(false),
        Some("1") | Some("true") | Some("True") => Ok(true),
        Some(other) => Err(ApiError::new(
            ErrorKind::InvalidArgument,
            format!("query parameter {name}={other:?} is not a boolean: use 1, true, 0 or false"),
        )),
    }
}

/// Decodes a JSON request body into `T`, refusing malformed JSON and
/// unknown fields with serde's message. An empty body is `{}`.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, format!("invalid request body: {e}")))
}

/// Percent-decodes one path segment; a malformed escape or a result that
/// is not UTF-8 is a 400.
fn decode_segment(seg: &str) -> Result<std::borrow::Cow<'_, str>, ApiError> {
    if !seg.contains('%') {
        return Ok(seg.into());
    }
    let bad = || ApiError::new(ErrorKind::InvalidArgument, format!("malformed percent-encoding in {seg:?}"));
    let mut out = Vec::with_capacity(seg.len());
    let mut bytes = seg.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
            let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map(Into::into).map_err(|_| bad())
}

/// The image name made of the path segments `parts` (`library`,
/// `busybox:1.36`); an empty segment (`a//b`) is refused.
fn image_name(parts: &[&str]) -> Result<String, ApiError> {
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ApiError::new(
            ErrorKind::InvalidArgument,
            format!("invalid image name {:?}: empty path component", parts.join("/")),
        ));
    }
    Ok(parts.join("/"))
}

/// Parses one request into a [`Command`]: 404 for an unknown path, 405 for
/// a known path asked with another method, 400 for a bad query or body.
pub fn parse(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Result<Command, ApiError> {
    let (bare, version) = strip_version(path);
    let trimmed = bare.strip_suffix('/').filter(|t| !t.is_empty()).unwrap_or(bare);
    let decoded =
        trimmed.trim_start_matches('/').split('/').map(decode_segment).collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
    let is = |m: &Method| method == m;
    let not_allowed = |allow: &[&str]| Err(ApiError::method_not_allowed(method.as_str(), path, allow));
    match segments.as_slice() {
        ["_ping"] => match *method {
            Method::GET => Ok(Command::Ping { head: false }),
            Method::HEAD => Ok(Command::Ping { head: true }),
            _ => not_allowed(&["GET", "HEAD"]),
        },
        ["version"] if is(&Method::GET) => Ok(Command::Version),
        ["version"] => not_allowed(&["GET"]),
        ["info"] if is(&Method::GET) => Ok(Command::Info),
        ["info"] => not_allowed(&["GET"]),
        ["plugins"] if is(&Method::GET) => Ok(Command::PluginList),
        ["plugins"] => not_allowed(&["GET"]),
        ["plugins", name] | ["plugins", name, "json"] if !name.is_empty() => {
            if is(&Method::GET) {
                Ok(Command::PluginInspect(name.to_string()))
            } else {
                not_allowed(&["GET"])
            }
        }
        ["volumes"] if is(&Method::GET) => Ok(Command::VolumeList(query_filters(query, LIST_FILTERS)?)),
        ["volumes"] => not_allowed(&["GET"]),
        ["volumes", "create"] if is(&Method::POST) => Ok(Command::VolumeCreate(json_body(body)?)),
        ["volumes", "prune"] if is(&Method::POST) => Ok(Command::VolumePrune {
            filters: query_filters(query, PRUNE_FILTERS)?,
            anonymous_only: at_least(version, 1, 42),
        }),
        ["volumes", name, "mount"] if !name.is_empty() => {
            if !is(&Method::POST) {
                return not_allowed(&["POST"]);
            }
            let mut req: MountVolume = json_body(body)?;
            req.name = name.to_string();
            Ok(Command::VolumeMount(req))
        }
        ["volumes", name, "unmount"] if !name.is_empty() => {
            if !is(&Method::POST) {
                return not_allowed(&["POST"]);
            }
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Unmount {
                #[serde(rename = "ID")]
                id: String,
            }
            let req: Unmount = json_body(body)?;
            Ok(Command::VolumeUnmount { name: name.to_string(), id: req.id })
        }
        ["volumes", name] if !name.is_empty() => match *method {
            Method::GET => Ok(Command::VolumeInspect(name.to_string())),
            Method::DELETE => {
                Ok(Command::VolumeRemove { name: name.to_string(), force: query_bool(query, "force")? })
            }
            _ if *name == "create" || *name == "prune" => not_allowed(&["POST", "GET", "DELETE"]),
            _ => not_allowed(&["GET", "DELETE"]),
        },
        ["networks"] if is(&Method::GET) => {
            Ok(Command::NetworkList(query_filters(query, NETWORK_LIST_FILTERS)?))
        }
        ["networks"] => not_allowed(&["GET"]),
        ["networks", "create"] if is(&Method::POST) => Ok(Command::NetworkCreate(Box::new(json_body(body)?))),
        ["networks", "prune"] if is(&Method::POST) => {
            Ok(Command::NetworkPrune(query_filters(query, NETWORK_PRUNE_FILTERS)?))
        }
        ["networks", name, verb @ ("connect" | "disconnect")] if !name.is_empty() => {
            if !is(&Method::POST) {
                return not_allowed(&["POST"]);
            }
            let network = name.to_string();
            Ok(if *verb == "connect" {
                Command::NetworkConnect { network, req: Box::new(json_body(body)?) }
            } else {
                Command::NetworkDisconnect { network, req: json_body(body)? }
            })
        }
        ["networks", name] if !name.is_empty() => match *method {
            Method::GET => Ok(Command::NetworkInspect(name.to_string())),
            Method::DELETE => Ok(Command::NetworkRemove(name.to_string())),
            _ if *name == "create" || *name == "prune" => not_allowed(&["POST", "GET", "DELETE"]),
            _ => not_allowed(&["GET", "DELETE"]),
        },
        ["sandboxes"] if is(&Method::GET) => Ok(Command::SandboxList),
        ["sandboxes"] => not_allowed(&["GET"]),
        ["sandboxes", "create"] if is(&Method::POST) => Ok(Command::SandboxCreate(json_body(body)?)),
        ["sandboxes", name] if !name.is_empty() => match *method {
            Method::GET => Ok(Command::SandboxInspect(name.to_string())),
            Method::DELETE => Ok(Command::SandboxRemove(name.to_string())),
            _ if *name == "create" => not_allowed(&["POST", "GET", "DELETE"]),
            _ => not_allowed(&["GET", "DELETE"]),
        },
        ["images", "load"] if is(&Method::POST) => {
            Ok(Command::ImageLoad { quiet: query_bool(query, "quiet")? })
        }
        ["images", "json"] if is(&Method::GET) => Ok(Command::ImageList {
            filters: query_filters(query, IMAGE_LIST_FILTERS)?,
            all: query_bool(query, "all")?,
        }),
        ["images", "get"] if is(&Method::GET) => {
            let names = query_params(query, "names")?;
            if names.is_empty() {
                return Err(ApiError::new(
                    ErrorKind::InvalidArgument,
                    "GET /images/get needs at least one names= parameter",
                ));
            }
            Ok(Command::ImageSave(names))
        }
        // Names hold `/` (`library/busybox:1.36`): everything between
        // `images/` and the last segment is the name. DELETE takes the
        // whole rest, as Docker's router does.
        ["images", rest @ ..] if !rest.is_empty() && is(&Method::DELETE) => Ok(Command::ImageRemove {
            name: image_name(rest)?,
            force: query_bool(query, "force")?,
            noprune: query_bool(query, "noprune")?,
        }),
        ["images", rest @ .., "json"] if !rest.is_empty() && is(&Method::GET) => {
            Ok(Command::ImageInspect(image_name(rest)?))
        }
        ["images", rest @ .., "get"] if !rest.is_empty() && is(&Method::GET) => {
            Ok(Command::ImageSave(vec![image_name(rest)?]))
        }
        ["images", "load"] => not_allowed(&["POST"]),
        ["images", "json"] | ["images", "get"] => not_allowed(&["GET"]),
        ["images", rest @ .., "json" | "get"] if !rest.is_empty() => not_allowed(&["GET", "DELETE"]),
        ["images", rest @ ..] if !rest.is_empty() => not_allowed(&["DELETE"]),
        _ => Err(ApiError::new(ErrorKind::NotFound, format!("page not found: {method} {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn get(path: &str) -> Result<Command, ApiError> {
        parse(&Method::GET, path, None, b"")
    }

    #[test]
    fn version_prefixes_are_stripped() {
        assert_eq!(strip_version("/v1.47/version"), ("/version", Some("1.47")));
        assert_eq!(strip_version("/v1.24/volumes/x"), ("/volumes/x", Some("1.24")));
        assert_eq!(strip_version("/v2/info"), ("/info", Some("2")));
        assert_eq!(strip_version("/v1.47"), ("/", Some("1.47")));
        assert_eq!(strip_version("/version"), ("/version", None));
        assert_eq!(strip_version("/volumes"), ("/volumes", None));
        assert_eq!(strip_version("/v1./info"), ("/v1./info", None));
        assert_eq!(strip_version("/vx.1/info"), ("/vx.1/info", None));
    }

    #[test]
    fn every_route_parses_with_and_without_a_prefix() {
        for prefix in ["", "/v1.47", "/v1.12"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(get(&p("/_ping")).unwrap(), Command::Ping { head: false });
            assert_eq!(parse(&Method::HEAD, &p("/_ping"), None, b"").unwrap(), Command::Ping { head: true });
            assert_eq!(get(&p("/version")).unwrap(), Command::Version);
            assert_eq!(get(&p("/info")).unwrap(), Command::Info);
            assert_eq!(get(&p("/plugins")).unwrap(), Command::PluginList);
            assert_eq!(get(&p("/plugins/vfs")).unwrap(), Command::PluginInspect("vfs".into()));
            assert_eq!(get(&p("/plugins/vfs/json")).unwrap(), Command::PluginInspect("vfs".into()));
            assert_eq!(get(&p("/volumes")).unwrap(), Command::VolumeList(Filters::none()));
            assert_eq!(get(&p("/volumes/")).unwrap(), Command::VolumeList(Filters::none()));
            assert_eq!(get(&p("/volumes/data")).unwrap(), Command::VolumeInspect("data".into()));
            let create = parse(&Method::POST, &p("/volumes/create"), None, br#"{"Name":"a"}"#).unwrap();
            assert_eq!(
                create,
                Command::VolumeCreate(CreateVolume { name: "a".into(), ..Default::default() })
            );
        }
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert_eq!(get("/volumes/a%20b").unwrap(), Command::VolumeInspect("a b".into()));
        assert_eq!(get("/volumes/a%2").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(get("/volumes/%ff").unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn filters_are_percent_decoded_and_checked() {
        let q = "filters=%7B%22label%22%3A%7B%22a%3Db%22%3Atrue%7D%7D";
        let Command::VolumeList(f) = parse(&Method::GET, "/volumes", Some(q), b"").unwrap() else {
            panic!("not a list")
        };
        assert_eq!(f.values("label").collect::<Vec<_>>(), ["a=b"]);
        let e = parse(&Method::GET, "/volumes", Some("filters=%7B%22size%22%3A%5B%221%22%5D%7D"), b"")
            .unwrap_err();
        assert_eq!((e.status, e.kind), (StatusCode::BAD_REQUEST, ErrorKind::InvalidArgument));
        assert!(e.message.contains("invalid filter 'size'"), "{}", e.message);
        let e = parse(&Method::GET, "/volumes", Some("filters=%7Bnot"), b"").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn prune_spares_named_volumes_from_api_1_42() {
        let prune = |path: &str| match parse(&Method::POST, path, None, b"").unwrap() {
            Command::VolumePrune { anonymous_only, .. } => anonymous_only,
            other => panic!("{other:?}"),
        };
        assert!(!prune("/v1.41/volumes/prune"));
        assert!(prune("/v1.42/volumes/prune"));
        assert!(prune("/volumes/prune"));
        let e = parse(&Method::PUT, "/volumes/prune", None, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn mount_and_unmount_take_json_bodies() {
        let m = parse(&Method::POST, "/volumes/v/mount", None, br#"{"User":"cli"}"#).unwrap();
        assert_eq!(m, Command::VolumeMount(MountVolume::new("v", "cli")));
        let u = parse(&Method::POST, "/volumes/v/unmount", None, br#"{"ID":"abc"}"#).unwrap();
        assert_eq!(u, Command::VolumeUnmount { name: "v".into(), id: "abc".into() });
        assert_eq!(
            parse(&Method::POST, "/volumes/v/unmount", None, b"{}").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse(&Method::GET, "/volumes/v/mount", None, b"").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn remove_reads_force() {
        let rm = |q| parse(&Method::DELETE, "/volumes/a", q, b"");
        assert_eq!(rm(None).unwrap(), Command::VolumeRemove { name: "a".into(), force: false });
        assert_eq!(rm(Some("force=1")).unwrap(), Command::VolumeRemove { name: "a".into(), force: true });
        assert_eq!(
            rm(Some("x=y&force=true")).unwrap(),
            Command::VolumeRemove { name: "a".into(), force: true }
        );
        assert_eq!(rm(Some("force=0")).unwrap(), Command::VolumeRemove { name: "a".into(), force: false });
        assert_eq!(rm(Some("force=maybe")).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for path in ["/", "/containers/json", "/v1.47/nope", "/volumes/a/b/c", "/plugins/x/y"] {
            let e = get(path).unwrap_err();
            assert_eq!((e.status, e.kind), (StatusCode::NOT_FOUND, ErrorKind::NotFound), "{path}");
        }
        let e = parse(&Method::POST, "/version", None, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(e.allow.as_deref(), Some("GET"));
        let e = parse(&Method::PUT, "/volumes/x", None, b"").unwrap_err();
        assert_eq!(e.allow.as_deref(), Some("GET, DELETE"));
        let e = parse(&Method::DELETE, "/_ping", None, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn image_routes_take_names_with_slashes_and_colons() {
        for prefix in ["", "/v1.41", "/v1.47"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(
                get(&p("/images/library/busybox:1.36/json")).unwrap(),
                Command::ImageInspect("library/busybox:1.36".into())
            );
            assert_eq!(
                get(&p("/images/sha256:abc/json")).unwrap(),
                Command::ImageInspect("sha256:abc".into())
            );
            assert_eq!(
                get(&p("/images/reg.example:5000/a/b:t/get")).unwrap(),
                Command::ImageSave(vec!["reg.example:5000/a/b:t".into()])
            );
            assert_eq!(
                parse(&Method::GET, &p("/images/get"), Some("names=a%3A1&names=b/c"), b"").unwrap(),
                Command::ImageSave(vec!["a:1".into(), "b/c".into()])
            );
            assert_eq!(
                parse(&Method::DELETE, &p("/images/library/busybox:1.36"), Some("force=1"), b"").unwrap(),
                Command::ImageRemove { name: "library/busybox:1.36".into(), force: true, noprune: false }
            );
            assert_eq!(
                parse(&Method::POST, &p("/images/load"), Some("quiet=1"), b"").unwrap(),
                Command::ImageLoad { quiet: true }
            );
            assert!(streams_body(&Method::POST, &p("/images/load")));
            assert!(!streams_body(&Method::GET, &p("/images/load")));
            assert!(!streams_body(&Method::POST, &p("/volumes/create")));
        }
        let Command::ImageList { filters, all } = parse(
            &Method::GET,
            "/images/json",
            Some("all=1&filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D"),
            b"",
        )
        .unwrap() else {
            panic!("not a list")
        };
        assert!(all);
        assert_eq!(filters.values("dangling").collect::<Vec<_>>(), ["true"]);
        let e = parse(&Method::GET, "/images/json", Some("filters=%7B%22colour%22%3A%5B%22x%22%5D%7D"), b"")
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(get("/images/get").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(get("/images/a//b/json").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(get("/images/load").unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(get("/images/x").unwrap_err().allow.as_deref(), Some("DELETE"));
        assert_eq!(
            parse(&Method::PUT, "/images/x/json", None, b"").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get("/images").unwrap_err().status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn network_and_sandbox_routes_parse_with_and_without_a_prefix() {
        for prefix in ["", "/v1.44", "/v1.47"] {
            let p = |s: &str| format!("{prefix}{s}");
            assert_eq!(get(&p("/networks")).unwrap(), Command::NetworkList(Filters::none()));
            assert_eq!(get(&p("/networks/abc")).unwrap(), Command::NetworkInspect("abc".into()));
            assert_eq!(
                parse(&Method::DELETE, &p("/networks/abc"), None, b"").unwrap(),
                Command::NetworkRemove("abc".into())
            );
            let create =
                parse(&Method::POST, &p("/networks/create"), None, br#"{"Name":"n","Driver":"none"}"#);
            assert_eq!(
                create.unwrap(),
                Command::NetworkCreate(Box::new(CreateNetwork {
                    name: "n".into(),
                    driver: "none".into(),
                    ..Default::default()
                }))
            );
            let c = parse(&Method::POST, &p("/networks/n/connect"), None, br#"{"Container":"box"}"#).unwrap();
            assert_eq!(
                c,
                Command::NetworkConnect {
                    network: "n".into(),
                    req: Box::new(ConnectRequest { container: "box".into(), ..Default::default() })
                }
            );
            let d = parse(
                &Method::POST,
                &p("/networks/n/disconnect"),
                None,
                br#"{"Container":"box","Force":true}"#,
            );
            assert_eq!(
                d.unwrap(),
                Command::NetworkDisconnect {
                    network: "n".into(),
                    req: DisconnectRequest { container: "box".into(), force: true }
                }
            );
            assert_eq!(
                parse(&Method::POST, &p("/networks/prune"), None, b"").unwrap(),
                Command::NetworkPrune(Filters::none())
            );
            assert_eq!(get(&p("/sandboxes")).unwrap(), Command::SandboxList);
            assert_eq!(
                parse(&Method::POST, &p("/sandboxes/create"), None, br#"{"Name":"b"}"#).unwrap(),
                Command::SandboxCreate(CreateSandbox { name: "b".into(), host: false, ..Default::default() })
            );
            assert_eq!(
                parse(&Method::DELETE, &p("/sandboxes/b"), None, b"").unwrap(),
                Command::SandboxRemove("b".into())
            );
            let body =
                br#"{"Name":"b","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}],"53/udp":null},
                "ExposedPorts":{"80/tcp":{}}}"#;
            let Command::SandboxCreate(req) =
                parse(&Method::POST, &p("/sandboxes/create"), None, body).unwrap()
            else {
                panic!("not a sandbox create")
            };
            assert_eq!(req.port_bindings["80/tcp"][0].host_port, "8080");
            assert!(req.port_bindings["53/udp"].is_empty() && req.exposed_ports.contains_key("80/tcp"));
            let typo = br#"{"PortBindings":{"80/tcp":[{"HostAddr":"1.2.3.4"}]}}"#;
            let e = parse(&Method::POST, &p("/sandboxes/create"), None, typo).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
        }
        // What Docker's client sends for `docker network create` parses.
        let docker = br#"{"Name":"n","CheckDuplicate":true,"Driver":"none","Scope":"","EnableIPv6":false,
            "IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,
            "Ingress":false,"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{}}"#;
        assert!(parse(&Method::POST, "/v1.47/networks/create", None, docker).is_ok());
        let e =
            parse(&Method::POST, "/networks/create", None, br#"{"Name":"n","Colour":"red"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse(&Method::GET, "/networks/n/connect", None, b"").unwrap_err();
        assert_eq!(e.status, StatusCode::METHOD_NOT_ALLOWED);
        let e = parse(&Method::GET, "/networks", Some("filters=%7B%22size%22%3A%5B%221%22%5D%7D"), b"")
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn bodies_refuse_bad_json_and_unknown_fields_but_allow_empty() {
        let post = |b: &[u8]| parse(&Method::POST, "/volumes/create", None, b);
        let e = post(b"{not json").unwrap_err();
        assert_eq!((e.status, e.kind), (StatusCode::BAD_REQUEST, ErrorKind::InvalidArgument));
        assert!(e.message.contains("key must be a string"), "{}", e.message);
        let e = post(br#"{"Name":"a","Colour":"red"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("unknown field `Colour`"), "{}", e.message);
        assert_eq!(post(b"").unwrap(), Command::VolumeCreate(CreateVolume::default()));
    }
}
