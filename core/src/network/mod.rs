//! Networks, endpoints and sandboxes over the registry's network and IPAM
//! drivers, in Docker's call order (`shared/reference/docker-plugin-protocol.md`
//! §5), every step crash-safe through the ledger.
//!
//! # Call order
//!
//! ```text
//! create:      [GwAllocCheck] → IPAM DefaultAddressSpaces, RequestPool
//!              → RequestAddress(gateway) → RequestAddress(aux…) → CreateNetwork
//! connect:     IPAM RequestAddress → CreateEndpoint → Join → (core moves the
//!              interface into the sandbox) → ProgramExternalConnectivity
//! disconnect:  RevokeExternalConnectivity → (core takes it out) → Leave
//!              → DeleteEndpoint → IPAM ReleaseAddress
//! delete:      IPAM ReleaseAddress(gateway, aux) → ReleasePool → DeleteNetwork
//! ```
//!
//! A sandbox's published ports ([`CreateSandbox::port_bindings`], Docker's
//! `HostConfig.PortBindings`) reach the drivers as dockerd sends them
//! ([`ports`]): in the `CreateEndpoint`, `Join` and
//! `ProgramExternalConnectivity` options; the host ports the driver of the
//! gateway endpoint chose are read back from its `endpoint_info` and kept
//! in the [`EndpointRecord`].
//!
//! The `host` and `none` drivers take no addresses (moby's "special
//! drivers"): a network of theirs with no IPAM config requests no pool.
//! A sandbox on a `host` network shares the daemon's namespace: it is made
//! with [`CreateSandbox::host`] and joins nothing else.
//!
//! # Crash safety
//!
//! Each operation is one ledger intent (`network.create`, `network.delete`,
//! `endpoint.connect`, `endpoint.disconnect`, `sandbox.create`,
//! `sandbox.remove`); what a step obtained that undoing it needs (a pool
//! id, an address, the interface a join named) is recorded as a
//! `network.step` note of that intent as soon as the driver answers. At
//! start-up an interrupted create or connect is rolled back from its notes
//! and an interrupted delete or disconnect is finished (every undo step is
//! idempotent). An answer lost in the instant between a driver's reply and
//! its note (an address) goes back to IPAM with its pool when the network
//! is removed.
//!
//! Records live in the store under `network/<id>`, `endpoint/<net>/<ep>`
//! and `sandbox/<id>`; an in-memory index mirrors them for list and
//! inspect. A network keeps its scope (`local`, or `global` for drivers
//! whose networks span hosts) and uses IPAM's address space of that scope.
//!
//! # IPAM request replay
//!
//! An IPAM driver whose capabilities ask for `RequiresRequestReplay` keeps
//! its state in memory only; after the start-up reconcile the daemon
//! requests every recorded pool, gateway, aux and endpoint address again
//! ([`NetworkService::replay`], `replay.rs`).

mod connect;
mod create;
mod gateway;
mod ledger;
pub mod ports;
mod reconcile;
mod replay;
mod sandboxes;
mod types;
mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use berth_plugin_api::network::{Capabilities, CapabilitiesRequest};
use berth_plugin_api::{DriverError, DriverResult, IpamDriver, Kind, NetworkDriver};

use crate::call::Driver;
use crate::locks::NameLocks;
use crate::registry::Registry;
use crate::store::Store;

pub use ports::{Empty, ExposedPorts, HostBinding, PortBindings, PublishedPort};
pub use replay::ReplayReport;
pub use types::*;
pub use view::{LIST_FILTERS, PRUNE_FILTERS};

/// Ledger operation: a network create.
pub const OP_CREATE: &str = "network.create";
/// Ledger operation: a network delete.
pub const OP_DELETE: &str = "network.delete";
/// Ledger operation: a progress note of another network operation.
pub const OP_STEP: &str = "network.step";
/// Ledger operation: new pool ids recorded after an IPAM request replay.
pub const OP_REPLAY: &str = "network.replay";
/// Ledger operation: an endpoint connect.
pub const OP_CONNECT: &str = "endpoint.connect";
/// Ledger operation: an endpoint disconnect.
pub const OP_DISCONNECT: &str = "endpoint.disconnect";
/// Ledger operation: a sandbox create.
pub const OP_SANDBOX_CREATE: &str = "sandbox.create";
/// Ledger operation: a sandbox remove.
pub const OP_SANDBOX_REMOVE: &str = "sandbox.remove";

/// Whether a ledger operation belongs to the network service.
pub fn owns(op: &str) -> bool {
    op.starts_with("network.") || op.starts_with("endpoint.") || op.starts_with("sandbox.")
}

/// Drivers that take no addresses (moby's `hasSpecialDriver`).
const SPECIAL: &[&str] = &["host", "none"];

/// The driver whose sandboxes share the host namespace.
const HOST_DRIVER: &str = "host";

/// Where the network service finds its drivers: the registry in the
/// daemon; a fixed set in tests.
pub trait NetworkDrivers: Send + Sync + std::fmt::Debug {
    /// The ready network driver `name`.
    fn network(&self, name: &str) -> DriverResult<Driver<dyn NetworkDriver>>;
    /// The ready IPAM driver `name`.
    fn ipam(&self, name: &str) -> DriverResult<Driver<dyn IpamDriver>>;
}

impl NetworkDrivers for Registry {
    fn network(&self, name: &str) -> DriverResult<Driver<dyn NetworkDriver>> {
        Registry::network(self, name)
    }
    fn ipam(&self, name: &str) -> DriverResult<Driver<dyn IpamDriver>> {
        Registry::ipam(self, name)
    }
}

/// A fixed set of network and IPAM drivers, for tests.
#[derive(Debug, Clone, Default)]
pub struct DriverSet {
    networks: Vec<Driver<dyn NetworkDriver>>,
    ipams: Vec<Driver<dyn IpamDriver>>,
}

impl DriverSet {
    /// An empty set.
    pub fn new() -> Self {
        DriverSet::default()
    }

    /// The set plus network driver `d` (found by its name).
    pub fn with_network(mut self, d: Driver<dyn NetworkDriver>) -> Self {
        self.networks.push(d);
        self
    }

    /// The set plus IPAM driver `d` (found by its name).
    pub fn with_ipam(mut self, d: Driver<dyn IpamDriver>) -> Self {
        self.ipams.push(d);
        self
    }
}

impl NetworkDrivers for DriverSet {
    fn network(&self, name: &str) -> DriverResult<Driver<dyn NetworkDriver>> {
        self.networks
            .iter()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| DriverError::not_found(format!("no {} driver named {name:?}", Kind::Network)))
    }
    fn ipam(&self, name: &str) -> DriverResult<Driver<dyn IpamDriver>> {
        self.ipams
            .iter()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| DriverError::not_found(format!("no {} driver named {name:?}", Kind::Ipam)))
    }
}

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// The exec root: sandboxes are kept under `<exec_root>/netns`.
    pub exec_root: PathBuf,
    /// `[network] default`.
    pub default_driver: String,
    /// `[network] ipam`.
    pub default_ipam: String,
    /// Test hook (`BERTH_CRASH_AT`): abort at the named point.
    pub crash_at: Option<String>,
}

/// The in-memory mirror of the store.
#[derive(Debug, Default)]
struct Index {
    networks: HashMap<String, NetworkRecord>,
    /// Network id → endpoint id → endpoint.
    endpoints: HashMap<String, BTreeMap<String, EndpointRecord>>,
    sandboxes: HashMap<String, SandboxRecord>,
}

/// Networks, endpoints and sandboxes. Cheap to clone; clones share
/// everything.
#[derive(Debug, Clone)]
pub struct NetworkService {
    drivers: Arc<dyn NetworkDrivers>,
    store: Arc<Store>,
    settings: Arc<NetworkSettings>,
    locks: Arc<NameLocks>,
    index: Arc<RwLock<Index>>,
    caps: Arc<Mutex<HashMap<String, Capabilities>>>,
}

fn network_key(id: &str) -> String {
    format!("network/{id}")
}

fn endpoint_key(net: &str, ep: &str) -> String {
    format!("endpoint/{net}/{ep}")
}

fn sandbox_key(id: &str) -> String {
    format!("sandbox/{id}")
}

fn encode<T: serde::Serialize>(value: &T) -> DriverResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| DriverError::internal(format!("encode: {e}")))
}

/// Whether `name` is a valid network or sandbox name (Docker's rule).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

impl NetworkService {
    /// A service over `drivers`, loading every record from `store`.
    pub fn new(
        drivers: Arc<dyn NetworkDrivers>,
        store: Arc<Store>,
        settings: NetworkSettings,
    ) -> DriverResult<Self> {
        let mut index = Index::default();
        for (_, n) in store.list::<NetworkRecord>("network/")? {
            index.networks.insert(n.id.clone(), n);
        }
        for (k, e) in store.list::<EndpointRecord>("endpoint/")? {
            if !index.networks.contains_key(&e.network_id) {
                tracing::warn!(key = %k, "endpoint of a network with no record: ignored");
                continue;
            }
            index.endpoints.entry(e.network_id.clone()).or_default().insert(e.id.clone(), e);
        }
        for (_, s) in store.list::<SandboxRecord>("sandbox/")? {
            index.sandboxes.insert(s.id.clone(), s);
        }
        Ok(NetworkService {
            drivers,
            store,
            settings: Arc::new(settings),
            locks: Arc::default(),
            index: Arc::new(RwLock::new(index)),
            caps: Arc::default(),
        })
    }

    fn crash_point(&self, point: &str) {
        if self.settings.crash_at.as_deref() == Some(point) {
            tracing::error!(point, "BERTH_CRASH_AT reached: aborting");
            std::process::abort();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn netns_dir(&self) -> PathBuf {
        self.settings.exec_root.join(crate::sandbox::NETNS_DIR)
    }

    fn host_key(&self) -> PathBuf {
        self.netns_dir().join(crate::sandbox::HOST_KEY)
    }

    /// How many networks the daemon holds.
    pub fn count(&self) -> usize {
        self.read().networks.len()
    }

    /// The driver's capabilities: asked once, then cached.
    fn capabilities(&self, driver: &Driver<dyn NetworkDriver>) -> DriverResult<Capabilities> {
        if let Some(c) = self.caps.lock().unwrap_or_else(|p| p.into_inner()).get(driver.name()) {
            return Ok(c.clone());
        }
        let caps = driver.call("capabilities", |d| d.capabilities(CapabilitiesRequest::default()))?;
        self.caps.lock().unwrap_or_else(|p| p.into_inner()).insert(driver.name().to_string(), caps.clone());
        Ok(caps)
    }

    /// The network `name_or_id`: exact id, exact name, then a unique id
    /// prefix.
    pub fn find_network(&self, name_or_id: &str) -> DriverResult<NetworkRecord> {
        let index = self.read();
        resolve(&index.networks, name_or_id, |n| &n.name, "network")
    }

    /// The sandbox `name_or_id`: exact id, exact name, then a unique id
    /// prefix.
    pub fn find_sandbox(&self, name_or_id: &str) -> DriverResult<SandboxRecord> {
        let index = self.read();
        resolve(&index.sandboxes, name_or_id, |s| &s.name, "sandbox")
    }

    fn endpoints_of_sandbox(&self, sandbox: &str) -> Vec<EndpointRecord> {
        let index = self.read();
        let mut eps: Vec<EndpointRecord> = index
            .endpoints
            .values()
            .flat_map(|m| m.values())
            .filter(|e| e.sandbox_id == sandbox)
            .cloned()
            .collect();
        eps.sort_by(|a, b| a.network_id.cmp(&b.network_id));
        eps
    }
}

/// Docker's lookup: exact id, exact name, unique id prefix; an ambiguous
/// prefix is an invalid argument.
fn resolve<T: Clone>(
    map: &HashMap<String, T>,
    wanted: &str,
    name_of: impl Fn(&T) -> &String,
    what: &str,
) -> DriverResult<T> {
    if wanted.is_empty() {
        return Err(DriverError::invalid_argument(format!("no {what} named")));
    }
    if let Some(v) = map.get(wanted) {
        return Ok(v.clone());
    }
    if let Some(v) = map.values().find(|v| name_of(v) == wanted) {
        return Ok(v.clone());
    }
    let matches: Vec<&T> = map.iter().filter(|(id, _)| id.starts_with(wanted)).map(|(_, v)| v).collect();
    match matches.len() {
        1 => Ok(matches[0].clone()),
        0 => Err(DriverError::not_found(format!("{what} {wanted} not found"))),
        n => Err(DriverError::invalid_argument(format!(
            "{what} {wanted} is ambiguous ({n} matches found based on ID prefix)"
        ))),
    }
}
