//! What the driver remembers across restarts of the daemon (and of the
//! driver): its networks and endpoints, in one JSON file under the
//! driver's root, replaced atomically on every change.

use std::collections::BTreeMap;
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::config::NetConfig;

/// The state file, under the driver's root.
pub const STATE_FILE: &str = "networks.json";

/// Every network the driver made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
}

/// One network: a bridge, and an endpoint per sandbox attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The bridge that connects the network's endpoints.
    pub bridge: String,
    /// Its MTU and pools.
    pub config: NetConfig,
    /// Endpoints by id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// One endpoint: a veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The end that stays in the host namespace, on the bridge.
    pub host: String,
    /// The end the core moves into the sandbox on join.
    pub peer: String,
    /// The MAC address of `peer`.
    pub mac: String,
    /// The sandbox it is joined to (its namespace path); empty when not
    /// joined.
    #[serde(default)]
    pub sandbox: String,
}

/// Reads the state file; no file is an empty state.
pub fn load(path: &Path) -> DriverResult<State> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            DriverError::internal(format!(
                "state file {} is unreadable: {e}; restore it, or remove it and the driver's links",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(DriverError::io(format_args!("read {}", path.display()), &e)),
    }
}

/// Writes the state file so that a crash leaves the old or the new one.
pub fn save(path: &Path, state: &State) -> DriverResult<()> {
    let json =
        serde_json::to_vec_pretty(state).map_err(|e| DriverError::internal(format!("encode state: {e}")))?;
    berth_plugin_api::util::write_atomic(path, &json)
}
