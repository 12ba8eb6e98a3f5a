//! Retries with back-off, and the circuit breaker of a plugin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The first pause between two attempts to reach a plugin.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two retries of a call.
pub(crate) const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);
/// The longest pause between two probes of an open breaker.
pub(crate) const MAX_PROBE_PAUSE: Duration = Duration::from_secs(5);
/// How often an open breaker lets one call through as a trial (half-open):
/// a plugin that came back is used at once instead of at the prober's
/// next probe, and a dead one costs one failed connect per interval.
pub(crate) const TRIAL_EVERY: Duration = Duration::from_millis(250);

/// Pauses that double from [`FIRST_PAUSE`] up to a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// 250 ms, 500 ms, 1 s, … up to `cap`.
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff { next: FIRST_PAUSE, cap }
    }

    /// The next pause.
    pub(crate) fn pause(&mut self) -> Duration {
        let p = self.next.min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        p
    }
}

/// Runs `attempt` until it gives anything but a `retryable` error, pausing
/// 250 ms, 500 ms, 1 s, … between attempts. Stops retrying at
/// `start + window` (the last pause is shortened so that one attempt
/// happens right at that point) and never pauses past `deadline`.
pub(crate) fn retry<T, E>(
    window: Duration,
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<T, E>,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let end = (Instant::now() + window).min(deadline);
    let mut backoff = Backoff::new(MAX_RETRY_PAUSE);
    loop {
        match attempt() {
            Err(e) if retryable(&e) => {
                let now = Instant::now();
                if now >= end {
                    return Err(e);
                }
                let pause = backoff.pause().min(end - now);
                if now + pause >= deadline {
                    return Err(e);
                }
                thread::sleep(pause);
            }
            other => return other,
        }
    }
}

/// Why calls fail fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Open {
    /// When the breaker opened.
    pub(crate) since: SystemTime,
    /// The failure that opened it, or the latest failed probe.
    pub(crate) last_error: String,
    /// How many calls failed in a row before it opened.
    pub(crate) failures: u32,
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    open: Option<Open>,
    prober: bool,
    /// When the last trial call went through an open breaker (or when it
    /// opened), and whether one is on its way.
    last_trial: Option<Instant>,
    trial_running: bool,
}

/// A circuit breaker: opens after `threshold` consecutive failed calls
/// (transport errors or timeouts), closes on the first success.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    is_open: AtomicBool,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker; `threshold` 0 never opens.
    pub(crate) fn new(threshold: u32) -> Breaker {
        Breaker { threshold, is_open: AtomicBool::new(false), state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some` while the breaker is open (calls must fail fast).
    pub(crate) fn check(&self) -> Option<Open> {
        if !self.is_open.load(Ordering::Acquire) {
            return None;
        }
        self.state().open.clone()
    }

    /// While open: whether this call may go through as the one trial
    /// (half-open). At most one trial runs at a time, at most one per
    /// [`TRIAL_EVERY`]; it makes a single attempt, no retries, and must
    /// end with [`Breaker::trial_done`].
    pub(crate) fn try_trial(&self) -> bool {
        let mut s = self.state();
        if s.open.is_none() || s.trial_running || s.last_trial.is_some_and(|t| t.elapsed() < TRIAL_EVERY) {
            return false;
        }
        s.trial_running = true;
        s.last_trial = Some(Instant::now());
        true
    }

    /// The trial call ended (its success or failure was reported too).
    pub(crate) fn trial_done(&self) {
        self.state().trial_running = false;
    }

    /// Whether the breaker is open.
    pub(crate) fn is_open(&self) -> bool {
        self.is_open.load(Ordering::Acquire)
    }

    /// A call reached the plugin: the count restarts and an open breaker
    /// closes.
    pub(crate) fn success(&self) {
        if self.is_open.load(Ordering::Acquire) {
            let mut s = self.state();
            s.open = None;
            s.consecutive = 0;
            self.is_open.store(false, Ordering::Release);
        } else {
            // Cheap when nothing failed: no lock unless there is a count.
            let mut s = self.state();
            s.consecutive = 0;
        }
    }

    /// A call failed for transport reasons or timed out. Returns `true`
    /// when the caller must start the prober (the breaker just opened and
    /// none runs).
    pub(crate) fn failure(&self, error: &str) -> bool {
        let mut s = self.state();
        s.consecutive = s.consecutive.saturating_add(1);
        if let Some(open) = &mut s.open {
            open.last_error = error.to_string();
            return false;
        }
        if self.threshold == 0 || s.consecutive < self.threshold {
            return false;
        }
        s.open =
            Some(Open { since: SystemTime::now(), last_error: error.to_string(), failures: s.consecutive });
        s.last_trial = Some(Instant::now());
        self.is_open.store(true, Ordering::Release);
        let start = !s.prober;
        s.prober = true;
        start
    }

    /// A probe failed: remembered as the last error while open.
    pub(crate) fn probe_failed(&self, error: &str) {
        if let Some(open) = &mut self.state().open {
            open.last_error = error.to_string();
        }
    }

    /// The prober exits. Returns `false` (and the prober must go on) when
    /// the breaker is still open.
    pub(crate) fn prober_exits(&self, dropped: bool) -> bool {
        let mut s = self.state();
        if s.open.is_some() && !dropped {
            return false;
        }
        s.prober = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_breaker_lets_one_trial_through_a_second_after_it_opened() {
        let b = Breaker::new(2);
        assert!(!b.try_trial(), "a closed breaker needs no trial");
        b.failure("refused");
        assert!(b.failure("refused"), "opens at the threshold and asks for a prober");
        assert!(!b.try_trial(), "no trial right after opening: calls fail fast");
        thread::sleep(TRIAL_EVERY + Duration::from_millis(20));
        assert!(b.try_trial());
        assert!(!b.try_trial(), "one trial at a time");
        b.trial_done();
        assert!(!b.try_trial(), "and at most one per interval");
        b.success();
        assert!(b.check().is_none(), "a successful trial closes the breaker");
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let pauses: Vec<u64> = (0..7).map(|_| b.pause().as_millis() as u64).collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn retries_stop_at_the_window_and_never_pass_the_deadline() {
        let start = Instant::now();
        let mut times = Vec::new();
        let out: Result<(), &str> = retry(
            Duration::from_millis(900),
            start + Duration::from_secs(10),
            || {
                times.push(start.elapsed());
                Err("refused")
            },
            |_| true,
        );
        assert!(out.is_err());
        // 0, 250, 750, then the shortened pause puts the last at 900 ms.
        assert_eq!(times.len(), 4, "{times:?}");
        assert!(times[3] >= Duration::from_millis(890) && times[3] < Duration::from_millis(1200));
        let start = Instant::now();
        let mut n = 0;
        let _: Result<(), &str> = retry(
            Duration::from_secs(15),
            start + Duration::from_millis(300),
            || {
                n += 1;
                Err("refused")
            },
            |_| true,
        );
        assert_eq!(n, 2);
        assert!(start.elapsed() < Duration::from_millis(400));
        let mut n = 0;
        let _: Result<(), &str> = retry(
            Duration::from_secs(15),
            start + Duration::from_secs(15),
            || {
                n += 1;
                Err("answered 500")
            },
            |_| false,
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_success() {
        let b = Breaker::new(3);
        assert!(!b.failure("e1"));
        assert!(!b.failure("e2"));
        assert!(b.check().is_none());
        assert!(b.failure("e3"), "the third failure opens it and asks for a prober");
        let open = b.check().unwrap();
        assert_eq!((open.last_error.as_str(), open.failures), ("e3", 3));
        assert!(!b.failure("e4"), "one prober at a time");
        b.probe_failed("probe");
        assert_eq!(b.check().unwrap().last_error, "probe");
        assert!(!b.prober_exits(false));
        b.success();
        assert!(b.check().is_none() && !b.is_open());
        assert!(b.prober_exits(false));
        assert!(!b.failure("again"));
        b.success();
        assert!(!b.failure("x") && !b.failure("y"));
        assert!(b.failure("z"), "a new prober after the last one exited");
        let never = Breaker::new(0);
        assert!((0..10).all(|_| !never.failure("e")));
        assert!(never.check().is_none());
    }
}
