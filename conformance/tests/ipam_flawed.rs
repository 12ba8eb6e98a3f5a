//! The IPAM suite catches flawed drivers, and says what is wrong: the real
//! `default` plugin behind a wrapper that breaks one rule at a time.

mod support;

use std::collections::BTreeMap;
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
}

struct Flawed {
    inner: Arc<dyn IpamDriver>,
    flaw: Flaw,
    anys: AtomicUsize,
    last: Mutex<BTreeMap<String, String>>,
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
            other => other,
        }
    }
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        match self.inner.release_pool(req) {
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
        match self.inner.request_address(req) {
            Ok(r) => {
                self.last.lock().unwrap().insert(pool, r.address.clone());
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
        Ok(Init::Ready(Flawed { inner, flaw, anys: AtomicUsize::new(0), last: Mutex::default(), _dir: dir }))
    });
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), fixtures: None };
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
