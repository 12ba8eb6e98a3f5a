//! Named volumes: which driver holds which volume, who has it mounted, and
//! every change to either kept crash-safe through the ledger.
//!
//! # What the core guarantees, whatever the driver
//!
//! * **Names are unique across drivers.** A create of a name another
//!   driver holds is a conflict; a create with the same driver answers the
//!   existing volume. A volume its driver *forgot* (lost its state, a
//!   remote plugin restarted empty) is made again by a create of the same
//!   name and driver.
//! * **Reference-counted mounts.** Every user of a volume gets its own
//!   mount id (64 hex digits): N users cause N driver `mount` calls with
//!   distinct ids and N `unmount` calls with the same ids. A failed mount
//!   records nothing and is never followed by an unmount. A volume with
//!   any reference cannot be removed — not even with `force`, which only
//!   lets the daemon's record go when the *driver* refuses or is gone (as
//!   in Docker).
//! * **Crash safety.** Creates, removes, mounts and unmounts are bracketed
//!   by ledger intents; references are stored objects, so after a restart
//!   (also after `kill -9`) the counts are exactly those the users were told
//!   about: an interrupted mount is rolled back with an unmount of its id,
//!   an interrupted unmount is finished.
//!
//! Records and references live in the state store under `volume/<name>`
//! and `volref/<name>/<id>`; an in-memory index mirrors them so reads never
//! touch the disk.

mod mounter;
mod prune;
mod reconcile;
mod refs;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use berth_plugin_api::network::Scope;
use berth_plugin_api::util::rfc3339;
use berth_plugin_api::volume::{
    VolumeCapabilitiesRequest, VolumeCreateRequest, VolumeGetRequest, VolumeInfo, VolumeListRequest,
    VolumeRemoveRequest,
};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind, VolumeDriver};
use serde::{Deserialize, Serialize};

use crate::call::Driver;
use crate::filters::Filters;
use crate::locks::NameLocks;
use crate::registry::Registry;
use crate::store::{now_secs, Change, Intent, Store};

pub use prune::PruneReport;
pub use refs::{MountRef, MountVolume};

/// Operation name of a volume create in the ledger.
pub const OP_CREATE: &str = "volume.create";
/// Operation name of a volume remove in the ledger.
pub const OP_REMOVE: &str = "volume.remove";
/// Operation name of a volume mount in the ledger.
pub const OP_MOUNT: &str = "volume.mount";
/// Operation name of a volume unmount in the ledger.
pub const OP_UNMOUNT: &str = "volume.unmount";

/// The label Docker puts on anonymous volumes; `prune` without `all`
/// removes only volumes carrying it (Docker API 1.42 and later).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Filters `GET /volumes` accepts.
pub const LIST_FILTERS: &[&str] = &["dangling", "driver", "label", "name"];
/// Filters `POST /volumes/prune` accepts.
pub const PRUNE_FILTERS: &[&str] = &["label", "label!", "all"];

/// Where the volume service finds its drivers: the registry in the daemon;
/// any map of drivers in tests and in the conformance suite.
pub trait VolumeDrivers: Send + Sync + std::fmt::Debug {
    /// The ready volume driver `name`.
    fn volume(&self, name: &str) -> DriverResult<Driver<dyn VolumeDriver>>;
    /// Names of every ready volume driver, in configuration order.
    fn volume_drivers(&self) -> Vec<String>;
}

impl VolumeDrivers for Registry {
    fn volume(&self, name: &str) -> DriverResult<Driver<dyn VolumeDriver>> {
        Registry::volume(self, name)
    }
    fn volume_drivers(&self) -> Vec<String> {
        self.ready(Kind::Volume)
    }
}

/// A fixed set of volume drivers, for tests and the conformance suite
/// (the daemon uses its [`Registry`]).
#[derive(Debug, Clone, Default)]
pub struct DriverSet(Vec<Driver<dyn VolumeDriver>>);

impl DriverSet {
    /// An empty set.
    pub fn new() -> Self {
        DriverSet::default()
    }

    /// The set plus `driver` (found by its name).
    pub fn with(mut self, driver: Driver<dyn VolumeDriver>) -> Self {
        self.0.push(driver);
        self
    }
}

impl VolumeDrivers for DriverSet {
    fn volume(&self, name: &str) -> DriverResult<Driver<dyn VolumeDriver>> {
        self.0
            .iter()
            .find(|d| d.name() == name)
            .cloned()
            .ok_or_else(|| DriverError::not_found(format!("no volume driver named {name:?} is configured")))
    }
    fn volume_drivers(&self) -> Vec<String> {
        self.0.iter().map(|d| d.name().to_string()).collect()
    }
}

/// What `POST /volumes/create` asks for. Fields of newer API versions that
/// berth does not implement (`ClusterVolumeSpec`) are accepted when empty
/// and refused otherwise; other unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateVolume {
    /// The name; empty for a generated one.
    pub name: String,
    /// The driver; empty for the configured default.
    pub driver: String,
    /// Driver options.
    #[serde(deserialize_with = "null_is_default")]
    pub driver_opts: BTreeMap<String, String>,
    /// User labels.
    #[serde(deserialize_with = "null_is_default")]
    pub labels: BTreeMap<String, String>,
    /// Swarm cluster volumes: not supported, must be absent or null.
    #[serde(rename = "ClusterVolumeSpec")]
    pub cluster_volume_spec: Option<serde_json::Value>,
}

fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The daemon's record of a volume, stored as the Docker API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRecord {
    /// Its name.
    pub name: String,
    /// The driver holding it.
    pub driver: String,
    /// Host path of its data, as the driver reported at create.
    pub mountpoint: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// Docker's `UsageData`: how many users hold the volume. `Size` is -1
/// (not computed) except in prune answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageData {
    /// Bytes used, or -1 when not computed.
    pub size: i64,
    /// Active mount references.
    pub ref_count: usize,
}

/// A volume as the Docker API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume {
    /// What the daemon keeps.
    #[serde(flatten)]
    pub record: VolumeRecord,
    /// `local` or `global`, from the driver's capabilities.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// Driver-specific status (inspect only).
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, serde_json::Value>>,
    /// References.
    #[serde(rename = "UsageData")]
    pub usage: UsageData,
}

/// The answer of a volume listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeList {
    /// The volumes, by name.
    pub volumes: Vec<Volume>,
    /// Drivers that could not be listed.
    pub warnings: Vec<String>,
}

/// A record and its live references, as the index holds them.
#[derive(Debug, Clone)]
struct Entry {
    record: VolumeRecord,
    refs: BTreeMap<String, MountRef>,
}

/// Named volumes over a set of volume drivers. Cheap to clone; clones share
/// everything.
#[derive(Debug, Clone)]
pub struct VolumeService {
    drivers: Arc<dyn VolumeDrivers>,
    store: Arc<Store>,
    default_driver: String,
    crash_at: Option<String>,
    names: Arc<NameLocks>,
    index: Arc<RwLock<HashMap<String, Entry>>>,
    scopes: Arc<Mutex<HashMap<String, Scope>>>,
}

fn key(name: &str) -> String {
    format!("volume/{name}")
}

/// Whether `name` is a valid volume name (Docker's rule).
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255
}

fn no_such(name: &str) -> DriverError {
    DriverError::not_found(format!("no such volume: {name}"))
}

fn encode<T: Serialize>(value: &T) -> DriverResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| DriverError::internal(format!("encode: {e}")))
}

impl VolumeService {
    /// A service over `drivers`, using `default_driver` when a request
    /// names none; loads every record and reference from `store`.
    /// `crash_at` is a test hook (`BERTH_CRASH_AT`): abort the process at
    /// the named point of an operation, to prove reconcile.
    pub fn new(
        drivers: Arc<dyn VolumeDrivers>,
        store: Arc<Store>,
        default_driver: String,
        crash_at: Option<String>,
    ) -> DriverResult<Self> {
        let mut index: HashMap<String, Entry> = store
            .list::<VolumeRecord>("volume/")?
            .into_iter()
            .map(|(_, record)| (record.name.clone(), Entry { record, refs: BTreeMap::new() }))
            .collect();
        for (k, r) in store.list::<MountRef>("volref/")? {
            match index.get_mut(&r.name) {
                Some(entry) => {
                    entry.refs.insert(r.id.clone(), r);
                }
                None => tracing::warn!(key = %k, "mount reference to a volume with no record: ignored"),
            }
        }
        Ok(VolumeService {
            drivers,
            store,
            default_driver,
            crash_at,
            names: Arc::default(),
            index: Arc::new(RwLock::new(index)),
            scopes: Arc::default(),
        })
    }

    fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            tracing::error!(point, "BERTH_CRASH_AT reached: aborting");
            std::process::abort();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &str) -> Option<Entry> {
        self.read().get(name).cloned()
    }

    fn intent(&self, op: &str, key: String, driver: &str, data: serde_json::Value) -> DriverResult<u64> {
        self.store.intent(&Intent { op: op.into(), key, driver: driver.into(), data, at: now_secs() })
    }

    /// How many volumes the daemon holds.
    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// The scope of driver `name`: asked once, then cached. A driver that
    /// cannot answer is taken as `local` (not cached, as in Docker).
    pub fn scope(&self, driver: &Driver<dyn VolumeDriver>) -> Scope {
        if let Some(s) = self.scopes.lock().unwrap_or_else(|p| p.into_inner()).get(driver.name()) {
            return *s;
        }
        match driver.call("capabilities", |d| d.capabilities(VolumeCapabilitiesRequest::default())) {
            Ok(caps) => {
                let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
                *scopes.entry(driver.name().to_string()).or_insert(caps.scope)
            }
            Err(e) => {
                tracing::warn!(driver = driver.name(), "capabilities failed, taking local scope: {e}");
                Scope::Local
            }
        }
    }

    fn cached_scope(&self, driver: &str) -> String {
        let scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        match scopes.get(driver).copied().unwrap_or(Scope::Local) {
            Scope::Local => "local".into(),
            Scope::Global => "global".into(),
        }
    }

    fn view(&self, entry: &Entry, status: Option<BTreeMap<String, serde_json::Value>>) -> Volume {
        Volume {
            record: entry.record.clone(),
            scope: self.cached_scope(&entry.record.driver),
            status,
            usage: UsageData { size: -1, ref_count: entry.refs.len() },
        }
    }

    /// Creates a volume. Re-creating one with the same driver answers it —
    /// or makes it again when the driver forgot it.
    pub fn create(&self, req: CreateVolume) -> DriverResult<Volume> {
        if req.cluster_volume_spec.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(DriverError::unsupported("cluster volumes (ClusterVolumeSpec) are a swarm feature"));
        }
        let name = if req.name.is_empty() { random_hex()? } else { req.name.clone() };
        if !valid_volume_name(&name) {
            return Err(DriverError::invalid_argument(format!(
                "volume name {name:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        let driver_name =
            if req.driver.is_empty() { self.default_driver.clone() } else { req.driver.clone() };
        // One operation per name at a time: two creates of one name on two
        // drivers must not both succeed.
        let _name = self.names.lock(&name);
        let existing = self.entry(&name);
        if let Some(existing) = &existing {
            if existing.record.driver != driver_name {
                return Err(DriverError::conflict(format!(
                    "volume {name:?} already exists with driver {:?}, not {driver_name:?}",
                    existing.record.driver
                )));
            }
        }
        let driver = self.drivers.volume(&driver_name)?;
        self.scope(&driver);
        if let Some(existing) = existing {
            let get_name = name.clone();
            match driver.call("get", move |d| d.get(VolumeGetRequest::new(get_name))) {
                Ok(_) => return Ok(self.view(&existing, None)),
                Err(e) if e.kind == ErrorKind::NotFound => {
                    tracing::info!(volume = %name, "the driver forgot this volume: making it again");
                }
                Err(e) => return Err(e.context(format!("volume {name:?}"))),
            }
            if !existing.refs.is_empty() {
                return Err(DriverError::failed_precondition(format!(
                    "volume {name:?} is gone from driver {driver_name:?} but still has {} mount \
                     reference(s): unmount them first",
                    existing.refs.len()
                )));
            }
        }
        let recreate = self.entry(&name).is_some();
        let data = serde_json::json!({ "name": name, "recreate": recreate });
        let seq = self.intent(OP_CREATE, key(&name), &driver_name, data)?;
        self.crash_point("volume.create:after-intent");
        let mut create = VolumeCreateRequest::new(&name);
        create.options = req.driver_opts.clone();
        let get = VolumeGetRequest::new(&name);
        // Create and describe in one trip to the worker: the record needs
        // the mountpoint the driver chose.
        let made = driver.call("create", move |d| {
            d.create(create)?;
            Ok(d.get(get))
        });
        let described = match made {
            Ok(described) => described,
            Err(e) => {
                if e.kind != ErrorKind::Timeout {
                    self.store.abandon(seq)?;
                }
                // A timed-out call may still finish inside the driver: its
                // intent stays in the ledger so the next start rolls back
                // whatever the driver made, and nothing is orphaned.
                return Err(e);
            }
        };
        self.crash_point("volume.create:after-driver");
        let info = match described {
            Ok(info) => info,
            Err(e) => {
                // The driver cannot describe what it just made: undo it.
                let rm = VolumeRemoveRequest::new(name.clone());
                let _ = driver.call("remove", move |d| d.remove(rm));
                self.store.abandon(seq)?;
                return Err(e.context(format!("create volume {name:?}")));
            }
        };
        let record = VolumeRecord {
            name: name.clone(),
            driver: driver_name,
            mountpoint: info.mountpoint,
            created_at: info.created_at.unwrap_or_else(|| rfc3339(std::time::SystemTime::now())),
            labels: req.labels,
            options: req.driver_opts,
        };
        self.store.finish(seq, &[Change::Put(key(&name), encode(&record)?)])?;
        let entry = Entry { record, refs: BTreeMap::new() };
        let view = self.view(&entry, None);
        self.write().insert(name, entry);
        Ok(view)
    }

    /// One volume, with the driver's status. A volume the driver no longer
    /// has is still shown (the daemon's record stands until removed), with
    /// a status saying so.
    pub fn inspect(&self, name: &str) -> DriverResult<Volume> {
        let entry = self.entry(name).ok_or_else(|| no_such(name))?;
        let driver = match self.drivers.volume(&entry.record.driver) {
            Ok(d) => d,
            Err(e) => return Ok(self.view(&entry, Some(status_note("Error", e.to_string())))),
        };
        self.scope(&driver);
        let get_name = name.to_string();
        let status = match driver.call("get", move |d| d.get(VolumeGetRequest::new(get_name))) {
            Ok(info) => Some(info.status).filter(|s| !s.is_empty()),
            Err(e) if e.kind == ErrorKind::NotFound => Some(status_note(
                "Error",
                format!("the driver no longer has this volume ({e}); create it again with the same name and driver"),
            )),
            Err(e) => Some(status_note("Error", e.to_string())),
        };
        Ok(self.view(&entry, status))
    }

    /// Volumes matching `filters` (names from [`LIST_FILTERS`]): the
    /// daemon's records plus any volume a ready driver holds that the
    /// daemon has no record of (each name once).
    pub fn list(&self, filters: &Filters) -> DriverResult<VolumeList> {
        let dangling = filters.bool("dangling")?;
        let mut by_name: BTreeMap<String, Volume> =
            self.read().values().map(|e| (e.record.name.clone(), self.view(e, None))).collect();
        let mut warnings = Vec::new();
        for driver_name in self.drivers.volume_drivers() {
            if !filters.exact("driver", &driver_name) {
                continue;
            }
            let driver = self.drivers.volume(&driver_name)?;
            self.scope(&driver);
            match driver.call("list", |d| d.list(VolumeListRequest::default())) {
                Ok(vols) => {
                    for v in vols {
                        if !by_name.contains_key(&v.name) {
                            let entry = Entry { record: unrecorded(&driver_name, v), refs: BTreeMap::new() };
                            by_name.insert(entry.record.name.clone(), self.view(&entry, None));
                        }
                    }
                }
                Err(e) => warnings.push(e.to_string()),
            }
        }
        let mut volumes = Vec::with_capacity(by_name.len());
        for v in by_name.into_values() {
            let keep = filters.exact("driver", &v.record.driver)
                && filters.labels_match("label", &v.record.labels)
                && filters.regex("name", &v.record.name)?
                && dangling.map_or(true, |d| d == (v.usage.ref_count == 0));
            if keep {
                volumes.push(v);
            }
        }
        Ok(VolumeList { volumes, warnings })
    }

    /// Finds the driver holding `name` when the daemon has no record (a
    /// volume made behind its back, or by another host for a global
    /// driver) and records it.
    fn adopt(&self, name: &str) -> DriverResult<Option<Entry>> {
        for driver_name in self.drivers.volume_drivers() {
            let driver = self.drivers.volume(&driver_name)?;
            let get_name = name.to_string();
            match driver.call("get", move |d| d.get(VolumeGetRequest::new(get_name))) {
                // An empty or mismatched answer without an error is not-found
                // (CONFORMANCE VL-01), never a record under a wrong name.
                Ok(info) if info.name != name => {
                    tracing::warn!(volume = name, driver = %driver_name, answered = %info.name,
                        "driver answered get with another volume's name: taken as not found");
                }
                Ok(info) => {
                    let record = unrecorded(&driver_name, info);
                    let seq =
                        self.intent(OP_CREATE, key(name), &driver_name, serde_json::json!({"adopt": true}))?;
                    self.store.finish(seq, &[Change::Put(key(name), encode(&record)?)])?;
                    let entry = Entry { record, refs: BTreeMap::new() };
                    self.write().insert(name.to_string(), entry.clone());
                    tracing::info!(volume = name, driver = %driver_name, "recorded a volume the driver already had");
                    return Ok(Some(entry));
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The entry for `name`, adopting it from a driver when unrecorded.
    fn find(&self, name: &str) -> DriverResult<Entry> {
        match self.entry(name) {
            Some(e) => Ok(e),
            None => self.adopt(name)?.ok_or_else(|| no_such(name)),
        }
    }

    /// Removes a volume. A volume with mount references is refused. With
    /// `force`, a volume that does not exist is not an error, and the
    /// daemon's record goes even when the driver refuses or is gone.
    pub fn remove(&self, name: &str, force: bool) -> DriverResult<()> {
        let _name = self.names.lock(name);
        let entry = match self.find(name) {
            Ok(e) => e,
            Err(e) if force && e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !entry.refs.is_empty() {
            return Err(in_use(name, &entry.refs));
        }
        let seq =
            self.intent(OP_REMOVE, key(name), &entry.record.driver, serde_json::json!({ "name": name }))?;
        self.crash_point("volume.remove:after-intent");
        let result = self.drivers.volume(&entry.record.driver).and_then(|driver| {
            let rm = VolumeRemoveRequest::new(name);
            driver.call("remove", move |d| d.remove(rm))
        });
        match result {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) if force => {
                tracing::warn!(volume = name, error = %e, "forced removal: driver error ignored")
            }
            Err(e) => {
                // As for create: a timed-out remove stays in the ledger and
                // is finished at the next start.
                if e.kind != ErrorKind::Timeout {
                    self.store.abandon(seq)?;
                }
                return Err(e);
            }
        }
        self.store.finish(seq, &[Change::Delete(key(name))])?;
        self.write().remove(name);
        Ok(())
    }
}

/// The refusal to remove a volume that has users.
fn in_use(name: &str, refs: &BTreeMap<String, MountRef>) -> DriverError {
    let ids: Vec<String> = refs.keys().map(|id| id.chars().take(12).collect()).collect();
    DriverError::conflict(format!(
        "volume {name} is in use by {} mount(s) [{}]: unmount it first (force does not override this)",
        refs.len(),
        ids.join(", ")
    ))
}

fn status_note(key: &str, text: String) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([(key.to_string(), serde_json::Value::String(text))])
}

/// A record for a volume a driver holds that the daemon did not make.
fn unrecorded(driver: &str, v: VolumeInfo) -> VolumeRecord {
    VolumeRecord {
        name: v.name,
        driver: driver.to_string(),
        mountpoint: v.mountpoint,
        created_at: v.created_at.unwrap_or_default(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
    }
}

/// 64 random hex digits (volume names, mount ids).
pub(crate) fn random_hex() -> DriverResult<String> {
    let mut buf = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| DriverError::io("read /dev/urandom", &e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests;
