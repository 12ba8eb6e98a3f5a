//! Finding a plugin by name, as dockerd does (reference §2): sockets
//! first, then `.spec` and `.json` files.

use std::collections::BTreeSet;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_plugin_api::remote::tolerant;
use berth_plugin_api::{DriverError, DriverResult};
use serde::Deserialize;

use super::breaker;
use super::tls::TlsConfig;

/// Where plugins are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Directories of sockets, in order: `<dir>/<name>.sock`,
    /// `<dir>/<name>/<name>.sock`.
    pub socket_dirs: Vec<PathBuf>,
    /// Directories of spec files, in order: `<name>.spec`,
    /// `<name>/<name>.spec`, `<name>.json`, `<name>/<name>.json`.
    pub spec_dirs: Vec<PathBuf>,
}

/// A plugin found by [`Discovery`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Found {
    /// Its name: the file name without extension.
    pub name: String,
    /// Its address: `unix:///…` for a socket, else the spec's URL.
    pub address: String,
    /// TLS settings: verification off for a `.spec` file (as dockerd does),
    /// the `TLSConfig` of a `.json` file, `None` otherwise.
    pub tls: Option<TlsConfig>,
    /// The socket or spec file it was found by.
    pub source: PathBuf,
}

/// A `.json` spec file.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonSpec {
    #[serde(rename = "Addr")]
    addr: String,
    #[serde(rename = "TLSConfig")]
    tls: Option<JsonTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonTls {
    #[serde(rename = "InsecureSkipVerify")]
    insecure_skip_verify: bool,
    #[serde(rename = "CAFile")]
    ca_file: String,
    #[serde(rename = "CertFile")]
    cert_file: String,
    #[serde(rename = "KeyFile")]
    key_file: String,
}

impl Default for Discovery {
    /// berth's directories, then Docker's.
    fn default() -> Self {
        Discovery::new(
            vec!["/run/berth/plugins".into(), "/run/docker/plugins".into()],
            vec!["/etc/berth/plugins".into(), "/etc/docker/plugins".into(), "/usr/lib/docker/plugins".into()],
        )
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn unknown_protocol(source: &Path, addr: &str) -> DriverError {
    DriverError::invalid_argument(format!(
        "plugin spec {}: address {addr:?} has an unknown protocol: use unix:///path, tcp://host:port or https://host:port",
        source.display()
    ))
}

impl Discovery {
    /// Discovery in the given directories.
    pub fn new(socket_dirs: Vec<PathBuf>, spec_dirs: Vec<PathBuf>) -> Self {
        Discovery { socket_dirs, spec_dirs }
    }

    /// Finds plugin `name`: the first of `<dir>/<name>.sock` and
    /// `<dir>/<name>/<name>.sock` (sockets only) across the socket dirs,
    /// then per spec dir `<name>.spec`, `<name>/<name>.spec`,
    /// `<name>.json`, `<name>/<name>.json`. `Ok(None)` when nothing
    /// exists; a spec file that cannot be used is an error naming it.
    pub fn find(&self, name: &str) -> DriverResult<Option<Found>> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(DriverError::invalid_argument(format!("plugin name {name:?} is invalid")));
        }
        for dir in &self.socket_dirs {
            for path in [dir.join(format!("{name}.sock")), dir.join(name).join(format!("{name}.sock"))] {
                if is_socket(&path) {
                    let address = format!("unix://{}", path.display());
                    return Ok(Some(Found { name: name.to_string(), address, tls: None, source: path }));
                }
            }
        }
        for dir in &self.spec_dirs {
            for ext in ["spec", "json"] {
                for path in [dir.join(format!("{name}.{ext}")), dir.join(name).join(format!("{name}.{ext}"))]
                {
                    if path.is_file() {
                        return read_spec(name, &path).map(Some);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Every plugin in the directories: sockets, `*.spec`, `*.json` and
    /// their per-plugin subdirectory forms; other files are ignored. A
    /// name found twice is the one [`Discovery::find`] gives; a spec file
    /// that cannot be used is skipped with a warning.
    pub fn scan(&self) -> Vec<Found> {
        let mut names = Vec::new();
        let mut seen = BTreeSet::new();
        let dirs = self.socket_dirs.iter().map(|d| (d, true));
        let dirs = dirs.chain(self.spec_dirs.iter().map(|d| (d, false)));
        for (dir, sockets) in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            let exts: &[&str] = if sockets { &["sock"] } else { &["spec", "json"] };
            // A socket dir holds sockets; a spec dir, files.
            let usable = |p: &Path| if sockets { is_socket(p) } else { p.is_file() };
            let mut found: Vec<String> = entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let path = e.path();
                    let file = e.file_name().to_string_lossy().into_owned();
                    if path.is_dir() {
                        let inner = exts.iter().any(|x| usable(&path.join(format!("{file}.{x}"))));
                        return inner.then_some(file);
                    }
                    let (stem, ext) = file.rsplit_once('.')?;
                    (exts.contains(&ext) && !stem.is_empty() && usable(&path)).then(|| stem.to_string())
                })
                .collect();
            found.sort();
            for name in found {
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
        }
        names
            .into_iter()
            .filter_map(|name| match self.find(&name) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(plugin = %name, error = %e.message, "skipping a plugin spec");
                    None
                }
            })
            .collect()
    }

    /// [`Discovery::find`], retried with back-off (250 ms, 500 ms, 1 s, …)
    /// while nothing exists yet, for up to `window`: a plugin that starts
    /// a few seconds after the daemon is still found (moby waits ≈15 s).
    pub fn wait_for(&self, name: &str, window: Duration) -> DriverResult<Option<Found>> {
        let deadline = Instant::now() + window;
        let out = breaker::retry(
            window,
            deadline + Duration::from_secs(1),
            || match self.find(name) {
                Ok(None) => Err(None),
                Ok(Some(found)) => Ok(found),
                Err(e) => Err(Some(e)),
            },
            Option::is_none,
        );
        match out {
            Ok(found) => Ok(Some(found)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }
}

fn read_spec(name: &str, path: &Path) -> DriverResult<Found> {
    let text = std::fs::read(path)
        .map_err(|e| DriverError::io(format!("read plugin spec {}", path.display()), &e))?;
    let found =
        |address: String, tls| Found { name: name.to_string(), address, tls, source: path.to_path_buf() };
    if path.extension().is_some_and(|e| e == "spec") {
        let addr = String::from_utf8_lossy(&text).trim().to_string();
        if !addr.contains("://") {
            return Err(unknown_protocol(path, &addr));
        }
        return Ok(found(addr, Some(TlsConfig::insecure())));
    }
    let spec: JsonSpec = tolerant::from_slice(&text).map_err(|e| {
        DriverError::invalid_argument(format!("plugin spec {}: not a valid JSON spec: {e}", path.display()))
    })?;
    let addr = spec.addr.trim().to_string();
    if addr.is_empty() {
        return Err(DriverError::invalid_argument(format!("plugin spec {}: no Addr", path.display())));
    }
    if !addr.contains("://") {
        return Err(unknown_protocol(path, &addr));
    }
    let file = |s: String| (!s.is_empty()).then(|| PathBuf::from(s));
    let tls = spec.tls.map(|t| TlsConfig {
        // A TLSConfig without a CA file turns verification off (go-connections).
        insecure_skip_verify: t.insecure_skip_verify || t.ca_file.is_empty(),
        ca_file: file(t.ca_file),
        cert_file: file(t.cert_file),
        key_file: file(t.key_file),
    });
    Ok(found(addr, tls))
}
