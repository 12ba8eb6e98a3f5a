//! What a conformance case is, and how it ends.

use std::fmt;

use berth_plugin_api::{DriverError, ErrorKind, Kind};
use serde::Serialize;

use crate::ctx::Ctx;

/// The group a case belongs to: a driver kind, or the plugin lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Storage drivers (`ST-*`).
    Storage,
    /// Network drivers (`NW-*`).
    Network,
    /// IPAM drivers (`IP-*`).
    Ipam,
    /// Volume drivers (`VL-*`).
    Volume,
    /// Plugin protocol and lifecycle (`PL-*`): the loader and registry.
    Plugin,
}

impl Suite {
    /// Every suite, in report order.
    pub const ALL: [Suite; 5] = [Suite::Storage, Suite::Network, Suite::Ipam, Suite::Volume, Suite::Plugin];

    /// `storage`, `network`, `ipam`, `volume` or `plugin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::Storage => "storage",
            Suite::Network => "network",
            Suite::Ipam => "ipam",
            Suite::Volume => "volume",
            Suite::Plugin => "plugin",
        }
    }

    /// Parses a suite name as the CLI takes it.
    pub fn parse(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The driver kind a suite tests; `None` for the lifecycle suite.
    pub fn driver_kind(self) -> Option<Kind> {
        match self {
            Suite::Storage => Some(Kind::Storage),
            Suite::Network => Some(Kind::Network),
            Suite::Ipam => Some(Kind::Ipam),
            Suite::Volume => Some(Kind::Volume),
            Suite::Plugin => None,
        }
    }

    /// The suite testing drivers of `kind`.
    pub fn of_kind(kind: Kind) -> Suite {
        match kind {
            Kind::Storage => Suite::Storage,
            Kind::Network => Suite::Network,
            Kind::Ipam => Suite::Ipam,
            Kind::Volume => Suite::Volume,
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One conformance case: a stable ID from `CONFORMANCE.md`, its one line,
/// its suite and its body.
#[derive(Clone, Copy)]
pub struct Case {
    /// Stable ID, e.g. `ST-01`; never reused for another check.
    pub id: &'static str,
    /// The one line from `CONFORMANCE.md`.
    pub description: &'static str,
    /// The suite, which decides which driver the case is given.
    pub suite: Suite,
    /// The body. It gets a fresh [`Ctx`] and ends by returning, `?`-ing a
    /// [`Stop`], or panicking (which fails the case).
    pub run: fn(&mut Ctx) -> CaseResult,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("id", &self.id).field("suite", &self.suite).finish_non_exhaustive()
    }
}

/// Why a case did not pass: the step, what was expected and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What the case was doing, e.g. `create layer "a" again`.
    pub step: String,
    /// What the contract requires.
    pub expected: String,
    /// What the driver did.
    pub actual: String,
    /// The error kind the driver answered, when it answered an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
}

impl Failure {
    /// A failure at `step`.
    pub fn new(step: impl Into<String>, expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Failure { step: step.into(), expected: expected.into(), actual: actual.into(), error_kind: None }
    }

    /// The failure with the driver's error kind recorded.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.error_kind = Some(kind);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}, got {}", self.step, self.expected, self.actual)
    }
}

/// How a case ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// A check did not hold.
    Fail(Failure),
    /// The case cannot run here (host or declared capabilities), with why.
    Skip(String),
}

impl Outcome {
    /// `pass`, `fail` or `skip`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Skip(_) => "skip",
        }
    }
}

/// An early end of a case body: used with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A check failed.
    Fail(Failure),
    /// The case cannot run here; the reason is shown.
    Skip(String),
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Self {
        Stop::Fail(f)
    }
}

/// What a case body returns.
pub type CaseResult = Result<(), Stop>;

/// How a driver error reads in a failure: `error not_found: layer "x" ...`.
pub fn describe_error(e: &DriverError) -> String {
    format!("error {}: {}", e.kind, e.message)
}

/// Fails at `step` unless `res` is `Ok`.
pub fn ok<T>(step: impl fmt::Display, res: Result<T, DriverError>) -> Result<T, Stop> {
    res.map_err(|e| Failure::new(step.to_string(), "success", describe_error(&e)).with_kind(e.kind).into())
}

/// Fails at `step` unless `res` is an error of `kind`.
pub fn err_kind<T: fmt::Debug>(
    step: impl fmt::Display,
    kind: ErrorKind,
    res: Result<T, DriverError>,
) -> Result<DriverError, Stop> {
    match res {
        Err(e) if e.kind == kind => Ok(e),
        Err(e) => Err(Failure::new(step.to_string(), format!("error kind {kind}"), describe_error(&e))
            .with_kind(e.kind)
            .into()),
        Ok(v) => {
            let shown = format!("{v:?}");
            let actual = if shown == "()" { "success".to_string() } else { format!("success ({shown})") };
            Err(Failure::new(step.to_string(), format!("error kind {kind}"), actual).into())
        }
    }
}

/// Fails at `step` unless `cond` holds.
pub fn check(
    cond: bool,
    step: impl fmt::Display,
    expected: impl fmt::Display,
    actual: impl fmt::Display,
) -> Result<(), Stop> {
    if cond {
        Ok(())
    } else {
        Err(Failure::new(step.to_string(), expected.to_string(), actual.to_string()).into())
    }
}

/// Fails at `step` with an I/O error of the suite itself (not the driver's).
pub fn io<T>(step: impl fmt::Display, res: std::io::Result<T>) -> Result<T, Stop> {
    res.map_err(|e| Failure::new(step.to_string(), "success", format!("I/O error: {e}")).into())
}
