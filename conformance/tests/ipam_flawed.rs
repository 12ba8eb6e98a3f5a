//! The IPAM suite catches flawed drivers, and says what is wrong: the real
//! `default` plugin behind a wrapper that breaks one rule at a time.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_conformance::{ipam, run, Options, Report, Subject};
use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, IpamDriver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// Releasing a pool that is not live succeeds.
    LenientRelease,
    /// Every 40th "any" answer repeats the previous one of its pool.
    Duplicates,
    /// Running out answers an internal error.
    WrongExhaustionKind,
    /// Every construction starts from an empty root: nothing survives.
    Forgetful,
    /// Overlapping pools are allowed (the wrapper answers a fake pool).
    Overlaps,
    /// Not a flaw: every construction starts from an empty root, and the
    /// capabilities ask the daemon to replay requests (Docker's model).
    Replay,
    /// `release_pool` answers success and releases nothing.
    KeepsPools,
    /// Releasing a pool keeps its addresses: asked for again by a pool of
    /// the same prefix, they are in use.
    KeepsAddresses,
}

struct Flawed {
    inner: Arc<dyn IpamDriver>,
    flaw: Flaw,
    anys: AtomicUsize,
    last: Mutex<BTreeMap<String, String>>,
    /// Pool id → (its prefix, the addresses handed out in it).
    handed: Mutex<BTreeMap<String, (String, BTreeSet<String>)>>,
    /// Prefix → addresses a released pool of that prefix kept.
    ghosts: Mutex<BTreeMap<String, BTreeSet<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl IpamDriver for Flawed {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        let mut caps = self.inner.capabilities(req)?;
        caps.requires_request_replay |= self.flaw == Flaw::Replay;
        Ok(caps)
    }
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.inner.default_address_spaces(req)
    }
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        match self.inner.request_pool(req.clone()) {
            Err(e) if self.flaw == Flaw::Overlaps && e.kind == ErrorKind::Conflict => {
                Ok(RequestPoolResponse::new(format!("fake/{}", req.pool), req.pool))
            }
            Ok(r) => {
                self.handed.lock().unwrap().insert(r.pool_id.clone(), (r.pool.clone(), BTreeSet::new()));
                Ok(r)
            }
            other => other,
        }
    }
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        if self.flaw == Flaw::KeepsPools {
            return Ok(());
        }
        let id = req.pool_id.clone();
        let released = self.inner.release_pool(req);
        if released.is_ok() && self.flaw == Flaw::KeepsAddresses {
            if let Some((pool, addresses)) = self.handed.lock().unwrap().remove(&id) {
                self.ghosts.lock().unwrap().entry(pool).or_default().extend(addresses);
            }
        }
        match released {
            Err(e) if self.flaw == Flaw::LenientRelease && e.kind == ErrorKind::NotFound => Ok(()),
            Err(_) if self.flaw == Flaw::Overlaps => Ok(()),
            other => other,
        }
    }
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let plain_any = req.address.is_empty() && !req.is_gateway();
        if plain_any && self.flaw == Flaw::Duplicates && self.anys.fetch_add(1, Ordering::SeqCst) % 40 == 39 {
            if let Some(last) = self.last.lock().unwrap().get(&req.pool_id) {
                return Ok(RequestAddressResponse::new(last.clone()));
            }
        }
        let pool = req.pool_id.clone();
        if self.flaw == Flaw::KeepsAddresses && !req.address.is_empty() {
            let prefix = self.handed.lock().unwrap().get(&pool).map(|(p, _)| p.clone()).unwrap_or_default();
            if self.ghosts.lock().unwrap().get(&prefix).is_some_and(|g| g.contains(&req.address)) {
                return Err(DriverError::conflict(format!("address {} is in use", req.address)));
            }
        }
        match self.inner.request_address(req) {
            Ok(r) => {
                self.last.lock().unwrap().insert(pool.clone(), r.address.clone());
                if let Some((_, handed)) = self.handed.lock().unwrap().get_mut(&pool) {
                    handed.insert(r.address.split('/').next().unwrap_or_default().to_string());
                }
                Ok(r)
            }
            Err(e) if self.flaw == Flaw::WrongExhaustionKind && e.kind == ErrorKind::ResourceExhausted => {
                Err(DriverError::internal("pool is full"))
            }
            Err(e) => Err(e),
        }
    }
    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        self.inner.release_address(req)
    }
}

fn flawed(flaw: Flaw) -> Report {
    let so = support::plugin_so("berth-ipam-default", "libberth_ipam_default.so");
    let module = berth_core::load_library(&so).unwrap_or_else(|e| panic!("{e}")).module;
    let subject = Subject::linked_ipam("flawed", "0.0.0", move |mut init: InitRequest| {
        let dir = matches!(flaw, Flaw::Forgetful | Flaw::Replay).then(|| tempfile::tempdir().unwrap());
        if let Some(d) = &dir {
            init.root = d.path().display().to_string();
        }
        let Init::Ready(inner) = module.new_ipam(&init)? else { panic!("declined") };
        Ok(Init::Ready(Flawed {
            inner,
            flaw,
            anys: AtomicUsize::new(0),
            last: Mutex::default(),
            handed: Mutex::default(),
            ghosts: Mutex::default(),
            _dir: dir,
        }))
    });
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), ..Options::default() };
    let report = run(&ipam::cases(), Some(&subject), &opts);
    println!("{}", report.to_human());
    report
}

fn message<'a>(report: &'a Report, id: &str) -> &'a str {
    report.case(id).and_then(|c| c.message.as_deref()).unwrap_or_default()
}

#[test]
fn each_flaw_fails_the_case_that_owns_the_rule_and_says_why() {
    let r = flawed(Flaw::LenientRelease);
    assert!(r.failed_ids().contains(&"IP-03"), "{:?}", r.failed_ids());
    let m = message(&r, "IP-03");
    assert!(
        m.contains("release of released pool") && m.contains("not_found") && m.contains("is NotFound"),
        "{m}"
    );

    let r = flawed(Flaw::Duplicates);
    for id in ["IP-04", "IP-08"] {
        assert!(r.failed_ids().contains(&id), "{id}: {:?}", r.failed_ids());
    }
    let m = message(&r, "IP-08");
    assert!(
        m.contains("never live twice") || m.contains("each address once") || m.contains("none lost"),
        "{m}"
    );

    let r = flawed(Flaw::WrongExhaustionKind);
    assert!(r.failed_ids().contains(&"IP-05"), "{:?}", r.failed_ids());
    let m = message(&r, "IP-05");
    assert!(m.contains("resource_exhausted") && m.contains("error internal: pool is full"), "{m}");

    let r = flawed(Flaw::Forgetful);
    assert_eq!(r.failed_ids(), ["IP-09"]);
    let m = message(&r, "IP-09");
    assert!(m.contains("after the restart") && m.contains("survive"), "{m}");

    let r = flawed(Flaw::Overlaps);
    assert!(r.failed_ids().contains(&"IP-01"), "{:?}", r.failed_ids());
    let m = message(&r, "IP-01");
    assert!(m.contains("never overlap") && m.contains("the identical prefix"), "{m}");
}

#[test]
fn a_driver_that_asks_for_replay_keeps_its_allocations_through_the_suites_replay() {
    let r = flawed(Flaw::Replay);
    berth_conformance::assert_conforms(&r);
    assert_eq!(r.case("IP-09").unwrap().result, "pass");
}

/// The cases whose message carries the lease check's finding, with it.
fn lease_leaks(report: &Report) -> Vec<(String, String)> {
    report
        .cases
        .iter()
        .filter_map(|c| {
            let m = c.message.as_deref().unwrap_or_default();
            m.contains("leak check after teardown (every pool the case holds released)")
                .then(|| (c.id.clone(), m.to_string()))
        })
        .collect()
}

#[test]
fn pools_a_driver_never_releases_are_leaks_naming_the_pool() {
    let r = flawed(Flaw::KeepsPools);
    let leaks = lease_leaks(&r);
    // Every case that asks for pools leaves them (IP-11 and IP-12 skip).
    let ids: Vec<&str> = leaks.iter().map(|(id, _)| id.as_str()).collect();
    for id in ["IP-01", "IP-02", "IP-03", "IP-04", "IP-05", "IP-06", "IP-07", "IP-08", "IP-09", "IP-10"] {
        assert!(ids.contains(&id), "{id} reports no leaked pool: {leaks:?}");
    }
    // Named: the prefix (the case's own 10.<n>.…), its address space, its id.
    let (_, m) = leaks.iter().find(|(id, _)| id == "IP-04").unwrap();
    assert!(m.contains("pool 10.4.") && m.contains("still allocated: requesting it again answered"), "{m}");
    assert!(m.contains("(id ") && m.contains("error conflict"), "{m}");
}

#[test]
fn addresses_a_released_pool_keeps_are_leaks_naming_the_address() {
    let r = flawed(Flaw::KeepsAddresses);
    let leaks = lease_leaks(&r);
    let (_, m) = leaks.iter().find(|(id, _)| id == "IP-04").unwrap_or_else(|| panic!("{leaks:?}"));
    assert!(
        m.contains("address(es) 10.4.") && m.contains("still allocated after the pool was released"),
        "{m}"
    );
}
