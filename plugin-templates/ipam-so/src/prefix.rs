//! IP prefixes (`10.1.0.0/24`, `fd00::/64`) and the little arithmetic an
//! allocator needs, on plain `std` types.
//!
//! An address is handled as a `u128` ("bits"; IPv4 in the low 32 bits), so
//! both families share one code path: the first address of a prefix, its
//! last, the next one, "does it overlap that one" are all integer compares.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// A prefix: an address with no host bits set, and a length.
///
/// Stored and shown as CIDR text (`10.1.0.0/24`), also in the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// An address as bits: IPv4 in the low 32 bits, IPv6 as it is.
pub fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The number of bits in an address of the family: 32 or 128.
fn width(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

/// The host part of a prefix of length `len` as a mask: `0xff` for a /24.
fn host_mask(v6: bool, len: u8) -> u128 {
    let host = u32::from(width(v6) - len);
    if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

impl Prefix {
    /// Parses CIDR text. The address must be the prefix's first address:
    /// `10.1.0.5/24` is refused (did you mean `10.1.0.0/24`?). The error is
    /// a sentence for an invalid-argument message.
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let Some((addr, len)) = text.split_once('/') else {
            return Err(format!("{text:?} is not a CIDR prefix such as 10.1.0.0/24 or fd00::/64"));
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} in {text:?} is not an IP address"))?;
        let max = width(addr.is_ipv6());
        let len: u8 = match len.parse() {
            Ok(len) if len <= max => len,
            _ => return Err(format!("{len:?} in {text:?} is not a prefix length (0 to {max})")),
        };
        let prefix = Prefix::from_bits(bits(addr), len, addr.is_ipv6());
        if prefix.addr != addr {
            return Err(format!("{text:?} has host bits set; did you mean {prefix}?"));
        }
        Ok(prefix)
    }

    /// The prefix of length `len` holding the address `bits` of the family.
    pub fn from_bits(bits: u128, len: u8, v6: bool) -> Prefix {
        let first = bits & !host_mask(v6, len);
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::from(first))
        } else {
            // The mask keeps an IPv4 prefix inside 32 bits.
            IpAddr::V4(Ipv4Addr::from(first as u32))
        };
        Prefix { addr, len }
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The prefix length: 24 for `10.1.0.0/24`.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// `0.0.0.0/N` or `::/N`: "any free prefix of length N" in a pool
    /// request (Docker 29's `--subnet 0.0.0.0/24`).
    pub fn is_unspecified(&self) -> bool {
        self.addr.is_unspecified()
    }

    /// The first address, as bits.
    pub fn first(&self) -> u128 {
        bits(self.addr)
    }

    /// The last address, as bits.
    pub fn last(&self) -> u128 {
        self.first() | host_mask(self.is_v6(), self.len)
    }

    /// The address `bits` in this prefix's family (the caller keeps it
    /// inside the prefix).
    pub fn addr_at(&self, bits: u128) -> IpAddr {
        if self.is_v6() {
            IpAddr::V6(Ipv6Addr::from(bits))
        } else {
            IpAddr::V4(Ipv4Addr::from(bits as u32))
        }
    }

    /// Whether `ip` lies in the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.is_v6() && (self.first()..=self.last()).contains(&bits(ip))
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        self.is_v6() == other.is_v6() && self.first() <= other.last() && other.first() <= self.last()
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.is_v6() == other.is_v6() && self.first() <= other.first() && other.last() <= self.last()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;

    fn try_from(text: String) -> Result<Prefix, String> {
        Prefix::parse(&text)
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Prefix {
        Prefix::parse(text).unwrap()
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!(p("10.1.4.0/22").to_string(), "10.1.4.0/22");
        assert_eq!(p("fd00:0:0:1::/64").to_string(), "fd00:0:0:1::/64");
        assert!(Prefix::parse("10.1.0.5/24").unwrap_err().contains("did you mean 10.1.0.0/24"));
        for bad in ["10.1.0.0", "10.1.0.0/33", "::/129", "banana/8", "10.1.0.0/x"] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
        assert!(p("0.0.0.0/28").is_unspecified() && p("::/80").is_unspecified());
    }

    #[test]
    fn first_last_and_the_whole_space() {
        let q = p("10.1.4.0/22");
        assert_eq!(q.addr_at(q.last()).to_string(), "10.1.7.255");
        assert_eq!((p("0.0.0.0/0").first(), p("0.0.0.0/0").last()), (0, u128::from(u32::MAX)));
        assert_eq!((p("::/0").first(), p("::/0").last()), (0, u128::MAX));
        assert_eq!(Prefix::from_bits(q.last(), 24, false), p("10.1.7.0/24"));
    }

    #[test]
    fn overlap_and_containment() {
        let q = p("10.1.4.0/22");
        assert!(q.contains("10.1.7.255".parse().unwrap()));
        assert!(!q.contains("10.1.8.0".parse().unwrap()));
        assert!(!q.contains("::a01:400".parse().unwrap()), "never across families");
        assert!(q.overlaps(&p("10.0.0.0/8")) && q.overlaps(&p("10.1.5.0/24")));
        assert!(!q.overlaps(&p("10.1.8.0/22")) && !q.overlaps(&p("::/0")));
        assert!(q.covers(&p("10.1.7.0/24")) && !q.covers(&p("10.1.0.0/20")));
    }
}
