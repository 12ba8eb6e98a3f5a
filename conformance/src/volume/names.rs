//! VL-01, VL-02 and VL-06: unknown names, names across drivers, and what
//! a refused create leaves behind.

use std::sync::Arc;

use berth_core::MountVolume;
use berth_plugin_api::volume::*;
use berth_plugin_api::{ErrorKind, VolumeDriver};

use super::{
    case_names, create_req, driver_names, mount_id, refused, service, service_names, CallLog,
    MemoryVolumeDriver, Method, Recording, NOT_FOUND,
};
use crate::case::{check, describe_error, io, ok, CaseResult, Failure};
use crate::ctx::Ctx;

pub(super) fn vl01_unknown_names(ctx: &mut Ctx) -> CaseResult {
    let d = ctx.volume();
    for name in ["vl01-never-created", "vl01.Other_name-2"] {
        for i in 1..=ctx.repeat() {
            refused(
                format!("get of unknown volume {name:?} (#{i})"),
                ErrorKind::NotFound,
                NOT_FOUND,
                d.get(VolumeGetRequest::new(name)),
            )?;
        }
        refused(
            format!("path of unknown volume {name:?}"),
            ErrorKind::NotFound,
            NOT_FOUND,
            d.path(VolumePathRequest::new(name)),
        )?;
        refused(
            format!("mount of unknown volume {name:?}"),
            ErrorKind::NotFound,
            "mount must not make a volume it does not have; create is the only way to make one",
            d.mount(VolumeMountRequest::new(name, mount_id(1))),
        )?;
        refused(
            format!("remove of unknown volume {name:?}"),
            ErrorKind::NotFound,
            NOT_FOUND,
            d.remove(VolumeRemoveRequest::new(name)),
        )?;
        let listed = driver_names(d, &format!("after calls on unknown volume {name:?}"))?;
        check(
            !listed.iter().any(|n| n == name),
            format!("list at the driver after get/path/mount/remove of unknown volume {name:?}"),
            "the name not listed (none of those calls may create it)",
            format!("{listed:?}"),
        )?;
    }

    // A name the driver had is unknown again once removed; while it exists,
    // get answers that volume, not an empty one.
    let name = "vl01-known";
    ok(format!("create volume {name:?}"), d.create(VolumeCreateRequest::new(name)))?;
    let info = ok(format!("get of existing volume {name:?}"), d.get(VolumeGetRequest::new(name)))?;
    check(
        info.name == name,
        format!("get of existing volume {name:?}"),
        format!("a volume named {name:?} (get answers the volume asked for)"),
        format!("{info:?}"),
    )?;
    ok(format!("path of existing volume {name:?}"), d.path(VolumePathRequest::new(name)))?;
    ok(format!("remove volume {name:?}"), d.remove(VolumeRemoveRequest::new(name)))?;
    refused(
        format!("get of removed volume {name:?}"),
        ErrorKind::NotFound,
        NOT_FOUND,
        d.get(VolumeGetRequest::new(name)),
    )?;
    refused(
        format!("path of removed volume {name:?}"),
        ErrorKind::NotFound,
        NOT_FOUND,
        d.path(VolumePathRequest::new(name)),
    )?;

    // What the user sees through the core.
    let svc = service(ctx, &[])?;
    let name = "vl01-never-created";
    refused(
        format!("inspect of unknown volume {name:?} through the service"),
        ErrorKind::NotFound,
        "the core asks every driver and none has it",
        svc.inspect(name),
    )?;
    refused(
        format!("mount of unknown volume {name:?} through the service"),
        ErrorKind::NotFound,
        "the core asks every driver and none has it",
        svc.mount(MountVolume::new(name, "vl01")),
    )?;
    refused(
        format!("remove of unknown volume {name:?} through the service"),
        ErrorKind::NotFound,
        "the core asks every driver and none has it",
        svc.remove(name, false),
    )?;
    for i in 1..=ctx.repeat() {
        ok(
            format!("forced remove of unknown volume {name:?} through the service (#{i})"),
            svc.remove(name, true),
        )?;
    }
    let listed = case_names(ctx, service_names(&svc, "at the end")?.into_keys());
    check(listed.is_empty(), "list through the service at the end", "no volumes", format!("{listed:?}"))
}

/// The name the suite's own driver goes by next to the driver under test.
fn other_name(tested: &str) -> &'static str {
    if tested == "berth-conformance-memory" {
        "berth-conformance-memory-2"
    } else {
        "berth-conformance-memory"
    }
}

pub(super) fn vl02_unique_names(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let other_name = other_name(&tested);
    let other =
        Arc::new(Recording::new(Arc::new(MemoryVolumeDriver::new(ctx.dir())), Arc::new(CallLog::default())));
    let svc = service(ctx, &[(other_name, other.clone() as Arc<dyn VolumeDriver>)])?;
    let log = ctx.volume_log();

    let (x, y) = ("vl02-x", "vl02-y");
    ok(format!("create volume {x:?} with driver {tested:?}"), svc.create(create_req(x, &tested, &[])))?;
    refused(
        format!("create of volume {x:?} with driver {other_name:?} while driver {tested:?} holds it"),
        ErrorKind::Conflict,
        "names are unique across drivers",
        svc.create(create_req(x, other_name, &[])),
    )?;
    let seen = other.log().calls(Method::Create, None);
    check(
        seen.is_empty(),
        format!("calls the other driver saw after the refused create of {x:?}"),
        "no create (the core refuses before asking it)",
        seen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    )?;

    ok(
        format!("create volume {y:?} with driver {other_name:?}"),
        svc.create(create_req(y, other_name, &[])),
    )?;
    refused(
        format!("create of volume {y:?} with driver {tested:?} while driver {other_name:?} holds it"),
        ErrorKind::Conflict,
        "names are unique across drivers",
        svc.create(create_req(y, &tested, &[])),
    )?;
    let creates = log.count(Method::Create, Some(y));
    check(
        creates == 0,
        format!("create calls driver {tested:?} saw for volume {y:?}"),
        "none (the core refuses before asking it)",
        creates,
    )?;
    refused(
        format!("get of {y:?} at driver {tested:?}"),
        ErrorKind::NotFound,
        NOT_FOUND,
        ctx.volume().get(VolumeGetRequest::new(y)),
    )?;

    // Re-creating with the same driver answers the same volume.
    for i in 1..=ctx.repeat() {
        let v = ok(
            format!("create of existing volume {x:?} with the same driver {tested:?} (#{i})"),
            svc.create(create_req(x, &tested, &[])),
        )?;
        check(
            v.record.name == x && v.record.driver == tested,
            format!("answer to the re-create of {x:?} (#{i})"),
            format!("volume {x:?} of driver {tested:?}"),
            format!("volume {:?} of driver {:?}", v.record.name, v.record.driver),
        )?;
    }

    // At the driver: create twice succeeds and changes nothing (checked
    // while mounted, so data a driver keeps only while mounted counts too).
    let d = ctx.volume();
    let id = mount_id(2);
    let p = ok(format!("mount {x:?} at the driver"), d.mount(VolumeMountRequest::new(x, &id)))?.mountpoint;
    let probe = std::path::Path::new(&p).join("vl02-probe");
    io(format!("write {}", probe.display()), std::fs::write(&probe, b"kept\n"))?;
    for i in 1..=2 {
        ok(
            format!("create of existing, mounted volume {x:?} directly at the driver (#{i})"),
            d.create(VolumeCreateRequest::new(x)),
        )?;
    }
    let seen = std::fs::read(&probe).ok();
    check(
        seen.as_deref() == Some(&b"kept\n"[..]),
        format!("data of {x:?} after the re-creates ({})", probe.display()),
        "the file written before (create of an existing name changes nothing)",
        format!("{seen:?}"),
    )?;
    let listed = driver_names(d, "after creating it again")?;
    let times = listed.iter().filter(|n| *n == x).count();
    check(times == 1, format!("list at the driver after re-creates of {x:?}"), "it once", times)?;
    ok(format!("unmount {x:?} at the driver"), d.unmount(VolumeUnmountRequest::new(x, &id)))?;

    let listed = service_names(&svc, "with both drivers")?;
    let want = [(x, tested.as_str()), (y, other_name)];
    check(
        want.iter().all(|(n, dr)| listed.get(*n).map(String::as_str) == Some(*dr)),
        "list through the service",
        format!("{want:?}"),
        format!("{listed:?}"),
    )?;
    ok(format!("remove volume {x:?} through the service"), svc.remove(x, false))?;
    ok(format!("remove volume {y:?} through the service"), svc.remove(y, false))?;
    Ok(())
}

/// An option no driver knows.
const BOGUS: &str = "this-option-does-not-exist";

pub(super) fn vl06_error_text(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let svc = service(ctx, &[])?;
    let log = ctx.volume_log();
    let name = "vl06-v";
    let step = format!("create volume {name:?} with option {BOGUS}=1 through the service");
    let mark = log.len();
    let err = match svc.create(create_req(name, &tested, &[(BOGUS, "1")])) {
        Ok(v) => {
            return Err(Failure::new(
                step,
                format!(
                    "an invalid_argument (or unsupported) error naming {BOGUS:?}: a driver must refuse \
                     options it does not know, or a typo is silently ignored"
                ),
                format!("success ({:?})", v.record),
            )
            .into())
        }
        Err(e) => e,
    };
    let driver_err = log
        .since(mark)
        .into_iter()
        .find(|c| c.method == Method::Create && c.name == name)
        .and_then(|c| c.result.err());
    let Some(driver_err) = driver_err else {
        return Err(Failure::new(
            &step,
            "the driver asked, and refusing",
            format!(
                "the driver's create was not called or succeeded; the service said {}",
                describe_error(&err)
            ),
        )
        .with_kind(err.kind)
        .into());
    };
    check(
        matches!(driver_err.kind, ErrorKind::InvalidArgument | ErrorKind::Unsupported),
        format!("the driver's answer to {step}"),
        "error kind invalid_argument (or unsupported)",
        describe_error(&driver_err),
    )?;
    check(
        driver_err.message.contains(BOGUS),
        format!("the driver's answer to {step}"),
        format!("a message naming the refused option {BOGUS:?}, so the user knows what to fix"),
        describe_error(&driver_err),
    )?;
    check(
        err.kind == driver_err.kind && err.message.contains(&driver_err.message),
        format!("the service's answer to {step}"),
        format!("the driver's kind {} and its text {:?}", driver_err.kind, driver_err.message),
        describe_error(&err),
    )?;

    // Nothing half-registered, anywhere.
    let listed = service_names(&svc, "after the refused create")?;
    check(
        !listed.contains_key(name),
        "list through the service after the refused create",
        format!("no {name:?}"),
        format!("{listed:?}"),
    )?;
    refused(
        format!("inspect of {name:?} through the service after the refused create"),
        ErrorKind::NotFound,
        "a refused create must leave nothing behind",
        svc.inspect(name),
    )?;
    let at_driver = driver_names(ctx.volume(), "after the refused create")?;
    check(
        !at_driver.iter().any(|n| n == name),
        "list at the driver after the refused create",
        format!("no {name:?} (a refused create leaves nothing half-made)"),
        format!("{at_driver:?}"),
    )?;
    refused(
        format!("get of {name:?} at the driver after the refused create"),
        ErrorKind::NotFound,
        "a refused create leaves nothing half-made; a name the driver does not have is NotFound",
        ctx.volume().get(VolumeGetRequest::new(name)),
    )?;

    // The name is free: a clean create works and is seen everywhere.
    ok(format!("create volume {name:?} without options"), svc.create(create_req(name, &tested, &[])))?;
    let listed = service_names(&svc, "after the clean create")?;
    check(
        listed.get(name) == Some(&tested),
        "list through the service after the clean create",
        format!("{name:?} of driver {tested:?}"),
        format!("{listed:?}"),
    )?;
    ok(format!("get of {name:?} at the driver"), ctx.volume().get(VolumeGetRequest::new(name)))?;
    ok(format!("remove volume {name:?} through the service"), svc.remove(name, false))?;
    Ok(())
}
