//! The macvlan driver's per-network options (Docker's `-o parent=…`,
//! `-o macvlan_mode=…` inside `com.docker.network.generic`).

use berth_plugin_api::network::CreateNetworkRequest;
use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::netutil::{self, as_string, check_ifname, DAEMON_KEYS, IFACE_PREFIX, MTU};

/// `-o parent`: the link the macvlan links hang off (`eth0`, or `eth0.10`
/// for a VLAN sub-interface the driver creates when it is missing).
pub const PARENT: &str = "parent";
/// `-o macvlan_mode`: `bridge` (default), `private`, `vepa`, `passthru`.
pub const MODE: &str = "macvlan_mode";

/// Every driver option the macvlan driver knows.
pub const KNOWN: [&str; 4] = [PARENT, MODE, MTU, IFACE_PREFIX];

/// A macvlan mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Endpoints on one parent reach each other directly.
    #[default]
    Bridge,
    /// Endpoints on one parent never reach each other.
    Private,
    /// Everything goes out through the parent (an external switch with
    /// reflective relay brings it back).
    Vepa,
    /// The one endpoint takes over the parent.
    Passthru,
}

impl Mode {
    /// The kernel's mode.
    pub fn kernel(self) -> netlink_packet_route::link::MacVlanMode {
        use netlink_packet_route::link::MacVlanMode as K;
        match self {
            Mode::Bridge => K::Bridge,
            Mode::Private => K::Private,
            Mode::Vepa => K::Vepa,
            Mode::Passthru => K::Passthrough,
        }
    }
}

/// A parent given as `<link>.<vlan id>`: the link and the VLAN id.
pub fn vlan_of(parent: &str) -> Option<(&str, u16)> {
    let (link, id) = parent.rsplit_once('.')?;
    let id: u16 = id.parse().ok()?;
    (!link.is_empty() && (1..=4094).contains(&id)).then_some((link, id))
}

/// One network's configuration, decoded from its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The parent link as given; `None` when not given (a dummy stands in).
    pub parent: Option<String>,
    /// The mode of every macvlan link of the network.
    pub mode: Mode,
    /// MTU of the macvlan links; `None`: the parent's.
    pub mtu: Option<u32>,
    /// `--internal`: no gateway; a dummy parent as in Docker.
    pub internal: bool,
    /// IPv6 on.
    pub ipv6: bool,
    /// Interface name prefix in the sandbox.
    pub iface_prefix: String,
}

impl NetConfig {
    /// Decodes the options of `req`; unknown driver options are refused.
    pub fn parse(req: &CreateNetworkRequest) -> DriverResult<NetConfig> {
        let id = &req.network_id;
        let generic = netutil::generic("macvlan", id, &req.options)?;
        let ipv6 = netutil::top_bool(&req.options, netutil::ENABLE_IPV6)? || !req.ipv6_data.is_empty();
        let mut cfg = NetConfig {
            parent: None,
            mode: Mode::Bridge,
            mtu: None,
            internal: netutil::top_bool(&req.options, netutil::INTERNAL)?,
            ipv6,
            iface_prefix: "eth".into(),
        };
        for (key, v) in &generic {
            if v.is_null() {
                continue;
            }
            let key = key.as_str();
            match key {
                PARENT => {
                    let p = as_string(key, v)?;
                    if !p.is_empty() {
                        check_ifname(key, &p)?;
                        cfg.parent = Some(p);
                    }
                }
                MODE => {
                    cfg.mode = match as_string(key, v)?.as_str() {
                        "" | "bridge" => Mode::Bridge,
                        "private" => Mode::Private,
                        "vepa" => Mode::Vepa,
                        "passthru" => Mode::Passthru,
                        other => {
                            return Err(DriverError::invalid_argument(format!(
                                "option {MODE}: {other:?} is not a macvlan mode; give bridge, private, vepa or passthru"
                            )))
                        }
                    }
                }
                MTU => cfg.mtu = netutil::parse_mtu(Some(v), ipv6)?,
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
                        "macvlan network {id:?}: unknown driver option {other:?}; the macvlan driver knows {}",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;
    use serde_json::{json, Value};

    fn req(generic: Value) -> CreateNetworkRequest {
        let mut r = CreateNetworkRequest::new("n");
        r.options.insert(netutil::GENERIC.into(), generic);
        r
    }

    #[test]
    fn modes_parents_and_defaults() {
        let c = NetConfig::parse(&req(json!({ PARENT: "veth0" }))).unwrap();
        assert_eq!((c.parent.as_deref(), c.mode, c.mtu), (Some("veth0"), Mode::Bridge, None));
        for (m, want) in [("private", Mode::Private), ("vepa", Mode::Vepa), ("passthru", Mode::Passthru)] {
            assert_eq!(NetConfig::parse(&req(json!({ PARENT: "x", MODE: m }))).unwrap().mode, want);
        }
        assert_eq!(NetConfig::parse(&req(Value::Null)).unwrap().parent, None);
        assert_eq!(NetConfig::parse(&req(json!({ MTU: "1400", PARENT: "x" }))).unwrap().mtu, Some(1400));
        assert_eq!(vlan_of("veth0.10"), Some(("veth0", 10)));
        assert_eq!(vlan_of("veth0"), None);
        assert_eq!(vlan_of("veth0.5000"), None);
        assert_eq!(vlan_of(".10"), None);
    }

    #[test]
    fn bad_options_are_refused() {
        for (g, needle) in [
            (json!({ MODE: "l2" }), "not a macvlan mode"),
            (json!({ PARENT: "has space" }), "interface name"),
            (json!({ MTU: "20" }), "out of range"),
            (json!({ "ipvlan_mode": "l2" }), "unknown driver option"),
        ] {
            let e = NetConfig::parse(&req(g.clone())).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{g}");
            assert!(e.message.contains(needle), "{g}: {}", e.message);
        }
    }
}
