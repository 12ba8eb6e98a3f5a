//! Listing, inspecting and pruning networks, in Docker's shapes.

use std::collections::BTreeMap;

use berth_plugin_api::{DriverError, DriverResult};

use super::{
    ConfigFrom, EndpointView, IpamSpec, NetworkPruneReport, NetworkRecord, NetworkService, NetworkView,
};
use crate::filters::Filters;
use crate::store::now_secs;

/// Filters `GET /networks` accepts.
pub const LIST_FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
/// Filters `POST /networks/prune` accepts.
pub const PRUNE_FILTERS: &[&str] = &["label", "label!", "until"];

impl NetworkService {
    fn view(&self, n: &NetworkRecord) -> NetworkView {
        let containers: BTreeMap<String, EndpointView> = self
            .read()
            .endpoints
            .get(&n.id)
            .map(|eps| {
                eps.values()
                    .map(|e| {
                        (
                            e.sandbox_id.clone(),
                            EndpointView {
                                name: e.name.clone(),
                                endpoint_id: e.id.clone(),
                                mac_address: e.mac.clone(),
                                ipv4_address: e.ipv4.clone(),
                                ipv6_address: e.ipv6.clone(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        NetworkView {
            name: n.name.clone(),
            id: n.id.clone(),
            created: n.created.clone(),
            scope: n.scope.clone(),
            driver: n.driver.clone(),
            enable_ipv4: n.enable_ipv4,
            enable_ipv6: n.enable_ipv6,
            ipam: IpamSpec {
                driver: n.ipam_driver.clone(),
                config: n.pools.iter().map(|p| p.spec.clone()).collect(),
                options: n.ipam_options.clone(),
            },
            internal: n.internal,
            attachable: n.attachable,
            ingress: false,
            config_from: ConfigFrom::default(),
            config_only: false,
            containers,
            options: n.options.clone(),
            labels: n.labels.clone(),
        }
    }

    /// One network by id, name or unique id prefix.
    pub fn inspect(&self, name_or_id: &str) -> DriverResult<NetworkView> {
        Ok(self.view(&self.find_network(name_or_id)?))
    }

    /// Networks matching `filters` (names from [`LIST_FILTERS`]), by name.
    pub fn list(&self, filters: &Filters) -> DriverResult<Vec<NetworkView>> {
        let dangling = filters.bool("dangling")?;
        for t in filters.values("type") {
            if t != "custom" && t != "builtin" {
                return Err(DriverError::invalid_argument(format!(
                    "invalid filter 'type={t}': use custom or builtin"
                )));
            }
        }
        let mut records: Vec<NetworkRecord> = self.read().networks.values().cloned().collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = Vec::new();
        for n in records {
            let used = self.read().endpoints.get(&n.id).is_some_and(|e| !e.is_empty());
            let keep = filters.exact("driver", &n.driver)
                && filters.exact("scope", &n.scope)
                && filters.labels_match("label", &n.labels)
                && filters.regex("name", &n.name)?
                && (!filters.has("id") || filters.values("id").any(|v| n.id.starts_with(v)))
                && (!filters.has("type") || filters.values("type").any(|v| v == "custom"))
                && dangling != Some(used);
            if keep {
                out.push(self.view(&n));
            }
        }
        Ok(out)
    }

    /// Removes every network with no endpoint that `filters` (names from
    /// [`PRUNE_FILTERS`]) select; one that fails to go is logged and
    /// skipped, as in Docker.
    pub fn prune(&self, filters: &Filters) -> DriverResult<NetworkPruneReport> {
        let until = filters.values("until").map(until_secs).collect::<DriverResult<Vec<u64>>>()?;
        let mut candidates: Vec<NetworkRecord> = {
            let index = self.read();
            index
                .networks
                .values()
                .filter(|n| index.endpoints.get(&n.id).map_or(true, |e| e.is_empty()))
                .filter(|n| {
                    filters.labels_match("label", &n.labels) && filters.labels_exclude("label!", &n.labels)
                })
                .filter(|n| until.iter().all(|u| n.created_unix < *u))
                .cloned()
                .collect()
        };
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        let mut report = NetworkPruneReport::default();
        for n in candidates {
            match self.delete(&n.id) {
                Ok(()) => report.networks_deleted.push(n.name),
                Err(e) => tracing::warn!(network = %n.name, "prune: not removed: {e}"),
            }
        }
        Ok(report)
    }
}

/// The `until` filter as seconds since the epoch: a Unix time (`1700000000`
/// or with a fraction), an RFC 3339 time, or a duration before now (`10m`,
/// `24h`, `1h30m`, Go's units `ns us ms s m h`).
pub fn until_secs(v: &str) -> DriverResult<u64> {
    let bad = || {
        DriverError::invalid_argument(format!(
            "invalid filter 'until={v}': use a Unix time, an RFC 3339 time or a duration such as 24h"
        ))
    };
    if let Ok(f) = v.parse::<f64>() {
        return if f >= 0.0 { Ok(f as u64) } else { Err(bad()) };
    }
    if let Some(t) = rfc3339_secs(v) {
        return u64::try_from(t).map_err(|_| bad());
    }
    let mut total = 0f64;
    let mut rest = v;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[u..];
    }
    Ok(now_secs().saturating_sub(total as u64))
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn rfc3339_secs(s: &str) -> Option<i64> {
    if !berth_plugin_api::util::is_rfc3339(s) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let tz = s.rfind(['Z', 'z', '+', '-']).filter(|i| *i >= 19)?;
    let offset = match &s[tz..] {
        "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600 + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_unix_times_rfc3339_and_durations() {
        assert_eq!(until_secs("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(until_secs("2024-02-29T12:34:56Z").unwrap(), 1_709_210_096);
        assert_eq!(until_secs("2024-02-29T14:34:56+02:00").unwrap(), 1_709_210_096);
        let now = now_secs();
        let h = until_secs("1h30m").unwrap();
        assert!((now - 5400..=now - 5399).contains(&h), "{h} vs {now}");
        for bad in ["", "yesterday", "10x", "-5"] {
            assert!(until_secs(bad).is_err(), "{bad}");
        }
    }
}
