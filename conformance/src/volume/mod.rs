//! The volume suite (`VL-*`), exactly as `CONFORMANCE.md` words each case.
//!
//! Every case gets the driver under test behind a counting proxy
//! ([`Recording`]), so it can see exactly which calls the core made, and
//! most cases run berth-core's own [`VolumeService`] over it (its state
//! store under the case root), so what is checked is what the daemon
//! would do with this driver. VL-02 puts the suite's own in-memory driver
//! ([`MemoryVolumeDriver`]) next to it, standing in for another vendor's.
//!
//! Teardown releases every mount id the driver answered and nobody
//! released, then removes every volume it created and nobody removed;
//! the runner's leak check then looks for mounts left under the case root.
//! Volume names are prefixed with the case id so a leftover names its case
//! (and, against a remote plugin, whose volumes outlive the case, the
//! checks of "no volumes left" look at the case's own names only).
//!
//! VL-01, VL-02 and VL-06 live in `names.rs`; VL-03..VL-05 in `mounts.rs`;
//! VL-07..VL-09 in `state.rs`.

mod mounts;
mod names;
mod other;
mod proxy;
mod slot;
mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_core::volumes::DriverSet;
use berth_core::{CreateVolume, Driver, Filters, Kind, Metrics, VolumeService};
use berth_plugin_api::network::Scope;
use berth_plugin_api::volume::VolumeListRequest;
use berth_plugin_api::{DriverResult, ErrorKind, VolumeDriver};

use crate::case::{err_kind, ok, Case, Stop, Suite};
use crate::ctx::Ctx;

pub use other::MemoryVolumeDriver;
pub use proxy::{Call, CallLog, Method, Recording};
pub(crate) use slot::VolumeSlot;

/// How many users VL-03 mounts a volume for.
pub const USERS: usize = 3;

/// The deadline the service gives each driver call (as the daemon would).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Every implemented volume case, in ID order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "VL-01",
            description:
                "get of an unknown name is not-found; an empty answer with no error is not-found, not a crash",
            suite: Suite::Volume,
            run: names::vl01_unknown_names,
        },
        Case {
            id: "VL-02",
            description: "names are unique across drivers; re-creating with the same driver is idempotent",
            suite: Suite::Volume,
            run: names::vl02_unique_names,
        },
        Case {
            id: "VL-03",
            description: "N users of a volume cause N mounts with distinct ids and N matching unmounts; the backing mount goes with the last",
            suite: Suite::Volume,
            run: mounts::vl03_users,
        },
        Case {
            id: "VL-04",
            description: "removing a volume in use is refused; it works once released",
            suite: Suite::Volume,
            run: mounts::vl04_remove_in_use,
        },
        Case {
            id: "VL-05",
            description: "a failed mount is never followed by an unmount",
            suite: Suite::Volume,
            run: mounts::vl05_failed_mounts,
        },
        Case {
            id: "VL-06",
            description:
                "a driver's error text reaches the user; a failed create leaves nothing half-registered",
            suite: Suite::Volume,
            run: names::vl06_error_text,
        },
        Case {
            id: "VL-07",
            description: "capabilities asked once and cached; scope (local/global) shown in inspect",
            suite: Suite::Volume,
            run: state::vl07_capabilities,
        },
        Case {
            id: "VL-08",
            description: "volumes survive a daemon restart and still mount",
            suite: Suite::Volume,
            run: state::vl08_restart,
        },
        Case {
            id: "VL-09",
            description: "a volume the driver forgot can be re-created under the same name",
            suite: Suite::Volume,
            run: state::vl09_forgotten,
        },
    ]
}

/// berth-core's volume service over the driver under test (the default
/// driver) and `others`, with its state store in `<case root>/state`.
/// Dropping it closes the store, so a second call is a daemon restart.
fn service(ctx: &Ctx, others: &[(&str, Arc<dyn VolumeDriver>)]) -> Result<VolumeService, Stop> {
    let wrap = |d: Arc<dyn VolumeDriver>, name: &str| {
        Driver::new(d, name, Kind::Volume, CALL_TIMEOUT, Arc::new(Metrics::default()))
    };
    let mut set = DriverSet::new().with(wrap(ctx.volume_handle(), ctx.volume_name()));
    for (name, d) in others {
        set = set.with(wrap(Arc::clone(d), name));
    }
    let state = ctx.dir().join("state");
    let store = ok(
        format!("open berth-core's state store in {}", state.display()),
        berth_core::store::Store::open(&state),
    )?;
    ok(
        "start berth-core's volume service over the driver",
        VolumeService::new(Arc::new(set), Arc::new(store), ctx.volume_name().to_string(), None),
    )
}

/// A service create request for `name` on `driver` with `options`.
fn create_req(name: &str, driver: &str, options: &[(&str, &str)]) -> CreateVolume {
    CreateVolume {
        name: name.to_string(),
        driver: driver.to_string(),
        driver_opts: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..CreateVolume::default()
    }
}

/// The names the service lists (every driver).
fn service_names(svc: &VolumeService, when: &str) -> Result<BTreeMap<String, String>, Stop> {
    let list = ok(format!("list volumes through the service {when}"), svc.list(&Filters::none()))?;
    Ok(list.volumes.into_iter().map(|v| (v.record.name, v.record.driver)).collect())
}

/// The names `driver` lists, in its order (duplicates kept).
fn driver_names(driver: &dyn VolumeDriver, when: &str) -> Result<Vec<String>, Stop> {
    let list = ok(format!("list at the driver {when}"), driver.list(VolumeListRequest::default()))?;
    Ok(list.into_iter().map(|v| v.name).collect())
}

/// `names` as the case's checks see them: all of them, except for a
/// driver whose state outlives the case (a remote plugin may hold other
/// volumes), where only this case's own (`vl01-…`) count.
fn case_names(ctx: &Ctx, names: impl IntoIterator<Item = String>) -> Vec<String> {
    let prefix = format!("{}-", ctx.id().to_ascii_lowercase().replace('-', ""));
    names.into_iter().filter(|n| !ctx.shared_driver() || n.starts_with(&prefix)).collect()
}

/// A mount id for direct driver calls: 64 hex digits, as the core makes.
fn mount_id(tag: u64) -> String {
    format!("c0f0{tag:060x}")
}

/// `local` or `global`, as inspect shows a scope.
fn scope_str(s: Scope) -> &'static str {
    match s {
        Scope::Local => "local",
        Scope::Global => "global",
    }
}

/// Whether `path` is a mount point in this process's mount table.
fn is_mount_point(path: &Path) -> Result<bool, Stop> {
    let table = berth_plugin_api::util::mounts::mount_points().map_err(|e| {
        crate::case::Failure::new("read /proc/self/mountinfo", "success", format!("I/O error: {e}"))
    })?;
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(table.iter().any(|m| m == path || m == &real))
}

/// The rule behind every not-found check.
const NOT_FOUND: &str = "a name the driver does not have is NotFound, never an empty answer or success";

/// Like [`err_kind`], with the rule the driver broke added to what was
/// expected, so the failure tells the vendor what to fix.
fn refused<T: std::fmt::Debug>(
    step: impl std::fmt::Display,
    kind: ErrorKind,
    rule: &str,
    res: DriverResult<T>,
) -> Result<berth_plugin_api::DriverError, Stop> {
    err_kind(step, kind, res).map_err(|stop| with_rule(stop, rule))
}

/// Adds `rule` to the expectation of a failure.
fn with_rule(stop: Stop, rule: &str) -> Stop {
    match stop {
        Stop::Fail(mut f) => {
            f.expected = format!("{} ({rule})", f.expected);
            Stop::Fail(f)
        }
        skip => skip,
    }
}
