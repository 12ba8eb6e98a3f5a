//! Runs cases: a fresh root and a fresh driver per case, the body under
//! `catch_unwind`, a teardown that always runs, then a leak check.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use berth_plugin_api::{DriverResult, Init, InitRequest, Kind};

use crate::case::{Case, Failure, Outcome, Stop, Suite};
use crate::ctx::Ctx;
use crate::leaks::{self, FileWatch};
use crate::report::{CaseReport, Host, Report, Summary};
use crate::subject::Subject;
use crate::sys;

/// The default number of times idempotent calls are repeated.
pub const DEFAULT_REPEAT: usize = 10;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often idempotent calls are repeated (at least 1).
    pub repeat: usize,
    /// Where case roots are made; the system temp dir by default.
    pub workdir: Option<PathBuf>,
    /// The directory holding the fixture plugins for PL cases.
    pub fixtures: Option<PathBuf>,
    /// Whether an in-process driver's cases are checked for files left
    /// outside the case root ([`crate::leaks`]); on by default.
    pub check_files: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { repeat: DEFAULT_REPEAT, workdir: None, fixtures: None, check_files: true }
    }
}

/// Runs `cases` in order against `subject` (none: loader-only runs).
pub fn run(cases: &[Case], subject: Option<&Subject>, opts: &Options) -> Report {
    crate::lifecycle::quiet_deliberate_panics();
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let start = Instant::now();
    let mut reports = Vec::with_capacity(cases.len());
    for case in cases {
        let t = Instant::now();
        let outcome = run_case(case, subject, opts);
        let millis = t.elapsed().as_secs_f64() * 1000.0;
        reports.push(CaseReport::new(case.id, case.suite, case.description, &outcome, millis));
    }
    let count = |r: &str| reports.iter().filter(|c| c.result == r).count();
    let summary = Summary {
        total: reports.len(),
        passed: count("pass"),
        failed: count("fail"),
        skipped: count("skip"),
        millis: start.elapsed().as_millis() as u64,
    };
    Report {
        tool: "berth-conformance".into(),
        tool_version: crate::VERSION.into(),
        plugin: subject.map(|s| s.identity().clone()),
        fixtures: opts.fixtures.as_ref().map(|f| f.display().to_string()),
        host: Host::current(),
        repeat: opts.repeat,
        started_at: sys::iso8601(started),
        summary,
        cases: reports,
    }
}

/// Runs one case from its fresh root to its leak check.
pub fn run_case(case: &Case, subject: Option<&Subject>, opts: &Options) -> Outcome {
    let base = opts.workdir.clone().unwrap_or_else(std::env::temp_dir);
    let made = tempfile::Builder::new().prefix(&format!("berth-conformance-{}-", case.id)).tempdir_in(&base);
    let dir = match made.map(|t| t.keep()) {
        Ok(d) => std::fs::canonicalize(&d).unwrap_or(d),
        Err(e) => {
            return Outcome::Fail(Failure::new(
                "make the case root",
                format!("a fresh directory under {}", base.display()),
                format!("I/O error: {e}"),
            ))
        }
    };
    let mut ctx = Ctx::new(case.id, dir.clone(), opts.repeat.max(1), opts.fixtures.clone());
    ctx.remote = subject.and_then(|s| s.remote_target()).cloned();
    // An in-process driver's files outside the case root; a remote
    // plugin's own files are its business.
    let in_process = subject.is_some_and(|s| s.remote_target().is_none());
    let mut files =
        (opts.check_files && in_process && case.suite.driver_kind().is_some()).then(FileWatch::start);
    let mut outcome = match prepare(case, subject, &mut ctx) {
        Ok(()) => body(case, &mut ctx),
        Err(Stop::Fail(f)) => Outcome::Fail(f),
        Err(Stop::Skip(r)) => {
            // No driver was made (not provided, or it declined).
            files = None;
            Outcome::Skip(r)
        }
    };
    let mut problems = match catch_unwind(AssertUnwindSafe(|| ctx.teardown())) {
        Ok(errors) => errors,
        Err(p) => vec![format!("teardown panicked: {}", panic_text(&*p))],
    };
    // Links and nftables tables a network case left on the host.
    let net_leaks = catch_unwind(AssertUnwindSafe(|| ctx.network_leaks())).unwrap_or_default();
    // Pools and addresses an IPAM case left allocated at the driver.
    let leases = catch_unwind(AssertUnwindSafe(|| ctx.ipam_leaks()))
        .unwrap_or_else(|p| vec![format!("the lease check panicked: {}", panic_text(&*p))]);
    if catch_unwind(AssertUnwindSafe(|| ctx.drop_drivers())).is_err() {
        problems.push("dropping the driver panicked".into());
    }
    // A remote driver's layers live outside the case root: mounts left at
    // the paths `get` answered fail the case too, but stay (they are the
    // plugin's to release).
    let elsewhere = match ctx.mounts_left() {
        Ok(m) => m.into_iter().filter(|p| !p.starts_with(&dir)).collect(),
        Err(_) => Vec::new(),
    };
    let leaked = match sys::mounts_under(&dir) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("cannot read /proc/self/mountinfo: {e}"));
            Vec::new()
        }
    };
    for m in &leaked {
        if let Err(e) = sys::unmount(m) {
            problems.push(format!("cannot unmount leaked {}: {e}", m.display()));
        }
    }
    if let Err(e) = remove_tree(&dir) {
        problems.push(format!("cannot remove the case root {}: {e}", dir.display()));
    }
    if !leaked.is_empty() {
        let list: Vec<String> = leaked.iter().map(|p| p.display().to_string()).collect();
        let leak = Failure::new(
            "leak check after teardown (layers removed, cleanup called)",
            "no mounts under the case root",
            format!("{} mount(s) left: {}", leaked.len(), list.join(", ")),
        );
        outcome = merge(outcome, leak);
    }
    if !elsewhere.is_empty() {
        let list: Vec<String> = elsewhere.iter().map(|p| p.display().to_string()).collect();
        let leak = Failure::new(
            "leak check after teardown (layers removed, cleanup called)",
            "nothing mounted at the layer paths the driver answered",
            format!("{} mount(s) left, not unmounted by the suite: {}", elsewhere.len(), list.join(", ")),
        );
        outcome = merge(outcome, leak);
    }
    if !net_leaks.is_empty() {
        let leak = Failure::new(
            "leak check after teardown (sandboxes left, endpoints and networks deleted)",
            "no link or nftables table the case made left on the host",
            format!("left: {}", net_leaks.join("; ")),
        );
        outcome = merge(outcome, leak);
    }
    if !leases.is_empty() {
        let leak = Failure::new(
            "leak check after teardown (every pool the case holds released)",
            "every pool the case was given free again (requesting it again succeeds), and its addresses too",
            format!("left: {}", leases.join("; ")),
        );
        outcome = merge(outcome, leak);
    }
    let workdir = std::fs::canonicalize(&base).unwrap_or(base);
    let stray = files.map(|w| w.leaks(&[&dir, &workdir])).unwrap_or_default();
    if !stray.is_empty() {
        let list: Vec<String> = stray.iter().map(|p| leaks::describe(p)).collect();
        let leak = Failure::new(
            "leak check after teardown (driver dropped)",
            format!("no new entry outside the case root in {} or the temp dir", leaks::WATCHED.join(", ")),
            format!("{} left: {}", stray.len(), list.join(", ")),
        );
        outcome = merge(outcome, leak);
    }
    if !problems.is_empty() {
        outcome = merge(outcome, Failure::new("teardown", "every step to succeed", problems.join("; ")));
    }
    outcome
}

/// Gives the case its driver: a fresh one from the subject's factory for
/// driver suites; nothing for the lifecycle suite.
fn prepare(case: &Case, subject: Option<&Subject>, ctx: &mut Ctx) -> Result<(), Stop> {
    let Some(kind) = case.suite.driver_kind() else { return Ok(()) };
    let Some(subject) = subject else {
        return Err(Stop::Skip(format!(
            "no plugin given: {} cases need --plugin PATH.so or --remote ADDR",
            case.suite
        )));
    };
    let name = &subject.identity().name;
    if !subject.provides(kind) {
        if let Some(r) = subject.remote_target() {
            return Err(Stop::Skip(format!(
                "remote plugin {name:?} does not implement {} (its /Plugin.Activate answered Implements {:?})",
                berth_plugin_api::remote::wire::Subsystem::of(kind),
                r.implements
            )));
        }
        return Err(Stop::Skip(format!("plugin {name:?} does not declare a {kind} driver")));
    }
    // A remote plugin ignores these roots (it owns its storage), but the
    // storage cases' ids are tagged from them (`remote::Tagged`).
    let root = ctx.dir().join("root");
    let run_root = ctx.dir().join("run");
    for d in [&root, &run_root] {
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::new("make the driver roots", "success", format!("I/O error: {e}")))?;
    }
    let init = InitRequest::new(name, root.display().to_string(), run_root.display().to_string());
    let cannot = || Stop::Skip(format!("{kind} cases cannot construct drivers in this build yet"));
    match case.suite {
        Suite::Storage => {
            let factory = subject.storage().ok_or_else(cannot)?;
            let driver = construct(kind, || factory(&init))?;
            ctx.set_storage(driver, factory.clone(), init.clone());
        }
        Suite::Volume => {
            let factory = subject.volume().ok_or_else(cannot)?;
            let driver = construct(kind, || factory(&init))?;
            ctx.volume = Some(crate::volume::VolumeSlot::new(name, init.clone(), factory.clone(), driver));
        }
        Suite::Ipam => {
            let factory = subject.ipam().ok_or_else(cannot)?;
            let driver = construct(kind, || factory(&init))?;
            ctx.ipam = Some(crate::ipam::IpamSlot::new(name, init.clone(), factory.clone(), driver));
        }
        Suite::Network => {
            let factory = subject.network().ok_or_else(cannot)?;
            let driver = construct(kind, || factory(&init))?;
            ctx.network = Some(crate::network::NetworkSlot::new(driver));
        }
        _ => return Err(cannot()),
    }
    Ok(())
}

/// Calls a driver constructor under `catch_unwind`: a ready driver, a skip
/// with the driver's reason, or a failure with the error kind.
pub(crate) fn construct<D>(kind: Kind, f: impl FnOnce() -> DriverResult<Init<D>>) -> Result<D, Stop> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(Init::Ready(d))) => Ok(d),
        // A driver that declines to run here skips every case of its kind.
        Ok(Ok(Init::Skipped(reason))) => Err(Stop::Skip(format!("driver declined: {reason}"))),
        Ok(Err(e)) => Err(Failure::new(
            format!("construct the {kind} driver"),
            "ready or skipped",
            crate::case::describe_error(&e),
        )
        .with_kind(e.kind)
        .into()),
        Err(p) => Err(Failure::new(
            format!("construct the {kind} driver"),
            "ready or skipped",
            format!("panic: {}", panic_text(&*p)),
        )
        .into()),
    }
}

fn body(case: &Case, ctx: &mut Ctx) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| (case.run)(ctx))) {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(Stop::Fail(f))) => Outcome::Fail(f),
        Ok(Err(Stop::Skip(r))) => Outcome::Skip(r),
        Err(p) => Outcome::Fail(Failure::new("case body", "no panic", format!("panic: {}", panic_text(&*p)))),
    }
}

/// Adds a later failure to an outcome: a pass or skip becomes that
/// failure; a failure keeps its own and mentions the later one.
fn merge(outcome: Outcome, later: Failure) -> Outcome {
    match outcome {
        Outcome::Pass | Outcome::Skip(_) => Outcome::Fail(later),
        Outcome::Fail(mut f) => {
            f.actual = format!("{}; and then {later}", f.actual);
            Outcome::Fail(f)
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Removes a case root, making read-only directories writable first (a
/// driver may leave `0555` trees behind).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            make_writable(dir);
            std::fs::remove_dir_all(dir).map_err(|_| first)
        }
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}
