//! The IPAM driver a case works with: behind [`Tracked`], which keeps a
//! [`Ledger`] of the live pools and addresses it handed out, so teardown
//! can release them and a restart can replay them (as a daemon does for a
//! driver that keeps no state).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverResult, ErrorKind, InitRequest, IpamDriver, Kind};

use super::bare;
use crate::case::{ok, Stop};
use crate::ctx::Ctx;
use crate::subject::IpamFactory;

/// What a case holds at the driver: live pools (by id, with the request
/// that made them) and live addresses (by pool id and bare address, with
/// the request that got them).
#[derive(Debug, Default)]
pub struct Ledger {
    pools: Mutex<BTreeMap<String, RequestPoolRequest>>,
    addresses: Mutex<BTreeMap<(String, String), RequestAddressRequest>>,
    /// Every pool request that succeeded during the case, with its answer
    /// (released or not), for the lease check.
    pub(super) requested: Mutex<Vec<(RequestPoolRequest, RequestPoolResponse)>>,
    /// Every address handed out during the case, bare, by pool id.
    pub(super) handed: Mutex<BTreeMap<String, std::collections::BTreeSet<String>>>,
}

pub(super) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ledger {
    /// The live pool ids.
    pub fn pools(&self) -> Vec<String> {
        guard(&self.pools).keys().cloned().collect()
    }

    fn forget_pool(&self, id: &str) {
        guard(&self.pools).remove(id);
        guard(&self.addresses).retain(|(p, _), _| p != id);
    }
}

/// An IPAM driver that records what it handed out in a [`Ledger`].
pub struct Tracked {
    pub(super) inner: Arc<dyn IpamDriver>,
    ledger: Arc<Ledger>,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

impl Tracked {
    /// Wraps `inner`, recording into `ledger`.
    pub fn new(inner: Arc<dyn IpamDriver>, ledger: Arc<Ledger>) -> Self {
        Tracked { inner, ledger }
    }
}

impl IpamDriver for Tracked {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        self.inner.capabilities(req)
    }

    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.inner.default_address_spaces(req)
    }

    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        let r = self.inner.request_pool(req.clone())?;
        guard(&self.ledger.requested).push((req.clone(), r.clone()));
        guard(&self.ledger.pools).insert(r.pool_id.clone(), req);
        Ok(r)
    }

    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        let id = req.pool_id.clone();
        self.inner.release_pool(req)?;
        self.ledger.forget_pool(&id);
        Ok(())
    }

    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let r = self.inner.request_address(req.clone())?;
        if !r.address.is_empty() {
            let mut replay = req.clone();
            replay.address = bare(&r.address).to_string();
            guard(&self.ledger.handed).entry(req.pool_id.clone()).or_default().insert(replay.address.clone());
            guard(&self.ledger.addresses).insert((req.pool_id, replay.address.clone()), replay);
        }
        Ok(r)
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        let key = (req.pool_id.clone(), req.address.clone());
        self.inner.release_address(req)?;
        guard(&self.ledger.addresses).remove(&key);
        Ok(())
    }
}

/// What an IPAM case was given: the driver's name, how to make it again,
/// the tracked current instance and the ledger all instances share.
pub(crate) struct IpamSlot {
    name: String,
    init: InitRequest,
    factory: IpamFactory,
    pub(super) ledger: Arc<Ledger>,
    pub(super) driver: Option<Arc<Tracked>>,
}

impl IpamSlot {
    pub(crate) fn new(
        name: &str,
        init: InitRequest,
        factory: IpamFactory,
        driver: Arc<dyn IpamDriver>,
    ) -> Self {
        let ledger = Arc::new(Ledger::default());
        let driver = Some(Arc::new(Tracked::new(driver, Arc::clone(&ledger))));
        IpamSlot { name: name.to_string(), init, factory, ledger, driver }
    }
}

impl Ctx {
    fn ipam_slot(&self) -> &IpamSlot {
        self.ipam.as_ref().expect("an IPAM case is always given an IPAM driver")
    }

    /// The IPAM driver under test, tracked.
    ///
    /// # Panics
    /// When the case is not an IPAM case, or during a failed restart (bugs
    /// in the suite).
    pub fn ipam(&self) -> &dyn IpamDriver {
        &**self.ipam_slot().driver.as_ref().expect("the IPAM driver is running")
    }

    /// The same driver, to hand to threads.
    pub fn ipam_handle(&self) -> Arc<dyn IpamDriver> {
        Arc::clone(self.ipam_slot().driver.as_ref().expect("the IPAM driver is running"))
            as Arc<dyn IpamDriver>
    }

    /// The name the driver under test goes by.
    pub fn ipam_name(&self) -> &str {
        &self.ipam_slot().name
    }

    /// What the case holds at the driver.
    pub fn ipam_ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ipam_slot().ledger)
    }

    /// Restarts the driver: drops this case's instance and constructs a
    /// fresh one from the same factory and init request (the same root; for
    /// a remote plugin, a new client of the same process). When the new
    /// instance's capabilities ask for `requires_request_replay`, every
    /// live pool is requested again with its original request and every
    /// live address again as a specific address, as a daemon does.
    /// Answers each live pool id's id after the restart.
    pub fn restart_ipam(&mut self) -> Result<BTreeMap<String, String>, Stop> {
        let slot = self.ipam.as_mut().expect("an IPAM case is always given an IPAM driver");
        drop(slot.driver.take());
        let fresh = crate::runner::construct(Kind::Ipam, || (slot.factory)(&slot.init))?;
        let caps =
            ok("capabilities after the restart", fresh.capabilities(IpamCapabilitiesRequest::default()))?;
        let pools: Vec<(String, RequestPoolRequest)> =
            guard(&slot.ledger.pools).clone().into_iter().collect();
        let mut ids: BTreeMap<String, String> =
            pools.iter().map(|(id, _)| (id.clone(), id.clone())).collect();
        if caps.requires_request_replay {
            let addresses = std::mem::take(&mut *guard(&slot.ledger.addresses));
            guard(&slot.ledger.pools).clear();
            let tracked = Tracked::new(Arc::clone(&fresh), Arc::clone(&slot.ledger));
            for (old, req) in pools {
                let step = format!("replay the request of pool {old:?} (the driver asks for replay)");
                let r = ok(step, tracked.request_pool(req))?;
                ids.insert(old, r.pool_id);
            }
            for ((pool, address), mut req) in addresses {
                req.pool_id = ids.get(&pool).cloned().unwrap_or(pool);
                let step = format!("replay the request of address {address} in pool {:?}", req.pool_id);
                ok(step, tracked.request_address(req))?;
            }
        }
        slot.driver = Some(Arc::new(Tracked::new(fresh, Arc::clone(&slot.ledger))));
        Ok(ids)
    }

    /// Releases every pool the case made and did not release (a pool
    /// already gone is not a failure); releasing a pool releases its
    /// addresses.
    pub(crate) fn ipam_teardown(&mut self) -> Vec<String> {
        let Some(slot) = self.ipam.as_mut() else { return Vec::new() };
        if slot.driver.is_none() {
            match crate::runner::construct(Kind::Ipam, || (slot.factory)(&slot.init)) {
                Ok(d) => slot.driver = Some(Arc::new(Tracked::new(d, Arc::clone(&slot.ledger)))),
                Err(_) => return vec!["construct the IPAM driver again to clean up: it failed".into()],
            }
        }
        let d = slot.driver.clone().expect("made above");
        let mut errors = Vec::new();
        for id in slot.ledger.pools() {
            match d.release_pool(ReleasePoolRequest::new(&id)) {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::NotFound => slot.ledger.forget_pool(&id),
                Err(e) => errors.push(format!("release pool {id:?}: {}: {}", e.kind, e.message)),
            }
        }
        errors
    }
}
