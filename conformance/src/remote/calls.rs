//! PL-02..PL-04: the handshake, retries of a plugin not there yet, and
//! hung or dead plugins.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth_core::remote::RemotePlugin;
use berth_plugin_api::ipam::AddressSpacesRequest;
use berth_plugin_api::network::CapabilitiesRequest;
use berth_plugin_api::remote::wire::{self, Subsystem};
use berth_plugin_api::storage::GetRequest;
use berth_plugin_api::volume::{VolumeGetRequest, VolumeListRequest, VolumeMountRequest};
use berth_plugin_api::{DriverResult, ErrorKind, Kind};

use super::fixture::{dead_socket, Fixture, Reply, Request};
use super::{client, fixture, mentions, options, secs, socket, unix, wait_until, RemoteTarget, VOLUME};
use crate::case::{check, err_kind, io, ok, CaseResult, Failure};
use crate::ctx::ById;
use crate::ctx::Ctx;

/// A volume plugin's answers to everything but `Get`: an empty list, no
/// error.
fn volume_script(r: &Request) -> Reply {
    match r.path.as_str() {
        "/VolumeDriver.List" => Reply::ok(r#"{"Volumes":[],"Err":""}"#),
        "/VolumeDriver.Capabilities" => Reply::ok(r#"{"Capabilities":{"Scope":"local"}}"#),
        _ => Reply::ok(r#"{"Err":""}"#),
    }
}

/// Calls a harmless method of `kind` on `plugin`.
fn call_kind(plugin: &Arc<RemotePlugin>, kind: Kind) -> DriverResult<()> {
    match kind {
        Kind::Volume => plugin.volume().list(VolumeListRequest::default()).map(drop),
        Kind::Network => plugin.network().capabilities(CapabilitiesRequest::default()).map(drop),
        Kind::Ipam => plugin.ipam().default_address_spaces(AddressSpacesRequest::default()).map(drop),
        Kind::Storage => plugin.storage().get(GetRequest::new_id("pl02-never")).map(drop),
    }
}

pub(super) fn pl02_handshake(ctx: &mut Ctx) -> CaseResult {
    let f = fixture(ctx, "pl02", &["VolumeDriver", "LogDriver"], volume_script)?;
    let p = client("pl02", &f.address(), options(|_| {}))?;
    let subs = ok("activate fixture plugin \"pl02\" (Implements VolumeDriver, LogDriver)", p.activate())?;
    check(
        subs == [Subsystem::Volume],
        "the subsystems of \"pl02\" after activation",
        "[VolumeDriver] (LogDriver is not berth's)",
        format!("{subs:?}"),
    )?;
    let asked = f.requests(wire::ACTIVATE);
    let first = asked.first().ok_or_else(|| Failure::new("the handshake request", "one request", "none"))?;
    check(
        first.method == "POST" && first.body.is_empty() && first.header("accept") == Some(wire::ACCEPT),
        "the handshake request the plugin received",
        format!("POST {} with an empty body and Accept: {}", wire::ACTIVATE, wire::ACCEPT),
        format!(
            "{} {} with {} body bytes and Accept: {:?}",
            first.method,
            first.path,
            first.body.len(),
            first.header("accept")
        ),
    )?;
    check(
        ok("implements volume", p.implements(Kind::Volume))?,
        "implements(volume) of \"pl02\"",
        true,
        false,
    )?;
    check(
        !ok("implements network", p.implements(Kind::Network))?,
        "implements(network) of \"pl02\"",
        false,
        true,
    )?;
    ok("list volumes of \"pl02\"", p.volume().list(VolumeListRequest::default()))?;

    for kind in [Kind::Network, Kind::Ipam, Kind::Storage] {
        let step = format!("a {kind} call to \"pl02\", which implements only VolumeDriver");
        let e = err_kind(&step, ErrorKind::Unsupported, call_kind(&p, kind))?;
        mentions(&step, &e.message, &["pl02", Subsystem::of(kind).as_str(), "VolumeDriver"])?;
    }
    let stray: Vec<String> = f
        .all()
        .into_iter()
        .filter(|r| !r.path.starts_with("/VolumeDriver.") && r.path != wire::ACTIVATE)
        .map(|r| r.path)
        .collect();
    check(
        stray.is_empty(),
        "requests \"pl02\" received for subsystems it does not implement",
        "none (refused before sending)",
        stray.join(", "),
    )?;
    let handshakes = f.count(wire::ACTIVATE);
    check(
        handshakes == 1,
        "handshakes \"pl02\" received over 7 calls",
        "1 (the answer is cached)",
        handshakes,
    )?;
    let status = p.status();
    check(
        status.state == "active" && status.implements == ["VolumeDriver", "LogDriver"],
        "status of \"pl02\"",
        "state active, implements [\"VolumeDriver\", \"LogDriver\"] as answered",
        format!("state {}, implements {:?}", status.state, status.implements),
    )?;
    drop(f);

    match ctx.remote().cloned() {
        Some(t) => handshake_of_the_plugin_under_test(&t),
        None => Ok(()),
    }
}

/// The plugin under test answers a usable `Implements`, the same to every
/// new client, and refuses (through the client) a kind it lacks.
fn handshake_of_the_plugin_under_test(t: &RemoteTarget) -> CaseResult {
    let who = format!("plugin under test {:?} at {}", t.name, t.address);
    let p = ok(format!("make a client of the {who}"), t.client())?;
    let subs = ok(format!("activate the {who}"), p.activate())?;
    let implements = p.status().implements;
    check(
        !subs.is_empty(),
        format!("Implements of the {who}"),
        "at least one of GraphDriver, NetworkDriver, IpamDriver, VolumeDriver (exact case)",
        format!("{implements:?}"),
    )?;
    let again = ok(format!("make a second client of the {who}"), t.client())?;
    ok(format!("activate the {who} again"), again.activate())?;
    let twice = again.status().implements;
    check(
        twice == implements,
        format!("Implements of the {who}, asked by a second client"),
        format!("{implements:?} again"),
        format!("{twice:?}"),
    )?;
    let Some(kind) = Kind::ALL.into_iter().find(|k| !subs.contains(&Subsystem::of(*k))) else {
        return Ok(());
    };
    let step = format!("a {kind} call to the {who}, which does not implement {}", Subsystem::of(kind));
    let e = err_kind(&step, ErrorKind::Unsupported, call_kind(&p, kind))?;
    mentions(&step, &e.message, &[&t.name])
}

/// How long PL-03's late plugin waits before it listens.
const LATE: Duration = Duration::from_secs(2);

/// Starts a fixture plugin at `path` after `delay`, on a thread.
fn late_plugin(path: std::path::PathBuf, delay: Duration) -> mpsc::Receiver<std::io::Result<Fixture>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        thread::sleep(delay);
        let _ = tx.send(Fixture::plugin(&path, VOLUME, volume_script));
    });
    rx
}

/// A list call to a plugin that starts listening `delay` after the call
/// began (`refused`: its socket file is there all along, nobody listens).
fn late_call(ctx: &Ctx, name: &str, delay: Duration, refused: bool) -> CaseResult {
    let path = socket(ctx, name);
    if refused {
        io(format!("make socket {} with nobody listening", path.display()), dead_socket(&path))?;
    }
    let what = if refused { "connecting is refused" } else { "its socket does not exist" };
    let p = client(name, &unix(&path), options(|o| o.retry_window = Duration::from_secs(10)))?;
    let started = Instant::now();
    let rx = late_plugin(path, delay);
    let res = p.volume().list(VolumeListRequest::default());
    let took = started.elapsed();
    let f = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| {
        Failure::new(format!("start plugin {name:?} late"), "it starts", "no answer from its thread")
    })?;
    let f = io(format!("start plugin {name:?} late"), f)?;
    let step = format!(
        "list volumes of plugin {name:?}, which listens {} after the call began ({what} until then), retry window 10s",
        secs(delay)
    );
    ok(&step, res)?;
    let lists = f.count("/VolumeDriver.List");
    check(
        lists == 1,
        format!("{step}: List requests the plugin received"),
        "exactly 1 (sent once a connection was made)",
        format!("{lists} ({} after {})", f.paths(), secs(took)),
    )
}

pub(super) fn pl03_retries(ctx: &mut Ctx) -> CaseResult {
    late_call(ctx, "pl03-late", LATE, false)?;
    late_call(ctx, "pl03-refused", Duration::from_secs(1), true)?;

    // A plugin that never comes: the call gives up after the window.
    let path = socket(ctx, "pl03-never");
    let address = unix(&path);
    let p = client("pl03-never", &address, options(|o| o.retry_window = Duration::from_secs(1)))?;
    let started = Instant::now();
    let res = p.volume().list(VolumeListRequest::default());
    let took = started.elapsed();
    let step = "list volumes of plugin \"pl03-never\", whose socket never appears (retry window 1s)";
    let e = err_kind(step, ErrorKind::Unavailable, res)?;
    mentions(step, &e.message, &["pl03-never", &address])?;
    check(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        format!("{step}: how long it retried"),
        "about the 1s retry window",
        secs(took),
    )?;

    // Answered errors are never retried.
    let f = fixture(ctx, "pl03-500", VOLUME, |r| match r.path.as_str() {
        "/VolumeDriver.List" => Reply::json(500, r#"{"Err":"pl03: backend down"}"#),
        "/VolumeDriver.Mount" => Reply::text(503, "pl03: try later"),
        _ => Reply::ok("{}"),
    })?;
    let p = client("pl03-500", &f.address(), options(|_| {}))?;
    let step = "list volumes of plugin \"pl03-500\", which answers 500 {\"Err\":\"pl03: backend down\"}";
    let res = p.volume().list(VolumeListRequest::default());
    let e = res.err().ok_or_else(|| Failure::new(step, "an error", "success"))?;
    mentions(step, &e.message, &["pl03: backend down"])?;
    let step2 = "mount of plugin \"pl03-500\", which answers 503 with the text \"pl03: try later\"";
    let res = p.volume().mount(VolumeMountRequest::new("pl03-v", "0123"));
    let e = res.err().ok_or_else(|| Failure::new(step2, "an error", "success"))?;
    mentions(step2, &e.message, &["pl03: try later"])?;
    let (lists, mounts) = (f.count("/VolumeDriver.List"), f.count("/VolumeDriver.Mount"));
    check(
        lists == 1 && mounts == 1,
        "requests \"pl03-500\" received for a list and a mount answered with 5xx",
        "1 List and 1 Mount: an answered error is never retried",
        format!("{lists} List and {mounts} Mount ({})", f.paths()),
    )
}

pub(super) fn pl04_hung_and_dead(ctx: &mut Ctx) -> CaseResult {
    let hung = fixture(ctx, "pl04-hung", VOLUME, |r| match r.path.as_str() {
        "/VolumeDriver.Get" => Reply::Hang,
        _ => volume_script(r),
    })?;
    let other = fixture(ctx, "pl04-other", VOLUME, volume_script)?;
    let limit = Duration::from_secs(1);
    let hp = client(
        "pl04-hung",
        &hung.address(),
        options(|o| {
            o.method_timeouts.insert("VolumeDriver.Get".into(), limit);
        }),
    )?;
    let op = client("pl04-other", &other.address(), options(|_| {}))?;
    ok("activate \"pl04-hung\"", hp.activate())?;
    ok("activate \"pl04-other\"", op.activate())?;

    let started = Instant::now();
    let h = {
        let hp = Arc::clone(&hp);
        thread::spawn(move || {
            let r = hp.volume().get(VolumeGetRequest::new("pl04-v"));
            (r, started.elapsed())
        })
    };
    let arrived = wait_until(Duration::from_secs(3), || hung.count("/VolumeDriver.Get") == 1);
    check(
        arrived,
        "the Get sent to \"pl04-hung\"",
        "received by the plugin (which never answers)",
        hung.paths(),
    )?;
    let mut slowest = Duration::ZERO;
    for i in 1..=5 {
        let t = Instant::now();
        ok(
            format!("list volumes of \"pl04-other\" while \"pl04-hung\" hangs (#{i})"),
            op.volume().list(VolumeListRequest::default()),
        )?;
        ok(
            format!("list volumes of \"pl04-hung\" itself while its Get hangs (#{i})"),
            hp.volume().list(VolumeListRequest::default()),
        )?;
        slowest = slowest.max(t.elapsed());
    }
    let still = !h.is_finished();
    check(
        slowest < Duration::from_millis(500) && still,
        "5 lists of another plugin and of the hung plugin's other method, made during the hung Get",
        "each answered within 500ms while the Get was still waiting (no lock held across a call)",
        format!(
            "slowest {}, the Get {}",
            secs(slowest),
            if still { "still waiting" } else { "already over" }
        ),
    )?;
    let (res, took) = h.join().map_err(|_| Failure::new("the hung Get's thread", "no panic", "panic"))?;
    let step = "get on \"pl04-hung\", which accepts and never answers (VolumeDriver.Get timeout 1s)";
    let e = err_kind(step, ErrorKind::Timeout, res)?;
    mentions(step, &e.message, &["pl04-hung", "VolumeDriver.Get"])?;
    check(
        took >= Duration::from_millis(900) && took < limit + Duration::from_millis(1500),
        format!("{step}: when it ended"),
        "right after its 1s timeout",
        secs(took),
    )?;
    drop(hung);
    dead_plugin(ctx)
}

/// A dead plugin's calls are unavailable; after `breaker_threshold` of
/// them the breaker opens and calls fail fast without connecting; when the
/// plugin is back a probe closes it.
fn dead_plugin(ctx: &Ctx) -> CaseResult {
    const THRESHOLD: u32 = 3;
    let path = socket(ctx, "pl04-dead");
    let address = unix(&path);
    io(format!("make socket {} with nobody listening", path.display()), dead_socket(&path))?;
    let p = client(
        "pl04-dead",
        &address,
        options(|o| {
            o.retry_window = Duration::from_millis(300);
            o.breaker_threshold = THRESHOLD;
        }),
    )?;
    for i in 1..=THRESHOLD {
        let t = Instant::now();
        let step = format!("list #{i} on \"pl04-dead\" (socket file, nobody listening; retry window 300ms)");
        let e = err_kind(&step, ErrorKind::Unavailable, p.volume().list(VolumeListRequest::default()))?;
        mentions(&step, &e.message, &["pl04-dead", &address])?;
        check(
            t.elapsed() < Duration::from_secs(3),
            format!("{step}: how long it took"),
            "under 3s",
            secs(t.elapsed()),
        )?;
    }
    let state = p.status().state;
    check(
        state == "breaker_open",
        format!("status of \"pl04-dead\" after {THRESHOLD} failed calls (breaker_threshold {THRESHOLD})"),
        "state breaker_open",
        format!("state {state}"),
    )?;

    // Something listens again but answers nothing (so background probes
    // fail and the breaker stays open): calls must not connect.
    let counter = io(
        "listen on the dead plugin's socket, closing every connection",
        Fixture::start(&path, |_| Reply::Close),
    )?;
    let before = counter.accepts();
    let t = Instant::now();
    for i in 1..=20 {
        let step = format!("list #{i} on \"pl04-dead\" with its breaker open");
        let e = err_kind(&step, ErrorKind::Unavailable, p.volume().list(VolumeListRequest::default()))?;
        mentions(&step, &e.message, &["pl04-dead", "breaker"])?;
    }
    let (took, connected) = (t.elapsed(), counter.accepts() - before);
    check(
        took < Duration::from_millis(250) && connected <= 1,
        "20 calls to \"pl04-dead\" with its breaker open",
        "each failing fast without connecting (under 250ms in all; a background probe may connect once)",
        format!("{} in all, {connected} connection(s) made", secs(took)),
    )?;
    drop(counter);

    let back = fixture(ctx, "pl04-dead", VOLUME, volume_script)?;
    let closed = wait_until(Duration::from_secs(8), || p.status().state != "breaker_open");
    check(
        closed,
        "status of \"pl04-dead\" once it answers again",
        "the breaker closed by a probe within 8s",
        p.status().state,
    )?;
    ok("list on \"pl04-dead\" once it answers again", p.volume().list(VolumeListRequest::default()))?;
    let state = p.status().state;
    check(
        state == "active",
        "status of \"pl04-dead\" after a successful call",
        "state active",
        format!("state {state}"),
    )?;
    drop(back);
    Ok(())
}
