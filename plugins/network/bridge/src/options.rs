//! The bridge driver's per-network options (Docker's `-o` keys inside
//! `com.docker.network.generic`) and the published-port records.

use std::net::{IpAddr, Ipv4Addr};

pub use berth_plugin_api::network::PortBinding;
use berth_plugin_api::network::{CreateNetworkRequest, Options};
use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::netutil::{self, as_bool, as_string, check_ifname, DAEMON_KEYS, IFACE_PREFIX, MTU};

/// `-o com.docker.network.bridge.name`: the Linux bridge to create or adopt.
pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// `-o …enable_ip_masquerade`: masquerade traffic leaving the host (default true).
pub const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `-o …enable_icc`: containers on the network reach each other (default true).
pub const ICC: &str = "com.docker.network.bridge.enable_icc";
/// `-o …host_binding_ipv4`: default host address of published ports.
pub const HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
/// `-o …inhibit_ipv4`: do not put the IPv4 gateway address on the bridge.
pub const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";
/// `-o …default_bridge`: accepted and ignored (the daemon's concern).
pub const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// `-o …gateway_mode_ipv4`: only `nat` (the default) is supported.
pub const GATEWAY_MODE_V4: &str = "com.docker.network.bridge.gateway_mode_ipv4";
/// `-o …gateway_mode_ipv6`: only `nat` (the default) is supported.
pub const GATEWAY_MODE_V6: &str = "com.docker.network.bridge.gateway_mode_ipv6";
/// `-o com.docker.network.host_ipv4`: SNAT source instead of masquerade.
pub const HOST_IPV4: &str = "com.docker.network.host_ipv4";

/// Every driver option the bridge driver knows.
pub const KNOWN: [&str; 11] = [
    BRIDGE_NAME,
    MASQUERADE,
    ICC,
    HOST_BINDING,
    INHIBIT_IPV4,
    DEFAULT_BRIDGE,
    GATEWAY_MODE_V4,
    GATEWAY_MODE_V6,
    HOST_IPV4,
    MTU,
    IFACE_PREFIX,
];

/// One network's configuration, decoded from its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The bridge's name.
    pub bridge: String,
    /// MTU of the bridge (when created) and the veth pairs.
    pub mtu: u32,
    /// `--internal`: no traffic in or out of the network but to the host.
    pub internal: bool,
    /// Masquerade traffic from the network leaving through other links.
    pub masquerade: bool,
    /// Containers on the network reach each other.
    pub icc: bool,
    /// Default host address of published ports (`0.0.0.0`: every local one).
    pub host_binding_ipv4: IpAddr,
    /// SNAT to this address instead of masquerading.
    pub snat_ipv4: Option<Ipv4Addr>,
    /// Leave the IPv4 gateway address off the bridge.
    pub inhibit_ipv4: bool,
    /// IPv6 on.
    pub ipv6: bool,
    /// Interface name prefix in the sandbox.
    pub iface_prefix: String,
}

/// The bridge name for a network without [`BRIDGE_NAME`]: `br-` and the
/// first 12 characters of its id, as dockerd does.
pub fn default_bridge_name(network_id: &str) -> String {
    let short: String = network_id.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("br-{short}")
}

impl NetConfig {
    /// Decodes the options of `req`; `default_mtu` applies without
    /// [`MTU`]. Unknown driver options are refused, naming the known ones.
    pub fn parse(req: &CreateNetworkRequest, default_mtu: u32) -> DriverResult<NetConfig> {
        let id = &req.network_id;
        let generic = netutil::generic("bridge", id, &req.options)?;
        let ipv6 = netutil::top_bool(&req.options, netutil::ENABLE_IPV6)? || !req.ipv6_data.is_empty();
        let internal = netutil::top_bool(&req.options, netutil::INTERNAL)?;
        let mut cfg = NetConfig {
            bridge: default_bridge_name(id),
            mtu: default_mtu,
            internal,
            masquerade: true,
            icc: true,
            host_binding_ipv4: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            snat_ipv4: None,
            inhibit_ipv4: false,
            ipv6,
            iface_prefix: "eth".into(),
        };
        for (key, v) in &generic {
            if v.is_null() {
                continue;
            }
            let key = key.as_str();
            match key {
                BRIDGE_NAME => {
                    let name = as_string(key, v)?;
                    if !name.is_empty() {
                        check_ifname(key, &name)?;
                        cfg.bridge = name;
                    }
                }
                MASQUERADE => cfg.masquerade = as_bool(key, v)?,
                ICC => cfg.icc = as_bool(key, v)?,
                INHIBIT_IPV4 => cfg.inhibit_ipv4 = as_bool(key, v)?,
                DEFAULT_BRIDGE => {
                    as_bool(key, v)?;
                }
                HOST_BINDING => cfg.host_binding_ipv4 = parse_ip(key, v)?,
                HOST_IPV4 => {
                    cfg.snat_ipv4 = match parse_ip(key, v)? {
                        IpAddr::V4(a) if !a.is_unspecified() => Some(a),
                        IpAddr::V4(_) => None,
                        IpAddr::V6(a) => {
                            return Err(DriverError::invalid_argument(format!(
                                "option {key}: {a} is not an IPv4 address"
                            )))
                        }
                    }
                }
                GATEWAY_MODE_V4 | GATEWAY_MODE_V6 => {
                    let mode = as_string(key, v)?;
                    if !mode.is_empty() && mode != "nat" {
                        return Err(DriverError::unsupported(format!(
                            "option {key}: gateway mode {mode:?} is not supported by berth's bridge driver; only \"nat\" is"
                        )));
                    }
                }
                MTU => {
                    if let Some(mtu) = netutil::parse_mtu(Some(v), ipv6)? {
                        cfg.mtu = mtu;
                    }
                }
                IFACE_PREFIX => {
                    let p = as_string(key, v)?;
                    if !p.is_empty() {
                        check_ifname(key, &p)?;
                        cfg.iface_prefix = p;
                    }
                }
                k if DAEMON_KEYS.contains(&k) => {}
                other => {
                    return Err(DriverError::invalid_argument(format!(
                        "bridge network {id:?}: unknown driver option {other:?}; the bridge driver knows {}",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        if cfg.mtu < 1280 && ipv6 {
            return Err(DriverError::invalid_argument(format!(
                "bridge network {id:?}: MTU {} is below 1280, which IPv6 needs",
                cfg.mtu
            )));
        }
        Ok(cfg)
    }
}

fn parse_ip(key: &str, v: &Value) -> DriverResult<IpAddr> {
    let s = as_string(key, v)?;
    s.parse().map_err(|_| DriverError::invalid_argument(format!("option {key}: {s:?} is not an IP address")))
}

/// The published ports in `options`, if the key is there (`None` when it
/// is not, so a caller can fall back to ports given earlier).
pub fn portmap(options: &Options) -> DriverResult<Option<Vec<PortBinding>>> {
    let Some(v) = options.get(netutil::PORTMAP) else { return Ok(None) };
    if v.is_null() {
        return Ok(Some(Vec::new()));
    }
    let ports: Vec<PortBinding> = serde_json::from_value(v.clone()).map_err(|e| {
        DriverError::invalid_argument(format!(
            "option {}: not a list of port bindings: {e}",
            netutil::PORTMAP
        ))
    })?;
    for p in &ports {
        if !matches!(p.proto, 6 | 17 | 132) {
            return Err(DriverError::invalid_argument(format!(
                "option {}: protocol {} is not tcp (6), udp (17) or sctp (132)",
                netutil::PORTMAP,
                p.proto
            )));
        }
        if p.port == 0 {
            return Err(DriverError::invalid_argument(format!(
                "option {}: container port 0 cannot be published",
                netutil::PORTMAP
            )));
        }
        if p.host_port_end != 0 && p.host_port_end < p.host_port {
            return Err(DriverError::invalid_argument(format!(
                "option {}: host port range {}-{} is empty",
                netutil::PORTMAP,
                p.host_port,
                p.host_port_end
            )));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<IpAddr>().is_err() {
            return Err(DriverError::invalid_argument(format!(
                "option {}: host address {:?} is not an IP address",
                netutil::PORTMAP,
                p.host_ip
            )));
        }
    }
    Ok(Some(ports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;
    use serde_json::json;

    fn req(generic: Value) -> CreateNetworkRequest {
        let mut r = CreateNetworkRequest::new("0123456789abcdef0123");
        r.options.insert(netutil::GENERIC.into(), generic);
        r
    }

    #[test]
    fn defaults_follow_dockerd() {
        let c = NetConfig::parse(&req(Value::Null), 1500).unwrap();
        assert_eq!(c.bridge, "br-0123456789ab");
        assert!(c.masquerade && c.icc && !c.internal && !c.inhibit_ipv4 && !c.ipv6);
        assert_eq!((c.mtu, c.iface_prefix.as_str()), (1500, "eth"));
        assert_eq!(c.host_binding_ipv4.to_string(), "0.0.0.0");
    }

    #[test]
    fn docker_options_are_honoured() {
        let mut r = req(json!({
            BRIDGE_NAME: "berth0", MASQUERADE: "false", ICC: "false", MTU: "9000",
            HOST_BINDING: "127.0.0.1", HOST_IPV4: "192.0.2.1", IFACE_PREFIX: "en",
            "com.docker.network.enable_ipv4": "true",
        }));
        r.options.insert(netutil::INTERNAL.into(), json!(true));
        let c = NetConfig::parse(&r, 1500).unwrap();
        assert_eq!(c.bridge, "berth0");
        assert!(!c.masquerade && !c.icc && c.internal);
        assert_eq!(c.mtu, 9000);
        assert_eq!(c.host_binding_ipv4.to_string(), "127.0.0.1");
        assert_eq!(c.snat_ipv4, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.iface_prefix, "en");
    }

    #[test]
    fn bad_options_are_refused_clearly() {
        for (g, kind, needle) in [
            (json!({ MTU: "70000" }), ErrorKind::InvalidArgument, "out of range"),
            (json!({ MTU: "abc" }), ErrorKind::InvalidArgument, "not a number"),
            (json!({ ICC: "perhaps" }), ErrorKind::InvalidArgument, "boolean"),
            (json!({ BRIDGE_NAME: "a-very-long-bridge-name" }), ErrorKind::InvalidArgument, "interface name"),
            (json!({ HOST_BINDING: "nowhere" }), ErrorKind::InvalidArgument, "IP address"),
            (
                json!({ "com.docker.network.bridge.nmae": "x" }),
                ErrorKind::InvalidArgument,
                "unknown driver option",
            ),
            (json!({ GATEWAY_MODE_V4: "routed" }), ErrorKind::Unsupported, "routed"),
            (json!("not a map"), ErrorKind::InvalidArgument, "map"),
        ] {
            let e = NetConfig::parse(&req(g.clone()), 1500).unwrap_err();
            assert_eq!(e.kind, kind, "{g}: {}", e.message);
            assert!(e.message.contains(needle), "{g}: {}", e.message);
        }
    }

    #[test]
    fn port_maps_decode_and_check() {
        let mut o = Options::new();
        assert_eq!(portmap(&o).unwrap(), None);
        o.insert(
            netutil::PORTMAP.into(),
            json!([{"Proto": 6, "IP": "10.0.0.2", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]),
        );
        let p = portmap(&o).unwrap().unwrap();
        assert_eq!((p[0].proto_name(), p[0].port, p[0].host_port), ("tcp", 80, 8080));
        o.insert(netutil::PORTMAP.into(), json!([{"Proto": 1, "Port": 80}]));
        assert_eq!(portmap(&o).unwrap_err().kind, ErrorKind::InvalidArgument);
        o.insert(netutil::PORTMAP.into(), json!([{"Proto": 6, "Port": 80, "HostPort": 9, "HostPortEnd": 8}]));
        assert_eq!(portmap(&o).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
