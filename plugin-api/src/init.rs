//! How a driver comes to life: the init request, and its three answers.

use serde::{Deserialize, Serialize};

use crate::DriverResult;

/// The driver kinds a plugin can provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Layers: [`crate::StorageDriver`].
    Storage,
    /// Networks and endpoints: [`crate::NetworkDriver`].
    Network,
    /// Address management: [`crate::IpamDriver`].
    Ipam,
    /// Named volumes: [`crate::VolumeDriver`].
    Volume,
}

impl Kind {
    /// Every kind, in the order the registry lists them.
    pub const ALL: [Kind; 4] = [Kind::Storage, Kind::Network, Kind::Ipam, Kind::Volume];

    /// `storage`, `network`, `ipam` or `volume`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Storage => "storage",
            Kind::Network => "network",
            Kind::Ipam => "ipam",
            Kind::Volume => "volume",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a driver is given when it is constructed.
///
/// `options` is the driver's table from the TOML configuration, as JSON; the
/// driver decodes it into its own typed options and refuses unknown keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct InitRequest {
    /// The plugin's name in the registry (from the config).
    pub name: String,
    /// A directory the driver owns for its persistent state
    /// (`<daemon root>/<kind>/<name>`); created by the core.
    pub root: String,
    /// A directory the driver owns for runtime state that goes with a reboot
    /// (`<exec root>/<kind>/<name>`); created by the core.
    pub run_root: String,
    /// The driver's options from the configuration.
    pub options: serde_json::Value,
}

impl InitRequest {
    /// A request for driver `name` rooted at `root`, with no options.
    pub fn new(name: impl Into<String>, root: impl Into<String>, run_root: impl Into<String>) -> Self {
        InitRequest {
            name: name.into(),
            root: root.into(),
            run_root: run_root.into(),
            options: serde_json::Value::Null,
        }
    }

    /// Decodes `options` into the driver's typed options. `null` gives the
    /// defaults; an unknown key is an invalid-argument error when `T` denies
    /// unknown fields.
    pub fn decode_options<T: serde::de::DeserializeOwned + Default>(&self) -> DriverResult<T> {
        if self.options.is_null() {
            return Ok(T::default());
        }
        serde_json::from_value(self.options.clone()).map_err(|e| {
            crate::DriverError::invalid_argument(format!("options of driver {:?}: {e}", self.name))
        })
    }
}

/// A constructor's answer when it did not fail.
#[derive(Debug)]
pub enum Init<T> {
    /// The driver runs on this host.
    Ready(T),
    /// The driver declines to run here (wrong host, missing kernel feature or
    /// tool); the reason is shown to the operator. Not a failure.
    Skipped(String),
}

impl<T> Init<T> {
    /// Maps the ready driver, keeping a skip as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Init<U> {
        match self {
            Init::Ready(t) => Init::Ready(f(t)),
            Init::Skipped(r) => Init::Skipped(r),
        }
    }
}

/// Who a plugin is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// The plugin's name, e.g. `vfs`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// The driver kinds it provides.
    pub kinds: Vec<Kind>,
    /// The plugin-api version it was built against.
    pub api_version: String,
}

impl Manifest {
    /// A manifest.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        kinds: Vec<Kind>,
        api_version: impl Into<String>,
    ) -> Self {
        Manifest { name: name.into(), version: version.into(), kinds, api_version: api_version.into() }
    }
}
