//! The daemon's TOML configuration.
//!
//! Unknown keys are errors naming `file:line:column`; with no file the
//! daemon runs on an embedded default ([`Config::embedded`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The embedded default configuration text.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// A configuration error, pointing at the place in the file when it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Malformed TOML, an unknown key or a wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The file (or `<embedded default>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// Well-formed but inconsistent, e.g. a plugin with neither path nor remote.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Storage driver selection.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Network defaults.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Volume defaults.
    #[serde(default)]
    pub volume: VolumeConfig,
    /// The plugins to load, in order.
    #[serde(default)]
    pub plugin: Vec<PluginConfig>,
    /// Where this configuration came from (not a TOML key).
    #[serde(skip)]
    pub source: String,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Persistent state: store, layers, volumes.
    pub root: PathBuf,
    /// Runtime state: sockets, mounts, namespaces.
    pub exec_root: PathBuf,
    /// The API socket (mode 0660).
    pub socket: PathBuf,
    /// Search path for relative plugin paths.
    pub plugin_dirs: Vec<PathBuf>,
    /// Default deadline for a driver call, e.g. `30s`, `500ms`, `2m`.
    pub call_timeout: String,
    /// Where remote plugins' sockets are discovered (`<dir>/<name>.sock`,
    /// `<dir>/<name>/<name>.sock`), in order.
    pub plugin_socket_dirs: Vec<PathBuf>,
    /// Where remote plugins' `.spec` and `.json` files are discovered, in
    /// order.
    pub plugin_spec_dirs: Vec<PathBuf>,
    /// How long a lookup by name waits for a remote plugin's socket or
    /// spec file to appear (dockerd waits about 15 s), e.g. `15s`.
    pub plugin_wait: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            root: "/var/lib/berth".into(),
            exec_root: "/run/berth".into(),
            socket: "/run/berth/berth.sock".into(),
            plugin_dirs: vec!["/usr/local/lib/berth/plugins".into(), "/usr/lib/berth/plugins".into()],
            call_timeout: "30s".into(),
            plugin_socket_dirs: vec!["/run/berth/plugins".into(), "/run/docker/plugins".into()],
            plugin_spec_dirs: vec![
                "/etc/berth/plugins".into(),
                "/etc/docker/plugins".into(),
                "/usr/lib/docker/plugins".into(),
            ],
            plugin_wait: "15s".into(),
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The storage driver containers and images use.
    pub driver: String,
    /// Options handed to that driver (merged over its plugin's options).
    pub options: toml::Table,
}

/// One entry of `[network] default_address_pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    /// The prefix to carve networks from, e.g. `172.30.0.0/16`.
    pub base: String,
    /// The prefix length of each network, e.g. `24`.
    pub size: u8,
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The network driver used when none is named.
    pub default: String,
    /// The IPAM driver used when none is named; it receives
    /// `default_address_pools` in its options.
    pub ipam: String,
    /// Pools networks are carved from when no subnet is given.
    pub default_address_pools: Vec<AddressPool>,
}

/// `[volume]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeConfig {
    /// The volume driver used when none is named.
    pub default: String,
}

/// One `[[plugin]]`: a shared object (`path`) or a remote driver (`remote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name in the registry; each of its drivers goes by it.
    pub name: String,
    /// A shared object: absolute, or relative to the plugin search path.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A remote driver: `unix:///…`, `tcp://…` or `https://…`.
    #[serde(default)]
    pub remote: Option<String>,
    /// Deadline for each call to this plugin's drivers.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Per-method deadlines of a remote plugin, overriding `timeout`:
    /// keys are methods (`Mount`) or qualified methods
    /// (`VolumeDriver.Mount`, which wins), values durations.
    #[serde(default)]
    pub timeouts: std::collections::BTreeMap<String, String>,
    /// Options handed to the plugin's drivers.
    #[serde(default)]
    pub options: toml::Table,
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_TOML, "<embedded default>").expect("the embedded default config is valid")
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Parse {
                file: file.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.source = file.to_string();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { file: self.source.clone(), message };
        parse_duration(&self.daemon.call_timeout)
            .map_err(|e| invalid(format!("[daemon] call_timeout: {e}")))?;
        parse_duration(&self.daemon.plugin_wait)
            .map_err(|e| invalid(format!("[daemon] plugin_wait: {e}")))?;
        let mut names = BTreeSet::new();
        for p in &self.plugin {
            if !valid_name(&p.name) {
                return Err(invalid(format!(
                    "plugin name {:?} is invalid: use letters, digits, '-', '_' and '.'",
                    p.name
                )));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(format!("plugin name {:?} is used twice: names must be unique", p.name)));
            }
            match (&p.path, &p.remote) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(invalid(format!(
                        "plugin {:?} needs exactly one of `path` (shared object) or `remote` (URL)",
                        p.name
                    )))
                }
            }
            if let Some(t) = &p.timeout {
                parse_duration(t).map_err(|e| invalid(format!("plugin {:?} timeout: {e}", p.name)))?;
            }
            if !p.timeouts.is_empty() && p.remote.is_none() {
                return Err(invalid(format!(
                    "plugin {:?}: `timeouts` (per method) applies to remote plugins only; use `timeout`",
                    p.name
                )));
            }
            for (method, t) in &p.timeouts {
                parse_duration(t)
                    .map_err(|e| invalid(format!("plugin {:?} timeouts.{method:?}: {e}", p.name)))?;
            }
            if let Some(url) = &p.remote {
                let known = ["unix://", "tcp://", "http://", "https://"];
                if !known.iter().any(|s| url.starts_with(s)) {
                    return Err(invalid(format!(
                        "plugin {:?}: remote {url:?} has an unknown protocol: use unix:///path, tcp://host:port or https://host:port",
                        p.name
                    )));
                }
            }
        }
        for pool in &self.network.default_address_pools {
            let ok = pool.base.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= pool.size)
            });
            if !ok {
                return Err(invalid(format!(
                    "[network] default_address_pools: {:?} with size {} is not a valid pool",
                    pool.base, pool.size
                )));
            }
        }
        Ok(())
    }

    /// The per-method deadlines of plugin `p` (already validated).
    pub fn method_timeouts(p: &PluginConfig) -> std::collections::BTreeMap<String, Duration> {
        p.timeouts.iter().filter_map(|(k, v)| parse_duration(v).ok().map(|d| (k.clone(), d))).collect()
    }

    /// How long a lookup by name waits for a remote plugin to appear.
    pub fn plugin_wait(&self) -> Duration {
        parse_duration(&self.daemon.plugin_wait).unwrap_or(Duration::from_secs(15))
    }

    /// The default call deadline.
    pub fn call_timeout(&self) -> Duration {
        parse_duration(&self.daemon.call_timeout).unwrap_or(Duration::from_secs(30))
    }

    /// The options for plugin `p`'s driver of `kind`, as JSON: the plugin's
    /// options, with `[storage] options` merged over them for the selected
    /// storage driver and `[network] default_address_pools` given to the
    /// selected IPAM driver, and `${root}` / `${exec_root}` expanded.
    pub fn driver_options(&self, p: &PluginConfig, kind: berth_plugin_api::Kind) -> serde_json::Value {
        use berth_plugin_api::Kind;
        let mut table = p.options.clone();
        if kind == Kind::Storage && p.name == self.storage.driver {
            for (k, v) in &self.storage.options {
                table.insert(k.clone(), v.clone());
            }
        }
        if kind == Kind::Ipam
            && p.name == self.network.ipam
            && !self.network.default_address_pools.is_empty()
            && !table.contains_key("default_address_pools")
        {
            let pools = toml::Value::try_from(&self.network.default_address_pools)
                .expect("address pools serialize to TOML");
            table.insert("default_address_pools".into(), pools);
        }
        if table.is_empty() {
            return serde_json::Value::Null;
        }
        let mut json = serde_json::to_value(&table).unwrap_or(serde_json::Value::Null);
        expand(&mut json, &self.daemon.root, &self.daemon.exec_root);
        json
    }
}

fn expand(v: &mut serde_json::Value, root: &Path, exec_root: &Path) {
    match v {
        serde_json::Value::String(s) => {
            *s = s
                .replace("${root}", &root.display().to_string())
                .replace("${exec_root}", &exec_root.display().to_string());
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| expand(x, root, exec_root)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| expand(x, root, exec_root)),
        _ => {}
    }
}

/// Whether `name` is a valid plugin/driver name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

/// Parses `30s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?} has an unknown unit: use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(d)
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::Kind;

    #[test]
    fn the_embedded_default_parses_and_names_the_builtin_plugins() {
        let c = Config::embedded();
        let names: Vec<_> = c.plugin.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["vfs", "none", "host", "bridge", "macvlan", "default", "null", "local"]);
        assert_eq!(c.storage.driver, "vfs");
        assert_eq!(c.call_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_column() {
        let text = "[daemon]\nroot = \"/x\"\n  bogus_key = 1\n";
        let err = Config::parse(text, "/etc/berth/berth.toml").unwrap_err();
        match &err {
            ConfigError::Parse { file, line, column, message } => {
                assert_eq!(file, "/etc/berth/berth.toml");
                assert_eq!((*line, *column), (3, 3));
                assert!(message.contains("bogus_key"), "{message}");
            }
            other => panic!("wrong error {other:?}"),
        }
        assert!(err.to_string().starts_with("/etc/berth/berth.toml:3:3: "), "{err}");
    }

    #[test]
    fn an_unknown_key_in_a_plugin_table_is_refused() {
        let text = "[[plugin]]\nname = \"x\"\npath = \"a.so\"\nflavour = \"red\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 4, column: 1, .. }), "{err:?}");
    }

    #[test]
    fn malformed_toml_is_a_parse_error_with_a_position() {
        let err = Config::parse("[daemon\nroot=1", "c.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 1, .. }), "{err:?}");
    }

    #[test]
    fn a_wrong_type_is_a_parse_error() {
        let err = Config::parse("[daemon]\nroot = 5\n", "c.toml").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn duplicate_plugin_names_are_refused() {
        let text = "[[plugin]]\nname=\"a\"\npath=\"x.so\"\n[[plugin]]\nname=\"a\"\npath=\"y.so\"\n";
        let err = Config::parse(text, "c.toml").unwrap_err();
        assert!(err.to_string().contains("used twice"), "{err}");
    }

    #[test]
    fn a_plugin_needs_exactly_one_transport() {
        let both = "[[plugin]]\nname=\"a\"\npath=\"x.so\"\nremote=\"unix:///x.sock\"\n";
        assert!(Config::parse(both, "c").unwrap_err().to_string().contains("exactly one"));
        let none = "[[plugin]]\nname=\"a\"\n";
        assert!(Config::parse(none, "c").unwrap_err().to_string().contains("exactly one"));
    }

    #[test]
    fn remote_plugins_take_per_method_timeouts_and_known_schemes_only() {
        let ok = "[[plugin]]\nname=\"r\"\nremote=\"unix:///x.sock\"\ntimeout=\"5s\"\ntimeouts={ \"VolumeDriver.Mount\"=\"2m\", Get=\"500ms\" }\n";
        let c = Config::parse(ok, "c").unwrap();
        let t = Config::method_timeouts(&c.plugin[0]);
        assert_eq!(t["VolumeDriver.Mount"], Duration::from_secs(120));
        assert_eq!(t["Get"], Duration::from_millis(500));
        let bad = "[[plugin]]\nname=\"r\"\nremote=\"unix:///x.sock\"\ntimeouts={ Get=\"soon\" }\n";
        assert!(Config::parse(bad, "c").unwrap_err().to_string().contains("timeouts"));
        let so = "[[plugin]]\nname=\"r\"\npath=\"x.so\"\ntimeouts={ Get=\"1s\" }\n";
        assert!(Config::parse(so, "c").unwrap_err().to_string().contains("remote plugins only"));
        let scheme = "[[plugin]]\nname=\"r\"\nremote=\"/run/x.sock\"\n";
        assert!(Config::parse(scheme, "c").unwrap_err().to_string().contains("unknown protocol"));
        let d = Config::embedded();
        assert_eq!(d.daemon.plugin_socket_dirs[0], PathBuf::from("/run/berth/plugins"));
        assert_eq!(d.daemon.plugin_spec_dirs.len(), 3);
    }

    #[test]
    fn bad_durations_and_names_are_refused() {
        assert!(Config::parse("[daemon]\ncall_timeout=\"soon\"\n", "c").is_err());
        assert!(Config::parse("[[plugin]]\nname=\"a/b\"\npath=\"x.so\"\n", "c").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn driver_options_merge_storage_options_pools_and_expand_roots() {
        let text = r#"
[daemon]
root = "/r"
exec_root = "/e"
[storage]
driver = "vfs"
options = { size = "10G" }
[network]
ipam = "default"
default_address_pools = [{ base = "10.9.0.0/16", size = 24 }]
[[plugin]]
name = "vfs"
path = "v.so"
options = { dir = "${root}/vfs", keep = true }
[[plugin]]
name = "default"
path = "i.so"
"#;
        let c = Config::parse(text, "c").unwrap();
        let vfs = c.driver_options(&c.plugin[0], Kind::Storage);
        assert_eq!(vfs, serde_json::json!({"dir": "/r/vfs", "keep": true, "size": "10G"}));
        let ipam = c.driver_options(&c.plugin[1], Kind::Ipam);
        assert_eq!(ipam, serde_json::json!({"default_address_pools": [{"base": "10.9.0.0/16", "size": 24}]}));
        assert_eq!(c.driver_options(&c.plugin[1], Kind::Volume), serde_json::Value::Null);
    }
}
