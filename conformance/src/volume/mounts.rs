//! VL-03..VL-05: mount references, removal while in use, failed mounts.

use std::collections::BTreeSet;
use std::path::Path;

use berth_core::{MountRef, MountVolume, VolumeService};
use berth_plugin_api::volume::*;
use berth_plugin_api::ErrorKind;

use super::proxy::short;
use super::{create_req, is_mount_point, mount_id, refused, service, Method, NOT_FOUND, USERS};
use crate::case::{check, err_kind, io, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// Options that make a `local` volume mount-backed (a tmpfs mounted on
/// first use and unmounted with the last).
const LOCAL_TMPFS: [(&str, &str); 3] = [("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=8m")];

const IN_USE: &str = "a volume with active mounts must be refused until its last unmount";

/// Creates VL-03's volume: mount-backed where the driver is known to
/// offer it (`local` with tmpfs), plain otherwise — or when that driver
/// answers `unsupported` (an older `local`). Answers whether the volume
/// was created mount-backed.
fn create_vl03(ctx: &Ctx, svc: &VolumeService, name: &str) -> Result<bool, Stop> {
    let tested = ctx.volume_name();
    if tested == "local" {
        let step = format!("create mount-backed volume {name:?} (type=tmpfs device=tmpfs o=size=8m)");
        match svc.create(create_req(name, tested, &LOCAL_TMPFS)) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind == ErrorKind::Unsupported => {}
            Err(e) => ok(step, Err::<(), _>(e))?,
        }
    }
    ok(format!("create volume {name:?}"), svc.create(create_req(name, tested, &[])))?;
    Ok(false)
}

pub(super) fn vl03_users(ctx: &mut Ctx) -> CaseResult {
    let svc = service(ctx, &[])?;
    let log = ctx.volume_log();
    let name = "vl03-v";
    let declared = create_vl03(ctx, &svc, name)?;
    let mark = log.len();
    let mut refs: Vec<MountRef> = Vec::new();
    for i in 1..=USERS {
        let user = format!("vl03-user-{i}");
        let r = ok(
            format!("mount {name:?} for user {i} of {USERS} through the service"),
            svc.mount(MountVolume::new(name, user)),
        )?;
        check(
            Path::new(&r.mountpoint).is_dir(),
            format!("the mountpoint of user {i}"),
            "an existing directory",
            &r.mountpoint,
        )?;
        refs.push(r);
    }
    let ids: BTreeSet<String> = refs.iter().map(|r| r.id.clone()).collect();
    check(ids.len() == USERS, "mount ids of the users", format!("{USERS} distinct ids"), format!("{ids:?}"))?;
    let mounts = log.since(mark).into_iter().filter(|c| c.method == Method::Mount).collect::<Vec<_>>();
    let seen: BTreeSet<String> = mounts.iter().map(|c| c.id.clone()).collect();
    check(
        mounts.len() == USERS && seen == ids && mounts.iter().all(|c| c.name == name && c.result.is_ok()),
        format!("mount calls the driver saw for {USERS} users"),
        format!("{USERS} successful mounts of {name:?}, one per user id"),
        mounts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    )?;
    let count = ok("inspect through the service", svc.inspect(name))?.usage.ref_count;
    check(count == USERS, format!("reference count of {name:?}"), USERS, count)?;

    // One volume: what one user writes, the others see.
    let probe = Path::new(&refs[0].mountpoint).join("vl03-probe");
    io(format!("write {} as user 1", probe.display()), std::fs::write(&probe, b"shared\n"))?;
    let last = Path::new(&refs[USERS - 1].mountpoint).join("vl03-probe");
    let seen = std::fs::read(&last).ok();
    check(
        seen.as_deref() == Some(&b"shared\n"[..]),
        format!("read {} as user {USERS}", last.display()),
        "what user 1 wrote (one volume, however many users)",
        format!("{seen:?}"),
    )?;

    let mp = Path::new(&refs[0].mountpoint).to_path_buf();
    let backed = declared || is_mount_point(&mp)?;
    if declared {
        check(
            backed,
            format!("mount table while {USERS} users hold mount-backed volume {name:?}"),
            format!("{} mounted (the driver accepted type=tmpfs)", mp.display()),
            "not a mount point",
        )?;
    }
    let mark = log.len();
    for (i, r) in refs.iter().enumerate() {
        ok(
            format!("unmount user {} of {USERS} (id {}) through the service", i + 1, short(&r.id)),
            svc.unmount(name, &r.id),
        )?;
        if !backed {
            continue;
        }
        let left = USERS - i - 1;
        let mounted = is_mount_point(&mp)?;
        if left > 0 {
            check(
                mounted,
                format!("mount table after {} of {USERS} unmounts", i + 1),
                format!("{} still mounted: {left} user(s) remain", mp.display()),
                "unmounted (the backing mount went before the last user)",
            )?;
        } else {
            check(
                !mounted,
                "mount table after the last unmount",
                format!("{} unmounted: the backing mount goes with the last user", mp.display()),
                "still mounted",
            )?;
        }
    }
    let unmounts = log.since(mark).into_iter().filter(|c| c.method == Method::Unmount).collect::<Vec<_>>();
    let released: BTreeSet<String> = unmounts.iter().map(|c| c.id.clone()).collect();
    check(
        unmounts.len() == USERS && released == ids && unmounts.iter().all(|c| c.result.is_ok()),
        format!("unmount calls the driver saw for {USERS} releases"),
        format!("{USERS} successful unmounts with the ids of the mounts"),
        unmounts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    )?;

    // Releasing a released id again is a no-op at the driver.
    for i in 1..=ctx.repeat() {
        ok(
            format!("unmount of released id {} of {name:?} at the driver (#{i})", short(&refs[0].id)),
            ctx.volume().unmount(VolumeUnmountRequest::new(name, &refs[0].id)),
        )?;
    }
    if backed {
        check(!is_mount_point(&mp)?, "mount table after repeated unmounts", "nothing mounted", "mounted")?;
    }
    ok(format!("remove {name:?} through the service"), svc.remove(name, false))?;
    Ok(())
}

pub(super) fn vl04_remove_in_use(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let svc = service(ctx, &[])?;
    let name = "vl04-v";
    ok(format!("create volume {name:?}"), svc.create(create_req(name, &tested, &[])))?;
    let r =
        ok(format!("mount {name:?} through the service"), svc.mount(MountVolume::new(name, "vl04-user")))?;
    let probe = Path::new(&r.mountpoint).join("vl04-probe");
    io(format!("write {}", probe.display()), std::fs::write(&probe, b"in use\n"))?;

    let d = ctx.volume();
    refused(
        format!("remove of volume {name:?} at the driver while mount {} is active", short(&r.id)),
        ErrorKind::Conflict,
        IN_USE,
        d.remove(VolumeRemoveRequest::new(name)),
    )?;
    for force in [false, true] {
        refused(
            format!("remove of volume {name:?} through the service (force {force}) while mounted"),
            ErrorKind::Conflict,
            "force does not override a volume in use",
            svc.remove(name, force),
        )?;
    }
    ok(
        format!("get of {name:?} at the driver after the refused removes"),
        d.get(VolumeGetRequest::new(name)),
    )?;
    let seen = std::fs::read(&probe).ok();
    check(
        seen.as_deref() == Some(&b"in use\n"[..]),
        format!("data of {name:?} after the refused removes"),
        "intact",
        format!("{seen:?}"),
    )?;
    ok(format!("unmount {name:?} through the service"), svc.unmount(name, &r.id))?;

    // The driver's own count, without the core in front of it.
    let (a, b) = (mount_id(41), mount_id(42));
    ok(format!("mount {name:?} at the driver with id a"), d.mount(VolumeMountRequest::new(name, &a)))?;
    ok(format!("mount {name:?} at the driver with id b"), d.mount(VolumeMountRequest::new(name, &b)))?;
    ok(format!("unmount id a of {name:?} at the driver"), d.unmount(VolumeUnmountRequest::new(name, &a)))?;
    refused(
        format!("remove of volume {name:?} at the driver while id b is still mounted (id a released)"),
        ErrorKind::Conflict,
        IN_USE,
        d.remove(VolumeRemoveRequest::new(name)),
    )?;
    for i in 1..=ctx.repeat() {
        ok(
            format!("unmount id b of {name:?} at the driver (#{i}; idempotent)"),
            d.unmount(VolumeUnmountRequest::new(name, &b)),
        )?;
    }

    ok(format!("remove {name:?} through the service once released"), svc.remove(name, false))?;
    refused(
        format!("get of removed {name:?} at the driver"),
        ErrorKind::NotFound,
        NOT_FOUND,
        d.get(VolumeGetRequest::new(name)),
    )?;
    for i in 1..=ctx.repeat() {
        ok(format!("forced remove of removed {name:?} through the service (#{i})"), svc.remove(name, true))?;
    }
    err_kind(
        format!("remove of removed {name:?} through the service"),
        ErrorKind::NotFound,
        svc.remove(name, false),
    )?;
    Ok(())
}

pub(super) fn vl05_failed_mounts(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let svc = service(ctx, &[])?;
    let log = ctx.volume_log();

    // 1. The driver refuses: its volume was removed behind the core's back.
    let gone = "vl05-gone";
    ok(format!("create volume {gone:?}"), svc.create(create_req(gone, &tested, &[])))?;
    ok(
        format!("remove {gone:?} directly at the driver"),
        ctx.volume().remove(VolumeRemoveRequest::new(gone)),
    )?;
    refused(
        format!("mount of {gone:?} (removed at the driver) through the service"),
        ErrorKind::NotFound,
        "a driver answers NotFound for a volume it no longer has",
        svc.mount(MountVolume::new(gone, "vl05-user")),
    )?;
    let refs = ok(format!("references of {gone:?}"), svc.refs(gone))?;
    check(refs.is_empty(), format!("references of {gone:?} after the failed mount"), "none", refs.len())?;
    ok(format!("remove {gone:?} through the service"), svc.remove(gone, false))?;

    // 2. The mount fails on its way (the proxy refuses it).
    let failing = "vl05-failing";
    ok(format!("create volume {failing:?}"), svc.create(create_req(failing, &tested, &[])))?;
    ctx.volume().fail_mounts_of(failing);
    for i in 1..=ctx.repeat() {
        err_kind(
            format!("mount of {failing:?} through the service, made to fail (#{i})"),
            ErrorKind::Unavailable,
            svc.mount(MountVolume::new(failing, "vl05-user")),
        )?;
    }
    let count = ok(format!("inspect {failing:?}"), svc.inspect(failing))?.usage.ref_count;
    check(count == 0, format!("reference count of {failing:?} after failed mounts"), 0, count)?;
    ok(format!("remove {failing:?} after failed mounts (they hold nothing)"), svc.remove(failing, false))?;

    // 3. At the driver: a failed mount takes no reference.
    let later = "vl05-later";
    let id = mount_id(51);
    refused(
        format!("mount of {later:?} at the driver before it exists"),
        ErrorKind::NotFound,
        "mount must not make a volume it does not have",
        ctx.volume().mount(VolumeMountRequest::new(later, &id)),
    )?;
    ok(format!("create {later:?} at the driver"), ctx.volume().create(VolumeCreateRequest::new(later)))?;
    ok(
        format!("remove {later:?} at the driver (the failed mount before its create holds nothing)"),
        ctx.volume().remove(VolumeRemoveRequest::new(later)),
    )?;

    // Never an unmount for an id whose mount failed.
    let calls = log.since(0);
    let failed: Vec<_> = calls.iter().filter(|c| c.method == Method::Mount && c.result.is_err()).collect();
    check(
        failed.len() >= 2,
        "failed mounts the driver saw",
        "at least one per scenario",
        failed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    )?;
    let bad: Vec<String> = calls
        .iter()
        .filter(|u| u.method == Method::Unmount)
        .filter(|u| failed.iter().any(|m| m.name == u.name && m.id == u.id))
        .map(ToString::to_string)
        .collect();
    if !bad.is_empty() {
        return Err(Failure::new(
            "unmount calls after failed mounts",
            "none for an id whose mount failed",
            bad.join(", "),
        )
        .into());
    }
    Ok(())
}
