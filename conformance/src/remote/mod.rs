//! Remote plugins: the plugin protocol cases PL-01..PL-08, the scripted
//! fixture plugins they talk to, and the remote plugin under test
//! (`--remote ADDR`, [`RemoteTarget`]).
//!
//! The PL cases check berth's client side — `berth_core::remote`
//! (discovery, handshake, retries, timeouts, breaker, answer decoding,
//! undo of unusable answers) and the registry's remote entries — exactly
//! as linked into this binary, against fixture plugins the suite serves
//! itself on unix sockets under the case root: [`fixture::Fixture`]
//! answers scripted replies and records every request and connection;
//! where a well-behaved plugin is needed, `berth_plugin_api::remote::Server`
//! serves the suite's own in-memory volume driver. When the run has a
//! remote plugin under test, PL-02 and PL-06 check its handshake and
//! capabilities too.
//!
//! PL-01 lives in `discovery.rs`; PL-02..PL-04 in `calls.rs`; PL-05..PL-07
//! in `answers.rs`; PL-08 in `startup.rs`.

mod answers;
mod calls;
mod discovery;
pub mod fixture;
mod startup;
mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::remote::{RemoteOptions, RemotePlugin};

use crate::case::{ok, Case, Failure, Stop, Suite};
use crate::ctx::Ctx;
use fixture::{Fixture, Reply, Request};

pub use target::{default_name, default_options, normalize, tag_of, RemoteTarget, Tagged, RETRY_WINDOW};

/// The PL cases of the plugin protocol, in ID order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "PL-01",
            description: "discovery order: socket, then `.spec`, then `.json`; unknown files ignored",
            suite: Suite::Plugin,
            run: discovery::pl01_discovery,
        },
        Case {
            id: "PL-02",
            description: "handshake: `/Plugin.Activate` answers `Implements`; asking a kind it lacks is a typed not-implemented error",
            suite: Suite::Plugin,
            run: calls::pl02_handshake,
        },
        Case {
            id: "PL-03",
            description: "transport errors are retried with backoff; a plugin that appears a few seconds late is still used",
            suite: Suite::Plugin,
            run: calls::pl03_retries,
        },
        Case {
            id: "PL-04",
            description: "a hung or dead plugin never blocks calls to other drivers; its calls end in timeout errors",
            suite: Suite::Plugin,
            run: calls::pl04_hung_and_dead,
        },
        Case {
            id: "PL-05",
            description: "`{\"Err\": …}` (and `Error` for IPAM) is an error; 5xx with a text body is handled; unknown fields and nulls are tolerated",
            suite: Suite::Plugin,
            run: answers::pl05_answers,
        },
        Case {
            id: "PL-06",
            description: "an invalid capabilities answer fails registration with a clear message",
            suite: Suite::Plugin,
            run: answers::pl06_capabilities,
        },
        Case {
            id: "PL-07",
            description: "when the daemon cannot use a driver's answer, it calls the matching delete so nothing is orphaned",
            suite: Suite::Plugin,
            run: answers::pl07_undo,
        },
        Case {
            id: "PL-08",
            description: "the daemon starts in bounded time while a plugin is down, and reconciles when it comes back",
            suite: Suite::Plugin,
            run: startup::pl08_startup,
        },
    ]
}

/// `Implements` of a volume plugin.
const VOLUME: &[&str] = &["VolumeDriver"];
/// `Implements` of a network plugin.
const NETWORK: &[&str] = &["NetworkDriver"];
/// `Implements` of an IPAM plugin.
const IPAM: &[&str] = &["IpamDriver"];

/// The socket of fixture `name` in the case root.
fn socket(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.dir().join(format!("{name}.sock"))
}

/// `unix://<path>`.
fn unix(path: &std::path::Path) -> String {
    format!("unix://{}", path.display())
}

/// Starts fixture plugin `name` implementing `implements`.
fn fixture(
    ctx: &Ctx,
    name: &str,
    implements: &'static [&'static str],
    script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> Result<Fixture, Stop> {
    Fixture::plugin(&socket(ctx, name), implements, script).map_err(|e| {
        Failure::new(format!("start fixture plugin {name:?}"), "success", format!("I/O error: {e}")).into()
    })
}

/// Default client options with `edit` applied.
fn options(edit: impl FnOnce(&mut RemoteOptions)) -> RemoteOptions {
    let mut o = RemoteOptions::default();
    edit(&mut o);
    o
}

/// A client of plugin `name` at `address`.
fn client(name: &str, address: &str, options: RemoteOptions) -> Result<Arc<RemotePlugin>, Stop> {
    ok(format!("make a client of plugin {name:?} at {address}"), RemotePlugin::new(name, address, options))
}

/// Polls `cond` every 20 ms for up to `limit`; whether it came true.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A duration as people read it: `1.52s`, `35ms`.
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// Fails at `step` unless `message` contains every one of `needles`.
fn mentions(step: impl std::fmt::Display, message: &str, needles: &[&str]) -> Result<(), Stop> {
    let missing: Vec<&str> = needles.iter().copied().filter(|n| !message.contains(n)).collect();
    crate::case::check(
        missing.is_empty(),
        step,
        format!(
            "a message naming {}",
            needles.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        ),
        format!("{message:?} (missing {})", missing.join(", ")),
    )
}
