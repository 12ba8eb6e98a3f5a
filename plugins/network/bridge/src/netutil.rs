//! What the `bridge` and `macvlan` drivers share besides netlink: reading
//! Docker's option maps, checking IPAM data, MAC addresses, link names and
//! the JSON state file. Compiled into both crates with `#[path]` so it
//! exists once; nothing here touches the host.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use berth_plugin_api::network::{EndpointInterface, IpamData, Options};
use berth_plugin_api::util::write_atomic;
use berth_plugin_api::{DriverError, DriverResult};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `create_network` option: the user's `--opt` map.
pub const GENERIC: &str = "com.docker.network.generic";
/// `create_network` option: `--internal`.
pub const INTERNAL: &str = "com.docker.network.internal";
/// `create_network` option: IPv6 on.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Driver option: the MTU of the network's interfaces.
pub const MTU: &str = "com.docker.network.driver.mtu";
/// Driver option: the interface name prefix in the sandbox.
pub const IFACE_PREFIX: &str = "com.docker.network.container_iface_prefix";
/// Endpoint option: a requested MAC (base64 of the six bytes, or text).
pub const EP_MAC: &str = "com.docker.network.endpoint.macaddress";
/// Endpoint and join option: published ports.
pub const PORTMAP: &str = "com.docker.network.portmap";

/// Keys inside [`GENERIC`] that the daemon itself reads; drivers accept
/// and ignore them.
pub const DAEMON_KEYS: [&str; 4] = [
    "com.docker.network.enable_ipv4",
    "com.docker.network.enable_ipv6",
    "com.docker.network.advertise_addr_nmsgs",
    "com.docker.network.advertise_addr_ms",
];

/// Smallest MTU accepted: IPv4's minimum (RFC 791); 1280 with IPv6.
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted: the kernel's limit for Ethernet-like links.
pub const MAX_MTU: u32 = 65535;

/// The user's driver options (`com.docker.network.generic`) as a map;
/// absent or null is empty, anything but an object is invalid.
pub fn generic(driver: &str, network_id: &str, options: &Options) -> DriverResult<BTreeMap<String, Value>> {
    match options.get(GENERIC) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(other) => Err(DriverError::invalid_argument(format!(
            "{driver} network {network_id:?}: option {GENERIC} must be a map of driver options, not {other}"
        ))),
    }
}

/// A boolean option: JSON `true`/`false` or the strings Docker's CLI
/// sends (`true`, `false`, `1`, `0`, any case).
pub fn as_bool(key: &str, v: &Value) -> DriverResult<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" => Ok(true),
            "false" | "0" | "f" | "no" | "" => Ok(false),
            _ => Err(DriverError::invalid_argument(format!(
                "option {key}: {s:?} is not a boolean (true or false)"
            ))),
        },
        Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => Ok(n.as_u64() == Some(1)),
        other => Err(DriverError::invalid_argument(format!(
            "option {key}: {other} is not a boolean (true or false)"
        ))),
    }
}

/// A string option (numbers and booleans are taken as their text).
pub fn as_string(key: &str, v: &Value) -> DriverResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(DriverError::invalid_argument(format!("option {key}: {other} is not a string"))),
    }
}

/// A top-level boolean of the `create_network` options (absent is false).
pub fn top_bool(options: &Options, key: &str) -> DriverResult<bool> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => as_bool(key, v),
    }
}

/// The MTU option: `None` when absent, empty or 0 (use the default);
/// outside [`MIN_MTU`] (1280 with IPv6) ..= [`MAX_MTU`] it is refused.
pub fn parse_mtu(v: Option<&Value>, ipv6: bool) -> DriverResult<Option<u32>> {
    let Some(v) = v else { return Ok(None) };
    let text = as_string(MTU, v)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let min = if ipv6 { 1280 } else { MIN_MTU };
    let mtu: i64 = text.parse().map_err(|_| {
        DriverError::invalid_argument(format!(
            "option {MTU}: {text:?} is not a number; give an MTU from {min} to {MAX_MTU}"
        ))
    })?;
    if mtu == 0 {
        return Ok(None);
    }
    if mtu < i64::from(min) || mtu > i64::from(MAX_MTU) {
        return Err(DriverError::invalid_argument(format!(
            "option {MTU}: MTU {mtu} is out of range; give an MTU from {min} to {MAX_MTU}{}",
            if ipv6 { " (IPv6 needs at least 1280)" } else { "" }
        )));
    }
    Ok(Some(mtu as u32))
}

/// One IPAM pool as the drivers use it: the subnet and, if any, the
/// gateway address with the subnet's prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    /// The subnet.
    pub subnet: IpNet,
    /// The gateway, with the subnet's prefix length.
    pub gateway: Option<IpNet>,
}

fn parse_net(what: &str, s: &str) -> DriverResult<IpNet> {
    s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
        DriverError::invalid_argument(format!("{what} {s:?} is not an address in CIDR notation"))
    })
}

/// Checks the IPAM data of a network (NW-06) and turns it into pools:
/// every pool must parse and be of its family, not multicast, not a
/// catch-all placeholder and (IPv6) not overlap link-local `fe80::/10`;
/// gateways and auxiliary addresses must lie inside their pool.
pub fn parse_pools(
    driver: &str,
    network_id: &str,
    v4: &[IpamData],
    v6: &[IpamData],
) -> DriverResult<Vec<Pool>> {
    let mut pools = Vec::new();
    let link_local: IpNet = "fe80::/10".parse().expect("constant");
    for (family, data) in v4.iter().map(|d| (4, d)).chain(v6.iter().map(|d| (6, d))) {
        let bad =
            |why: String| DriverError::invalid_argument(format!("{driver} network {network_id:?}: {why}"));
        let subnet = parse_net("pool", &data.pool).map_err(|e| bad(e.message))?.trunc();
        let is_v4 = matches!(subnet, IpNet::V4(_));
        if (family == 4) != is_v4 {
            return Err(bad(format!("pool {} is not an IPv{family} subnet", data.pool)));
        }
        if subnet.prefix_len() == 0 {
            return Err(bad(format!(
                "pool {} covers every address; the {driver} driver needs a real subnet (the null IPAM driver is for host and none)",
                data.pool
            )));
        }
        if subnet.addr().is_multicast() || subnet.contains(&IpNet::from(multicast_base(is_v4))) {
            return Err(bad(format!("pool {} is a multicast range", data.pool)));
        }
        if !is_v4 && (link_local.contains(&subnet) || subnet.contains(&link_local)) {
            return Err(bad(format!("pool {} overlaps the link-local range fe80::/10", data.pool)));
        }
        let gateway = if data.gateway.is_empty() {
            None
        } else {
            let gw = parse_net("gateway", &data.gateway).map_err(|e| bad(e.message))?;
            if !subnet.contains(&gw.addr()) {
                return Err(bad(format!("gateway {} is outside its pool {}", data.gateway, data.pool)));
            }
            if gw.addr() == subnet.network() && subnet.prefix_len() < subnet.max_prefix_len() - 1 {
                return Err(bad(format!("gateway {} is the network address of {}", data.gateway, data.pool)));
            }
            Some(IpNet::new(gw.addr(), subnet.prefix_len()).expect("prefix of the subnet"))
        };
        for (name, aux) in &data.aux_addresses {
            let a = parse_net("auxiliary address", aux).map_err(|e| bad(e.message))?;
            if !subnet.contains(&a.addr()) {
                return Err(bad(format!("auxiliary address {name}={aux} is outside its pool {}", data.pool)));
            }
        }
        pools.push(Pool { subnet, gateway });
    }
    Ok(pools)
}

fn multicast_base(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0))
    } else {
        IpAddr::V6("ff00::".parse().expect("constant"))
    }
}

/// An endpoint's addresses from IPAM: each must parse and lie in one of
/// `pools`. Returns (IPv4, IPv6), each with its pool's prefix length.
pub fn endpoint_addresses(
    driver: &str,
    endpoint_id: &str,
    iface: &EndpointInterface,
    pools: &[Pool],
) -> DriverResult<(Option<IpNet>, Option<IpNet>)> {
    let mut out = (None, None);
    for (s, v6) in [(&iface.address, false), (&iface.address_ipv6, true)] {
        if s.is_empty() {
            continue;
        }
        let net = parse_net("address", s).map_err(|e| {
            DriverError::invalid_argument(format!("{driver} endpoint {endpoint_id:?}: {}", e.message))
        })?;
        if matches!(net, IpNet::V6(_)) != v6 {
            return Err(DriverError::invalid_argument(format!(
                "{driver} endpoint {endpoint_id:?}: address {s} is not an IPv{} address",
                if v6 { 6 } else { 4 }
            )));
        }
        let Some(pool) = pools.iter().find(|p| p.subnet.contains(&net.addr())) else {
            return Err(DriverError::invalid_argument(format!(
                "{driver} endpoint {endpoint_id:?}: address {s} lies in none of the network's subnets ({})",
                pools.iter().map(|p| p.subnet.to_string()).collect::<Vec<_>>().join(", ")
            )));
        };
        let net = IpNet::new(net.addr(), pool.subnet.prefix_len()).expect("prefix of the subnet");
        if v6 {
            out.1 = Some(net);
        } else {
            out.0 = Some(net);
        }
    }
    Ok(out)
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    Some(out)
}

/// The MAC the user asked for: `interface.mac_address`, else the endpoint
/// option [`EP_MAC`] (base64 as dockerd sends it, or text). A multicast or
/// all-zero address is refused.
pub fn requested_mac(
    endpoint_id: &str,
    iface: Option<&EndpointInterface>,
    options: &Options,
) -> DriverResult<Option<[u8; 6]>> {
    let bad = |s: &str, why: &str| {
        DriverError::invalid_argument(format!("endpoint {endpoint_id:?}: MAC address {s:?} {why}"))
    };
    let text = iface.map(|i| i.mac_address.clone()).filter(|s| !s.is_empty());
    let mac = if let Some(s) = text {
        parse_mac(&s).ok_or_else(|| bad(&s, "is not of the form aa:bb:cc:dd:ee:ff"))?
    } else {
        match options.get(EP_MAC) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => return Ok(None),
            Some(Value::String(s)) => match parse_mac(s) {
                Some(m) => m,
                None => decode_base64(s)
                    .and_then(|b| <[u8; 6]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| bad(s, "is neither aa:bb:cc:dd:ee:ff nor six bytes in base64"))?,
            },
            Some(other) => return Err(bad(&other.to_string(), "is not a string")),
        }
    };
    if mac[0] & 1 == 1 {
        return Err(bad(&format_mac(&mac), "is a multicast address; give a unicast one"));
    }
    if mac == [0; 6] {
        return Err(bad(&format_mac(&mac), "is all zeros"));
    }
    Ok(Some(mac))
}

/// A generated MAC (NW-05): locally administered, unicast. From an IPv4
/// address like dockerd (`02:42:` and the four bytes), so the same address
/// keeps the same MAC; otherwise from a hash of `seed`.
pub fn generate_mac(ipv4: Option<Ipv4Addr>, seed: &str) -> [u8; 6] {
    match ipv4 {
        Some(ip) => {
            let o = ip.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        None => {
            let h = Sha256::digest(seed.as_bytes());
            [(h[0] & 0xfe) | 0x02, h[1], h[2], h[3], h[4], h[5]]
        }
    }
}

/// A link name for an endpoint: `prefix` and 10 hex digits of a hash of
/// the network and endpoint ids (fits the kernel's 15 bytes for a prefix
/// of up to 5), the same after a restart so teardown finds it by name.
pub fn link_name(prefix: &str, network_id: &str, endpoint_id: &str) -> String {
    let h = Sha256::digest(format!("{network_id}/{endpoint_id}").as_bytes());
    let hex: String = h.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Checks a network or endpoint id: non-empty.
pub fn check_id(driver: &str, what: &str, id: &str) -> DriverResult<()> {
    if id.is_empty() {
        return Err(DriverError::invalid_argument(format!("{driver}: {what} id is empty")));
    }
    Ok(())
}

/// Checks an interface name the user gave (bridge, parent): 1 to 15
/// bytes, no `/`, whitespace, `:` or NUL, not `.` or `..`.
pub fn check_ifname(key: &str, name: &str) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(DriverError::invalid_argument(format!(
            "option {key}: {name:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)"
        )))
    }
}

/// Maps an error of netlink or the kernel to a driver error, naming what
/// was being done.
pub fn os_err(context: impl std::fmt::Display, e: &io::Error) -> DriverError {
    let kind = match e.raw_os_error() {
        Some(libc::EEXIST) | Some(libc::EADDRINUSE) | Some(libc::EBUSY) => {
            berth_plugin_api::ErrorKind::Conflict
        }
        Some(libc::EPERM) | Some(libc::EACCES) => berth_plugin_api::ErrorKind::PermissionDenied,
        Some(libc::EINVAL) | Some(libc::ERANGE) => berth_plugin_api::ErrorKind::InvalidArgument,
        Some(libc::ENODEV) => berth_plugin_api::ErrorKind::NotFound,
        Some(libc::EOPNOTSUPP) => berth_plugin_api::ErrorKind::Unsupported,
        _ => return DriverError::io(context, e),
    };
    DriverError::new(kind, format!("{context}: {e}"))
}

/// Writes `value` to `/proc/sys/<key>` (a sysctl of the calling thread's
/// network namespace), unless it already has it.
pub fn sysctl(key: &str, value: &str) -> DriverResult<()> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    if fs::read_to_string(&path).map(|s| s.trim() == value).unwrap_or(false) {
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| DriverError::io(format_args!("set sysctl {key}={value}"), &e))
}

/// A driver's state file: the state with its format version beside it.
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    version: u32,
    #[serde(flatten)]
    state: T,
}

/// Loads a state file written by [`save_state`] with format `version`; a
/// missing file is the default state, a corrupt one or another version is
/// an error naming the file.
pub fn load_state<T: DeserializeOwned + Default>(path: &Path, version: u32) -> DriverResult<T> {
    let file: Versioned<T> = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            DriverError::internal(format!(
                "corrupt network state file {}: {e}; repair it, or delete it to forget the networks",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(DriverError::io(format_args!("read network state {}", path.display()), &e)),
    };
    if file.version != version {
        return Err(DriverError::internal(format!(
            "network state file {}: version {} is not the supported {version}",
            path.display(),
            file.version
        )));
    }
    Ok(file.state)
}

/// Writes `state` with format `version` to `path` atomically.
pub fn save_state<T: Serialize>(path: &Path, version: u32, state: &T) -> DriverResult<()> {
    let json = serde_json::to_vec_pretty(&Versioned { version, state })
        .map_err(|e| DriverError::internal(format!("encode network state for {}: {e}", path.display())))?;
    write_atomic(path, &json)
}

#[cfg(test)]
mod netutil_tests {
    use super::*;
    use berth_plugin_api::ErrorKind;
    use serde_json::json;

    fn data(pool: &str, gw: &str) -> IpamData {
        let mut d = IpamData::default();
        d.pool = pool.into();
        d.gateway = gw.into();
        d
    }

    #[test]
    fn mtu_is_checked() {
        assert_eq!(parse_mtu(None, false).unwrap(), None);
        assert_eq!(parse_mtu(Some(&json!("9000")), false).unwrap(), Some(9000));
        assert_eq!(parse_mtu(Some(&json!(1400)), true).unwrap(), Some(1400));
        assert_eq!(parse_mtu(Some(&json!("0")), false).unwrap(), None);
        for bad in [json!("67"), json!("65536"), json!("-1"), json!("big"), json!([1])] {
            let e = parse_mtu(Some(&bad), false).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(MTU), "{}", e.message);
        }
        assert!(parse_mtu(Some(&json!("1279")), true).unwrap_err().message.contains("IPv6"));
    }

    #[test]
    fn booleans_accept_docker_strings() {
        assert!(as_bool("k", &json!("true")).unwrap());
        assert!(!as_bool("k", &json!("False")).unwrap());
        assert!(as_bool("k", &json!(true)).unwrap());
        assert_eq!(as_bool("k", &json!("maybe")).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn pools_are_checked() {
        let p = parse_pools("bridge", "n", &[data("10.1.2.0/24", "10.1.2.1/24")], &[]).unwrap();
        assert_eq!(p[0].gateway.unwrap().to_string(), "10.1.2.1/24");
        // a bare gateway takes the pool's prefix length
        let p = parse_pools("bridge", "n", &[data("10.1.2.0/24", "10.1.2.1")], &[]).unwrap();
        assert_eq!(p[0].gateway.unwrap().to_string(), "10.1.2.1/24");
        for (v4, v6) in [
            (vec![data("10.1.2.0/24", "10.1.3.1/24")], vec![]),
            (vec![data("224.1.0.0/16", "")], vec![]),
            (vec![data("0.0.0.0/0", "")], vec![]),
            (vec![data("nonsense", "")], vec![]),
            (vec![data("fd00::/64", "")], vec![]),
            (vec![], vec![data("fe80::/64", "")]),
            (vec![], vec![data("fe00::/7", "")]),
            (vec![], vec![data("ff02::/16", "")]),
        ] {
            let e = parse_pools("bridge", "n", &v4, &v6).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{v4:?} {v6:?}");
        }
        let mut aux = data("10.1.2.0/24", "");
        aux.aux_addresses.insert("x".into(), "10.9.9.9/24".into());
        assert!(parse_pools("bridge", "n", &[aux], &[]).unwrap_err().message.contains("auxiliary"));
    }

    #[test]
    fn macs() {
        assert_eq!(generate_mac(Some(Ipv4Addr::new(10, 1, 2, 3)), "x"), [2, 0x42, 10, 1, 2, 3]);
        let m = generate_mac(None, "seed");
        assert_eq!(m[0] & 3, 2, "locally administered unicast");
        let mut iface = EndpointInterface::default();
        iface.mac_address = "02:00:00:00:00:01".into();
        assert_eq!(requested_mac("e", Some(&iface), &Options::new()).unwrap(), Some([2, 0, 0, 0, 0, 1]));
        let mut opts = Options::new();
        opts.insert(EP_MAC.into(), json!("AgAAAAAC")); // base64 of 02:00:00:00:00:02
        assert_eq!(requested_mac("e", None, &opts).unwrap(), Some([2, 0, 0, 0, 0, 2]));
        iface.mac_address = "01:00:5e:00:00:01".into();
        assert_eq!(requested_mac("e", Some(&iface), &opts).unwrap_err().kind, ErrorKind::InvalidArgument);
        iface.mac_address = "zz".into();
        assert_eq!(requested_mac("e", Some(&iface), &opts).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn link_names_fit_and_are_stable() {
        let a = link_name("vbr", "net", "ep");
        assert_eq!(a.len(), 13);
        assert_eq!(a, link_name("vbr", "net", "ep"));
        assert_ne!(a, link_name("vbr", "net", "ep2"));
        assert!(check_ifname("k", "br-0123456789a").is_ok());
        for bad in ["", "a/b", "a b", "0123456789abcdef", ".."] {
            assert!(check_ifname("k", bad).is_err(), "{bad}");
        }
    }
}
