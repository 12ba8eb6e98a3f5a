//! VL-07..VL-09: capabilities, restarts, and volumes a driver forgot.

use std::path::Path;

use berth_core::MountVolume;
use berth_plugin_api::volume::*;
use berth_plugin_api::ErrorKind;

use super::proxy::short;
use super::{
    case_names, create_req, driver_names, refused, scope_str, service, service_names, Method, NOT_FOUND,
};
use crate::case::{check, io, ok, CaseResult};
use crate::ctx::Ctx;

pub(super) fn vl07_capabilities(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let svc = service(ctx, &[])?;
    let log = ctx.volume_log();
    let mark = log.len();
    let (a, b) = ("vl07-a", "vl07-b");
    let made = ok(format!("create volume {a:?}"), svc.create(create_req(a, &tested, &[])))?;
    ok(format!("create volume {b:?}"), svc.create(create_req(b, &tested, &[])))?;
    let listed = ok("list through the service", svc.list(&berth_core::Filters::none()))?;
    let shown_a = ok(format!("inspect {a:?}"), svc.inspect(a))?;
    ok(format!("inspect {b:?}"), svc.inspect(b))?;
    let r = ok(format!("mount {a:?}"), svc.mount(MountVolume::new(a, "vl07-user")))?;
    ok("list through the service again", svc.list(&berth_core::Filters::none()))?;
    ok(format!("unmount {a:?}"), svc.unmount(a, &r.id))?;
    ok(format!("inspect {a:?} again"), svc.inspect(a))?;
    ok(format!("create {a:?} again (same driver)"), svc.create(create_req(a, &tested, &[])))?;
    ok(format!("remove {b:?}"), svc.remove(b, false))?;
    ok("list through the service a third time", svc.list(&berth_core::Filters::none()))?;
    let asked = log.since(mark).into_iter().filter(|c| c.method == Method::Capabilities).count();
    check(
        asked == 1,
        "capabilities calls the driver saw during 12 service operations (creates, lists, inspects, mount)",
        "exactly 1: asked once, then cached",
        asked,
    )?;

    let caps =
        ok("capabilities, asked directly", ctx.volume().capabilities(VolumeCapabilitiesRequest::default()))?;
    let want = scope_str(caps.scope);
    check(shown_a.scope == want, format!("scope in inspect of {a:?}"), want, &shown_a.scope)?;
    check(made.scope == want, format!("scope in the answer to create {a:?}"), want, &made.scope)?;
    let wrong: Vec<String> = listed
        .volumes
        .iter()
        .filter(|v| v.scope != want)
        .map(|v| format!("{} {}", v.record.name, v.scope))
        .collect();
    check(wrong.is_empty(), "scopes in the service's list", format!("all {want}"), wrong.join(", "))?;
    ok(format!("remove {a:?}"), svc.remove(a, false))?;
    Ok(())
}

pub(super) fn vl08_restart(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let (name, idle) = ("vl08-v", "vl08-idle");
    let content = b"written before the restart\n";
    let before = {
        let svc = service(ctx, &[])?;
        ok(format!("create volume {name:?}"), svc.create(create_req(name, &tested, &[])))?;
        ok(format!("create volume {idle:?}"), svc.create(create_req(idle, &tested, &[])))?;
        let r = ok(format!("mount {name:?}"), svc.mount(MountVolume::new(name, "vl08-before")))?;
        let probe = Path::new(&r.mountpoint).join("vl08-probe");
        io(format!("write {}", probe.display()), std::fs::write(&probe, content))?;
        r
        // The service, its store and its hold on the driver end here.
    };
    ctx.restart_volume()?;
    let svc = service(ctx, &[])?;

    let listed = service_names(&svc, "after the restart")?;
    check(
        [name, idle].iter().all(|n| listed.get(*n) == Some(&tested)),
        "list through the service after the restart",
        format!("{name:?} and {idle:?} of driver {tested:?}"),
        format!("{listed:?}"),
    )?;
    let at_driver = driver_names(ctx.volume(), "after the restart")?;
    check(
        [name, idle].iter().all(|n| at_driver.iter().any(|m| m == n)),
        "list at the restarted driver (same root)",
        format!("{name:?} and {idle:?}: a driver keeps its volumes across restarts"),
        format!("{at_driver:?}"),
    )?;
    let refs = ok(format!("references of {name:?} after the restart"), svc.refs(name))?;
    check(
        refs.len() == 1 && refs.contains_key(&before.id),
        format!("references of {name:?} after the restart"),
        format!("exactly the mount from before ({})", short(&before.id)),
        format!("{:?}", refs.keys().map(|k| short(k)).collect::<Vec<_>>()),
    )?;
    let count = ok(format!("inspect {name:?} after the restart"), svc.inspect(name))?.usage.ref_count;
    check(count == 1, format!("reference count of {name:?} after the restart"), 1, count)?;
    refused(
        format!("remove of {name:?} at the restarted driver while the mount from before is active"),
        ErrorKind::Conflict,
        "a driver remembers its active mount ids across restarts",
        ctx.volume().remove(VolumeRemoveRequest::new(name)),
    )?;

    let again =
        ok(format!("mount {name:?} after the restart"), svc.mount(MountVolume::new(name, "vl08-after")))?;
    let probe = Path::new(&again.mountpoint).join("vl08-probe");
    let seen = std::fs::read(&probe).ok();
    check(
        seen.as_deref() == Some(&content[..]),
        format!("read {} after the restart", probe.display()),
        "the data written before the restart",
        format!("{seen:?}"),
    )?;
    ok("unmount the mount taken after the restart", svc.unmount(name, &again.id))?;
    ok("unmount the mount taken before the restart", svc.unmount(name, &before.id))?;
    for i in 1..=ctx.repeat() {
        ok(
            format!("unmount of released id {} at the driver (#{i})", short(&before.id)),
            ctx.volume().unmount(VolumeUnmountRequest::new(name, &before.id)),
        )?;
    }
    for n in [name, idle] {
        ok(format!("remove {n:?} through the service"), svc.remove(n, false))?;
        for i in 1..=ctx.repeat() {
            ok(format!("forced remove of removed {n:?} through the service (#{i})"), svc.remove(n, true))?;
        }
    }
    let at_driver = case_names(ctx, driver_names(ctx.volume(), "at the end")?);
    check(at_driver.is_empty(), "list at the driver at the end", "no volumes", format!("{at_driver:?}"))
}

pub(super) fn vl09_forgotten(ctx: &mut Ctx) -> CaseResult {
    let tested = ctx.volume_name().to_string();
    let svc = service(ctx, &[])?;
    let log = ctx.volume_log();
    let name = "vl09-v";
    ok(format!("create volume {name:?}"), svc.create(create_req(name, &tested, &[])))?;
    ok(
        format!("remove {name:?} directly at the driver"),
        ctx.volume().remove(VolumeRemoveRequest::new(name)),
    )?;
    refused(
        format!("get of {name:?} at the driver after its remove"),
        ErrorKind::NotFound,
        NOT_FOUND,
        ctx.volume().get(VolumeGetRequest::new(name)),
    )?;
    ok(format!("inspect {name:?} (forgotten by the driver) through the service"), svc.inspect(name))?;

    let mark = log.len();
    let v = ok(
        format!("create of {name:?} again with the same driver {tested:?}, which forgot it"),
        svc.create(create_req(name, &tested, &[])),
    )?;
    check(v.record.driver == tested, format!("driver of re-created {name:?}"), &tested, &v.record.driver)?;
    let creates =
        log.since(mark).into_iter().filter(|c| c.method == Method::Create && c.name == name).count();
    check(creates == 1, format!("create calls the driver saw for {name:?}"), 1, creates)?;
    let info = ok(
        format!("get of re-created {name:?} at the driver"),
        ctx.volume().get(VolumeGetRequest::new(name)),
    )?;
    check(info.name == name, format!("get of re-created {name:?}"), name, &info.name)?;

    let r = ok(format!("mount re-created {name:?}"), svc.mount(MountVolume::new(name, "vl09-user")))?;
    let probe = Path::new(&r.mountpoint).join("vl09-probe");
    io(format!("write {}", probe.display()), std::fs::write(&probe, b"again\n"))?;
    ok(format!("unmount re-created {name:?}"), svc.unmount(name, &r.id))?;
    ok(format!("remove re-created {name:?}"), svc.remove(name, false))?;
    let listed = service_names(&svc, "at the end")?;
    check(
        !listed.contains_key(name),
        "list through the service at the end",
        format!("no {name:?}"),
        format!("{listed:?}"),
    )
}
