//! Pools: address spaces, prefixes, the range addresses come from, and the
//! pool id.
//!
//! Addresses are handled as `u128` "bits" (an IPv4 address in the low 32
//! bits) so that one piece of arithmetic serves both families; an *offset*
//! is an address's distance from the first usable address of its pool.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_plugin_api::{DriverError, DriverResult};
use ipnet::IpNet;

use crate::alloc::{Allocator, Policy};

/// The default address space for local-scope networks.
pub const LOCAL: &str = "local";
/// The default address space for global-scope networks.
pub const GLOBAL: &str = "global";

/// Checks an address space name; empty means [`LOCAL`].
pub(crate) fn address_space(name: &str) -> DriverResult<&'static str> {
    match name {
        "" | LOCAL => Ok(LOCAL),
        GLOBAL => Ok(GLOBAL),
        other => Err(DriverError::invalid_argument(format!(
            "unknown address space {other:?}; the default IPAM driver has \"{LOCAL}\" and \"{GLOBAL}\""
        ))),
    }
}

/// Parses a prefix exactly as written: CIDR notation with no host bits set.
/// `what` names it in the error (`pool`, `sub-pool`, ...).
pub(crate) fn parse_prefix(what: &str, text: &str) -> DriverResult<IpNet> {
    let net: IpNet = text.parse().map_err(|_| {
        DriverError::invalid_argument(format!(
            "{what} {text:?} is not a CIDR prefix (expected e.g. 10.1.0.0/16 or fd00:1::/64)"
        ))
    })?;
    if net.addr() != net.network() {
        return Err(DriverError::invalid_argument(format!(
            "{what} {text} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    Ok(net)
}

/// An address as bits.
pub(crate) fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Bits back to an address of the given family.
pub(crate) fn from_bits(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bits))
    } else {
        // An IPv4 address never has bits above the low 32.
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    }
}

/// The first and last address of a prefix, as bits.
pub(crate) fn bounds(net: &IpNet) -> (u128, u128) {
    (to_bits(net.network()), to_bits(net.broadcast()))
}

/// Whether two prefixes share any address (one contains the other).
pub(crate) fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The pool id: `<space>/<pool>` or `<space>/<pool>/<sub-pool>`.
pub(crate) fn pool_id(space: &str, prefix: &IpNet, sub_pool: Option<&IpNet>) -> String {
    match sub_pool {
        Some(sub) => format!("{space}/{prefix}/{sub}"),
        None => format!("{space}/{prefix}"),
    }
}

/// Where an address falls in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spot {
    /// An address that can be handed out, at this offset.
    Usable(u128),
    /// Inside the range but never handed out (network, broadcast or
    /// subnet-router anycast address); the text says which.
    Reserved(&'static str),
}

/// One live pool.
pub(crate) struct Pool {
    /// Its address space.
    pub space: &'static str,
    /// The pool's prefix.
    pub prefix: IpNet,
    /// The prefix "any address" comes from, when narrower than the pool.
    pub sub_pool: Option<IpNet>,
    /// First and last usable address of the pool (bits), inclusive; `None`
    /// when the pool holds only reserved addresses. Offsets count from the
    /// first.
    usable: Option<(u128, u128)>,
    /// Which usable addresses are taken.
    pub alloc: Allocator,
    /// The offset of the pool's gateway, while it is allocated.
    pub gateway: Option<u128>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id())
            .field("usable", &self.usable)
            .field("alloc", &self.alloc)
            .field("gateway", &self.gateway)
            .finish()
    }
}

impl Pool {
    /// A pool with no address taken. `sub_pool` must lie inside `prefix`.
    pub fn new(space: &'static str, prefix: IpNet, sub_pool: Option<IpNet>, policy: Policy) -> Pool {
        let usable = usable_range(&prefix, None);
        let max_offset = usable.map(|(first, last)| last - first);
        // "Any address" comes from the sub-pool's usable part.
        let range = match (usable, usable_range(&prefix, sub_pool.as_ref())) {
            (Some((first, _)), Some((a, b))) => Some((a - first, b - first)),
            _ => None,
        };
        Pool {
            space,
            prefix,
            sub_pool,
            usable,
            alloc: Allocator::new(max_offset, range, policy),
            gateway: None,
        }
    }

    /// The pool's id.
    pub fn id(&self) -> String {
        pool_id(self.space, &self.prefix, self.sub_pool.as_ref())
    }

    /// `10.1.0.0/16`, or `10.1.0.0/16 (sub-pool 10.1.2.0/24)`, for messages.
    pub fn describe(&self) -> String {
        match &self.sub_pool {
            Some(sub) => format!("{} (sub-pool {sub})", self.prefix),
            None => self.prefix.to_string(),
        }
    }

    fn v6(&self) -> bool {
        matches!(self.prefix, IpNet::V6(_))
    }

    /// The address at `offset` (which must be usable).
    pub fn address(&self, offset: u128) -> IpAddr {
        let (first, _) = self.usable.expect("an offset exists only in a pool with usable addresses");
        from_bits(first + offset, self.v6())
    }

    /// The answer form of an address: with the pool's prefix length.
    pub fn cidr(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", self.prefix.prefix_len())
    }

    /// Where `ip` falls; an address outside the pool is an
    /// invalid-argument ("out of range") error. (A specific address may lie
    /// outside the sub-pool, as in Docker.)
    pub fn locate(&self, ip: IpAddr) -> DriverResult<Spot> {
        if !self.prefix.contains(&ip) {
            return Err(DriverError::invalid_argument(format!(
                "address {ip} is out of range of pool {}",
                self.describe()
            )));
        }
        let bits = to_bits(ip);
        match self.usable {
            Some((first, last)) if (first..=last).contains(&bits) => Ok(Spot::Usable(bits - first)),
            _ if bits == to_bits(self.prefix.network()) && self.v6() => {
                Ok(Spot::Reserved("the subnet-router anycast address"))
            }
            _ if bits == to_bits(self.prefix.network()) => Ok(Spot::Reserved("the network address")),
            _ => Ok(Spot::Reserved("the broadcast address")),
        }
    }
}

/// The usable addresses of `prefix` (or of its sub-pool): the range minus
/// the pool's reserved addresses. IPv4 reserves the network and broadcast
/// addresses except in a /31 or /32; IPv6 reserves only the subnet-router
/// anycast address (offset 0) except in a /127 or /128. Reserved addresses
/// sit at the ends of the pool, so they can only trim the ends of a
/// sub-pool, and what is left is one contiguous run.
fn usable_range(prefix: &IpNet, sub_pool: Option<&IpNet>) -> Option<(u128, u128)> {
    let (mut first, mut last) = bounds(sub_pool.unwrap_or(prefix));
    let (net, broadcast) = bounds(prefix);
    let (reserve_net, reserve_broadcast) = match prefix {
        IpNet::V4(p) => (p.prefix_len() < 31, p.prefix_len() < 31),
        IpNet::V6(p) => (p.prefix_len() < 127, false),
    };
    if reserve_net && first == net {
        if first == last {
            return None;
        }
        first += 1;
    }
    if reserve_broadcast && last == broadcast {
        if first == last {
            return None;
        }
        last -= 1;
    }
    Some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(prefix: &str, sub: Option<&str>) -> Option<(IpAddr, IpAddr)> {
        let p = net(prefix);
        let v6 = p.addr().is_ipv6();
        usable_range(&p, sub.map(net).as_ref()).map(|(a, b)| (from_bits(a, v6), from_bits(b, v6)))
    }

    #[test]
    fn usable_ranges_follow_the_reservation_rules() {
        assert_eq!(range("10.0.0.0/24", None), Some((ip("10.0.0.1"), ip("10.0.0.254"))));
        assert_eq!(range("10.0.0.0/30", None), Some((ip("10.0.0.1"), ip("10.0.0.2"))));
        assert_eq!(range("10.0.0.0/31", None), Some((ip("10.0.0.0"), ip("10.0.0.1"))));
        assert_eq!(range("10.0.0.7/32", None), Some((ip("10.0.0.7"), ip("10.0.0.7"))));
        assert_eq!(range("fd00::/64", None), Some((ip("fd00::1"), ip("fd00::ffff:ffff:ffff:ffff"))));
        assert_eq!(range("fd00::/127", None), Some((ip("fd00::"), ip("fd00::1"))));
        assert_eq!(range("fd00::5/128", None), Some((ip("fd00::5"), ip("fd00::5"))));
        // Sub-pools: only the pool's own reserved addresses are trimmed.
        assert_eq!(range("10.0.0.0/24", Some("10.0.0.0/25")), Some((ip("10.0.0.1"), ip("10.0.0.127"))));
        assert_eq!(range("10.0.0.0/24", Some("10.0.0.128/25")), Some((ip("10.0.0.128"), ip("10.0.0.254"))));
        assert_eq!(range("10.0.0.0/16", Some("10.0.2.0/24")), Some((ip("10.0.2.0"), ip("10.0.2.255"))));
        assert_eq!(range("10.0.0.0/24", Some("10.0.0.0/32")), None);
        assert_eq!(range("10.0.0.0/24", Some("10.0.0.255/32")), None);
        assert_eq!(range("fd00::/64", Some("fd00::/128")), None);
    }

    #[test]
    fn locate_names_reserved_and_outside_addresses() {
        let pool = Pool::new(LOCAL, net("10.0.0.0/24"), None, Policy::FirstFree);
        assert_eq!(pool.locate(ip("10.0.0.1")).unwrap(), Spot::Usable(0));
        assert_eq!(pool.locate(ip("10.0.0.254")).unwrap(), Spot::Usable(253));
        assert_eq!(pool.locate(ip("10.0.0.0")).unwrap(), Spot::Reserved("the network address"));
        assert_eq!(pool.locate(ip("10.0.0.255")).unwrap(), Spot::Reserved("the broadcast address"));
        let err = pool.locate(ip("10.0.1.1")).unwrap_err();
        assert_eq!(err.kind, berth_plugin_api::ErrorKind::InvalidArgument);
        assert!(err.message.contains("out of range"), "{}", err.message);
        assert!(pool.locate(ip("fd00::1")).is_err());

        let v6 = Pool::new(GLOBAL, net("fd00::/64"), None, Policy::FirstFree);
        assert_eq!(v6.locate(ip("fd00::")).unwrap(), Spot::Reserved("the subnet-router anycast address"));
        assert_eq!(v6.locate(ip("fd00::1")).unwrap(), Spot::Usable(0));
        assert_eq!(v6.address(0), ip("fd00::1"));
        assert_eq!(v6.cidr(ip("fd00::1")), "fd00::1/64");
    }

    #[test]
    fn a_sub_pool_narrows_any_address_not_specific_ones() {
        let pool = Pool::new(LOCAL, net("10.0.0.0/16"), Some(net("10.0.2.0/24")), Policy::FirstFree);
        // Offsets count from 10.0.0.1, the pool's first usable address.
        assert_eq!(pool.alloc.range(), Some((0x1ff, 0x2fe)));
        assert_eq!(pool.locate(ip("10.0.5.5")).unwrap(), Spot::Usable(0x504));
        assert_eq!(pool.address(0x1ff), ip("10.0.2.0"));
        let edge = Pool::new(LOCAL, net("10.0.0.0/24"), Some(net("10.0.0.0/32")), Policy::FirstFree);
        assert_eq!(edge.alloc.range(), None);
        assert_eq!(edge.locate(ip("10.0.0.9")).unwrap(), Spot::Usable(8));
    }

    #[test]
    fn prefixes_are_parsed_strictly() {
        assert_eq!(parse_prefix("pool", "10.1.0.0/16").unwrap(), net("10.1.0.0/16"));
        let e = parse_prefix("pool", "10.1.0.1/16").unwrap_err();
        assert!(e.message.contains("host bits") && e.message.contains("10.1.0.0/16"), "{}", e.message);
        assert!(parse_prefix("pool", "10.1.0.0").is_err());
        assert!(parse_prefix("pool", "10.1.0.0/33").is_err());
        assert!(parse_prefix("pool", "banana").is_err());
        assert!(parse_prefix("pool", "fd00::1/64").is_err());
    }

    #[test]
    fn pool_ids_name_space_pool_and_sub_pool() {
        assert_eq!(pool_id(LOCAL, &net("10.1.0.0/16"), None), "local/10.1.0.0/16");
        assert_eq!(
            pool_id(LOCAL, &net("10.1.0.0/16"), Some(&net("10.1.2.0/24"))),
            "local/10.1.0.0/16/10.1.2.0/24"
        );
    }
}
