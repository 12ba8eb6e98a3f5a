//! The volume driver a case works with: always behind a counting proxy
//! (so cases see what the core asked, and teardown knows what was left),
//! and restartable on the same root.

use std::sync::Arc;

use berth_plugin_api::volume::{VolumeRemoveRequest, VolumeUnmountRequest};
use berth_plugin_api::{ErrorKind, InitRequest, Kind, VolumeDriver};

use super::proxy::{short, CallLog, Recording};
use crate::case::Stop;
use crate::ctx::Ctx;
use crate::subject::VolumeFactory;

/// What a volume case was given: the driver's name, how to make it again,
/// the proxy around the current instance and the log all instances share.
pub(crate) struct VolumeSlot {
    name: String,
    init: InitRequest,
    factory: VolumeFactory,
    log: Arc<CallLog>,
    driver: Option<Arc<Recording>>,
}

impl VolumeSlot {
    pub(crate) fn new(
        name: &str,
        init: InitRequest,
        factory: VolumeFactory,
        driver: Arc<dyn VolumeDriver>,
    ) -> Self {
        let log = Arc::new(CallLog::default());
        let driver = Some(Arc::new(Recording::new(driver, Arc::clone(&log))));
        VolumeSlot { name: name.to_string(), init, factory, log, driver }
    }

    fn slot_driver(&self) -> Option<&Arc<Recording>> {
        self.driver.as_ref()
    }
}

impl Ctx {
    fn slot(&self) -> &VolumeSlot {
        self.volume.as_ref().expect("a volume case is always given a volume driver")
    }

    /// The volume driver under test, behind the counting proxy.
    ///
    /// # Panics
    /// When the case is not a volume case, or between the two halves of
    /// [`Ctx::restart_volume`] (bugs in the suite).
    pub fn volume(&self) -> &Recording {
        self.slot().slot_driver().expect("the volume driver is running")
    }

    /// The same proxy, to hand to a `VolumeService`.
    pub fn volume_handle(&self) -> Arc<Recording> {
        Arc::clone(self.slot().slot_driver().expect("the volume driver is running"))
    }

    /// The name the driver under test goes by (its manifest's name).
    pub fn volume_name(&self) -> &str {
        &self.slot().name
    }

    /// Every call made to the driver under test during this case, across
    /// restarts.
    pub fn volume_log(&self) -> Arc<CallLog> {
        Arc::clone(&self.slot().log)
    }

    /// Restarts the driver: drops this case's instance (the caller must
    /// have dropped every service holding it) and constructs a fresh one
    /// from the same factory and init request, on the same root.
    pub fn restart_volume(&mut self) -> Result<(), Stop> {
        let slot = self.volume.as_mut().expect("a volume case is always given a volume driver");
        drop(slot.driver.take());
        let driver = crate::runner::construct(Kind::Volume, || (slot.factory)(&slot.init))?;
        slot.driver = Some(Arc::new(Recording::new(driver, Arc::clone(&slot.log))));
        Ok(())
    }

    /// Releases every mount id the driver answered and nobody released,
    /// then removes every volume it created and nobody removed (a volume
    /// or id already gone is not a failure).
    pub(crate) fn volume_teardown(&mut self) -> Vec<String> {
        let Some(slot) = self.volume.as_mut() else { return Vec::new() };
        let mut errors = Vec::new();
        if slot.driver.is_none() {
            match crate::runner::construct(Kind::Volume, || (slot.factory)(&slot.init)) {
                Ok(d) => slot.driver = Some(Arc::new(Recording::new(d, Arc::clone(&slot.log)))),
                Err(_) => return vec!["construct the volume driver again to clean up: it failed".into()],
            }
        }
        let d = slot.driver.clone().expect("made above");
        let (mounts, volumes) = slot.log.outstanding();
        for (name, ids) in mounts {
            for id in ids {
                if let Err(e) = d.unmount(VolumeUnmountRequest::new(&name, &id)) {
                    if e.kind != ErrorKind::NotFound {
                        errors.push(format!("unmount {name} id {}: {}: {}", short(&id), e.kind, e.message));
                    }
                }
            }
        }
        for name in volumes {
            match d.remove(VolumeRemoveRequest::new(&name)) {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove volume {name:?}: {}: {}", e.kind, e.message)),
            }
        }
        errors
    }
}
