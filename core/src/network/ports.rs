//! Published ports of a sandbox, the way dockerd handles a container's:
//!
//! * at create time Docker's `HostConfig.PortBindings`
//!   (`{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`) and `ExposedPorts`
//!   (`{"80/tcp": {}}`) are checked and written in one canonical form
//!   ([`normalize`]);
//! * on connect they become the driver options dockerd sends in
//!   `CreateEndpoint`, `Join` and `ProgramExternalConnectivity`
//!   ([`driver_options`]): `com.docker.network.portmap`, a list of
//!   `{Proto, IP, Port, HostIP, HostPort, HostPortEnd}`, and
//!   `com.docker.network.endpoint.exposedports`, a list of `{Proto, Port}`;
//! * what the driver chose (the host port of `HostPort: ""`, say) is read
//!   back from its `endpoint_info` ([`reported`]) and shown in Docker's
//!   `NetworkSettings.Ports` shape ([`ports_view`]).
//!
//! A `HostPort` is empty (any free port), one port (`"8080"`) or a range
//! to choose from (`"8000-8010"`); a `HostIp` is empty (the network's
//! default binding, `0.0.0.0` on a bridge) or an IPv4 or IPv6 address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_plugin_api::network::Options;
use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

/// The driver option holding the published ports.
pub const PORTMAP: &str = "com.docker.network.portmap";
/// The driver option holding the exposed ports.
pub const EXPOSED_PORTS: &str = "com.docker.network.endpoint.exposedports";

/// One host side of a published port: Docker's `PortBinding`, in
/// `HostConfig.PortBindings` and in `NetworkSettings.Ports`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct HostBinding {
    /// The host address; empty for the network's default binding.
    #[serde(deserialize_with = "super::types::null_is_default")]
    pub host_ip: String,
    /// The host port: empty for any free one, `"8080"`, or a range
    /// `"8000-8010"` to choose from.
    #[serde(deserialize_with = "super::types::null_is_default")]
    pub host_port: String,
}

/// Docker's `PortMap`: `"<port>/<proto>"` to its host bindings.
pub type PortBindings = BTreeMap<String, Vec<HostBinding>>;

/// The value of an `ExposedPorts` entry: always `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Docker's `ExposedPorts`: `"<port>/<proto>"` to `{}`.
pub type ExposedPorts = BTreeMap<String, Empty>;

/// `PortBindings` with `null` for an absent map or an absent list.
pub(super) fn bindings_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<PortBindings, D::Error> {
    let raw = Option::<BTreeMap<String, Option<Vec<HostBinding>>>>::deserialize(d)?;
    Ok(raw.unwrap_or_default().into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
}

/// `ExposedPorts` with `null` for an absent map or an absent value.
pub(super) fn exposed_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<ExposedPorts, D::Error> {
    let raw = Option::<BTreeMap<String, Option<Empty>>>::deserialize(d)?;
    Ok(raw.unwrap_or_default().into_keys().map(|k| (k, Empty {})).collect())
}

/// A published port as the driver options carry it and drivers report it.
pub type PublishedPort = berth_plugin_api::network::PortBinding;

/// The IP protocol number of `tcp`, `udp` or `sctp`.
pub fn proto_number(name: &str) -> Option<u8> {
    match name {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}

/// The name of IP protocol `n` (`tcp` for anything unknown).
pub fn proto_name(n: u8) -> &'static str {
    match n {
        17 => "udp",
        132 => "sctp",
        _ => "tcp",
    }
}

fn port_number(what: &str, s: &str) -> DriverResult<u16> {
    let bad = |why: &str| DriverError::invalid_argument(format!("{what} {s:?} {why}"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a port number"));
    }
    match s.parse::<u32>() {
        Ok(0) => Err(bad("is not a port: ports are 1 to 65535")),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(bad("is out of range: ports are 1 to 65535")),
    }
}

/// Parses `"<port>[/<proto>]"` (proto `tcp` when absent, any letter case)
/// into (port, protocol number).
pub fn parse_port_key(key: &str) -> DriverResult<(u16, u8)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let number = proto_number(&proto).ok_or_else(|| {
        DriverError::invalid_argument(format!("port {key:?}: protocol {proto:?} is not tcp, udp or sctp"))
    })?;
    if port.contains('-') {
        return Err(DriverError::invalid_argument(format!(
            "port {key:?}: give one container port per key (the CLI expands ranges)"
        )));
    }
    Ok((port_number(&format!("container port of {key:?}:"), port)?, number))
}

/// Parses a host port: empty → `None`, `"8080"`, or `"8000-8010"` →
/// (first, last).
pub fn parse_host_port(s: &str) -> DriverResult<Option<(u16, u16)>> {
    if s.is_empty() {
        return Ok(None);
    }
    let what = "host port";
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (port_number(what, a)?, port_number(what, b)?),
        None => {
            let p = port_number(what, s).map_err(|mut e| {
                if s == "0" {
                    e.message.push_str("; leave it empty for any free port");
                }
                e
            })?;
            (p, p)
        }
    };
    if b < a {
        return Err(DriverError::invalid_argument(format!(
            "host port range {s:?} is empty: its end is below its start"
        )));
    }
    Ok(Some((a, b)))
}

fn parse_host_ip(key: &str, s: &str) -> DriverResult<Option<IpAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    bare.parse().map(Some).map_err(|_| {
        DriverError::invalid_argument(format!("port {key}: host address {s:?} is not an IP address"))
    })
}

/// Checks `PortBindings` and `ExposedPorts` and answers them canonical:
/// keys `<port>/<proto>` in lower case, host addresses and ports as
/// `IpAddr` and numbers print them. A sandbox sharing the host's
/// namespace (`host`) publishes nothing: its ports are the host's.
pub fn normalize(
    bindings: &PortBindings,
    exposed: &ExposedPorts,
    host: bool,
) -> DriverResult<(PortBindings, ExposedPorts)> {
    if host && bindings.values().any(|b| !b.is_empty()) {
        return Err(DriverError::invalid_argument(
            "a sandbox sharing the host's namespace cannot publish ports: its ports are the host's already",
        ));
    }
    let mut out = PortBindings::new();
    for (key, list) in bindings {
        let (port, proto) = parse_port_key(key)?;
        let canonical = format!("{port}/{}", proto_name(proto));
        let entry = out.entry(canonical.clone()).or_default();
        for b in list {
            let ip = parse_host_ip(&canonical, &b.host_ip)?;
            let range = parse_host_port(&b.host_port)
                .map_err(|e| DriverError::invalid_argument(format!("port {canonical}: {}", e.message)))?;
            let binding = HostBinding {
                host_ip: ip.map(|i| i.to_string()).unwrap_or_default(),
                host_port: match range {
                    None => String::new(),
                    Some((a, b)) if a == b => a.to_string(),
                    Some((a, b)) => format!("{a}-{b}"),
                },
            };
            if !entry.contains(&binding) {
                entry.push(binding);
            }
        }
    }
    let mut exp = ExposedPorts::new();
    for key in exposed.keys() {
        let (port, proto) = parse_port_key(key)?;
        exp.insert(format!("{port}/{}", proto_name(proto)), Empty {});
    }
    Ok((out, exp))
}

/// The published ports of canonical `bindings` as dockerd hands them to
/// drivers (`IP` empty: the endpoint's address).
pub fn portmap(bindings: &PortBindings) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for (key, list) in bindings {
        let Ok((port, proto)) = parse_port_key(key) else { continue };
        for b in list {
            let (host_port, host_port_end) = parse_host_port(&b.host_port).ok().flatten().unwrap_or((0, 0));
            out.push(PublishedPort {
                proto,
                ip: String::new(),
                port,
                host_ip: b.host_ip.clone(),
                host_port,
                host_port_end,
            });
        }
    }
    out
}

/// Exposed ports: those of `exposed` and of `bindings`, as (port, proto),
/// in order.
fn exposed_list(bindings: &PortBindings, exposed: &ExposedPorts) -> Vec<(u16, u8)> {
    let mut all: Vec<(u16, u8)> =
        bindings.keys().chain(exposed.keys()).filter_map(|k| parse_port_key(k).ok()).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The options dockerd sends a driver for a sandbox's ports
/// ([`PORTMAP`] and [`EXPOSED_PORTS`]); a key is left out when its list
/// would be empty, so a sandbox without ports sends what it always did.
pub fn driver_options(bindings: &PortBindings, exposed: &ExposedPorts) -> Options {
    let mut o = Options::new();
    let map = portmap(bindings);
    if !map.is_empty() {
        o.insert(PORTMAP.into(), serde_json::to_value(map).unwrap_or_default());
    }
    let exp = exposed_list(bindings, exposed);
    if !exp.is_empty() {
        let list: Vec<Value> =
            exp.iter().map(|(port, proto)| json!({ "Proto": proto, "Port": port })).collect();
        o.insert(EXPOSED_PORTS.into(), Value::Array(list));
    }
    o
}

/// A field of a driver's reply, in any letter case (as dockerd reads it).
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn number(obj: &serde_json::Map<String, Value>, name: &str) -> Result<u64, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| format!("{name} {v} is not a number")),
    }
}

fn text(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!("{name} {v} is not a string")),
    }
}

/// The bindings a driver reports in its `endpoint_info` ([`PORTMAP`]):
/// `Ok(None)` when it reports none; keys in any letter case and `null`s
/// are tolerated, a reply of another shape is an error naming it.
pub fn reported(info: &Options) -> Result<Option<Vec<PublishedPort>>, String> {
    let value = info
        .get(PORTMAP)
        .or_else(|| info.iter().find(|(k, _)| k.eq_ignore_ascii_case(PORTMAP)).map(|(_, v)| v));
    let items = match value {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("{PORTMAP} is {other}, not a list of port bindings")),
    };
    let mut out = Vec::new();
    for item in items {
        let obj = item.as_object().ok_or_else(|| format!("{PORTMAP} holds {item}, not a port binding"))?;
        let small = |name: &str, max: u64| -> Result<u64, String> {
            let n = number(obj, name)?;
            if n > max {
                return Err(format!("{name} {n} is out of range in {item}"));
            }
            Ok(n)
        };
        out.push(PublishedPort {
            proto: small("Proto", 255)? as u8,
            ip: text(obj, "IP")?,
            port: small("Port", 65535)? as u16,
            host_ip: text(obj, "HostIP")?,
            host_port: small("HostPort", 65535)? as u16,
            host_port_end: small("HostPortEnd", 65535)? as u16,
        });
    }
    Ok(Some(out))
}

/// Docker's `NetworkSettings.Ports`: every port `published` (what the
/// drivers reported) with its host bindings, and every other port the
/// sandbox exposes or asked to publish with `null`.
pub fn ports_view(
    bindings: &PortBindings,
    exposed: &ExposedPorts,
    published: &[PublishedPort],
) -> BTreeMap<String, Option<Vec<HostBinding>>> {
    let mut out: BTreeMap<String, Option<Vec<HostBinding>>> = BTreeMap::new();
    for (port, proto) in exposed_list(bindings, exposed) {
        out.insert(format!("{port}/{}", proto_name(proto)), None);
    }
    for p in published {
        let b = HostBinding { host_ip: p.host_ip.clone(), host_port: p.host_port.to_string() };
        let list = out
            .entry(format!("{}/{}", p.port, proto_name(p.proto)))
            .or_default()
            .get_or_insert_with(Vec::new);
        if !list.contains(&b) {
            list.push(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    fn hb(ip: &str, port: &str) -> HostBinding {
        HostBinding { host_ip: ip.into(), host_port: port.into() }
    }

    fn one(key: &str, ip: &str, port: &str) -> PortBindings {
        PortBindings::from([(key.to_string(), vec![hb(ip, port)])])
    }

    #[test]
    fn docker_shapes_decode_with_nulls() {
        #[derive(Deserialize)]
        struct Body {
            #[serde(deserialize_with = "bindings_or_null")]
            b: PortBindings,
            #[serde(deserialize_with = "exposed_or_null")]
            e: ExposedPorts,
        }
        let body: Body = serde_json::from_str(
            r#"{"b": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": null},
                "e": {"80/tcp": {}, "9/sctp": null}}"#,
        )
        .unwrap();
        assert_eq!(body.b["80/tcp"], vec![hb("", "8080")]);
        assert!(body.b["53/udp"].is_empty());
        assert_eq!(body.e.len(), 2);
        let body: Body = serde_json::from_str(r#"{"b": null, "e": null}"#).unwrap();
        assert!(body.b.is_empty() && body.e.is_empty());
        assert!(serde_json::from_str::<HostBinding>(r#"{"HostIp": "", "Hostport": "1"}"#).is_err());
    }

    #[test]
    fn normalize_makes_keys_and_values_canonical() {
        let mut b = one("80", "", "8080");
        b.insert("80/TCP".into(), vec![hb("::1", "8000-8010"), hb("", "8080")]);
        b.insert("53/udp".into(), vec![hb("[::1]", "")]);
        let exposed = ExposedPorts::from([("9/Sctp".to_string(), Empty {})]);
        let (b, e) = normalize(&b, &exposed, false).unwrap();
        assert_eq!(b["80/tcp"], vec![hb("", "8080"), hb("::1", "8000-8010")]);
        assert_eq!(b["53/udp"], vec![hb("::1", "")]);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["9/sctp"]);
    }

    #[test]
    fn bad_ports_are_invalid_arguments_that_say_why() {
        for (b, needle) in [
            (one("80/icmp", "", ""), "not tcp, udp or sctp"),
            (one("0/tcp", "", ""), "ports are 1 to 65535"),
            (one("70000/tcp", "", ""), "out of range"),
            (one("http/tcp", "", ""), "not a port number"),
            (one("80-81/tcp", "", ""), "one container port per key"),
            (one("80/tcp", "1.2.3", ""), "not an IP address"),
            (one("80/tcp", "", "99999"), "out of range"),
            (one("80/tcp", "", "0"), "leave it empty"),
            (one("80/tcp", "", "9000-8000"), "end is below its start"),
            (one("80/tcp", "", "80-"), "not a port number"),
            (one("80/tcp", "", "x"), "not a port number"),
        ] {
            let e = normalize(&b, &ExposedPorts::new(), false).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{b:?}");
            assert!(e.message.contains(needle), "{b:?}: {}", e.message);
        }
        let e = normalize(&PortBindings::new(), &ExposedPorts::from([("x".into(), Empty {})]), false);
        assert_eq!(e.unwrap_err().kind, ErrorKind::InvalidArgument);
        let e = normalize(&one("80/tcp", "", ""), &ExposedPorts::new(), true).unwrap_err();
        assert!(e.message.contains("host's namespace"), "{}", e.message);
    }

    #[test]
    fn driver_options_follow_dockerd() {
        let mut b = one("80/tcp", "", "8080");
        b.insert("53/udp".into(), vec![hb("127.0.0.1", "")]);
        b.insert("9/sctp".into(), vec![hb("", "8000-8010")]);
        let exposed = ExposedPorts::from([("7/tcp".to_string(), Empty {})]);
        let o = driver_options(&b, &exposed);
        assert_eq!(
            o[PORTMAP],
            json!([
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0},
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 132, "IP": "", "Port": 9, "HostIP": "", "HostPort": 8000, "HostPortEnd": 8010},
            ])
        );
        assert_eq!(
            o[EXPOSED_PORTS],
            json!([{"Proto": 6, "Port": 7}, {"Proto": 132, "Port": 9}, {"Proto": 17, "Port": 53}, {"Proto": 6, "Port": 80}])
        );
        assert!(driver_options(&PortBindings::new(), &ExposedPorts::new()).is_empty());
    }

    #[test]
    fn reported_bindings_tolerate_case_nulls_and_absence() {
        assert_eq!(reported(&Options::new()), Ok(None));
        let mut info = Options::new();
        info.insert(PORTMAP.into(), Value::Null);
        assert_eq!(reported(&info), Ok(Some(Vec::new())));
        info.insert(
            PORTMAP.into(),
            json!([{"proto": 6, "ip": "10.0.0.2", "port": 80, "hostIP": "0.0.0.0", "HostPort": 49153, "HostPortEnd": null}]),
        );
        let got = reported(&info).unwrap().unwrap();
        assert_eq!((got[0].port, got[0].host_port, got[0].host_ip.as_str()), (80, 49153, "0.0.0.0"));
        info.insert(PORTMAP.into(), json!("80:80"));
        assert!(reported(&info).is_err());
        info.insert(PORTMAP.into(), json!([{"Port": 70000}]));
        assert!(reported(&info).is_err());
    }

    #[test]
    fn records_from_before_ports_still_load() {
        let sb: crate::network::SandboxRecord = serde_json::from_value(json!({
            "Id": "ab", "Name": "s1", "Key": "/run/berth/netns/ab", "Host": false, "Created": "2024-01-01T00:00:00Z"
        }))
        .unwrap();
        assert!(sb.port_bindings.is_empty() && sb.exposed_ports.is_empty());
        let ep: crate::network::EndpointRecord =
            serde_json::from_value(json!({"id": "e", "network_id": "n", "gateway": true})).unwrap();
        assert!(ep.ports.is_empty() && ep.gateway);
    }

    #[test]
    fn the_view_has_docker_shape() {
        let b = one("80/tcp", "", "");
        let exposed = ExposedPorts::from([("53/udp".to_string(), Empty {})]);
        let published = [PublishedPort {
            proto: 6,
            ip: "10.0.0.2".into(),
            port: 80,
            host_ip: "0.0.0.0".into(),
            host_port: 49153,
            host_port_end: 49153,
        }];
        let v = ports_view(&b, &exposed, &published);
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            json!({"53/udp": null, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}]})
        );
        assert_eq!(serde_json::to_value(ports_view(&b, &exposed, &[])).unwrap()["80/tcp"], Value::Null);
    }
}
