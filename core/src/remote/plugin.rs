//! One remote plugin: address, connection pool, breaker, activation, and
//! the call path every adapter method goes through.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use berth_plugin_api::remote::tolerant;
use berth_plugin_api::remote::wire::{self, ActivateResponse, Subsystem};
use berth_plugin_api::util::rfc3339;
use berth_plugin_api::{
    DriverError, DriverResult, IpamDriver, Kind, NetworkDriver, StorageDriver, VolumeDriver,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::breaker::{self, Backoff, Breaker, MAX_PROBE_PAUSE};
use super::http::{Answer, Body, Conn, HttpError, Limit, Sink};
use super::transport::{Address, ConnectError, Connector, FileId, Pool};
use super::util::excerpt;
use super::{Found, RemoteIpam, RemoteNetwork, RemoteOptions, RemoteStorage, RemoteVolume};

/// Successful call latencies kept for [`RemoteStatus::p50_us`].
const RECENT: usize = 64;
/// What an answer that does not decode is called in error messages.
pub(crate) const GARBAGE: &str = "answered garbage";

/// The longest a background probe waits for `/Plugin.Activate`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A plugin process reached over HTTP, shared by its driver adapters.
///
/// Cheap to share (`Arc`); every method may be called from many threads,
/// and a hung or dead plugin never blocks calls to any other plugin (no
/// lock is held across I/O).
pub struct RemotePlugin {
    name: String,
    address: String,
    options: RemoteOptions,
    connector: Connector,
    host: String,
    pool: Pool,
    breaker: Breaker,
    activation: Mutex<Activation>,
    /// Held while a handshake is on the wire, so callers that need one at
    /// the same time share it (one `/Plugin.Activate`, as dockerd sends).
    handshake: Mutex<()>,
    stats: Stats,
    me: Weak<RemotePlugin>,
}

impl std::fmt::Debug for RemotePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePlugin").field("name", &self.name).field("address", &self.address).finish()
    }
}

#[derive(Debug, Default)]
struct Activation {
    /// `Implements` as answered; `None` before the first activation.
    implements: Option<Vec<String>>,
    /// The entries of `implements` berth serves.
    subsystems: Vec<Subsystem>,
    /// Activate again before the next call.
    stale: bool,
    /// The socket file the activation went to.
    inode: Option<FileId>,
}

#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    failures: AtomicU64,
    activations: AtomicU64,
    unreachable: AtomicBool,
    last_error: Mutex<Option<(String, SystemTime)>>,
    recent_us: Mutex<VecDeque<u64>>,
}

/// What `berth plugin ls` shows of a remote plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RemoteStatus {
    /// The plugin's name.
    pub name: String,
    /// `unix`, `tcp` or `https`.
    pub transport: String,
    /// The address as configured or discovered.
    pub address: String,
    /// `not_activated`, `active`, `unreachable` (the last call could not
    /// reach it) or `breaker_open` (calls fail fast until a probe succeeds).
    pub state: String,
    /// `Implements` of the last activation, unknown names included.
    pub implements: Vec<String>,
    /// The last error of a call, if any.
    pub last_error: Option<String>,
    /// When it happened, RFC 3339.
    pub last_error_at: Option<String>,
    /// How many times the plugin was activated.
    pub activations: u64,
    /// Median latency of the recent successful calls, in microseconds.
    pub p50_us: u64,
    /// Calls made.
    pub calls: u64,
    /// Calls that ended in an error (answered or not).
    pub failures: u64,
    /// Keep-alive connections idle in the pool.
    pub idle_connections: usize,
}

/// How an attempt failed, before it becomes a [`DriverError`].
#[derive(Debug)]
enum Fail {
    /// The plugin could not be reached, or the connection broke. `retry`:
    /// the request certainly never reached it.
    Transport { message: String, retry: bool },
    /// The deadline passed.
    Timeout,
    /// Calls fail fast: the breaker is open.
    Open(DriverError),
    /// Anything else (the plugin answered, or the answer is unusable).
    Error(DriverError),
}

/// What an attempt sends.
enum Job<'a> {
    /// `/Plugin.Activate`, storing the answer.
    Activate,
    /// A call of a subsystem.
    Call { sub: Subsystem, path: &'a str, body: Body<'a>, sink: Sink<'a>, idle: Option<Duration> },
}

impl RemotePlugin {
    /// A plugin named `name` at `address` (`unix:///path`,
    /// `tcp://host:port`, `http://host:port` or `https://host:port`).
    /// Does no network I/O (TLS files named in the options are read); a bad
    /// address is [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
    pub fn new(name: &str, address: &str, options: RemoteOptions) -> DriverResult<Arc<RemotePlugin>> {
        let parsed = Address::parse(address).map_err(|e| e.context(format!("plugin {name:?}")))?;
        let host = parsed.host_header();
        let connector = Connector::new(parsed, options.tls.as_ref())
            .map_err(|e| e.context(format!("plugin {name:?}")))?;
        Ok(Arc::new_cyclic(|me| RemotePlugin {
            name: name.to_string(),
            address: address.trim().to_string(),
            breaker: Breaker::new(options.breaker_threshold),
            options,
            connector,
            host,
            pool: Pool::default(),
            activation: Mutex::default(),
            handshake: Mutex::new(()),
            stats: Stats::default(),
            me: me.clone(),
        }))
    }

    /// A plugin [`Discovery`](super::Discovery) found; its TLS settings
    /// replace those of `options`.
    pub fn from_found(found: &Found, mut options: RemoteOptions) -> DriverResult<Arc<RemotePlugin>> {
        if found.tls.is_some() {
            options.tls = found.tls.clone();
        }
        RemotePlugin::new(&found.name, &found.address, options)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Its options.
    pub fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// The longest deadline of any call: what a caller's own deadline
    /// around this plugin's calls should be at least.
    pub fn max_timeout(&self) -> Duration {
        self.options.max_timeout()
    }

    /// The subsystems the plugin serves, from `/Plugin.Activate`: cached,
    /// asked again only when never asked or after the plugin was seen
    /// unreachable. Unknown names are ignored (but shown by
    /// [`RemotePlugin::status`]).
    pub fn activate(&self) -> DriverResult<Vec<Subsystem>> {
        let cached = || {
            let a = self.activation();
            (a.implements.is_some() && !a.stale).then(|| a.subsystems.clone())
        };
        if let Some(subsystems) = cached() {
            return Ok(subsystems);
        }
        let _one = lock(&self.handshake);
        if let Some(subsystems) = cached() {
            return Ok(subsystems);
        }
        self.send(Job::Activate, "Plugin", "Activate")?;
        Ok(self.activation().subsystems.clone())
    }

    /// Whether the plugin serves drivers of `kind` (activating it if
    /// needed).
    pub fn implements(&self, kind: Kind) -> DriverResult<bool> {
        Ok(self.activate()?.contains(&Subsystem::of(kind)))
    }

    /// Its state, counters and last error.
    pub fn status(&self) -> RemoteStatus {
        let (implements, activated) = {
            let a = self.activation();
            (a.implements.clone().unwrap_or_default(), a.implements.is_some())
        };
        let state = if self.breaker.is_open() {
            "breaker_open"
        } else if self.stats.unreachable.load(Ordering::Relaxed) {
            "unreachable"
        } else if activated {
            "active"
        } else {
            "not_activated"
        };
        let last = lock(&self.stats.last_error).clone();
        let mut recent: Vec<u64> = lock(&self.stats.recent_us).iter().copied().collect();
        recent.sort_unstable();
        RemoteStatus {
            name: self.name.clone(),
            transport: self.connector.address().transport().to_string(),
            address: self.address.clone(),
            state: state.to_string(),
            implements,
            last_error: last.as_ref().map(|(m, _)| m.clone()),
            last_error_at: last.map(|(_, at)| rfc3339(at)),
            activations: self.stats.activations.load(Ordering::Relaxed),
            p50_us: recent.get(recent.len().saturating_sub(1) / 2).copied().unwrap_or(0),
            calls: self.stats.calls.load(Ordering::Relaxed),
            failures: self.stats.failures.load(Ordering::Relaxed),
            idle_connections: self.pool.idle(),
        }
    }

    /// The plugin's volume driver (the subsystem is checked on each call).
    pub fn volume(self: &Arc<Self>) -> Arc<dyn VolumeDriver> {
        Arc::new(RemoteVolume::new(Arc::clone(self)))
    }

    /// The plugin's network driver.
    pub fn network(self: &Arc<Self>) -> Arc<dyn NetworkDriver> {
        Arc::new(RemoteNetwork::new(Arc::clone(self)))
    }

    /// The plugin's IPAM driver.
    pub fn ipam(self: &Arc<Self>) -> Arc<dyn IpamDriver> {
        Arc::new(RemoteIpam::new(Arc::clone(self)))
    }

    /// The plugin's storage (graph) driver, with its diff capability.
    pub fn storage(self: &Arc<Self>) -> Arc<dyn StorageDriver> {
        Arc::new(RemoteStorage::new(Arc::clone(self)))
    }

    // ---- the call path (for the adapters) ----

    /// `<Subsystem>.<method>` with a JSON (or no) request; decodes the
    /// answer. `req: None` sends an empty body.
    pub(crate) fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        sub: Subsystem,
        method: &str,
        req: Option<&Req>,
    ) -> DriverResult<Resp> {
        let answer = self.call_answer(sub, method, req)?;
        self.decode(sub, method, &answer)
    }

    /// Like [`RemotePlugin::call`] but hands back any HTTP answer, for
    /// the methods where a status means something (404: not implemented).
    pub(crate) fn call_answer<Req: Serialize>(
        &self,
        sub: Subsystem,
        method: &str,
        req: Option<&Req>,
    ) -> DriverResult<Answer> {
        let json = match req {
            Some(r) => {
                let mut json = serde_json::to_vec(r).map_err(|e| {
                    DriverError::internal(format!("{}: encode the request: {e}", self.label(sub, method)))
                })?;
                json.push(b'\n');
                Some(json)
            }
            None => None,
        };
        let body = json.as_deref().map_or(Body::Empty, Body::Json);
        let path = sub.path(method);
        let job = Job::Call { sub, path: &path, body, sink: Sink::Buffer(self.options.max_body), idle: None };
        self.send(job, sub.as_str(), method)
    }

    /// A call whose request and/or answer body is a stream: `path` may
    /// carry a query; the deadline bounds each read and write.
    pub(crate) fn call_stream<'a>(
        &self,
        sub: Subsystem,
        method: &str,
        path: &'a str,
        body: Body<'a>,
        sink: Sink<'a>,
    ) -> DriverResult<Answer> {
        let idle = Some(self.options.timeout_for(sub.as_str(), method));
        self.send(Job::Call { sub, path, body, sink, idle }, sub.as_str(), method)
    }

    /// The error an answer carries ([`wire::failure`]), else its body
    /// decoded tolerantly; garbage is an internal error quoting it.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        sub: Subsystem,
        method: &str,
        answer: &Answer,
    ) -> DriverResult<T> {
        let out = match wire::failure(sub, answer.status, &answer.body) {
            Some(e) => Err(e.context(self.label(sub, method))),
            None => tolerant::from_slice(&answer.body).map_err(|e| {
                DriverError::internal(format!(
                    "{}: {GARBAGE}: {e}: {}",
                    self.label(sub, method),
                    excerpt(&answer.body)
                ))
            }),
        };
        if let Err(e) = &out {
            self.note_error(e);
        }
        out
    }

    /// `plugin "name": Subsystem.Method`, the start of every message.
    pub(crate) fn label(&self, sub: Subsystem, method: &str) -> String {
        format!("plugin {:?}: {sub}.{method}", self.name)
    }

    /// Counts an error the adapter found in an answer.
    pub(crate) fn note_error(&self, e: &DriverError) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.stats.last_error) = Some((e.message.clone(), SystemTime::now()));
    }

    fn send(&self, mut job: Job<'_>, sub: &str, method: &str) -> DriverResult<Answer> {
        let timeout = self.options.timeout_for(sub, method);
        let start = Instant::now();
        let deadline = start + timeout;
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let out = match self.breaker.check() {
            // Half-open: now and then one call goes through, once.
            Some(_) if self.breaker.try_trial() => {
                let out = self.attempt(&mut job, deadline);
                self.breaker.trial_done();
                out
            }
            Some(open) => Err(Fail::Open(DriverError::unavailable(format!(
                "plugin {:?} is unreachable (breaker open since {} after {} failed calls): last error: {}; \
                 calls fail fast until a probe of {} or a trial call (one each 250 ms) succeeds",
                self.name,
                rfc3339(open.since),
                open.failures,
                open.last_error,
                wire::ACTIVATE
            )))),
            None => breaker::retry(
                self.options.retry_window,
                deadline,
                || self.attempt(&mut job, deadline),
                |f| matches!(f, Fail::Transport { retry: true, .. }),
            ),
        };
        let label = || format!("plugin {:?}: {sub}.{method}", self.name);
        let error = match out {
            Ok(answer) => {
                self.breaker.success();
                self.stats.unreachable.store(false, Ordering::Relaxed);
                let mut recent = lock(&self.stats.recent_us);
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back(start.elapsed().as_micros() as u64);
                return Ok(answer);
            }
            Err(Fail::Transport { message, .. }) => {
                self.lost();
                let e = DriverError::unavailable(format!("{}: {message}", label()));
                self.failed_call(&e);
                e
            }
            Err(Fail::Timeout) => {
                let e = DriverError::timeout(format!(
                    "{}: no answer within {timeout:?} (raise timeouts.\"{sub}.{method}\" of the plugin if it needs longer)",
                    label()
                ));
                self.failed_call(&e);
                e
            }
            Err(Fail::Open(e)) => e,
            Err(Fail::Error(e)) => {
                self.breaker.success();
                self.stats.unreachable.store(false, Ordering::Relaxed);
                e
            }
        };
        self.note_error(&error);
        Err(error)
    }

    /// A call could not reach the plugin: idle connections go, and the
    /// next call activates again.
    fn lost(&self) {
        self.stats.unreachable.store(true, Ordering::Relaxed);
        self.activation().stale = true;
        self.pool.clear();
    }

    fn failed_call(&self, e: &DriverError) {
        if self.breaker.failure(&e.message) {
            self.start_prober();
        }
    }

    fn attempt(&self, job: &mut Job<'_>, deadline: Instant) -> Result<Answer, Fail> {
        match job {
            Job::Activate => {
                let conn = self.idle_conn();
                let inode = match &conn {
                    Some(c) => c.inode,
                    None => None,
                };
                let (answer, back, inode) = self.exchange_activate(conn, inode, deadline)?;
                if let Some(c) = back {
                    self.pool.put(c);
                }
                self.store_activation(&answer, inode)?;
                Ok(answer)
            }
            Job::Call { sub, path, body, sink, idle } => {
                let streaming = matches!(body, Body::Stream(_));
                let mut conn = if streaming { None } else { self.idle_conn() };
                if conn.is_none() {
                    let c = self.connect(deadline)?;
                    self.check_socket(&c);
                    conn = Some(c);
                }
                if self.needs_activation() {
                    let _one = lock(&self.handshake);
                    if self.needs_activation() {
                        let inode = conn.as_ref().and_then(|c| c.inode);
                        let (answer, back, inode) = self.exchange_activate(conn.take(), inode, deadline)?;
                        self.store_activation(&answer, inode)?;
                        conn = back;
                    }
                }
                self.check_implements(*sub)?;
                let limit = match idle {
                    Some(d) => Limit::Idle(*d),
                    None => Limit::Until(deadline),
                };
                let (answer, back) =
                    self.exchange(conn, path, body.reborrow(), sink.reborrow(), limit, deadline)?;
                if let (Some(c), false) = (back, streaming) {
                    self.pool.put(c);
                }
                Ok(answer)
            }
        }
    }

    fn exchange_activate(
        &self,
        conn: Option<Conn>,
        inode: Option<FileId>,
        deadline: Instant,
    ) -> Result<(Answer, Option<Conn>, Option<FileId>), Fail> {
        let mut inode = inode;
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = self.connect(deadline)?;
                inode = c.inode;
                c
            }
        };
        let (answer, back) = self.exchange(
            Some(conn),
            wire::ACTIVATE,
            Body::Empty,
            Sink::Buffer(self.options.max_body),
            Limit::Until(deadline),
            deadline,
        )?;
        Ok((answer, back, inode))
    }

    /// One exchange on `conn` (or a new connection). A kept-alive
    /// connection that breaks before any answer byte is retried once on a
    /// fresh one. Gives back the connection when it can serve again.
    fn exchange(
        &self,
        mut conn: Option<Conn>,
        path: &str,
        mut body: Body<'_>,
        mut sink: Sink<'_>,
        limit: Limit,
        deadline: Instant,
    ) -> Result<(Answer, Option<Conn>), Fail> {
        loop {
            let mut c = match conn.take() {
                Some(c) => c,
                None => self.connect(deadline)?,
            };
            match c.exchange(&self.host, path, body.reborrow(), sink.reborrow(), limit) {
                Ok((answer, reusable)) => {
                    c.reused = false;
                    return Ok((answer, reusable.then_some(c)));
                }
                // Not for a streamed body: part of it may be gone.
                Err(HttpError::NoAnswer(_)) if c.reused && !matches!(body, Body::Stream(_)) => continue,
                Err(e) => return Err(self.http_fail(e)),
            }
        }
    }

    fn http_fail(&self, e: HttpError) -> Fail {
        match e {
            HttpError::NoAnswer(e) => Fail::Transport { message: format!("no answer: {e}"), retry: false },
            HttpError::Broken(e) => {
                Fail::Transport { message: format!("connection broke during the answer: {e}"), retry: false }
            }
            HttpError::Timeout => Fail::Timeout,
            HttpError::TooLarge(max) => Fail::Error(DriverError::resource_exhausted(format!(
                "plugin {:?}: answer larger than the limit of {max} bytes (max_body)",
                self.name
            ))),
            HttpError::Malformed(m) => {
                Fail::Error(DriverError::internal(format!("plugin {:?}: {GARBAGE}: {m}", self.name)))
            }
            HttpError::Source(e) => {
                Fail::Error(DriverError::io(format!("plugin {:?}: read the stream to send", self.name), &e))
            }
            HttpError::Sink(e) => {
                Fail::Error(DriverError::io(format!("plugin {:?}: write the stream answered", self.name), &e))
            }
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Conn, Fail> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fail::Timeout);
        }
        self.connector.connect(left.min(self.options.connect_timeout)).map_err(
            |ConnectError { error, retryable }| {
                // Not there, even briefly: whatever answers next is activated anew.
                self.activation().stale = true;
                Fail::Transport {
                    message: format!("cannot connect to {}: {error}", self.address),
                    retry: retryable,
                }
            },
        )
    }

    /// A live idle connection, if any. A connection the plugin closed
    /// while idle may mean a restart: the next call activates again (a
    /// cheap, idempotent handshake).
    fn idle_conn(&self) -> Option<Conn> {
        while let Some(c) = self.pool.take() {
            if !c.stream().is_stale() {
                return Some(c);
            }
            self.activation().stale = true;
        }
        None
    }

    /// A new connection to a socket file other than the one activated: the
    /// plugin restarted on the same path.
    fn check_socket(&self, conn: &Conn) {
        let mut a = self.activation();
        if conn.inode.is_some() && a.inode.is_some() && conn.inode != a.inode {
            a.stale = true;
        }
    }

    fn needs_activation(&self) -> bool {
        let a = self.activation();
        a.implements.is_none() || a.stale
    }

    fn store_activation(&self, answer: &Answer, inode: Option<FileId>) -> Result<(), Fail> {
        let label = format!("plugin {:?}: Plugin.Activate", self.name);
        if let Some(e) = wire::failure(Subsystem::Volume, answer.status, &answer.body) {
            return Err(Fail::Error(e.context(label)));
        }
        let resp: ActivateResponse = tolerant::from_slice(&answer.body).map_err(|e| {
            Fail::Error(DriverError::internal(format!("{label}: {GARBAGE}: {e}: {}", excerpt(&answer.body))))
        })?;
        let subsystems = resp.implements.iter().filter_map(|s| Subsystem::parse(s)).collect();
        let mut a = self.activation();
        *a = Activation { implements: Some(resp.implements), subsystems, stale: false, inode };
        self.stats.activations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_implements(&self, sub: Subsystem) -> Result<(), Fail> {
        let a = self.activation();
        if a.subsystems.contains(&sub) {
            return Ok(());
        }
        Err(Fail::Error(DriverError::unsupported(format!(
            "plugin {:?} does not implement {sub} (it implements {:?})",
            self.name,
            a.implements.as_deref().unwrap_or_default()
        ))))
    }

    fn activation(&self) -> MutexGuard<'_, Activation> {
        lock(&self.activation)
    }

    /// Starts the thread probing an open breaker. It holds only a weak
    /// reference between probes, and exits when the breaker closes or the
    /// plugin is dropped.
    fn start_prober(&self) {
        let weak = self.me.clone();
        let spawned = thread::Builder::new().name("berth-probe".into()).spawn(move || {
            let mut backoff = Backoff::new(MAX_PROBE_PAUSE);
            loop {
                thread::sleep(backoff.pause());
                let Some(plugin) = weak.upgrade() else { return };
                if plugin.breaker.is_open() {
                    match plugin.probe() {
                        Ok(()) => plugin.breaker.success(),
                        Err(e) => plugin.breaker.probe_failed(&e),
                    }
                }
                if plugin.breaker.prober_exits(false) {
                    return;
                }
            }
        });
        if spawned.is_err() {
            // No thread: the next failure opening the breaker tries again.
            self.breaker.prober_exits(true);
        }
    }

    /// `/Plugin.Activate` on a fresh connection; a success is a new
    /// activation.
    fn probe(&self) -> Result<(), String> {
        let timeout = self.options.timeout_for("Plugin", "Activate").min(PROBE_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let done = self.exchange_activate(None, None, deadline).and_then(|(answer, back, inode)| {
            self.store_activation(&answer, inode)?;
            if let Some(c) = back {
                self.pool.put(c);
            }
            Ok(())
        });
        match done {
            Ok(()) => {
                self.stats.unreachable.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(Fail::Transport { message, .. }) => Err(format!("probe: {message}")),
            Err(Fail::Timeout) => Err(format!("probe: no answer to {} within {timeout:?}", wire::ACTIVATE)),
            Err(Fail::Open(e) | Fail::Error(e)) => Err(format!("probe: {}", e.message)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::test_server::activate;
    use crate::remote::testing::{Reply, Server};
    use crate::ErrorKind;
    use berth_plugin_api::volume::VolumeGetRequest;

    /// A plugin that closes every connection after answering (HTTP/1.0).
    fn one_shot(path: &std::path::Path) -> Server {
        Server::unix(path, |r| match r.path.as_str() {
            "/Plugin.Activate" => Reply::Http10(200, br#"{"Implements":["VolumeDriver"]}"#.to_vec()),
            _ => Reply::Http10(200, br#"{"Volume":{"Name":"v"}}"#.to_vec()),
        })
    }

    #[test]
    fn a_new_socket_file_means_a_restart_even_without_pooled_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let first = one_shot(&path);
        let p =
            RemotePlugin::new("p", &format!("unix://{}", path.display()), RemoteOptions::default()).unwrap();
        p.volume().get(VolumeGetRequest::new("v")).unwrap();
        p.volume().get(VolumeGetRequest::new("v")).unwrap();
        assert_eq!(first.count("/Plugin.Activate"), 1, "same socket file: no new handshake");
        first.stop();
        thread::sleep(Duration::from_millis(20));
        let second = one_shot(&path);
        p.volume().get(VolumeGetRequest::new("v")).unwrap();
        assert_eq!(second.paths(), ["/Plugin.Activate", "/VolumeDriver.Get"]);
        assert_eq!(p.status().activations, 2);
    }

    #[test]
    fn activation_is_cached_and_refused_answers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::unix(&dir.path().join("p.sock"), |r| match r.path.as_str() {
            "/Plugin.Activate" => activate(&["VolumeDriver", "IpamDriver"]),
            _ => Reply::ok("{}"),
        });
        let p = RemotePlugin::new("p", &server.address, RemoteOptions::default()).unwrap();
        assert_eq!(p.activate().unwrap(), [Subsystem::Volume, Subsystem::Ipam]);
        assert!(p.implements(Kind::Ipam).unwrap() && !p.implements(Kind::Storage).unwrap());
        assert_eq!(server.count("/Plugin.Activate"), 1);
        let e = RemotePlugin::new("q", "localhost:80", RemoteOptions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.starts_with("plugin \"q\": plugin address \"localhost:80\" has no protocol"),
            "{}",
            e.message
        );

        let refused = Server::unix(&dir.path().join("r.sock"), |_| Reply::json(404, "404 page not found"));
        let r = RemotePlugin::new("r", &refused.address, RemoteOptions::default()).unwrap();
        let e = r.activate().unwrap_err();
        assert_eq!(e.message, "plugin \"r\": Plugin.Activate: 404 page not found");
        assert_eq!(r.status().state, "not_activated");
    }
}
