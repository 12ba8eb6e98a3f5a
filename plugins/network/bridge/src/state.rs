//! What the bridge driver remembers across a restart, in
//! `<root>/bridge-state.json`, rewritten atomically after every change.
//!
//! ```json
//! { "version": 1, "networks": { "<id>": { "config": {…}, "pools": […],
//!   "owned_bridge": true, "added_addresses": […],
//!   "endpoints": { "<id>": { "host_veth": "vbr…", "peer_veth": "vbc…", … } } } } }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use berth_plugin_api::DriverResult;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::netutil::{self, Pool};
use crate::options::{NetConfig, PortBinding};

/// The state file's name under the driver's root.
pub const STATE_FILE: &str = "bridge-state.json";

const VERSION: u32 = 1;

/// One network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its options, decoded.
    pub config: NetConfig,
    /// Its IPAM pools.
    pub pools: Vec<Pool>,
    /// The driver created the bridge (and deletes it); otherwise the
    /// operator's bridge was adopted and survives the network (NW-02).
    pub owned_bridge: bool,
    /// Gateway addresses the driver put on the bridge (removed with the
    /// network from an adopted bridge).
    pub added_addresses: Vec<IpNet>,
    /// Its endpoints by id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The veth end on the bridge, in the host namespace.
    pub host_veth: String,
    /// The veth end the core moves into the sandbox.
    pub peer_veth: String,
    /// IPv4 address with prefix length.
    pub address: Option<IpNet>,
    /// IPv6 address with prefix length.
    pub address_ipv6: Option<IpNet>,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Ports asked for at create or join, kept for
    /// `program_external_connectivity` calls that carry none.
    #[serde(default)]
    pub requested_ports: Vec<PortBinding>,
    /// Ports published now, with their host ports chosen.
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// The veth pair is made at `join` rather than at create (berth's core
    /// asked for [`berth_plugin_api::network::JOIN_IN_PLACE`]); `false` once made.
    #[serde(default)]
    pub deferred: bool,
}

/// The whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Networks by id.
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
}

/// Loads the state; a missing file is an empty state.
pub fn load(path: &Path) -> DriverResult<State> {
    netutil::load_state(path, VERSION)
}

/// Saves the state.
pub fn save(path: &Path, state: &State) -> DriverResult<()> {
    netutil::save_state(path, VERSION, state)
}
