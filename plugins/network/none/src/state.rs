//! What the driver remembers across a restart: its one network and the
//! endpoints on it, in `<root>/network-state.json`, rewritten atomically
//! after every change.
//!
//! ```json
//! { "version": 1, "networks": [ { "id": "…", "endpoints": ["…"] } ] }
//! ```

use std::collections::BTreeSet;
use std::fs::{self};
use std::io::{self};
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

/// The state file's name under the driver's root.
pub const STATE_FILE: &str = "network-state.json";

const VERSION: u32 = 1;

/// The driver's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its id.
    pub id: String,
    /// The ids of its endpoints.
    #[serde(default)]
    pub endpoints: BTreeSet<String>,
}

impl Network {
    /// A network with no endpoints.
    pub fn new(id: impl Into<String>) -> Self {
        Network { id: id.into(), endpoints: BTreeSet::new() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(default)]
    networks: Vec<Network>,
}

/// Loads the network; a missing file means none, an unreadable or corrupt
/// one is an error naming it.
pub fn load(path: &Path) -> DriverResult<Option<Network>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DriverError::io(format_args!("read network state {}", path.display()), &e)),
    };
    let corrupt = |detail: String| {
        DriverError::internal(format!(
            "corrupt network state file {}: {detail}; repair it, or delete it to forget the network",
            path.display()
        ))
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(corrupt(format!("version {} is not the supported {VERSION}", file.version)));
    }
    let mut networks = file.networks.into_iter();
    let network = networks.next();
    if networks.next().is_some() {
        return Err(corrupt("more than one network recorded".into()));
    }
    if network.as_ref().is_some_and(|n| n.id.is_empty()) {
        return Err(corrupt("a network with an empty id".into()));
    }
    Ok(network)
}

/// Saves the network.
pub fn save(path: &Path, network: Option<&Network>) -> DriverResult<()> {
    let file = StateFile { version: VERSION, networks: network.into_iter().cloned().collect() };
    let json = serde_json::to_vec_pretty(&file)
        .map_err(|e| DriverError::internal(format!("encode network state for {}: {e}", path.display())))?;
    write_atomic(path, &json)
}

use berth_plugin_api::util::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        assert_eq!(load(&path).unwrap(), None);
        let mut n = Network::new("n1");
        n.endpoints.insert("e1".into());
        save(&path, Some(&n)).unwrap();
        assert_eq!(load(&path).unwrap(), Some(n));
        save(&path, None).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        for bad in [
            "[",
            r#"{"version": 2, "networks": []}"#,
            r#"{"version": 1, "networks": [{"id": "a"}, {"id": "b"}]}"#,
            r#"{"version": 1, "networks": [{"id": ""}]}"#,
        ] {
            fs::write(&path, bad).unwrap();
            let e = load(&path).unwrap_err();
            assert_eq!(e.kind, berth_plugin_api::ErrorKind::Internal);
            assert!(e.message.contains(path.to_str().unwrap()), "{}", e.message);
        }
    }
}
