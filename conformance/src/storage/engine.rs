//! Diff and apply as the daemon does them for this driver: through its
//! [`DiffDriver`](berth_plugin_api::DiffDriver) when `as_diff()` offers one,
//! else with berth-core's naive engine (`berth_core::layers`) over the
//! paths `get` answers.
//!
//! * Export: the driver's `diff`, or `layers::diff` of the parent's and the
//!   child's mounted trees. A native answer of `unsupported` falls back to
//!   the naive engine, as the core does.
//! * Import: a new layer made with `create` and filled by the driver's
//!   `apply_diff`; without a diff driver (or when `apply_diff` answers
//!   `unsupported`, and the layer is removed again), a layer made with
//!   `create_rw`, mounted, filled by `layers::apply` and released (a
//!   read-only layer's mount cannot be written).

use berth_core::layers::{self, ApplyOptions};
use berth_plugin_api::storage::{ApplyDiffRequest, Change, ChangesRequest, DiffRequest, DiffSizeRequest};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};

use crate::case::{ok, Stop};
use crate::ctx::Ctx;

/// Which engine diffs and applies for the driver under test, for messages.
pub fn engine(ctx: &Ctx) -> &'static str {
    if ctx.storage().as_diff().is_some() {
        "the driver's DiffDriver"
    } else {
        "berth-core's naive diff"
    }
}

/// Runs `native` on the driver's diff capability, if any; `None` when
/// there is none or it answers `unsupported`.
fn try_native<T>(
    ctx: &Ctx,
    native: impl FnOnce(&dyn berth_plugin_api::DiffDriver) -> DriverResult<T>,
) -> Option<DriverResult<T>> {
    let d = ctx.storage().as_diff()?;
    match native(d) {
        Err(e) if e.kind == ErrorKind::Unsupported => None,
        other => Some(other),
    }
}

/// Mounts `id` and `parent` (none when empty), runs `f` on their paths,
/// and releases both.
fn with_trees<T>(
    ctx: &mut Ctx,
    id: &str,
    parent: &str,
    f: impl FnOnce(Option<&std::path::Path>, &std::path::Path) -> DriverResult<T>,
) -> Result<DriverResult<T>, Stop> {
    let lower = if parent.is_empty() { None } else { Some(ctx.get(parent)?) };
    let upper = ctx.get(id)?;
    let out = f(lower.as_deref(), &upper);
    ctx.put(id)?;
    if !parent.is_empty() {
        ctx.put(parent)?;
    }
    Ok(out)
}

/// The layer tar of `id` against `parent` (empty: against nothing).
pub fn export(ctx: &mut Ctx, id: &str, parent: &str) -> Result<Vec<u8>, Stop> {
    let step = format!("diff layer {id:?} against {} ({})", name(parent), engine(ctx));
    let native = try_native(ctx, |d| {
        let mut buf = Vec::new();
        d.diff(DiffRequest::new(id, parent), &mut buf).map(|()| buf)
    });
    let res = match native {
        Some(r) => r,
        None => with_trees(ctx, id, parent, |lower, upper| {
            let mut buf = Vec::new();
            layers::diff(lower, upper, &mut buf).map(|_| buf)
        })?,
    };
    ok(step, res)
}

/// The diff size of `id` against `parent`.
pub fn diff_size(ctx: &mut Ctx, id: &str, parent: &str) -> Result<u64, Stop> {
    let step = format!("diff_size of layer {id:?} against {} ({})", name(parent), engine(ctx));
    let res = match try_native(ctx, |d| d.diff_size(DiffSizeRequest::new(id, parent))) {
        Some(r) => r,
        None => with_trees(ctx, id, parent, layers::diff_size)?,
    };
    ok(step, res)
}

/// The changes of `id` against `parent`.
pub fn changes(ctx: &mut Ctx, id: &str, parent: &str) -> Result<Vec<Change>, Stop> {
    let step = format!("changes of layer {id:?} against {} ({})", name(parent), engine(ctx));
    let res = match try_native(ctx, |d| d.changes(ChangesRequest::new(id, parent))) {
        Some(r) => r,
        None => with_trees(ctx, id, parent, layers::changes)?,
    };
    ok(step, res)
}

/// Makes layer `id` on `parent` and applies `tar` to it; answers the
/// applied size, or the apply's error (the layer stays, for teardown or
/// the case to remove). Making or mounting the layer failing fails the case.
pub fn import(ctx: &mut Ctx, id: &str, parent: &str, tar: &[u8]) -> Result<DriverResult<u64>, Stop> {
    if ctx.storage().as_diff().is_some() {
        ctx.create(id, parent)?;
        let d = ctx.storage().as_diff().expect("checked above");
        let mut input: &[u8] = tar;
        match d.apply_diff(ApplyDiffRequest::new(id, parent), &mut input) {
            // No native apply after all (a remote graph driver offers the
            // capability on the wire whatever the driver behind it has):
            // the naive engine, as for export.
            Err(e) if e.kind == ErrorKind::Unsupported => ctx.remove(id)?,
            other => return Ok(other.map(|r| r.size)),
        }
    }
    ctx.create_rw(id, parent)?;
    let p = ctx.get(id)?;
    let res = layers::apply(&p, tar, &ApplyOptions::default()).map(|r| r.size);
    ctx.put(id)?;
    Ok(res)
}

/// [`import`], failing the case when the apply fails.
pub fn import_ok(ctx: &mut Ctx, id: &str, parent: &str, tar: &[u8], what: &str) -> Result<u64, Stop> {
    let step = format!("apply {what} to new layer {id:?} on {} ({})", name(parent), engine(ctx));
    ok(step, import(ctx, id, parent, tar)?)
}

/// Exports `id` against `parent` and imports the tar into the new layer
/// `copy` on `parent`; answers the tar.
pub fn round_trip(ctx: &mut Ctx, id: &str, parent: &str, copy: &str) -> Result<Vec<u8>, Stop> {
    let tar = export(ctx, id, parent)?;
    import_ok(ctx, copy, parent, &tar, &format!("the diff of layer {id:?}"))?;
    Ok(tar)
}

/// `parent "x"` or `nothing`.
pub fn name(parent: &str) -> String {
    if parent.is_empty() {
        "nothing".into()
    } else {
        format!("{parent:?}")
    }
}

/// An apply error, for messages.
pub fn describe(e: &DriverError) -> String {
    crate::case::describe_error(e)
}
