//! PL-05..PL-07: what berth makes of a plugin's answers — errors in and
//! out of band, tolerated oddities, capabilities it cannot use, and the
//! undo of answers it cannot use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::volumes::DriverSet;
use berth_core::{CreateVolume, Driver, Metrics, MountVolume, VolumeService};
use berth_plugin_api::ipam::*;
use berth_plugin_api::network::{CapabilitiesRequest, CreateNetworkRequest, DeleteNetworkRequest, Scope};
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, Kind, VolumeDriver};

use super::fixture::{Fixture, Reply, Request};
use super::{client, fixture, mentions, options, IPAM, NETWORK, VOLUME};
use crate::case::{check, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;
use crate::volume::{CallLog, MemoryVolumeDriver, Method, Recording};

/// Fails at `step` unless `res` is an error whose message carries every
/// one of `needles`; answers the error.
fn refused<T: std::fmt::Debug>(
    step: &str,
    res: DriverResult<T>,
    needles: &[&str],
) -> Result<DriverError, Stop> {
    match res {
        Ok(v) => {
            Err(Failure::new(step, format!("an error carrying {needles:?}"), format!("success ({v:?})"))
                .into())
        }
        Err(e) => {
            mentions(step, &e.message, needles)?;
            Ok(e)
        }
    }
}

fn volume_answers(r: &Request) -> Reply {
    match r.path.as_str() {
        "/VolumeDriver.Remove" => Reply::ok(r#"{"Err":"pl05: volume is busy"}"#),
        "/VolumeDriver.Create" => Reply::text(500, "pl05: backend exploded\n"),
        "/VolumeDriver.Path" => Reply::json(500, r#"{"Err":"pl05: no path for you"}"#),
        "/VolumeDriver.Unmount" => {
            Reply::Answer { status: 503, content_type: "text/plain", body: Vec::new() }
        }
        "/VolumeDriver.Get" => Reply::ok(r#"{"volume":{"name":"v","mountpoint":"/m","extra":1},"err":null}"#),
        "/VolumeDriver.List" => Reply::ok(
            r#"{"VOLUMES":[{"NAME":"a","Mountpoint":null,"Status":null,"createdat":null,"Size":3}],"Err":"","Warnings":null}"#,
        ),
        "/VolumeDriver.Mount" => Reply::ok(r#"{"mountpoint":"/mnt/pl05","ERR":"","Extra":{"x":[1,null]}}"#),
        "/VolumeDriver.Capabilities" => {
            Reply::ok(r#"{"capabilities":{"scope":"global","extra":true},"err":null}"#)
        }
        _ => Reply::ok("{}"),
    }
}

fn ipam_answers(r: &Request) -> Reply {
    match r.path.as_str() {
        "/IpamDriver.RequestAddress" => Reply::ok(r#"{"Error":"pl05: no addresses left","Address":""}"#),
        "/IpamDriver.RequestPool" => {
            Reply::ok(r#"{"poolid":"pl05-pool","pool":"10.5.0.0/16","data":null,"error":"","Extra":1}"#)
        }
        "/IpamDriver.GetDefaultAddressSpaces" => {
            Reply::ok(r#"{"localdefaultaddressspace":"L5","GlobalDefaultAddressSpace":"G5","Extra":null}"#)
        }
        "/IpamDriver.ReleasePool" => Reply::json(500, r#"{"Err":"pl05: pool in use"}"#),
        _ => Reply::ok("{}"),
    }
}

fn network_answers(r: &Request) -> Reply {
    match r.path.as_str() {
        "/NetworkDriver.CreateNetwork" => Reply::ok(r#"{"Err":"pl05: bad options"}"#),
        "/NetworkDriver.DeleteNetwork" => Reply::ok(r#"{"Err":null,"Unknown":[]}"#),
        _ => Reply::ok("{}"),
    }
}

pub(super) fn pl05_answers(ctx: &mut Ctx) -> CaseResult {
    let f = fixture(ctx, "pl05-vol", VOLUME, volume_answers)?;
    let v = client("pl05-vol", &f.address(), options(|_| {}))?.volume();
    refused(
        "remove, answered 200 {\"Err\":\"pl05: volume is busy\"}",
        v.remove(VolumeRemoveRequest::new("v")),
        &["pl05: volume is busy", "VolumeDriver.Remove"],
    )?;
    refused(
        "create, answered 500 with the text body \"pl05: backend exploded\"",
        v.create(VolumeCreateRequest::new("v")),
        &["pl05: backend exploded", "VolumeDriver.Create"],
    )?;
    refused(
        "path, answered 500 {\"Err\":\"pl05: no path for you\"}",
        v.path(VolumePathRequest::new("v")),
        &["pl05: no path for you", "VolumeDriver.Path"],
    )?;
    refused(
        "unmount, answered 503 with an empty body",
        v.unmount(VolumeUnmountRequest::new("v", "0123")),
        &["503", "VolumeDriver.Unmount"],
    )?;
    let step = "get, answered {\"volume\":{\"name\":\"v\",\"mountpoint\":\"/m\",\"extra\":1},\"err\":null}";
    let got = ok(step, v.get(VolumeGetRequest::new("v")))?;
    check(got.name == "v" && got.mountpoint == "/m", step, "volume \"v\" at /m", format!("{got:?}"))?;
    let step = "list, answered with upper-case keys, nulls and unknown fields";
    let listed = ok(step, v.list(VolumeListRequest::default()))?;
    check(
        listed.len() == 1 && listed[0].name == "a" && listed[0].mountpoint.is_empty(),
        step,
        "one volume \"a\" with no mountpoint",
        format!("{listed:?}"),
    )?;
    let step = "mount, answered {\"mountpoint\":\"/mnt/pl05\",\"ERR\":\"\",\"Extra\":{..}}";
    let m = ok(step, v.mount(VolumeMountRequest::new("v", "0123")))?;
    check(m.mountpoint == "/mnt/pl05", step, "mountpoint /mnt/pl05", format!("{m:?}"))?;
    let step = "capabilities, answered {\"capabilities\":{\"scope\":\"global\",\"extra\":true},\"err\":null}";
    let caps = ok(step, v.capabilities(VolumeCapabilitiesRequest::default()))?;
    check(caps.scope == Scope::Global, step, "scope global", format!("{:?}", caps.scope))?;
    drop(f);

    let f = fixture(ctx, "pl05-ipam", IPAM, ipam_answers)?;
    let i = client("pl05-ipam", &f.address(), options(|_| {}))?.ipam();
    refused(
        "IPAM request_address, answered 200 {\"Error\":\"pl05: no addresses left\"}",
        i.request_address(RequestAddressRequest::new("pl05-pool")),
        &["pl05: no addresses left", "IpamDriver.RequestAddress"],
    )?;
    let releases = f.count("/IpamDriver.ReleaseAddress");
    check(
        releases == 0,
        "ReleaseAddress calls after an in-band Error",
        "none (nothing was handed out)",
        releases,
    )?;
    let step = "IPAM request_pool, answered in lower case with \"data\":null and \"error\":\"\"";
    let pool = ok(step, i.request_pool(RequestPoolRequest::new("L5", "")))?;
    check(
        pool.pool_id == "pl05-pool" && pool.pool == "10.5.0.0/16",
        step,
        "pool pl05-pool 10.5.0.0/16",
        format!("{pool:?}"),
    )?;
    let step = "IPAM default_address_spaces, answered in mixed case with an unknown null field";
    let spaces = ok(step, i.default_address_spaces(AddressSpacesRequest::default()))?;
    check(spaces.local == "L5" && spaces.global == "G5", step, "L5 and G5", format!("{spaces:?}"))?;
    refused(
        "IPAM release_pool, answered 500 {\"Err\":\"pl05: pool in use\"}",
        i.release_pool(ReleasePoolRequest::new("pl05-pool")),
        &["pl05: pool in use", "IpamDriver.ReleasePool"],
    )?;
    drop(f);

    let f = fixture(ctx, "pl05-net", NETWORK, network_answers)?;
    let n = client("pl05-net", &f.address(), options(|_| {}))?.network();
    refused(
        "network create_network, answered 200 {\"Err\":\"pl05: bad options\"}",
        n.create_network(CreateNetworkRequest::new("pl05-n")),
        &["pl05: bad options", "NetworkDriver.CreateNetwork"],
    )?;
    ok(
        "network delete_network, answered 200 {\"Err\":null,\"Unknown\":[]}",
        n.delete_network(DeleteNetworkRequest::new("pl05-n")),
    )?;
    Ok(())
}

pub(super) fn pl06_capabilities(ctx: &mut Ctx) -> CaseResult {
    let answer = Arc::new(Mutex::new(String::new()));
    let a = Arc::clone(&answer);
    let f = fixture(ctx, "pl06", NETWORK, move |_| Reply::ok(&a.lock().unwrap_or_else(|p| p.into_inner())))?;
    let n = client("pl06", &f.address(), options(|_| {}))?.network();
    let set = |text: &str| *answer.lock().unwrap_or_else(|p| p.into_inner()) = text.to_string();
    for (text, needles) in [
        (r#"{"Scope":"galaxy"}"#, &["pl06", "Scope", "galaxy"][..]),
        (r#"{"Scope":"local","ConnectivityScope":"galaxy"}"#, &["pl06", "ConnectivityScope", "galaxy"][..]),
        (r#"{"ConnectivityScope":"local"}"#, &["pl06", "Scope", "\"\""][..]),
    ] {
        set(text);
        refused(
            &format!("network capabilities, answered {text}"),
            n.capabilities(CapabilitiesRequest::default()),
            needles,
        )?;
    }
    for (text, scope, connectivity, checker) in [
        (r#"{"Scope":"local"}"#, Scope::Local, Scope::Local, false),
        (
            r#"{"scope":"global","connectivityscope":"local","gwallocchecker":true,"Extra":1}"#,
            Scope::Global,
            Scope::Local,
            true,
        ),
    ] {
        set(text);
        let step = format!("network capabilities, answered {text}");
        let caps = ok(&step, n.capabilities(CapabilitiesRequest::default()))?;
        check(
            caps.scope == scope
                && caps.connectivity_scope == Some(connectivity)
                && caps.gw_alloc_checker == checker,
            &step,
            format!("scope {scope:?}, connectivity scope {connectivity:?}, gw_alloc_checker {checker}"),
            format!("{caps:?}"),
        )?;
    }
    drop(f);

    // The plugin under test, if it is a network driver, answers valid ones.
    let Some(t) = ctx.remote().cloned() else { return Ok(()) };
    if !t.kinds().contains(&Kind::Network) {
        return Ok(());
    }
    let p = ok(format!("make a client of the plugin under test at {}", t.address), t.client())?;
    ok(
        format!(
            "NetworkDriver.GetCapabilities of the plugin under test {:?} (Scope must be local or global)",
            t.name
        ),
        p.network().capabilities(CapabilitiesRequest::default()),
    )
    .map(drop)
}

/// A volume driver that answers every mount with an empty mountpoint.
struct EmptyMounts(MemoryVolumeDriver);

impl VolumeDriver for EmptyMounts {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        self.0.create(req)
    }
    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        self.0.remove(req)
    }
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        self.0.mount(req).map(|_| VolumeMountResponse::new(""))
    }
    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        self.0.unmount(req)
    }
    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        self.0.path(req)
    }
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        self.0.get(req)
    }
    fn list(&self, req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        self.0.list(req)
    }
    fn capabilities(&self, req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        self.0.capabilities(req)
    }
}

/// berth-core's volume service over `driver` named `name`, its store in
/// `<case root>/<name>-state`.
fn service(ctx: &Ctx, name: &str, driver: Arc<dyn VolumeDriver>) -> Result<VolumeService, Stop> {
    let d = Driver::new(driver, name, Kind::Volume, Duration::from_secs(60), Arc::new(Metrics::default()));
    let state = ctx.dir().join(format!("{name}-state"));
    let store =
        ok(format!("open a state store in {}", state.display()), berth_core::store::Store::open(&state))?;
    ok(
        format!("start berth-core's volume service over driver {name:?}"),
        VolumeService::new(Arc::new(DriverSet::new().with(d)), Arc::new(store), name.to_string(), None),
    )
}

fn create(name: &str, driver: &str) -> CreateVolume {
    CreateVolume { name: name.into(), driver: driver.into(), ..CreateVolume::default() }
}

/// The ids of the unmounts `f` received for volume `name`.
fn unmount_ids(f: &Fixture, name: &str) -> Vec<String> {
    f.requests("/VolumeDriver.Unmount")
        .iter()
        .filter(|r| r.field("Name") == name)
        .map(|r| r.field("ID"))
        .collect()
}

fn volume_undo(ctx: &Ctx) -> CaseResult {
    let name = "pl07-v";
    let f = fixture(ctx, "pl07-vol", VOLUME, move |r| match r.path.as_str() {
        "/VolumeDriver.Mount" => Reply::ok(r#"{"Mountpoint":"","Err":""}"#),
        "/VolumeDriver.Get" => Reply::ok(&format!(r#"{{"Volume":{{"Name":"{name}"}}}}"#)),
        "/VolumeDriver.List" => Reply::ok(&format!(r#"{{"Volumes":[{{"Name":"{name}"}}]}}"#)),
        "/VolumeDriver.Capabilities" => Reply::ok(r#"{"Capabilities":{"Scope":"local"}}"#),
        _ => Reply::ok("{}"),
    })?;
    let p = client("pl07-vol", &f.address(), options(|_| {}))?;

    // The client, called directly.
    let id = "f00d".repeat(16);
    let step = "mount through the remote client, answered with an empty Mountpoint";
    refused(step, p.volume().mount(VolumeMountRequest::new(name, &id)), &["pl07-vol", "Mount"])?;
    let ids = unmount_ids(&f, name);
    check(
        ids == [id.clone()],
        format!("{step}: the Unmount calls that followed"),
        format!("exactly one, with the same ID {}", &id[..12]),
        format!("{ids:?}"),
    )?;

    // The daemon's path: the volume service over the remote driver.
    let svc = service(ctx, "pl07-vol", p.volume())?;
    ok(format!("create volume {name:?} through the service"), svc.create(create(name, "pl07-vol")))?;
    let mark = f.count("/VolumeDriver.Mount");
    let step =
        "mount through berth-core's volume service over the remote driver, answered with an empty Mountpoint";
    refused(step, svc.mount(MountVolume::new(name, "pl07-user")), &["Mount"])?;
    let mounted: Vec<String> =
        f.requests("/VolumeDriver.Mount").iter().skip(mark).map(|r| r.field("ID")).collect();
    let ids: Vec<String> = unmount_ids(&f, name).into_iter().skip(1).collect();
    check(
        mounted.len() == 1 && ids == mounted,
        format!("{step}: the Mount and Unmount calls the plugin received"),
        "one Mount and exactly one Unmount with its ID (undone once, not twice)",
        format!("Mount {mounted:?}, Unmount {ids:?}"),
    )?;
    let refs = ok(format!("references of {name:?} after the refused mount"), svc.refs(name))?;
    check(refs.is_empty(), format!("references of {name:?} after the refused mount"), "none", refs.len())?;
    drop(svc);

    // The service's own check, over a linked driver that answers the same.
    let log = Arc::new(CallLog::default());
    let linked =
        Arc::new(Recording::new(Arc::new(EmptyMounts(MemoryVolumeDriver::new(ctx.dir()))), Arc::clone(&log)));
    let svc = service(ctx, "pl07-linked", linked)?;
    ok(format!("create volume {name:?} on the linked driver"), svc.create(create(name, "pl07-linked")))?;
    let step = "mount through the service over a linked driver answering an empty mountpoint";
    refused(step, svc.mount(MountVolume::new(name, "pl07-user")), &[name])?;
    let mounts = log.calls(Method::Mount, Some(name));
    let unmounts = log.calls(Method::Unmount, Some(name));
    check(
        mounts.len() == 1 && unmounts.len() == 1 && unmounts[0].id == mounts[0].id,
        format!("{step}: the calls the driver saw"),
        "one mount and one unmount with its id",
        log.since(0).iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    )?;
    ok(format!("remove volume {name:?} from the linked driver"), svc.remove(name, true))?;
    Ok(())
}

fn ipam_undo(ctx: &Ctx) -> CaseResult {
    let f = fixture(ctx, "pl07-ipam", IPAM, |r| match r.path.as_str() {
        "/IpamDriver.RequestPool" => Reply::ok(r#"{"PoolID":"pl07-pool","Pool":"10.7.0.0/33","Data":{}}"#),
        "/IpamDriver.RequestAddress" if r.field("Address").is_empty() => {
            Reply::ok(r#"{"Address":"10.7.0.9"}"#)
        }
        "/IpamDriver.RequestAddress" => Reply::ok(r#"{"Address":"garbage","Data":null}"#),
        _ => Reply::ok("{}"),
    })?;
    let i = client("pl07-ipam", &f.address(), options(|_| {}))?.ipam();
    let step = "IPAM request_pool, answered PoolID pl07-pool with the invalid CIDR 10.7.0.0/33";
    refused(step, i.request_pool(RequestPoolRequest::new("local", "")), &["pl07-ipam", "10.7.0.0/33"])?;
    let released: Vec<String> =
        f.requests("/IpamDriver.ReleasePool").iter().map(|r| r.field("PoolID")).collect();
    check(
        released == ["pl07-pool"],
        format!("{step}: the ReleasePool calls that followed"),
        "exactly one, for pl07-pool",
        format!("{released:?}"),
    )?;

    let mut req = RequestAddressRequest::new("pl07-pool");
    req.address = "10.7.0.5".into();
    let step = "IPAM request_address of 10.7.0.5, answered \"garbage\"";
    refused(step, i.request_address(req), &["pl07-ipam", "garbage"])?;
    let step2 = "IPAM request_address of any address, answered 10.7.0.9 (no prefix length: not a CIDR)";
    refused(step2, i.request_address(RequestAddressRequest::new("pl07-pool")), &["pl07-ipam", "10.7.0.9"])?;
    let released: Vec<(String, String)> = f
        .requests("/IpamDriver.ReleaseAddress")
        .iter()
        .map(|r| (r.field("PoolID"), r.field("Address")))
        .collect();
    let want = [
        ("pl07-pool".to_string(), "10.7.0.5".to_string()),
        ("pl07-pool".to_string(), "10.7.0.9".to_string()),
    ];
    check(
        released == want,
        "the ReleaseAddress calls after both",
        "exactly one for 10.7.0.5 (what was asked for), then one for 10.7.0.9 (what was answered)",
        format!("{released:?}"),
    )
}

pub(super) fn pl07_undo(ctx: &mut Ctx) -> CaseResult {
    volume_undo(ctx)?;
    ipam_undo(ctx)
}
