//! What the macvlan driver remembers across a restart, in
//! `<root>/macvlan-state.json`, rewritten atomically after every change:
//! the networks with their endpoints, and the parent links the driver
//! created (VLAN sub-interfaces, dummies), which it removes with their
//! last network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_plugin_api::DriverResult;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::netutil::{self, Pool};
use crate::options::NetConfig;

/// The state file's name under the driver's root.
pub const STATE_FILE: &str = "macvlan-state.json";

const VERSION: u32 = 1;

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its options, decoded.
    pub config: NetConfig,
    /// The parent link in use (the option, or the dummy standing in).
    pub parent: String,
    /// Its IPAM pools.
    pub pools: Vec<Pool>,
    /// Its endpoints by id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The macvlan link the core moves into the sandbox.
    pub link: String,
    /// IPv4 address with prefix length.
    pub address: Option<IpNet>,
    /// IPv6 address with prefix length.
    pub address_ipv6: Option<IpNet>,
    /// `aa:bb:cc:dd:ee:ff`, empty in passthru mode (the parent's).
    pub mac: String,
}

/// The whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Networks by id.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Parent links the driver created.
    #[serde(default)]
    pub created_parents: BTreeSet<String>,
}

/// Loads the state; a missing file is an empty state.
pub fn load(path: &Path) -> DriverResult<State> {
    netutil::load_state(path, VERSION)
}

/// Saves the state.
pub fn save(path: &Path, state: &State) -> DriverResult<()> {
    netutil::save_state(path, VERSION, state)
}
