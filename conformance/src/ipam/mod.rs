//! The IPAM suite (`IP-*`), exactly as `CONFORMANCE.md` words each case,
//! black-box through [`IpamDriver`].
//!
//! * Every case gets the driver behind a tracking wrapper ([`Tracked`]):
//!   teardown releases every pool the case made and did not release, and a
//!   restart (IP-09) replays pools and addresses to a driver whose
//!   capabilities ask for it (`requires_request_replay`), as a daemon would.
//! * Against a shared object each case has a fresh driver root and its own
//!   prefixes (`10.<n>.0.0/18` and `fd42:0:<n>::/48`, `n` the case number).
//!   Against a remote plugin, whose pools outlive the case, each case's
//!   prefixes are derived from its case root ([`Arena`]), so cases and runs
//!   never meet.
//! * A null IPAM driver (its pools are `0.0.0.0/0` and it hands out no
//!   addresses) runs IP-12 and skips the rest, saying so; every other
//!   driver skips IP-12 ("not a null IPAM driver"). IP-11 runs for remote
//!   plugins only.
//!
//! IP-01..IP-03 and IP-10 live in `pools.rs`; IP-04..IP-07 in
//! `addresses.rs`; IP-08 and IP-09 in `churn.rs`; IP-11 and IP-12 in
//! `special.rs`; the wrapper, the restart and teardown in `slot.rs`.

mod addresses;
mod churn;
mod leases;
mod pools;
mod slot;
mod special;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, IpamDriver};
use sha2::{Digest, Sha256};

use crate::case::{describe_error, err_kind, ok, Case, Failure, Stop, Suite};
use crate::ctx::Ctx;

pub(crate) use slot::IpamSlot;
pub use slot::{Ledger, Tracked};

/// The request option that selects the serial reuse policy (Docker's).
pub const SERIAL_OPTION: &str = "com.docker.network.ipam.serial";

/// Every implemented IPAM case, in ID order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "IP-01",
            description: "overlapping pools are refused (exact, superset, subset, start and end overlap; v4 and v6); the same prefix in another address space is allowed",
            suite: Suite::Ipam,
            run: pools::ip01_overlap,
        },
        Case {
            id: "IP-02",
            description: "dynamic pools: parallel requests get distinct subnets; requested prefix length honoured; bad lengths rejected",
            suite: Suite::Ipam,
            run: pools::ip02_dynamic,
        },
        Case {
            id: "IP-03",
            description: "a pool released twice errors; a released pool can be requested again; no pool is ever live twice",
            suite: Suite::Ipam,
            run: pools::ip03_release,
        },
        Case {
            id: "IP-04",
            description: "a /24 yields 254 host addresses (gateway included); a /31 yields both; sub-pool edges handled",
            suite: Suite::Ipam,
            run: addresses::ip04_counts,
        },
        Case {
            id: "IP-05",
            description: "exhaustion gives a distinct no-addresses error; releasing one address makes exactly that one available",
            suite: Suite::Ipam,
            run: addresses::ip05_exhaustion,
        },
        Case {
            id: "IP-06",
            description: "the reuse policy is documented and tested (first free by default; serial on request)",
            suite: Suite::Ipam,
            run: addresses::ip06_reuse,
        },
        Case {
            id: "IP-07",
            description: "a specific address: in use → conflict; outside the pool → out of range; mixed requests never duplicate",
            suite: Suite::Ipam,
            run: addresses::ip07_specific,
        },
        Case {
            id: "IP-08",
            description: "thousands of interleaved requests and releases never hand out an address twice",
            suite: Suite::Ipam,
            run: churn::ip08_interleaved,
        },
        Case {
            id: "IP-09",
            description: "allocations survive a daemon restart",
            suite: Suite::Ipam,
            run: churn::ip09_restart,
        },
        Case {
            id: "IP-10",
            description: "invalid combinations rejected: range outside subnet, two gateways, aux addresses outside subnet",
            suite: Suite::Ipam,
            run: pools::ip10_invalid,
        },
        Case {
            id: "IP-11",
            description: "remote IPAM: default address spaces used, pool id opaque and echoed, pool data shown in inspect",
            suite: Suite::Ipam,
            run: special::ip11_remote,
        },
        Case {
            id: "IP-12",
            description: "the null IPAM driver reports 0.0.0.0/0 and no gateway",
            suite: Suite::Ipam,
            run: special::ip12_null,
        },
    ]
}

// The rules quoted in failures, so a vendor reads what to fix.
const OVERLAP: &str =
    "live pools in one address space never overlap: a request that overlaps one is Conflict";
const NOT_LIVE: &str = "releasing a pool that is not live (never requested, or released) is NotFound";
const EXHAUSTED: &str =
    "a pool with no free address answers ResourceExhausted (\"no available addresses\"), not another kind";
const IN_USE: &str = "a specific address that is in use is Conflict";
const OUT_OF_RANGE: &str = "an address outside the pool is InvalidArgument (\"out of range\")";
const INVALID: &str = "an invalid request is InvalidArgument and reserves nothing";

/// The prefixes a case works in: an IPv4 /18 and an IPv6 /48 of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arena {
    /// Second octet of the IPv4 /18.
    b: u8,
    /// Third octet where the /18 starts (0, 64, 128 or 192).
    c: u8,
    /// Second and third groups of the IPv6 /48 (`fd42:<g1>:<g2>::/48`).
    g1: u16,
    g2: u16,
}

impl Arena {
    /// The case's arena: from its number against a shared object (fresh
    /// root, readable prefixes); from a digest of its case root against a
    /// remote plugin, whose pools outlive the case.
    pub fn of(ctx: &Ctx) -> Arena {
        if ctx.shared_driver() {
            let d = Sha256::digest(ctx.dir().as_os_str().as_encoded_bytes());
            Arena {
                b: d[0],
                c: (d[1] % 4) * 64,
                g1: u16::from_be_bytes([d[2], d[3]]),
                g2: u16::from_be_bytes([d[4], d[5]]),
            }
        } else {
            let n: u8 = ctx.id().trim_start_matches("IP-").parse().unwrap_or(0);
            Arena { b: n, c: 0, g1: 0, g2: u16::from(n) }
        }
    }

    /// `10.<b>.<c + off>.<d>/<len>` (`off` below 64).
    pub fn net(&self, off: u8, d: u8, len: u8) -> String {
        format!("{}/{len}", self.ip(off, d))
    }

    /// `10.<b>.<c + off>.<d>`.
    pub fn ip(&self, off: u8, d: u8) -> String {
        debug_assert!(off < 64, "offset {off} leaves the case's /18");
        format!("10.{}.{}.{d}", self.b, self.c + off)
    }

    /// `fd42:<g1>:<g2>:<group>::/<len>`.
    pub fn net6(&self, group: u16, len: u8) -> String {
        format!("{}/{len}", self.ip6(group, ""))
    }

    /// `fd42:<g1>:<g2>:<group>::<tail>`.
    pub fn ip6(&self, group: u16, tail: &str) -> String {
        format!("fd42:{:x}:{:x}:{group:x}::{tail}", self.g1, self.g2)
    }
}

/// A CIDR prefix or an address with a prefix length, parsed with std only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address as written.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Cidr {
    /// Parses `10.1.0.0/16` or `fd00::5/64`; `None` unless it is one.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, len) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        (len <= width(addr)).then_some(Cidr { addr, len })
    }

    /// The first address, as bits.
    pub fn first(&self) -> u128 {
        let host = u32::from(width(self.addr) - self.len);
        if host >= 128 {
            0
        } else {
            bits(self.addr) >> host << host
        }
    }

    /// The last address, as bits.
    pub fn last(&self) -> u128 {
        let host = u32::from(width(self.addr) - self.len);
        let mask = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
        self.first() | mask
    }

    /// Whether `ip` lies in the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.addr.is_ipv6() && (self.first()..=self.last()).contains(&bits(ip))
    }

    /// Whether the two prefixes share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.addr.is_ipv6() == other.addr.is_ipv6()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }

    /// Whether both name the same prefix (however the address is written).
    pub fn same_prefix(&self, other: &Cidr) -> bool {
        self.addr.is_ipv6() == other.addr.is_ipv6() && self.len == other.len && self.first() == other.first()
    }
}

fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        128
    } else {
        32
    }
}

/// An address as bits (IPv4 in the low 32).
pub fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// `cidr` as a prefix, or the case fails at `step`.
fn prefix(step: &str, cidr: &str) -> Result<Cidr, Stop> {
    Cidr::parse(cidr).ok_or_else(|| {
        Failure::new(step, "a CIDR prefix such as 10.1.0.0/16", format!("{cidr:?}, which is not one")).into()
    })
}

/// The bare address of a CIDR answer (`10.1.0.5/16` → `10.1.0.5`).
pub fn bare(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// A pool request; `V6` follows the family of `pool` (or `sub_pool`).
pub fn pool_req(space: &str, pool: &str, sub_pool: &str) -> RequestPoolRequest {
    let mut req = RequestPoolRequest::new(space, pool);
    req.sub_pool = sub_pool.to_string();
    req.v6 = pool.contains(':') || (pool.is_empty() && sub_pool.contains(':'));
    req
}

/// A request for a pool the driver picks.
pub fn dynamic_req(space: &str, v6: bool) -> RequestPoolRequest {
    let mut req = RequestPoolRequest::new(space, "");
    req.v6 = v6;
    req
}

/// A request for `address` (empty: any) of pool `id`; the gateway when
/// `gateway`.
pub fn addr_req(id: &str, address: &str, gateway: bool) -> RequestAddressRequest {
    let mut req = RequestAddressRequest::new(id);
    req.address = address.to_string();
    if gateway {
        req.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
    }
    req
}

/// Any address of pool `id`, as answered (CIDR).
pub fn any(d: &dyn IpamDriver, id: &str) -> DriverResult<String> {
    d.request_address(addr_req(id, "", false)).map(|r| r.address)
}

/// A specific address of pool `id`.
pub fn at(d: &dyn IpamDriver, id: &str, address: &str) -> DriverResult<String> {
    d.request_address(addr_req(id, address, false)).map(|r| r.address)
}

/// The gateway of pool `id` (`address` empty: the driver's pick).
pub fn gateway(d: &dyn IpamDriver, id: &str, address: &str) -> DriverResult<String> {
    d.request_address(addr_req(id, address, true)).map(|r| r.address)
}

/// Releases `address` of pool `id`.
pub fn release(d: &dyn IpamDriver, id: &str, address: &str) -> DriverResult<()> {
    d.release_address(ReleaseAddressRequest::new(id, address))
}

/// Releases pool `id`.
pub fn release_pool(d: &dyn IpamDriver, id: &str) -> DriverResult<()> {
    d.release_pool(ReleasePoolRequest::new(id))
}

/// The driver's default address spaces; both must be named.
fn spaces(ctx: &Ctx) -> Result<AddressSpaces, Stop> {
    let s = ok("default address spaces", ctx.ipam().default_address_spaces(AddressSpacesRequest::default()))?;
    crate::case::check(
        !s.local.is_empty() && !s.global.is_empty(),
        "default address spaces",
        "a local and a global space name (the daemon sends them back in every pool request)",
        format!("local {:?}, global {:?}", s.local, s.global),
    )?;
    Ok(s)
}

/// Requests `req`; the case fails unless it succeeds with a CIDR pool,
/// which must be the prefix asked for when one was named (not `0.0.0.0/L`).
fn request(ctx: &Ctx, req: RequestPoolRequest) -> Result<(String, Cidr), Stop> {
    let what = describe_req(&req);
    let r = ok(format!("request {what}"), ctx.ipam().request_pool(req.clone()))?;
    let got = prefix(&format!("pool answered to the request of {what}"), &r.pool)?;
    if let Some(want) = Cidr::parse(&req.pool).filter(|c| bits(c.addr) != 0) {
        crate::case::check(
            got.same_prefix(&want),
            format!("pool answered to the request of {what}"),
            format!("{want} (the pool asked for)"),
            &r.pool,
        )?;
    }
    crate::case::check(
        !r.pool_id.is_empty(),
        format!("pool id answered to the request of {what}"),
        "an id",
        "an empty id",
    )?;
    Ok((r.pool_id, got))
}

/// How a pool request reads in a step.
fn describe_req(req: &RequestPoolRequest) -> String {
    let pool =
        if req.pool.is_empty() { format!("a dynamic {} pool", family(req.v6)) } else { req.pool.clone() };
    let sub = if req.sub_pool.is_empty() { String::new() } else { format!(" (sub-pool {})", req.sub_pool) };
    let space = if req.address_space.is_empty() {
        String::new()
    } else {
        format!(" in address space {:?}", req.address_space)
    };
    format!("pool {pool}{sub}{space}")
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Checks an address answer: a CIDR inside `pool` with its prefix length.
fn check_answer(step: &str, answer: &str, pool: &Cidr) -> Result<IpAddr, Stop> {
    let got = Cidr::parse(answer);
    match got {
        Some(c) if pool.contains(c.addr) && c.len == pool.len => Ok(c.addr),
        _ => Err(Failure::new(
            step,
            format!("an address of {pool} with its prefix length, e.g. {}/{}", pool.addr, pool.len),
            format!("{answer:?}"),
        )
        .into()),
    }
}

/// Like [`err_kind`], with the rule the driver broke added to what was
/// expected.
fn refused<T: fmt::Debug>(
    step: impl fmt::Display,
    kind: ErrorKind,
    rule: &str,
    res: DriverResult<T>,
) -> Result<DriverError, Stop> {
    err_kind(step, kind, res).map_err(|stop| with_rule(stop, rule))
}

/// Like [`refused`], accepting any of `kinds`.
fn refused_as<T: fmt::Debug>(
    step: impl fmt::Display,
    kinds: &[ErrorKind],
    rule: &str,
    res: DriverResult<T>,
) -> Result<DriverError, Stop> {
    let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
    let expected = format!("error kind {} ({rule})", names.join(" or "));
    match res {
        Err(e) if kinds.contains(&e.kind) => Ok(e),
        Err(e) => Err(Failure::new(step.to_string(), expected, describe_error(&e)).with_kind(e.kind).into()),
        Ok(v) => Err(Failure::new(step.to_string(), expected, format!("success ({v:?})")).into()),
    }
}

/// Adds `rule` to the expectation of a failure.
fn with_rule(stop: Stop, rule: &str) -> Stop {
    match stop {
        Stop::Fail(mut f) => {
            f.expected = format!("{} ({rule})", f.expected);
            Stop::Fail(f)
        }
        skip => skip,
    }
}

/// Like [`ok`], with the rule that makes the call legitimate.
fn allowed<T>(step: impl fmt::Display, rule: &str, res: DriverResult<T>) -> Result<T, Stop> {
    ok(step, res).map_err(|stop| with_rule(stop, rule))
}

/// Whether the driver is a null IPAM driver: a dynamic IPv4 pool in its
/// local default space is `0.0.0.0/0`. The probe's pool is released again.
pub fn is_null(d: &dyn IpamDriver) -> bool {
    let Ok(spaces) = d.default_address_spaces(AddressSpacesRequest::default()) else { return false };
    let Ok(r) = d.request_pool(dynamic_req(&spaces.local, false)) else { return false };
    let _ = d.release_pool(ReleasePoolRequest::new(r.pool_id.clone()));
    Cidr::parse(&r.pool).is_some_and(|c| c.len == 0 && bits(c.addr) == 0)
}

/// Skips the case for a null IPAM driver, which hands out nothing.
fn not_null(ctx: &Ctx) -> Result<(), Stop> {
    if is_null(ctx.ipam()) {
        return Err(Stop::Skip(
            "not applicable to a null IPAM driver (its pools are 0.0.0.0/0 and it hands out no \
             addresses); IP-12 checks it"
                .into(),
        ));
    }
    Ok(())
}

/// Requests any address of `id` until the driver refuses (at most `limit`
/// answers): the answers in order, and the refusal.
fn drain(d: &dyn IpamDriver, id: &str, limit: usize) -> (Vec<String>, Option<DriverError>) {
    let mut got = Vec::new();
    while got.len() < limit {
        match any(d, id) {
            Ok(a) => got.push(a),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// Answers counted by bare address, to show duplicates.
fn duplicates(answers: &[String]) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for a in answers {
        *seen.entry(bare(a)).or_default() += 1;
    }
    seen.into_iter().filter(|(_, n)| *n > 1).map(|(a, n)| format!("{a} ×{n}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_compare() {
        let p = Cidr::parse("10.1.4.0/22").unwrap();
        assert!(p.contains("10.1.7.255".parse().unwrap()));
        assert!(!p.contains("10.1.8.0".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert!(p.overlaps(&Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(!p.overlaps(&Cidr::parse("10.1.8.0/22").unwrap()));
        assert!(Cidr::parse("fd42:0:1:0::/56").unwrap().same_prefix(&Cidr::parse("fd42:0:1::/56").unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert_eq!((all.first(), all.last()), (0, u128::from(u32::MAX)));
        let all6 = Cidr::parse("::/0").unwrap();
        assert_eq!((all6.first(), all6.last()), (0, u128::MAX));
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("10.0.0.0").is_none());
        assert_eq!(bare("10.0.0.5/24"), "10.0.0.5");
    }

    #[test]
    fn arenas_are_valid_prefixes() {
        let a = Arena { b: 7, c: 192, g1: 0xabcd, g2: 0 };
        assert_eq!(a.net(63, 0, 24), "10.7.255.0/24");
        assert_eq!(a.net6(0x1ff, 64), "fd42:abcd:0:1ff::/64");
        assert_eq!(a.ip6(0x100, "ffff"), "fd42:abcd:0:100::ffff");
        assert!(Cidr::parse(&a.net6(0, 52)).is_some());
    }
}
