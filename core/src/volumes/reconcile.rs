//! Start-up reconcile of volume operations a crash interrupted.

use berth_plugin_api::volume::{VolumeRemoveRequest, VolumeUnmountRequest};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};

use super::{VolumeService, OP_CREATE, OP_MOUNT, OP_REMOVE, OP_UNMOUNT};
use crate::store::{Change, Intent};

impl VolumeService {
    /// Finishes or rolls back one interrupted volume operation and answers
    /// what was done:
    ///
    /// * a create whose caller never heard back is rolled back (the
    ///   driver's half is removed) — unless it re-made or adopted a volume
    ///   the daemon already recorded, which stays;
    /// * a remove is finished;
    /// * a mount is rolled back with an unmount of its id (its user never
    ///   learnt the id, so nobody would ever release it);
    /// * an unmount is finished.
    pub fn reconcile(&self, seq: u64, intent: &Intent) -> DriverResult<String> {
        let name = intent
            .data
            .get("name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| intent.key.strip_prefix("volume/").unwrap_or(&intent.key).to_string());
        let flag = |k: &str| intent.data.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        let driver = self.drivers.volume(&intent.driver)?;
        let not_found_ok = |r: DriverResult<()>| match r {
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other,
        };
        match intent.op.as_str() {
            OP_CREATE if flag("recreate") || flag("adopt") => {
                self.store.abandon(seq)?;
                Ok(format!("kept volume {name:?}, re-made or adopted before the interruption"))
            }
            OP_CREATE | OP_REMOVE => {
                let rm = VolumeRemoveRequest::new(name.clone());
                not_found_ok(driver.call("remove", move |d| d.remove(rm)))?;
                if intent.op == OP_CREATE {
                    self.store.abandon(seq)?;
                    Ok(format!("rolled back interrupted create of volume {name:?}"))
                } else {
                    self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                    self.write().remove(&name);
                    Ok(format!("finished interrupted removal of volume {name:?}"))
                }
            }
            OP_MOUNT | OP_UNMOUNT => {
                let id = intent.data.get("id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                let mut um = VolumeUnmountRequest::default();
                um.name = name.clone();
                um.id = id.clone();
                not_found_ok(driver.call("unmount", move |d| d.unmount(um)))?;
                self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                if let Some(e) = self.write().get_mut(&name) {
                    e.refs.remove(&id);
                }
                Ok(if intent.op == OP_MOUNT {
                    format!("rolled back interrupted mount {id} of volume {name:?}")
                } else {
                    format!("finished interrupted unmount {id} of volume {name:?}")
                })
            }
            other => Err(DriverError::internal(format!("unknown volume operation {other:?} in the ledger"))),
        }
    }
}
