//! Docker's views of images: `GET /images/json` ([`ImageSummary`]) and
//! `GET /images/{name}/json` ([`ImageInspect`]), both from the in-memory
//! index (inspect asks the storage driver for the top layer's metadata).

use std::collections::BTreeMap;

use berth_plugin_api::storage::MetadataRequest;
use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use super::records::{hex_of, ImageRecord};
use super::service::{lookup, ImageService};
use crate::filters::Filters;

/// Filters `GET /images/json` accepts.
pub const LIST_FILTERS: &[&str] = &["before", "dangling", "label", "reference", "since"];

/// Docker's time for "never": Go's zero `time.Time`.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One image of `GET /images/json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageSummary {
    /// `sha256:<hex>`.
    pub id: String,
    /// Always empty: loaded images have no parent.
    pub parent_id: String,
    /// References (`name:tag`); only those matching a `reference` filter
    /// when one is given, as in Docker.
    pub repo_tags: Vec<String>,
    /// Always empty: berth does not pull, so no image has a registry digest.
    pub repo_digests: Vec<String>,
    /// The config's `created`, in seconds since the epoch.
    pub created: i64,
    /// Bytes of all its layers.
    pub size: i64,
    /// Not computed: -1.
    pub shared_size: i64,
    /// Same as `size` (deprecated by Docker, still sent).
    pub virtual_size: i64,
    /// The config's labels.
    pub labels: BTreeMap<String, String>,
    /// Not computed: -1.
    pub containers: i64,
}

/// `GraphDriver` of an inspect answer: where the top layer lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GraphDriverData {
    /// The storage driver's name.
    pub name: String,
    /// The driver's metadata of the top layer (paths and the like).
    pub data: BTreeMap<String, String>,
}

/// `RootFS` of an inspect answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Diff IDs, base first.
    pub layers: Vec<String>,
}

/// `Metadata` of an inspect answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageMetadata {
    /// When a tag was last put on the image (RFC 3339); Go's zero time if never.
    pub last_tag_time: String,
}

/// The image config's `config` (the defaults for containers), serialized
/// as Docker's `container.Config` is: every field present except those
/// Docker marks `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    /// Host name (empty in image configs).
    pub hostname: String,
    /// Domain name (empty in image configs).
    pub domainname: String,
    /// The user processes run as.
    pub user: String,
    /// Attach stdin (false in image configs).
    pub attach_stdin: bool,
    /// Attach stdout (false in image configs).
    pub attach_stdout: bool,
    /// Attach stderr (false in image configs).
    pub attach_stderr: bool,
    /// Ports the image exposes (`"80/tcp": {}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Allocate a terminal (false in image configs).
    pub tty: bool,
    /// Keep stdin open (false in image configs).
    pub open_stdin: bool,
    /// Close stdin after one attach (false in image configs).
    pub stdin_once: bool,
    /// Environment, `KEY=value`.
    pub env: Option<Vec<String>>,
    /// The default command.
    pub cmd: Option<Vec<String>>,
    /// The health check, as the config holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<serde_json::Value>,
    /// Windows only: the command line is already escaped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub args_escaped: bool,
    /// The image name (empty in image configs).
    pub image: String,
    /// Paths that become anonymous volumes.
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// The working directory.
    pub working_dir: String,
    /// The entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Networking disabled.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub network_disabled: bool,
    /// A MAC address (deprecated).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    /// `ONBUILD` triggers.
    pub on_build: Option<Vec<String>>,
    /// User labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// The signal that stops a container.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Seconds to wait after the stop signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// The shell `RUN` uses (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// `GET /images/{name}/json`, in Docker's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInspect {
    /// `sha256:<hex>`.
    pub id: String,
    /// References (`name:tag`).
    pub repo_tags: Vec<String>,
    /// Always empty (no registry digests).
    pub repo_digests: Vec<String>,
    /// Always empty: loaded images have no parent.
    pub parent: String,
    /// The config's `comment`.
    pub comment: String,
    /// The config's `created` (RFC 3339), empty when absent.
    pub created: String,
    /// The config's `docker_version`, if any.
    pub docker_version: String,
    /// The config's `author`.
    pub author: String,
    /// The config's `config`, as Docker shows it; null when absent.
    pub config: Option<ContainerConfig>,
    /// The config's `architecture`.
    pub architecture: String,
    /// The config's `variant`, left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// The config's `os`.
    pub os: String,
    /// The config's `os.version`, left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub os_version: String,
    /// Bytes of all its layers.
    pub size: i64,
    /// Same as `size` (deprecated by Docker, still sent).
    pub virtual_size: i64,
    /// Where the top layer lives.
    pub graph_driver: GraphDriverData,
    /// The layers' diff IDs.
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    /// Tag times.
    pub metadata: ImageMetadata,
}

/// A string field of the config JSON (empty when absent).
fn text(config: &serde_json::Value, key: &str) -> String {
    config.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

/// The config's `config` object, as Docker shows it.
fn container_config(record: &ImageRecord) -> Option<ContainerConfig> {
    let raw = record.config.get("config").filter(|v| !v.is_null())?;
    match serde_json::from_value(raw.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(image = %record.id, "image config's config object is malformed: {e}");
            None
        }
    }
}

/// The config's labels.
fn labels(record: &ImageRecord) -> BTreeMap<String, String> {
    record
        .config
        .get("config")
        .and_then(|c| c.get("Labels"))
        .and_then(|l| l.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
        .unwrap_or_default()
}

fn summary(record: &ImageRecord, tags: Vec<String>) -> ImageSummary {
    let size = i64::try_from(record.size).unwrap_or(i64::MAX);
    ImageSummary {
        id: record.id.clone(),
        parent_id: String::new(),
        repo_tags: tags,
        repo_digests: Vec::new(),
        created: record.created,
        size,
        shared_size: -1,
        virtual_size: size,
        labels: labels(record),
        containers: -1,
    }
}

impl ImageService {
    /// Docker's `GET /images/json`: filters `dangling`, `label`,
    /// `reference` (Docker's glob match on `name:tag` or `name`), `before`
    /// and `since` (images created before / after the named one); any
    /// other filter is an invalid-argument error (`invalid filter 'x'`).
    /// `all` is accepted and changes nothing: no intermediate images exist.
    /// Newest first.
    pub fn list(&self, filters: &Filters, all: bool) -> DriverResult<Vec<ImageSummary>> {
        let _ = all;
        if let Some(json) = filters.to_json() {
            Filters::parse(&json, LIST_FILTERS)?;
        }
        let dangling = filters.bool("dangling")?;
        let patterns: Vec<&str> = filters.values("reference").collect();
        for p in &patterns {
            glob(p, "").map_err(|()| {
                DriverError::invalid_argument(format!(
                    "invalid filter 'reference={p}': syntax error in pattern"
                ))
            })?;
        }
        let index = self.read();
        let created_of = |name: &str| -> DriverResult<i64> {
            let (id, _) = lookup(&index, name)?;
            Ok(index.images.get(&id).map(|r| r.created).unwrap_or(0))
        };
        let before = filters.values("before").map(created_of).collect::<DriverResult<Vec<_>>>()?;
        let since = filters.values("since").map(created_of).collect::<DriverResult<Vec<_>>>()?;
        let mut out = Vec::new();
        for record in index.images.values() {
            let mut tags = record.tags.clone();
            if !patterns.is_empty() {
                tags.retain(|t| patterns.iter().any(|p| familiar_match(p, t)));
                if tags.is_empty() {
                    continue;
                }
            }
            let keep = dangling.map_or(true, |d| d == record.tags.is_empty())
                && filters.labels_match("label", &labels(record))
                && before.iter().all(|b| record.created < *b)
                && since.iter().all(|s| record.created > *s);
            if keep {
                out.push(summary(record, tags));
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Docker's `GET /images/{name}/json`; `name` as [`ImageService::resolve`]
    /// takes it.
    pub fn inspect(&self, name: &str) -> DriverResult<ImageInspect> {
        let (record, layer_driver) = {
            let index = self.read();
            let (id, _) = lookup(&index, name)?;
            let record = index.images.get(&id).cloned().ok_or_else(|| super::service::no_such(name))?;
            let driver = record.chain_ids.last().and_then(|c| index.layers.get(c)).map(|l| l.driver.clone());
            (record, driver)
        };
        let driver_name = layer_driver.clone().unwrap_or_else(|| self.driver_name().to_string());
        let data = match (layer_driver, record.chain_ids.last()) {
            (Some(d), Some(top)) => {
                let req = MetadataRequest::new(hex_of(top));
                match self
                    .drivers()
                    .storage(&d)
                    .and_then(|drv| drv.call("metadata", move |x| x.metadata(req)))
                {
                    Ok(m) => m.metadata,
                    Err(e) => {
                        tracing::debug!(image = %record.id, "no graph driver metadata: {e}");
                        BTreeMap::new()
                    }
                }
            }
            _ => BTreeMap::new(),
        };
        let c = &record.config;
        let size = i64::try_from(record.size).unwrap_or(i64::MAX);
        Ok(ImageInspect {
            id: record.id.clone(),
            repo_tags: record.tags.clone(),
            repo_digests: Vec::new(),
            parent: String::new(),
            comment: text(c, "comment"),
            created: text(c, "created"),
            docker_version: text(c, "docker_version"),
            author: text(c, "author"),
            config: container_config(&record),
            architecture: text(c, "architecture"),
            variant: text(c, "variant"),
            os: text(c, "os"),
            os_version: text(c, "os.version"),
            size,
            virtual_size: size,
            graph_driver: GraphDriverData { name: driver_name, data },
            root_fs: RootFs { kind: "layers".into(), layers: record.diff_ids.clone() },
            metadata: ImageMetadata {
                last_tag_time: record.last_tag_time.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
            },
        })
    }
}

/// Docker's `reference.FamiliarMatch`: the pattern matches `name:tag` or
/// just `name`.
fn familiar_match(pattern: &str, reference: &str) -> bool {
    let name = super::records::repository(reference);
    glob(pattern, reference).unwrap_or(false) || glob(pattern, name).unwrap_or(false)
}

/// Go's `path.Match`: `*` is any run of non-`/` characters, `?` one
/// non-`/` character, `[...]` a class (`^` negates, `a-z` ranges), `\`
/// escapes. A malformed pattern is `Err(())`.
pub(super) fn glob(pattern: &str, name: &str) -> Result<bool, ()> {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let matched = glob_at(&p, &s)?;
    // Like Go, check the rest of the pattern is well-formed even when the
    // name ran out first.
    validate(&p)?;
    Ok(matched)
}

fn validate(p: &[char]) -> Result<(), ()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1).ok_or(())?;
                i += 2;
            }
            '[' => {
                let (_, used) = class(&p[i + 1..], None)?;
                i += 1 + used;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn glob_at(p: &[char], s: &[char]) -> Result<bool, ()> {
    match p.first() {
        None => Ok(s.is_empty()),
        Some('*') => {
            let mut i = 0;
            loop {
                if glob_at(&p[1..], &s[i..])? {
                    return Ok(true);
                }
                if i == s.len() || s[i] == '/' {
                    return Ok(false);
                }
                i += 1;
            }
        }
        Some('?') => match s.first() {
            Some(c) if *c != '/' => glob_at(&p[1..], &s[1..]),
            _ => Ok(false),
        },
        Some('[') => {
            let (matched, used) = class(&p[1..], s.first().filter(|c| **c != '/'))?;
            if matched {
                glob_at(&p[1 + used..], &s[1..])
            } else {
                Ok(false)
            }
        }
        Some('\\') => {
            let c = p.get(1).ok_or(())?;
            if s.first() == Some(c) {
                glob_at(&p[2..], &s[1..])
            } else {
                Ok(false)
            }
        }
        Some(c) => {
            if s.first() == Some(c) {
                glob_at(&p[1..], &s[1..])
            } else {
                Ok(false)
            }
        }
    }
}

/// A character class after its `[`: whether `c` is in it (false for no
/// character) and how many pattern characters it took, `]` included.
fn class(p: &[char], c: Option<&char>) -> Result<(bool, usize), ()> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *p.get(i).ok_or(())?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        i += 1;
        if lo == '\\' {
            lo = *p.get(i).ok_or(())?;
            i += 1;
        }
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|n| *n != ']') {
            hi = p[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *p.get(i).ok_or(())?;
                i += 1;
            }
        }
        if c.is_some_and(|c| lo <= *c && *c <= hi) {
            matched = true;
        }
    }
    Ok((c.is_some() && matched != negate, i))
}

/// Seconds since the epoch of an RFC 3339 time
/// (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`); `None` when malformed.
pub(super) fn unix_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let sep_ok =
        b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':';
    if !sep_ok {
        return None;
    }
    let (y, mo, d, h, mi, se) =
        (num(0, 4)?, num(5, 7)?, num(8, 10)?, num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_rfc3339_times_parse_to_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2024-02-29T12:34:56.123456789Z"), Some(1_709_210_096));
        assert_eq!(unix_seconds("2024-02-29T14:34:56+02:00"), Some(1_709_210_096));
        assert_eq!(unix_seconds("1969-12-31T23:59:59Z"), Some(-1));
        for bad in ["", "2024-02-29", "2024-02-29T12:34:56", "2024-13-01T00:00:00Z", "2024-02-29T12:34:56.Z"]
        {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn images_reference_globs_match_as_go_path_match() {
        assert!(familiar_match("busybox", "busybox:latest"));
        assert!(familiar_match("busy*", "busybox:1"));
        assert!(familiar_match("busybox:1.*", "busybox:1.36"));
        assert!(!familiar_match("busybox:2*", "busybox:1.36"));
        assert!(!familiar_match("*", "acme/app:1"));
        assert!(familiar_match("*/*", "acme/app:1"));
        assert!(familiar_match("acme/ap[a-p]", "acme/app:1"));
        assert!(!familiar_match("acme/ap[^p]", "acme/app:1"));
        assert!(familiar_match("a?me/app:?", "acme/app:1"));
        assert_eq!(glob("[a-", "x"), Err(()));
        assert_eq!(glob("abc[", "x"), Err(()));
        assert_eq!(glob("\\", "x"), Err(()));
    }
}
