//! One pool: its prefix, where "any" addresses come from, and which
//! addresses are taken. This is the allocator; `driver.rs` finds the pool
//! and saves the result.
//!
//! The allocator is deliberately simple: a sorted set of the addresses
//! handed out, and a scan for the first free one. A request costs
//! O(addresses in use) and the whole set is rewritten to disk with every
//! change, which is fine for networks of a few thousand endpoints. For
//! bigger pools keep a bitmap and a journal instead (berth's built-in
//! `default` IPAM driver shows both).

use std::collections::BTreeSet;
use std::net::IpAddr;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::prefix::{bits, Prefix};

/// A live pool, exactly as it is kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The address space the pool lives in (`local` or `global`).
    pub space: String,
    /// The prefix reserved for the network: `10.1.0.0/24`.
    pub prefix: Prefix,
    /// The sub-pool (Docker's `--ip-range`) that "any" addresses come from;
    /// `None` means the whole prefix. Specific addresses may be anywhere in
    /// `prefix`.
    pub range: Option<Prefix>,
    /// Hand "any" addresses out serially unless a request says otherwise.
    pub serial: bool,
    /// The gateway, once requested. Kept apart from `allocated` so that a
    /// pool has at most one, and so that it is easy to see.
    pub gateway: Option<IpAddr>,
    /// Every other address handed out.
    pub allocated: BTreeSet<IpAddr>,
    /// The last address handed out serially: the next serial scan starts
    /// after it.
    pub last: Option<IpAddr>,
}

impl Pool {
    /// A pool with nothing handed out.
    pub fn new(space: &str, prefix: Prefix, range: Option<Prefix>, serial: bool) -> Pool {
        Pool {
            space: space.to_string(),
            prefix,
            range,
            serial,
            gateway: None,
            allocated: BTreeSet::new(),
            last: None,
        }
    }

    /// Why `ip` (an address of the pool) is never handed out, if it is not:
    ///
    /// * IPv4: the network (first) and broadcast (last) addresses, except
    ///   in a /31 (RFC 3021: both ends are hosts) or a /32;
    /// * IPv6: the subnet-router anycast address (the first), except in a
    ///   /127 (RFC 6164) or a /128. IPv6 has no broadcast address.
    ///
    /// These are the pool's addresses, not the sub-pool's: a sub-pool at
    /// the start of a /24 loses `.0`, one in the middle loses nothing.
    pub fn reserved(&self, ip: IpAddr) -> Option<&'static str> {
        let (b, len) = (bits(ip), self.prefix.prefix_len());
        if self.prefix.is_v6() {
            (len <= 126 && b == self.prefix.first()).then_some("the subnet-router anycast address")
        } else if len <= 30 && b == self.prefix.first() {
            Some("the network address")
        } else if len <= 30 && b == self.prefix.last() {
            Some("the broadcast address")
        } else {
            None
        }
    }

    /// Whether `ip` (an address of the pool) may be handed out now.
    pub fn is_free(&self, ip: IpAddr) -> bool {
        let taken = self.allocated.contains(&ip);
        // conformance: never hand out the gateway
        let is_gateway = self.gateway == Some(ip);
        self.reserved(ip).is_none() && !taken && !is_gateway
    }

    /// Takes the specific address `ip`, as the gateway when `gateway`.
    ///
    /// Outside the pool, or reserved: invalid-argument ("out of range").
    /// A second gateway while one is allocated, or an address in use:
    /// conflict.
    pub fn take(&mut self, ip: IpAddr, gateway: bool) -> DriverResult<IpAddr> {
        let prefix = self.prefix;
        if !prefix.contains(ip) {
            return Err(DriverError::invalid_argument(format!(
                "address {ip} is out of range: it is not in pool {prefix}"
            )));
        }
        if let Some(why) = self.reserved(ip) {
            return Err(DriverError::invalid_argument(format!(
                "address {ip} is out of range: it is {why} of pool {prefix}, never handed out"
            )));
        }
        self.check_one_gateway(gateway)?;
        if !self.is_free(ip) {
            return Err(DriverError::conflict(format!("address {ip} of pool {prefix} is in use")));
        }
        self.mark(ip, gateway);
        Ok(ip)
    }

    /// Takes a free address of the range (the sub-pool, or the whole pool),
    /// as the gateway when `gateway`. The reuse policy:
    ///
    /// * first free (the default, and always for the gateway): the lowest
    ///   free address, so a released address is the next one handed out;
    /// * serial: the next free address after the last one handed out
    ///   serially, wrapping at the end, so a released address comes back as
    ///   late as possible (Docker's `com.docker.network.ipam.serial`).
    ///
    /// Nothing free: resource-exhausted.
    pub fn take_any(&mut self, serial: bool, gateway: bool) -> DriverResult<IpAddr> {
        self.check_one_gateway(gateway)?;
        let range = self.range.unwrap_or(self.prefix);
        let (first, last) = (range.first(), range.last());
        let serial = serial && !gateway;
        // Where the scan starts: the range's first address, or for serial
        // the one after the last handed out (back to the first at the end).
        let start = match self.last.filter(|_| serial) {
            Some(prev) => bits(prev).checked_add(1).filter(|b| (first..=last).contains(b)).unwrap_or(first),
            None => first,
        };
        let found = (start..=last).chain(first..start).map(|b| range.addr_at(b)).find(|ip| self.is_free(*ip));
        let Some(ip) = found else {
            return Err(DriverError::resource_exhausted(format!(
                "no available addresses in pool {} (any address comes from {range}); release one, or give the network a bigger subnet",
                self.prefix
            )));
        };
        self.mark(ip, gateway);
        if serial {
            self.last = Some(ip);
        }
        Ok(ip)
    }

    /// Gives `ip` back. Releasing an address that is not allocated succeeds
    /// (the daemon may repeat a release); one outside the pool is
    /// invalid-argument.
    pub fn release(&mut self, ip: IpAddr) -> DriverResult<()> {
        if !self.prefix.contains(ip) {
            return Err(DriverError::invalid_argument(format!(
                "address {ip} is out of range: it is not in pool {}",
                self.prefix
            )));
        }
        if self.gateway == Some(ip) {
            self.gateway = None;
        } else {
            self.allocated.remove(&ip);
        }
        Ok(())
    }

    /// A pool has one gateway: asking for another while it is allocated is
    /// a conflict that names it.
    fn check_one_gateway(&self, gateway: bool) -> DriverResult<()> {
        match self.gateway {
            Some(gw) if gateway => Err(DriverError::conflict(format!(
                "pool {} already has gateway {gw}; release it before asking for another",
                self.prefix
            ))),
            _ => Ok(()),
        }
    }

    fn mark(&mut self, ip: IpAddr, gateway: bool) {
        if gateway {
            self.gateway = Some(ip);
        } else {
            self.allocated.insert(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    fn pool(prefix: &str, range: Option<&str>) -> Pool {
        Pool::new("local", Prefix::parse(prefix).unwrap(), range.map(|r| Prefix::parse(r).unwrap()), false)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Every "any" address until the pool runs out, as text.
    fn drain(p: &mut Pool, serial: bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match p.take_any(serial, false) {
                Ok(a) => out.push(a.to_string()),
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::ResourceExhausted, "{e}");
                    return out;
                }
            }
        }
    }

    #[test]
    fn a_slash_24_hands_out_254_hosts_and_never_its_gateway_twice() {
        let mut p = pool("10.1.0.0/24", None);
        assert_eq!(p.take_any(false, true).unwrap(), ip("10.1.0.1"));
        let rest = drain(&mut p, false);
        assert_eq!(rest.len(), 253);
        assert!(!rest.iter().any(|a| a == "10.1.0.0" || a == "10.1.0.1" || a == "10.1.0.255"));
        assert_eq!(p.take(ip("10.1.0.1"), false).unwrap_err().kind, ErrorKind::Conflict);
    }

    #[test]
    fn small_pools_sub_pools_and_ipv6() {
        assert_eq!(drain(&mut pool("10.1.0.0/31", None), false), ["10.1.0.0", "10.1.0.1"]);
        assert_eq!(drain(&mut pool("10.1.0.9/32", None), false), ["10.1.0.9"]);
        let start = drain(&mut pool("10.1.0.0/24", Some("10.1.0.0/30")), false);
        assert_eq!(start, ["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        let inside = drain(&mut pool("10.1.0.0/16", Some("10.1.2.0/30")), false);
        assert_eq!(inside, ["10.1.2.0", "10.1.2.1", "10.1.2.2", "10.1.2.3"]);
        let v6 = drain(&mut pool("fd00::/126", None), false);
        assert_eq!(v6, ["fd00::1", "fd00::2", "fd00::3"]);
    }

    #[test]
    fn first_free_and_serial_reuse() {
        let mut p = pool("10.1.0.0/29", None);
        for _ in 0..3 {
            p.take_any(false, false).unwrap();
        }
        p.release(ip("10.1.0.2")).unwrap();
        assert_eq!(p.take_any(false, false).unwrap(), ip("10.1.0.2"), "first free: lowest first");

        let mut s = pool("10.1.0.0/29", None);
        for _ in 0..3 {
            s.take_any(true, false).unwrap();
        }
        s.release(ip("10.1.0.2")).unwrap();
        let order = drain(&mut s, true);
        assert_eq!(
            order,
            ["10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.2"],
            "serial: released comes back last"
        );
    }

    #[test]
    fn specific_addresses_and_gateways() {
        let mut p = pool("10.1.0.0/24", Some("10.1.0.64/26"));
        p.take(ip("10.1.0.10"), false).unwrap();
        assert_eq!(p.take(ip("10.1.0.10"), false).unwrap_err().kind, ErrorKind::Conflict);
        for out in ["10.1.1.10", "10.1.0.0", "10.1.0.255", "fd00::1"] {
            assert_eq!(p.take(ip(out), false).unwrap_err().kind, ErrorKind::InvalidArgument, "{out}");
        }
        assert_eq!(p.take_any(false, true).unwrap(), ip("10.1.0.64"), "gateway from the sub-pool");
        assert_eq!(p.take(ip("10.1.0.200"), true).unwrap_err().kind, ErrorKind::Conflict, "one gateway");
        p.release(ip("10.1.0.64")).unwrap();
        p.release(ip("10.1.0.64")).unwrap();
        assert_eq!(p.take(ip("10.1.0.200"), true).unwrap(), ip("10.1.0.200"));
        assert_eq!(p.release(ip("10.2.0.1")).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
