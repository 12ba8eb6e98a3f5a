//! Named volumes: the daemon's record of which driver holds which volume,
//! kept in the state store through the ledger.
//!
//! The full volume feature set (reference-counted mounts, prune, filters)
//! builds on this; what is here keeps names unique across drivers and makes
//! every create and remove crash-safe.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_plugin_api::volume::{
    VolumeCreateRequest, VolumeGetRequest, VolumeListRequest, VolumeRemoveRequest,
};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind};
use serde::{Deserialize, Serialize};

use berth_plugin_api::util::rfc3339;

use crate::locks::NameLocks;
use crate::registry::Registry;
use crate::store::{now_secs, Change, Intent, Store};

/// Operation name of a volume create in the ledger.
pub const OP_CREATE: &str = "volume.create";
/// Operation name of a volume remove in the ledger.
pub const OP_REMOVE: &str = "volume.remove";

/// What `POST /volumes/create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateVolume {
    /// The name; empty for a generated one.
    pub name: String,
    /// The driver; empty for the configured default.
    pub driver: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
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

/// A volume as the Docker API shows it: the record and its scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Volume {
    /// What the daemon keeps.
    #[serde(flatten)]
    pub record: VolumeRecord,
    /// `local` or `global`.
    #[serde(rename = "Scope")]
    pub scope: String,
}

impl From<VolumeRecord> for Volume {
    fn from(record: VolumeRecord) -> Self {
        Volume { record, scope: "local".into() }
    }
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

/// Named volumes over the registry's volume drivers.
#[derive(Debug, Clone)]
pub struct VolumeService {
    registry: Arc<Registry>,
    store: Arc<Store>,
    default_driver: String,
    crash_at: Option<String>,
    names: Arc<NameLocks>,
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

impl VolumeService {
    /// A service using `default_driver` when a request names none.
    /// `crash_at` is a test hook (`BERTH_CRASH_AT`): abort the process at
    /// the named point of an operation, to prove reconcile.
    pub fn new(
        registry: Arc<Registry>,
        store: Arc<Store>,
        default_driver: String,
        crash_at: Option<String>,
    ) -> Self {
        VolumeService { registry, store, default_driver, crash_at, names: Arc::default() }
    }

    fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            tracing::error!(point, "BERTH_CRASH_AT reached: aborting");
            std::process::abort();
        }
    }

    /// Creates a volume; re-creating one with the same driver answers it.
    pub fn create(&self, req: CreateVolume) -> DriverResult<Volume> {
        let name = if req.name.is_empty() { random_name()? } else { req.name };
        if !valid_volume_name(&name) {
            return Err(DriverError::invalid_argument(format!(
                "volume name {name:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        let driver_name = if req.driver.is_empty() { self.default_driver.clone() } else { req.driver };
        // One operation per name at a time: two creates of one name on two
        // drivers must not both succeed.
        let _name = self.names.lock(&name);
        if let Some(existing) = self.store.get::<VolumeRecord>(&key(&name))? {
            if existing.driver != driver_name {
                return Err(DriverError::conflict(format!(
                    "volume {name:?} already exists with driver {:?}, not {driver_name:?}",
                    existing.driver
                )));
            }
            return Ok(existing.into());
        }
        let driver = self.registry.volume(&driver_name)?;
        let intent = Intent {
            op: OP_CREATE.into(),
            key: key(&name),
            driver: driver_name.clone(),
            data: serde_json::json!({ "name": name }),
            at: now_secs(),
        };
        let seq = self.store.intent(&intent)?;
        self.crash_point("volume.create:after-intent");
        let mut create = VolumeCreateRequest::new(&name);
        create.options = req.driver_opts.clone();
        if let Err(e) = driver.call("create", move |d| d.create(create)) {
            if e.kind != ErrorKind::Timeout {
                self.store.abandon(seq)?;
            }
            // A timed-out call may still finish inside the driver: its
            // intent stays in the ledger so the next start rolls back
            // whatever the driver made, and nothing is orphaned.
            return Err(e);
        }
        self.crash_point("volume.create:after-driver");
        let get_name = name.clone();
        let info = match driver.call("get", move |d| d.get(VolumeGetRequest::new(get_name))) {
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
        let value = serde_json::to_value(&record).map_err(|e| DriverError::internal(e.to_string()))?;
        self.store.finish(seq, &[Change::Put(key(&name), value)])?;
        Ok(record.into())
    }

    /// One volume.
    pub fn inspect(&self, name: &str) -> DriverResult<Volume> {
        self.store
            .get::<VolumeRecord>(&key(name))?
            .map(Volume::from)
            .ok_or_else(|| DriverError::not_found(format!("no such volume: {name}")))
    }

    /// Every volume: the daemon's records plus any volume a ready driver
    /// holds that the daemon has no record of (each name once).
    pub fn list(&self) -> DriverResult<VolumeList> {
        let mut by_name: BTreeMap<String, Volume> = self
            .store
            .list::<VolumeRecord>("volume/")?
            .into_iter()
            .map(|(_, r)| (r.name.clone(), Volume::from(r)))
            .collect();
        let mut warnings = Vec::new();
        for driver_name in self.registry.ready(Kind::Volume) {
            let driver = self.registry.volume(&driver_name)?;
            match driver.call("list", |d| d.list(VolumeListRequest::default())) {
                Ok(vols) => {
                    for v in vols {
                        by_name.entry(v.name.clone()).or_insert_with(|| {
                            Volume::from(VolumeRecord {
                                name: v.name,
                                driver: driver_name.clone(),
                                mountpoint: v.mountpoint,
                                created_at: v.created_at.unwrap_or_default(),
                                labels: BTreeMap::new(),
                                options: BTreeMap::new(),
                            })
                        });
                    }
                }
                Err(e) => warnings.push(e.to_string()),
            }
        }
        Ok(VolumeList { volumes: by_name.into_values().collect(), warnings })
    }

    /// Removes a volume. With `force`, the daemon's record goes even when
    /// the driver refuses or is gone.
    pub fn remove(&self, name: &str, force: bool) -> DriverResult<()> {
        let _name = self.names.lock(name);
        let record = self.store.get::<VolumeRecord>(&key(name))?;
        let Some(record) = record else {
            if force {
                return Ok(());
            }
            return Err(DriverError::not_found(format!("no such volume: {name}")));
        };
        let intent = Intent {
            op: OP_REMOVE.into(),
            key: key(name),
            driver: record.driver.clone(),
            data: serde_json::json!({ "name": name }),
            at: now_secs(),
        };
        let seq = self.store.intent(&intent)?;
        self.crash_point("volume.remove:after-intent");
        let result = self.registry.volume(&record.driver).and_then(|driver| {
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
        self.store.finish(seq, &[Change::Delete(key(name))])
    }

    /// Finishes or rolls back one interrupted volume operation. A create
    /// whose caller never heard back is rolled back (the driver's half is
    /// removed); a remove is finished. Answers what was done.
    pub fn reconcile(&self, seq: u64, intent: &Intent) -> DriverResult<String> {
        let name = intent.key.strip_prefix("volume/").unwrap_or(&intent.key).to_string();
        let driver = self.registry.volume(&intent.driver)?;
        let rm = VolumeRemoveRequest::new(name.clone());
        match driver.call("remove", move |d| d.remove(rm)) {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match intent.op.as_str() {
            OP_CREATE => {
                self.store.abandon(seq)?;
                Ok(format!("rolled back interrupted create of volume {name:?}"))
            }
            OP_REMOVE => {
                self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                Ok(format!("finished interrupted removal of volume {name:?}"))
            }
            other => Err(DriverError::internal(format!("unknown volume operation {other:?} in the ledger"))),
        }
    }
}

fn random_name() -> DriverResult<String> {
    let mut buf = [0u8; 32];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| DriverError::io("read /dev/urandom", &e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_dockers_rule() {
        assert!(valid_volume_name("data_1.x-y"));
        assert!(!valid_volume_name(""));
        assert!(!valid_volume_name("-x"));
        assert!(!valid_volume_name("a/b"));
        assert!(!valid_volume_name("../etc"));
    }

    #[test]
    fn create_requests_refuse_unknown_fields() {
        let ok: CreateVolume = serde_json::from_str(r#"{"Name":"a","DriverOpts":{"k":"v"}}"#).unwrap();
        assert_eq!(ok.driver_opts.get("k").map(String::as_str), Some("v"));
        assert!(serde_json::from_str::<CreateVolume>(r#"{"Name":"a","Colour":"red"}"#).is_err());
    }
}
