//! Mount references: one per user of a volume, each with its own id, each
//! bracketed by the ledger so a restart knows exactly who holds what.

use std::collections::BTreeMap;

use berth_plugin_api::util::rfc3339;
use berth_plugin_api::volume::{VolumeMountRequest, VolumeUnmountRequest};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};
use serde::{Deserialize, Serialize};

use super::{encode, no_such, random_hex, VolumeService, OP_MOUNT, OP_UNMOUNT};
use crate::store::Change;

/// A request to mount a volume for one user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct MountVolume {
    /// The volume.
    pub name: String,
    /// The mount id; empty for a generated one (64 hex digits).
    #[serde(rename = "ID")]
    pub id: String,
    /// Who the user is (a container id, `cli`, …), shown by inspect.
    pub user: String,
}

impl MountVolume {
    /// A request to mount `name` for `user` under a generated id.
    pub fn new(name: impl Into<String>, user: impl Into<String>) -> Self {
        MountVolume { name: name.into(), id: String::new(), user: user.into() }
    }

    /// The same request with mount id `id`.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

/// One active mount of a volume, as stored under `volref/<name>/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountRef {
    /// The volume.
    pub name: String,
    /// The mount id given to the driver.
    #[serde(rename = "ID")]
    pub id: String,
    /// Host path the driver answered.
    pub mountpoint: String,
    /// Who holds it.
    pub user: String,
    /// When it was taken, RFC 3339.
    pub created_at: String,
}

pub(super) fn ref_key(name: &str, id: &str) -> String {
    format!("volref/{name}/{id}")
}

/// Whether `id` can be a mount id: 1 to 128 of `[A-Za-z0-9_.-]`.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl VolumeService {
    /// Mounts a volume for one user: one driver `mount` with a fresh id.
    /// A failed mount records nothing (and is never followed by an
    /// unmount).
    pub fn mount(&self, req: MountVolume) -> DriverResult<MountRef> {
        let name = req.name;
        let id = if req.id.is_empty() { random_hex()? } else { req.id };
        if !valid_id(&id) {
            return Err(DriverError::invalid_argument(format!(
                "mount id {id:?} is invalid: use 1 to 128 of [A-Za-z0-9_.-]"
            )));
        }
        let _name = self.names.lock(&name);
        let entry = self.find(&name)?;
        if entry.refs.contains_key(&id) {
            return Err(DriverError::already_exists(format!(
                "volume {name} already has a mount with id {id}"
            )));
        }
        let driver = self.drivers.volume(&entry.record.driver)?;
        let data = serde_json::json!({ "name": name, "id": id });
        let seq = self.intent(OP_MOUNT, ref_key(&name, &id), &entry.record.driver, data)?;
        self.crash_point("volume.mount:after-intent");
        let mut mount = VolumeMountRequest::default();
        mount.name = name.clone();
        mount.id = id.clone();
        let answer = match driver.call("mount", move |d| d.mount(mount)) {
            Ok(a) => a,
            Err(e) => {
                // A timed-out mount may still happen inside the driver: the
                // intent stays, and the next start rolls it back.
                if e.kind != ErrorKind::Timeout {
                    self.store.abandon(seq)?;
                }
                return Err(e.context(format!("mount volume {name}")));
            }
        };
        self.crash_point("volume.mount:after-driver");
        if answer.mountpoint.is_empty() {
            // The driver lied: a successful mount with nowhere to find it.
            // Release what it took, then report.
            let mut um = VolumeUnmountRequest::default();
            um.name = name.clone();
            um.id = id.clone();
            let undo = driver.call("unmount", move |d| d.unmount(um));
            self.store.abandon(seq)?;
            let mut e = DriverError::internal(format!(
                "volume driver {:?} answered mount of {name} with an empty mountpoint",
                entry.record.driver
            ));
            if let Err(u) = undo {
                e = e.context(format!("(releasing it failed too: {u})"));
            }
            return Err(e);
        }
        let r = MountRef {
            name: name.clone(),
            id: id.clone(),
            mountpoint: answer.mountpoint,
            user: req.user,
            created_at: rfc3339(std::time::SystemTime::now()),
        };
        self.store.finish(seq, &[Change::Put(ref_key(&name, &id), encode(&r)?)])?;
        if let Some(e) = self.write().get_mut(&name) {
            e.refs.insert(id, r.clone());
        }
        Ok(r)
    }

    /// Releases mount `id` of volume `name`: one driver `unmount`. An id
    /// the volume does not hold is not-found; a driver error keeps the
    /// reference (so the release can be retried).
    pub fn unmount(&self, name: &str, id: &str) -> DriverResult<()> {
        let _name = self.names.lock(name);
        let entry = self.entry(name).ok_or_else(|| no_such(name))?;
        if !entry.refs.contains_key(id) {
            return Err(DriverError::not_found(format!("volume {name} has no mount with id {id}")));
        }
        let data = serde_json::json!({ "name": name, "id": id });
        let seq = self.intent(OP_UNMOUNT, ref_key(name, id), &entry.record.driver, data)?;
        self.crash_point("volume.unmount:after-intent");
        let mut um = VolumeUnmountRequest::default();
        um.name = name.to_string();
        um.id = id.to_string();
        let result =
            self.drivers.volume(&entry.record.driver).and_then(|d| d.call("unmount", move |d| d.unmount(um)));
        if let Err(e) = result {
            if e.kind != ErrorKind::Timeout {
                self.store.abandon(seq)?;
            }
            return Err(e.context(format!("unmount volume {name}")));
        }
        self.store.finish(seq, &[Change::Delete(ref_key(name, id))])?;
        if let Some(e) = self.write().get_mut(name) {
            e.refs.remove(id);
        }
        Ok(())
    }

    /// The active mounts of `name`, by id.
    pub fn refs(&self, name: &str) -> DriverResult<BTreeMap<String, MountRef>> {
        self.entry(name).map(|e| e.refs).ok_or_else(|| no_such(name))
    }
}
