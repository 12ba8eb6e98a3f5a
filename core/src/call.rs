//! The one wrapper every driver call goes through: a deadline, a tracing
//! span and counters.
//!
//! A driver call runs on a worker thread while the caller waits at most the
//! deadline. A hung driver therefore costs one parked thread, never the
//! daemon: the caller gets a `timeout` error and every other driver keeps
//! answering. (In-process code cannot be cancelled; the thread finishes or
//! stays parked, and the counters show it as `hung`.)

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind};
use serde::Serialize;

/// How many recent latencies are kept for percentiles.
const WINDOW: usize = 256;

/// Counters for one driver.
#[derive(Debug, Default)]
pub struct Metrics {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    hung: AtomicU64,
    recent_ns: Mutex<VecDeque<u64>>,
}

/// A snapshot of [`Metrics`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that answered an error (timeouts included).
    pub errors: u64,
    /// Calls that missed their deadline.
    pub timeouts: u64,
    /// Calls still running on a worker after their deadline.
    pub hung: u64,
    /// Median latency of the recent calls, in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency of the recent calls, in microseconds.
    pub p99_us: u64,
}

impl Metrics {
    fn record(&self, elapsed: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut recent = self.recent_ns.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == WINDOW {
            recent.pop_front();
        }
        recent.push_back(elapsed.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// The current counters.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut lat: Vec<u64> =
            self.recent_ns.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
        lat.sort_unstable();
        let pct = |p: usize| if lat.is_empty() { 0 } else { lat[(lat.len() - 1) * p / 100] / 1000 };
        MetricsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            p50_us: pct(50),
            p99_us: pct(99),
        }
    }
}

/// A driver of one kind as the rest of the daemon holds it: the trait
/// object, who it is, its deadline and its counters. Cheap to clone.
pub struct Driver<T: ?Sized> {
    inner: Arc<T>,
    name: Arc<str>,
    kind: Kind,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<T: ?Sized> Clone for Driver<T> {
    fn clone(&self) -> Self {
        Driver {
            inner: Arc::clone(&self.inner),
            name: Arc::clone(&self.name),
            kind: self.kind,
            timeout: self.timeout,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for Driver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

impl<T: ?Sized + Send + Sync + 'static> Driver<T> {
    /// Wraps a driver.
    pub fn new(inner: Arc<T>, name: &str, kind: Kind, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Driver { inner, name: name.into(), kind, timeout, metrics }
    }

    /// The driver's registry name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Calls `method` with the driver's deadline.
    pub fn call<R: Send + 'static>(
        &self,
        method: &'static str,
        f: impl FnOnce(&T) -> DriverResult<R> + Send + 'static,
    ) -> DriverResult<R> {
        self.call_with_deadline(method, self.timeout, f)
    }

    /// Calls `method` with an explicit deadline.
    pub fn call_with_deadline<R: Send + 'static>(
        &self,
        method: &'static str,
        deadline: Duration,
        f: impl FnOnce(&T) -> DriverResult<R> + Send + 'static,
    ) -> DriverResult<R> {
        let span = tracing::debug_span!("driver_call", driver = %self.name, kind = %self.kind, method);
        let _enter = span.enter();
        let start = Instant::now();
        let inner = Arc::clone(&self.inner);
        let metrics = Arc::clone(&self.metrics);
        let late = move || {
            // The caller gave up: this call outlived its deadline.
            metrics.hung.fetch_sub(1, Ordering::Relaxed);
        };
        let out = match on_worker(method.to_string(), deadline, move || f(&inner), late) {
            Waited::Answer(out) => out,
            Waited::Late => {
                self.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
                self.metrics.hung.fetch_add(1, Ordering::Relaxed);
                Err(DriverError::timeout(format!(
                    "{} driver {:?} did not answer {method} within {deadline:?}",
                    self.kind, self.name
                )))
            }
        };
        let ok = out.is_ok();
        self.metrics.record(start.elapsed(), ok);
        match &out {
            Ok(_) => tracing::debug!(elapsed_us = start.elapsed().as_micros() as u64, "ok"),
            Err(e) => tracing::debug!(kind = %e.kind, error = %e.message, "failed"),
        }
        out.map_err(|e| {
            if e.kind == ErrorKind::Timeout || e.message.contains(&*self.name) {
                e
            } else {
                e.context(format!("{} driver {:?}", self.kind, self.name))
            }
        })
    }
}

/// What waiting for work handed to a worker gave.
pub enum Waited<R> {
    /// The work answered in time (a panic in it is an internal error).
    Answer(DriverResult<R>),
    /// The deadline passed; the work goes on in the background and
    /// `on_late` runs if it ever finishes.
    Late,
}

impl<R> std::fmt::Debug for Waited<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waited::Answer(_) => "Answer",
            Waited::Late => "Late",
        })
    }
}

/// Runs `f` on the worker pool and waits at most `deadline` for it (`what`
/// names the work in a panic's error): the
/// one place where in-process driver code runs under a deadline (driver
/// calls, and driver construction at start-up).
pub fn on_worker<R: Send + 'static>(
    what: String,
    deadline: Duration,
    f: impl FnOnce() -> DriverResult<R> + Send + 'static,
    on_late: impl FnOnce() + Send + 'static,
) -> Waited<R> {
    let (tx, rx) = mpsc::sync_channel(1);
    IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _done = Done;
    workers().run(Box::new(move || {
        let out = catch_unwind(AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(DriverError::internal(format!("driver panicked in {what}"))));
        if tx.send(out).is_err() {
            on_late();
        }
    }));
    match wait_answer(&rx, deadline) {
        Ok(out) => Waited::Answer(out),
        Err(mpsc::RecvTimeoutError::Timeout) => Waited::Late,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Waited::Answer(Err(DriverError::internal("a worker vanished without an answer")))
        }
    }
}

/// How long an idle worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(60);

/// How long a worker that just became idle, and a caller that just handed
/// over a call, poll before they sleep. Waking a sleeping thread costs tens
/// of microseconds on a loaded VM; back-to-back calls find each other
/// within this window instead. Polling only pays while few calls are in
/// flight: beyond [`spin_limit`] concurrent calls every thread sleeps at
/// once, leaving the CPUs to the work (on two cores, spinning callers cost
/// a fifth of the throughput of concurrent API requests).
const SPIN: Duration = Duration::from_micros(30);

/// Calls in flight across the process, for the spin decision.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Concurrent calls up to which threads poll before sleeping: half the
/// CPUs, at least one.
fn spin_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| std::thread::available_parallelism().map(|n| n.get() / 2).unwrap_or(1).max(1))
}

fn may_spin() -> bool {
    IN_FLIGHT.load(Ordering::Relaxed) <= spin_limit()
}

type Job = Box<dyn FnOnce() + Send>;

/// An elastic pool of worker threads for driver calls: a call goes to an
/// idle worker when there is one, else to a new thread, so a driver that
/// hangs parks its worker without ever delaying anyone else. Idle workers
/// exit after a minute.
struct Workers {
    state: Mutex<PoolState>,
    wake: Condvar,
    /// Mirror of the queue length, for polling without the lock.
    queued: AtomicUsize,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    /// Workers not running a job (polling or asleep). Invariant after each
    /// submission: `queue.len() <= idle`, so every queued job has a worker.
    idle: usize,
}

fn workers() -> &'static Arc<Workers> {
    // One pool per process: worker threads are a process resource, like the
    // allocator; it holds no state about drivers.
    static POOL: OnceLock<Arc<Workers>> = OnceLock::new();
    POOL.get_or_init(|| {
        Arc::new(Workers {
            state: Mutex::new(PoolState::default()),
            wake: Condvar::new(),
            queued: AtomicUsize::new(0),
        })
    })
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(self: &Arc<Self>, job: Job) {
        let mut st = self.lock();
        st.queue.push_back(job);
        self.queued.store(st.queue.len(), Ordering::Release);
        let short = st.queue.len() > st.idle;
        drop(st);
        if !short {
            self.wake.notify_one();
            return;
        }
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("berth-call".into()).spawn(move || pool.work());
        if spawned.is_err() {
            // No thread to be had: run a job here rather than lose it.
            let job = {
                let mut st = self.lock();
                let job = st.queue.pop_back();
                self.queued.store(st.queue.len(), Ordering::Release);
                job
            };
            if let Some(job) = job {
                job();
            }
        }
    }

    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                self.queued.store(st.queue.len(), Ordering::Release);
                drop(st);
                job();
                st = self.lock();
                continue;
            }
            st.idle += 1;
            drop(st);
            let until = Instant::now() + if may_spin() { SPIN } else { Duration::ZERO };
            while self.queued.load(Ordering::Acquire) == 0 && Instant::now() < until {
                std::hint::spin_loop();
            }
            st = self.lock();
            while st.queue.is_empty() {
                let (next, timeout) =
                    self.wake.wait_timeout(st, IDLE_EXIT).unwrap_or_else(|p| p.into_inner());
                st = next;
                if timeout.timed_out() && st.queue.is_empty() {
                    st.idle -= 1;
                    return;
                }
            }
            st.idle -= 1;
        }
    }
}

/// Waits for a call's answer: polls for [`SPIN`], then sleeps until the
/// deadline.
fn wait_answer<R>(rx: &mpsc::Receiver<R>, deadline: Duration) -> Result<R, mpsc::RecvTimeoutError> {
    let start = Instant::now();
    let spin = if may_spin() { SPIN } else { Duration::ZERO };
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvTimeoutError::Disconnected),
            Err(mpsc::TryRecvError::Empty) if start.elapsed() < spin => std::hint::spin_loop(),
            Err(mpsc::TryRecvError::Empty) => break,
        }
    }
    rx.recv_timeout(deadline.saturating_sub(start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow;

    fn driver(timeout: Duration) -> Driver<Slow> {
        Driver::new(Arc::new(Slow), "slow", Kind::Volume, timeout, Arc::default())
    }

    #[test]
    fn answers_pass_through_and_are_counted() {
        let d = driver(Duration::from_secs(5));
        assert_eq!(d.call("m", |_| Ok(7)).unwrap(), 7);
        let e = d.call::<()>("m", |_| Err(DriverError::not_found("volume \"x\" not found"))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "volume driver \"slow\": volume \"x\" not found");
        let s = d.metrics().snapshot();
        assert_eq!((s.calls, s.errors, s.timeouts), (2, 1, 0));
    }

    #[test]
    fn a_hung_call_times_out_and_others_still_answer() {
        let d = driver(Duration::from_millis(100));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let start = Instant::now();
        let e = d
            .call::<()>("mount", move |_| {
                let _ = release_rx.recv();
                Ok(())
            })
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(d.metrics().snapshot().hung, 1);
        assert_eq!(d.call("list", |_| Ok("fine")).unwrap(), "fine");
        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while d.metrics().snapshot().hung != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(d.metrics().snapshot().hung, 0);
    }

    #[test]
    fn many_concurrent_calls_all_answer() {
        let d = driver(Duration::from_secs(10));
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let d = d.clone();
                std::thread::spawn(move || d.call("n", move |_| Ok(i * 2)).unwrap())
            })
            .collect();
        let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(sum, (0..64u64).map(|i| i * 2).sum::<u64>());
        for i in 0..1000u64 {
            assert_eq!(d.call("seq", move |_| Ok(i)).unwrap(), i);
        }
    }

    #[test]
    fn a_panicking_linked_call_is_an_internal_error() {
        let d = driver(Duration::from_secs(5));
        let e = d.call::<()>("boom", |_| panic!("kaboom")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("driver panicked in boom"), "{}", e.message);
    }
}
