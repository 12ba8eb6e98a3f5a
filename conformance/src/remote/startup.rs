//! PL-08: a daemon whose configuration names a remote plugin that is down
//! starts at once, and uses the plugin when it comes up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::{Config, Registry, State};
use berth_plugin_api::remote::{Handlers, Listen, Server};
use berth_plugin_api::volume::{VolumeCreateRequest, VolumeListRequest};
use berth_plugin_api::ErrorKind;

use super::{secs, socket, unix};
use crate::case::{check, io, ok, CaseResult, Failure};
use crate::ctx::Ctx;
use crate::volume::MemoryVolumeDriver;

/// How long building the registry may take while the plugin is down.
const START_LIMIT: Duration = Duration::from_secs(2);
/// The plugin's call timeout in the configuration.
const TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn pl08_startup(ctx: &mut Ctx) -> CaseResult {
    let path = socket(ctx, "pl08");
    let address = unix(&path);
    let discovery = ctx.dir().join("discovery");
    io(format!("make {}", discovery.display()), std::fs::create_dir_all(&discovery))?;
    let text = format!(
        "[daemon]\nroot = {:?}\nexec_root = {:?}\nplugin_dirs = []\nplugin_socket_dirs = [{:?}]\nplugin_spec_dirs = [{:?}]\nplugin_wait = \"1s\"\n\n[[plugin]]\nname = \"pl08\"\nremote = {address:?}\ntimeout = \"{}s\"\n",
        ctx.dir().join("daemon-root").display().to_string(),
        ctx.dir().join("exec-root").display().to_string(),
        discovery.display().to_string(),
        discovery.display().to_string(),
        TIMEOUT.as_secs(),
    );
    let config = Config::parse(&text, "pl-08.toml").map_err(|e| {
        Failure::new("parse a configuration naming remote plugin \"pl08\"", "success", e.to_string())
    })?;

    let started = Instant::now();
    let built = Registry::build(&config);
    let took = started.elapsed();
    let step = format!("build the registry while remote plugin \"pl08\" ({address}) is down");
    let registry = built.map_err(|e| Failure::new(&step, "success", e.to_string()))?;
    check(took < START_LIMIT, &step, format!("done within {}", secs(START_LIMIT)), secs(took))?;
    let entry =
        registry.plugin("pl08").ok_or_else(|| Failure::new(&step, "plugin \"pl08\" listed", "not listed"))?;
    check(
        entry.transport.label() == "remote"
            && !matches!(entry.state, State::Failed(_))
            && entry.remote.is_some(),
        format!("registry entry of \"pl08\" ({step})"),
        "a remote entry, not failed",
        format!("{} {:?}", entry.transport.label(), entry.state),
    )?;
    let remote = entry.remote.clone().expect("checked above");
    let listed = registry.views().iter().any(|v| v.name == "pl08");
    check(listed, "the registry's views while \"pl08\" is down", "\"pl08\" listed", "missing")?;

    let vol = ok("the registry's volume driver \"pl08\" while the plugin is down", registry.volume("pl08"))?;
    let t = Instant::now();
    let res = vol.call("list", |d| d.list(VolumeListRequest::default()));
    let took = t.elapsed();
    let step = format!(
        "a call through the registry's driver while \"pl08\" is down (timeout {}s)",
        TIMEOUT.as_secs()
    );
    match res {
        Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => {}
        Err(e) => {
            return Err(Failure::new(
                &step,
                "error kind unavailable or timeout",
                crate::case::describe_error(&e),
            )
            .with_kind(e.kind)
            .into())
        }
        Ok(v) => return Err(Failure::new(&step, "an error", format!("success ({v:?})")).into()),
    }
    check(
        took < TIMEOUT + Duration::from_millis(1500),
        &step,
        format!("an error within its {}s timeout", TIMEOUT.as_secs()),
        secs(took),
    )?;

    // The plugin comes up.
    let handlers =
        Handlers { volume: Some(Arc::new(MemoryVolumeDriver::new(ctx.dir()))), ..Handlers::default() };
    let server = io(
        format!("serve the suite's memory volume driver on {}", path.display()),
        Server::bind(&Listen::Unix(path.clone()), handlers).and_then(|s| s.spawn()),
    )?;
    let step = "the next call through the registry's driver, once \"pl08\" is up: create volume \"pl08-v\"";
    ok(step, vol.call("create", |d| d.create(VolumeCreateRequest::new("pl08-v"))))?;
    let names: Vec<String> = ok(step, vol.call("list", |d| d.list(VolumeListRequest::default())))?
        .into_iter()
        .map(|v| v.name)
        .collect();
    check(names == ["pl08-v"], format!("{step}: list"), "[\"pl08-v\"]", format!("{names:?}"))?;
    let status = remote.status();
    check(
        status.state == "active" && status.implements == ["VolumeDriver"],
        "status of \"pl08\" once it answers",
        "state active, implements [\"VolumeDriver\"]",
        format!("state {}, implements {:?}", status.state, status.implements),
    )?;
    drop(vol);
    drop(registry);
    server.shutdown();
    Ok(())
}
