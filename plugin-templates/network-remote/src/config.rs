//! What a network is made of, checked before anything is made on the host:
//! its one option (the MTU) and its IPAM pools; and the names and MAC
//! addresses of the links the driver makes.

use std::fs::File;
use std::io::Read;
use std::net::IpAddr;

use berth_plugin_api::network::{CreateNetworkRequest, IpamData};
use berth_plugin_api::{DriverError, DriverResult};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Docker's key for the user's `--opt` map (`docker network create -o k=v`).
pub const GENERIC: &str = "com.docker.network.generic";
/// The one option this driver takes: the MTU of the network's links.
pub const MTU: &str = "com.docker.network.driver.mtu";
/// The MTUs an Ethernet link may have (IPv4 needs at least 68).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Name prefixes of the links the driver makes; each is followed by the
/// first 12 characters of the network's or endpoint's id (what Docker
/// shows as its short id), so a name has at most 15 bytes, the kernel's
/// limit. Links with these prefixes belong to the driver: change them
/// when you make your own driver from this template.
pub const BRIDGE_PREFIX: &str = "vb-";
/// The host end of an endpoint's veth pair (stays in the host namespace).
pub const HOST_PREFIX: &str = "vh-";
/// The sandbox end of an endpoint's veth pair (the core moves it in).
pub const PEER_PREFIX: &str = "vp-";

/// Pools no network may overlap (NW-06).
const RESERVED: [(&str, &str); 3] =
    [("224.0.0.0/4", "IPv4 multicast"), ("ff00::/8", "IPv6 multicast"), ("fe80::/10", "IPv6 link-local")];

/// One IPAM pool of a network, and its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The subnet (host bits cleared).
    pub subnet: IpNet,
    /// The gateway IPAM reserved in it, if any.
    pub gateway: Option<IpAddr>,
}

/// A network's configuration, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The MTU of the bridge and of every veth; `None`: the kernel's (1500).
    pub mtu: Option<u32>,
    /// IPv4 pools.
    pub ipv4: Vec<Pool>,
    /// IPv6 pools (only when the network has IPv6 on).
    pub ipv6: Vec<Pool>,
}

impl NetConfig {
    /// Reads and checks a create request: unknown options, an MTU out of
    /// range and bad pools are invalid arguments, refused before anything
    /// is made.
    pub fn parse(req: &CreateNetworkRequest) -> DriverResult<NetConfig> {
        let id = short(&req.network_id);
        let mut mtu = None;
        // Docker's own keys (enable_ipv6, internal, ...) sit beside the
        // user's options; only the user's are ours to check.
        match req.options.get(GENERIC) {
            None | Some(Value::Null) => {}
            Some(Value::Object(options)) => {
                for (key, value) in options {
                    if key != MTU {
                        // Refusing what we do not know (rather than ignoring
                        // it) is what tells a user about a typo, and tells
                        // berth-conformance that this is not a bridge- or
                        // macvlan-like driver.
                        return Err(DriverError::invalid_argument(format!(
                            "network {id}: unknown option {key:?}: {{driver_name}} takes only {MTU}"
                        )));
                    }
                    mtu = Some(parse_mtu(id, value)?);
                }
            }
            Some(other) => {
                return Err(DriverError::invalid_argument(format!(
                    "network {id}: {GENERIC} must be a map of options, not {other}"
                )))
            }
        }
        let ipv4 = req.ipv4_data.iter().map(|d| parse_pool(id, false, d)).collect::<DriverResult<_>>()?;
        let ipv6 = req.ipv6_data.iter().map(|d| parse_pool(id, true, d)).collect::<DriverResult<_>>()?;
        Ok(NetConfig { mtu, ipv4, ipv6 })
    }

    /// The first subnet of `self` that overlaps one of `other`, with it.
    pub fn overlap(&self, other: &NetConfig) -> Option<(IpNet, IpNet)> {
        let mine = self.ipv4.iter().chain(&self.ipv6);
        mine.flat_map(|a| other.ipv4.iter().chain(&other.ipv6).map(move |b| (a.subnet, b.subnet)))
            .find(|(a, b)| overlaps(a, b))
    }

    /// The gateway of the first IPv4 pool (bare address), or "".
    pub fn gateway(&self) -> String {
        self.ipv4.first().and_then(|p| p.gateway).map(|g| g.to_string()).unwrap_or_default()
    }

    /// The gateway of the first IPv6 pool (bare address), or "".
    pub fn gateway_ipv6(&self) -> String {
        self.ipv6.first().and_then(|p| p.gateway).map(|g| g.to_string()).unwrap_or_default()
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The MTU option: a number or a string holding one, in [`MTU_RANGE`].
fn parse_mtu(id: &str, value: &Value) -> DriverResult<u32> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    let n = n.ok_or_else(|| {
        DriverError::invalid_argument(format!("network {id}: {MTU} {value} is not a number"))
    })?;
    match u32::try_from(n) {
        Ok(mtu) if MTU_RANGE.contains(&mtu) => Ok(mtu),
        _ => Err(DriverError::invalid_argument(format!(
            "network {id}: {MTU} {n} is out of range: give an MTU from {} to {}",
            MTU_RANGE.start(),
            MTU_RANGE.end()
        ))),
    }
}

/// One pool as IPAM handed it over: a subnet of the right family that
/// overlaps no reserved range, with its gateway and auxiliary addresses
/// inside it.
fn parse_pool(id: &str, v6: bool, data: &IpamData) -> DriverResult<Pool> {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let bad = |why: String| DriverError::invalid_argument(format!("network {id}: {family} pool {why}"));
    let subnet: IpNet = data
        .pool
        .parse()
        .map_err(|_| bad(format!("{:?} is not an address with a prefix length (CIDR)", data.pool)))?;
    let subnet = subnet.trunc();
    if subnet.addr().is_ipv6() != v6 {
        return Err(bad(format!("{subnet} is not an {family} subnet")));
    }
    for (range, what) in RESERVED {
        let range: IpNet = range.parse().expect("the reserved ranges are valid CIDR");
        if overlaps(&subnet, &range) {
            return Err(bad(format!("{subnet} overlaps {range} ({what}); choose another subnet")));
        }
    }
    // Gateways and auxiliary addresses come as CIDR (`10.1.0.1/24`) or bare.
    let addr = |what: &str, text: &str| -> DriverResult<IpAddr> {
        let ip: IpAddr = text
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad(format!("{subnet}: {what} {text:?} is not an address")))?;
        if !subnet.contains(&ip) {
            return Err(bad(format!("{subnet}: {what} {ip} lies outside the subnet")));
        }
        Ok(ip)
    };
    let gateway = if data.gateway.is_empty() { None } else { Some(addr("gateway", &data.gateway)?) };
    for (name, aux) in &data.aux_addresses {
        addr(&format!("auxiliary address {name:?}"), aux)?;
    }
    Ok(Pool { subnet, gateway })
}

/// The first 12 characters of an id, as Docker shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Checks that `id` can name links: ASCII letters and digits (Docker's ids
/// are 64 hex digits).
pub fn check_id(what: &str, id: &str) -> DriverResult<()> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(DriverError::invalid_argument(format!(
            "{what} id {id:?} is invalid: use 1 to 128 ASCII letters and digits"
        )));
    }
    Ok(())
}

/// The name of a link the driver makes for the object with id `id`.
pub fn link_name(prefix: &str, id: &str) -> String {
    format!("{prefix}{}", short(id))
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Writes `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A random MAC address, locally administered (bit 0x02 of the first
/// byte set) and unicast (bit 0x01 clear), as NW-05 checks.
pub fn random_mac() -> DriverResult<[u8; 6]> {
    let mut mac = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut mac))
        .map_err(|e| DriverError::io("read /dev/urandom for a MAC address", &e))?;
    mac[0] = (mac[0] & !0x01) | 0x02;
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;
    use serde_json::json;

    fn pool(subnet: &str, gateway: &str) -> IpamData {
        let mut p = IpamData::default();
        p.pool = subnet.into();
        p.gateway = gateway.into();
        p
    }

    fn req(options: Value, v4: &[(&str, &str)], v6: &[(&str, &str)]) -> CreateNetworkRequest {
        let mut r = CreateNetworkRequest::new("n1");
        if !options.is_null() {
            r.options.insert(GENERIC.into(), options);
        }
        r.ipv4_data = v4.iter().map(|(s, g)| pool(s, g)).collect();
        r.ipv6_data = v6.iter().map(|(s, g)| pool(s, g)).collect();
        r
    }

    fn refused(r: CreateNetworkRequest) -> String {
        let e = NetConfig::parse(&r).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
        e.message
    }

    #[test]
    fn a_good_network_keeps_its_mtu_pools_and_gateways() {
        let c = NetConfig::parse(&req(
            json!({ MTU: "9000" }),
            &[("10.9.0.0/24", "10.9.0.1/24")],
            &[("fd00:9::/64", "fd00:9::1/64")],
        ))
        .unwrap();
        assert_eq!(c.mtu, Some(9000));
        assert_eq!((c.gateway().as_str(), c.gateway_ipv6().as_str()), ("10.9.0.1", "fd00:9::1"));
        let none = NetConfig::parse(&req(Value::Null, &[("10.9.0.0/24", "")], &[])).unwrap();
        assert_eq!((none.mtu, none.gateway(), none.gateway_ipv6()), (None, String::new(), String::new()));
        assert_eq!(NetConfig::parse(&req(json!({ MTU: 1400 }), &[], &[])).unwrap().mtu, Some(1400));
    }

    #[test]
    fn bad_options_and_pools_are_refused() {
        for mtu in [json!("70000"), json!(67), json!("big")] {
            assert!(refused(req(json!({ MTU: mtu }), &[], &[])).contains("mtu"));
        }
        assert!(refused(req(json!({ "parent": "eth0" }), &[], &[])).contains("unknown option"));
        assert!(refused(req(Value::Null, &[("10.9.0.0/24", "10.8.0.1/24")], &[])).contains("outside"));
        assert!(refused(req(Value::Null, &[("239.1.0.0/24", "")], &[])).contains("multicast"));
        assert!(refused(req(Value::Null, &[], &[("fe80::/64", "")])).contains("link-local"));
        assert!(refused(req(Value::Null, &[], &[("fe80::/9", "")])).contains("link-local"));
        assert!(refused(req(Value::Null, &[("fd00::/64", "")], &[])).contains("not an IPv4"));
        assert!(refused(req(Value::Null, &[("10.9.0.0", "")], &[])).contains("CIDR"));
    }

    #[test]
    fn overlapping_subnets_are_found() {
        let a = NetConfig::parse(&req(Value::Null, &[("10.9.0.0/16", "")], &[])).unwrap();
        let b = NetConfig::parse(&req(Value::Null, &[("10.9.3.0/24", "")], &[])).unwrap();
        let c = NetConfig::parse(&req(Value::Null, &[("10.10.0.0/24", "")], &[])).unwrap();
        assert!(a.overlap(&b).is_some() && b.overlap(&a).is_some());
        assert!(a.overlap(&c).is_none());
    }

    #[test]
    fn names_ids_and_macs() {
        assert_eq!(link_name(HOST_PREFIX, "0123456789abcdef"), "vh-0123456789ab");
        assert!(link_name(BRIDGE_PREFIX, &"f".repeat(64)).len() <= 15);
        assert!(check_id("endpoint", "ab12").is_ok());
        assert!(check_id("endpoint", "../x").is_err() && check_id("endpoint", "").is_err());
        assert_eq!(parse_mac("02:5a:00:01:ff:07"), Some([2, 0x5a, 0, 1, 0xff, 7]));
        assert_eq!(parse_mac("02:5a:00:01:ff"), None);
        assert_eq!(parse_mac("02:5a:00:01:ff:07:08"), None);
        for _ in 0..32 {
            let mac = random_mac().unwrap();
            assert_eq!(mac[0] & 0x03, 0x02, "locally administered, unicast");
            assert_eq!(parse_mac(&format_mac(mac)), Some(mac));
        }
    }
}
