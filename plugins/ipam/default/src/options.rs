//! The driver's options, and picking a free subnet out of the default
//! address pools.

use std::fmt;
use std::str::FromStr;

use berth_plugin_api::{DriverError, DriverResult};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pool::{bounds, from_bits, parse_prefix};

/// The driver's options from the configuration. An unknown key is refused.
///
/// ```toml
/// [[plugin]]
/// name = "default"
/// options = { persist = "replay",
///             default_address_pools = [{ base = "172.30.0.0/16", size = 24 }] }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// How the state is kept: `"journal"` (the default) or `"replay"`; see
    /// [`Persist`].
    #[serde(default)]
    pub persist: Persist,
    /// Where IPv4 pools come from when a request names none; absent means
    /// Docker's list (see [`DefaultPools::docker`]). An empty list turns
    /// dynamic IPv4 pools off.
    #[serde(default)]
    pub default_address_pools: Option<Vec<AddressPool>>,
    /// The same for IPv6; absent means `fd00:b347::/48` cut into /64s.
    #[serde(default)]
    pub default_address_pools_v6: Option<Vec<AddressPool>>,
}

/// Option `persist`: where the driver's state lives, and so who makes it
/// survive a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Persist {
    /// `"journal"` (the default): durable by itself, under the driver's
    /// root (snapshot and journal, one `fdatasync` per address). For a
    /// caller that never replays, such as dockerd using the driver as a
    /// remote plugin.
    #[default]
    Journal,
    /// `"replay"`: in memory only, nothing written; the capabilities answer
    /// `requires_request_replay`, so the daemon requests every recorded
    /// pool and address again at start (Docker's default IPAM). The
    /// daemon's records are the persistence. berthd's embedded
    /// configuration uses it.
    Replay,
}

impl Persist {
    /// The option's text: `"journal"` or `"replay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Persist::Journal => "journal",
            Persist::Replay => "replay",
        }
    }
}

impl fmt::Display for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `persist` value other than `"journal"` and `"replay"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPersist(pub String);

impl fmt::Display for UnknownPersist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "option persist is {:?}; expected \"journal\" (state on disk, durable by itself) \
             or \"replay\" (state in memory, the daemon replays its requests at start)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPersist {}

impl From<UnknownPersist> for DriverError {
    fn from(e: UnknownPersist) -> DriverError {
        DriverError::invalid_argument(e.to_string())
    }
}

impl FromStr for Persist {
    type Err = UnknownPersist;

    fn from_str(s: &str) -> Result<Persist, UnknownPersist> {
        match s {
            "journal" => Ok(Persist::Journal),
            "replay" => Ok(Persist::Replay),
            other => Err(UnknownPersist(other.to_string())),
        }
    }
}

impl Serialize for Persist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Persist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Persist, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Persist;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("option persist as \"journal\" or \"replay\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Persist, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// A range of pools: `base` cut into prefixes of length `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    /// The prefix pools are cut from, e.g. `172.30.0.0/16`.
    pub base: String,
    /// The prefix length of each pool, e.g. `24`.
    pub size: u8,
}

impl AddressPool {
    /// `base` cut into prefixes of length `size`.
    pub fn new(base: impl Into<String>, size: u8) -> Self {
        AddressPool { base: base.into(), size }
    }
}

/// The validated default address pools, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPools {
    v4: Vec<(IpNet, u8)>,
    v6: Vec<(IpNet, u8)>,
}

impl DefaultPools {
    /// Docker's defaults: 172.17.0.0/16 … 172.31.0.0/16 as one /16 each,
    /// then 192.168.0.0/16 cut into /20s; for IPv6 `fd00:b347::/48` cut into
    /// /64s.
    pub fn docker() -> (Vec<AddressPool>, Vec<AddressPool>) {
        let mut v4: Vec<AddressPool> =
            (17..=31).map(|b| AddressPool::new(format!("172.{b}.0.0/16"), 16)).collect();
        v4.push(AddressPool::new("192.168.0.0/16", 20));
        (v4, vec![AddressPool::new("fd00:b347::/48", 64)])
    }

    /// Validates the options: every base a CIDR prefix of the right family
    /// with no host bits, every size between the base's length and the
    /// family's maximum.
    pub fn from_options(opts: &Opts) -> DriverResult<DefaultPools> {
        let (docker_v4, docker_v6) = DefaultPools::docker();
        let v4 = opts.default_address_pools.as_ref().unwrap_or(&docker_v4);
        let v6 = opts.default_address_pools_v6.as_ref().unwrap_or(&docker_v6);
        Ok(DefaultPools {
            v4: validate("default_address_pools", v4, false)?,
            v6: validate("default_address_pools_v6", v6, true)?,
        })
    }

    /// The first subnet of the default pools of the family that overlaps
    /// none of `live` (the live pools of one address space): of length
    /// `len` when given (cut from every base at least that big), else of
    /// each base's own size. A length no base can hold is an
    /// invalid-argument error.
    pub fn pick(&self, v6: bool, len: Option<u8>, live: &[IpNet]) -> DriverResult<Option<IpNet>> {
        let bases = if v6 { &self.v6 } else { &self.v4 };
        let Some(len) = len else {
            return Ok(bases.iter().find_map(|(base, size)| first_free_subnet(base, *size, live)));
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        let Some(widest) = bases.iter().map(|(base, _)| base.prefix_len()).min() else {
            return Err(DriverError::invalid_argument(format!(
                "no default {family} address pools are configured; name the pool to use"
            )));
        };
        if len < widest {
            return Err(DriverError::invalid_argument(format!(
                "prefix length /{len} is bigger than every default {family} address pool \
                 (the biggest is /{widest}); ask for /{widest} or longer"
            )));
        }
        Ok(bases
            .iter()
            .filter(|(base, _)| base.prefix_len() <= len)
            .find_map(|(base, _)| first_free_subnet(base, len, live)))
    }
}

fn validate(key: &str, pools: &[AddressPool], v6: bool) -> DriverResult<Vec<(IpNet, u8)>> {
    let (family, max) = if v6 { ("IPv6", 128) } else { ("IPv4", 32) };
    pools
        .iter()
        .map(|p| {
            let base = parse_prefix(&format!("{key}: base"), &p.base)?;
            if base.addr().is_ipv6() != v6 {
                return Err(DriverError::invalid_argument(format!(
                    "{key}: base {base} is not an {family} prefix"
                )));
            }
            if p.size < base.prefix_len() || p.size > max {
                return Err(DriverError::invalid_argument(format!(
                    "{key}: size {} for base {base} must lie between {} and {max}",
                    p.size,
                    base.prefix_len()
                )));
            }
            Ok((base, p.size))
        })
        .collect()
}

/// The first subnet of length `size` in `base` that overlaps no prefix of
/// `live`. A live prefix that overlaps a candidate is skipped over whole:
/// prefixes either nest or are disjoint, so the next candidate starts right
/// after the larger of the two, already aligned.
fn first_free_subnet(base: &IpNet, size: u8, live: &[IpNet]) -> Option<IpNet> {
    let v6 = base.addr().is_ipv6();
    let host_bits = u32::from(if v6 { 128 } else { 32 } - size);
    let span = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let (_, end) = bounds(base);
    let mut candidate = bounds(base).0;
    loop {
        let candidate_end = candidate + span;
        let clash = live
            .iter()
            .filter(|p| p.addr().is_ipv6() == v6)
            .map(bounds)
            .filter(|(first, last)| *first <= candidate_end && candidate <= *last)
            .map(|(_, last)| last)
            .max();
        match clash {
            None => return IpNet::new(from_bits(candidate, v6), size).ok(),
            Some(last) => match last.max(candidate_end).checked_add(1) {
                Some(next) if next <= end => candidate = next,
                _ => return None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn defaults() -> DefaultPools {
        DefaultPools::from_options(&Opts::default()).unwrap()
    }

    #[test]
    fn docker_defaults_are_used_in_order() {
        let d = defaults();
        assert_eq!(d.pick(false, None, &[]).unwrap(), Some(net("172.17.0.0/16")));
        assert_eq!(d.pick(false, None, &[net("172.17.0.0/16")]).unwrap(), Some(net("172.18.0.0/16")));
        let all_172: Vec<IpNet> = (17..=31).map(|b| net(&format!("172.{b}.0.0/16"))).collect();
        assert_eq!(d.pick(false, None, &all_172).unwrap(), Some(net("192.168.0.0/20")));
        assert_eq!(d.pick(true, None, &[]).unwrap(), Some(net("fd00:b347::/64")));
        assert_eq!(d.pick(true, None, &[net("fd00:b347::/64")]).unwrap(), Some(net("fd00:b347:0:1::/64")));
        // A v4 pool never blocks a v6 pick.
        assert_eq!(d.pick(true, None, &[net("172.17.0.0/16")]).unwrap(), Some(net("fd00:b347::/64")));
        // A requested length cuts the bases that can hold it.
        assert_eq!(d.pick(false, Some(24), &[]).unwrap(), Some(net("172.17.0.0/24")));
        assert_eq!(d.pick(false, Some(24), &[net("172.17.0.0/24")]).unwrap(), Some(net("172.17.1.0/24")));
        assert_eq!(d.pick(true, Some(80), &[]).unwrap(), Some(net("fd00:b347::/80")));
        assert_eq!(d.pick(false, Some(17), &all_172).unwrap(), Some(net("192.168.0.0/17")));
        let e = d.pick(false, Some(12), &[]).unwrap_err();
        assert!(e.message.contains("/12") && e.message.contains("/16"), "{}", e.message);
        assert!(d.pick(true, Some(47), &[]).is_err());
    }

    #[test]
    fn live_pools_of_any_size_are_skipped() {
        let base = net("10.0.0.0/16");
        // A subset of the first candidate.
        assert_eq!(first_free_subnet(&base, 24, &[net("10.0.0.128/25")]), Some(net("10.0.1.0/24")));
        // A superset of many candidates.
        assert_eq!(first_free_subnet(&base, 24, &[net("10.0.0.0/20")]), Some(net("10.0.16.0/24")));
        // A superset of the whole base.
        assert_eq!(first_free_subnet(&base, 24, &[net("10.0.0.0/8")]), None);
        // Holes are found.
        let live = [net("10.0.0.0/24"), net("10.0.2.0/24")];
        assert_eq!(first_free_subnet(&base, 24, &live), Some(net("10.0.1.0/24")));
        // Full.
        assert_eq!(
            first_free_subnet(
                &net("10.0.0.0/23"),
                24,
                &live[..1].iter().chain(&[net("10.0.1.0/24")]).copied().collect::<Vec<_>>()
            ),
            None
        );
        // The whole address space as one candidate.
        assert_eq!(first_free_subnet(&net("::/0"), 0, &[]), Some(net("::/0")));
        assert_eq!(first_free_subnet(&net("::/0"), 0, &[net("fd00::/8")]), None);
        assert_eq!(first_free_subnet(&net("ff00::/8"), 9, &[net("ff00::/9")]), Some(net("ff80::/9")));
    }

    #[test]
    fn options_are_validated() {
        let bad = |v4: Vec<AddressPool>, v6: Vec<AddressPool>| {
            let opts = Opts {
                default_address_pools: Some(v4),
                default_address_pools_v6: Some(v6),
                ..Opts::default()
            };
            DefaultPools::from_options(&opts).unwrap_err()
        };
        let e = bad(vec![AddressPool::new("172.30.0.0/16", 8)], vec![]);
        assert!(e.message.contains("size 8"), "{}", e.message);
        let e = bad(vec![AddressPool::new("172.30.0.0/16", 33)], vec![]);
        assert!(e.message.contains("size 33"), "{}", e.message);
        let e = bad(vec![AddressPool::new("172.30.0.1/16", 24)], vec![]);
        assert!(e.message.contains("host bits"), "{}", e.message);
        let e = bad(vec![AddressPool::new("fd00::/48", 64)], vec![]);
        assert!(e.message.contains("not an IPv4 prefix"), "{}", e.message);
        let e = bad(vec![], vec![AddressPool::new("10.0.0.0/8", 24)]);
        assert!(e.message.contains("not an IPv6 prefix"), "{}", e.message);
        let e = bad(vec![AddressPool::new("nope", 24)], vec![]);
        assert_eq!(e.kind, berth_plugin_api::ErrorKind::InvalidArgument);
        // Empty lists are fine: no dynamic pools of that family.
        let opts = Opts {
            default_address_pools: Some(vec![]),
            default_address_pools_v6: Some(vec![]),
            ..Opts::default()
        };
        assert_eq!(DefaultPools::from_options(&opts).unwrap().pick(false, None, &[]).unwrap(), None);
    }

    #[test]
    fn persist_is_journal_unless_replay_is_asked_for() {
        assert_eq!(Opts::default().persist, Persist::Journal);
        assert_eq!("journal".parse::<Persist>(), Ok(Persist::Journal));
        assert_eq!("replay".parse::<Persist>(), Ok(Persist::Replay));
        for bad in ["", "Replay", "memory", "disk", " journal"] {
            let e = bad.parse::<Persist>().unwrap_err();
            assert_eq!(e, UnknownPersist(bad.to_string()));
            let text = e.to_string();
            assert!(text.contains(&format!("{bad:?}")) && text.contains("\"replay\""), "{text}");
            assert_eq!(DriverError::from(e).kind, berth_plugin_api::ErrorKind::InvalidArgument);
        }
        for p in [Persist::Journal, Persist::Replay] {
            assert_eq!(p.to_string().parse::<Persist>(), Ok(p));
        }
    }

    #[test]
    fn persist_decodes_from_options() {
        let decode = |v: serde_json::Value| serde_json::from_value::<Opts>(v);
        assert_eq!(decode(serde_json::json!({})).unwrap().persist, Persist::Journal);
        assert_eq!(decode(serde_json::json!({"persist": "journal"})).unwrap().persist, Persist::Journal);
        let opts = decode(serde_json::json!({"persist": "replay"})).unwrap();
        assert_eq!(opts, Opts { persist: Persist::Replay, ..Opts::default() });
        let e = decode(serde_json::json!({"persist": "sqlite"})).unwrap_err().to_string();
        assert!(e.contains("option persist is \"sqlite\""), "{e}");
        assert!(decode(serde_json::json!({"persist": true})).is_err(), "not a string");
        // Round trip, as a config printer would show it.
        assert_eq!(serde_json::to_value(&opts).unwrap()["persist"], "replay");
    }
}
