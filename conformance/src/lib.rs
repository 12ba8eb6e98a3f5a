//! # berth-conformance
//!
//! The cases of `shared/CONFORMANCE.md`, as a library every driver adopts
//! whole and as the `berth-conformance` binary that runs the same cases
//! black-box against a shared object or a remote plugin (Docker's v1
//! plugin protocol, [`Subject::remote`]).
//!
//! * A [`Case`] has a stable ID (`ST-01`), its one line, a [`Suite`] and a
//!   body working on a [`Ctx`].
//! * The [`runner`] gives every case a fresh temporary root (`root/` and
//!   `run/` inside it) and a driver constructed fresh for it from the
//!   [`Subject`]'s factory; runs the body under `catch_unwind`; always tears
//!   down (releases references, removes the layers the case made, calls the
//!   driver's `cleanup`); then checks for leaks — mounts under the case
//!   root, links and nftables tables (network cases), pools and addresses
//!   still allocated (IPAM cases, `ipam/leases.rs`), files an in-process
//!   driver left outside the case root ([`leaks`]) — each failing the case
//!   naming what leaked, and removes the root.
//! * A case ends [`Outcome::Pass`], [`Outcome::Fail`] (step, expected,
//!   actual, error kind) or [`Outcome::Skip`] (only when the host or the
//!   driver's declared capabilities cannot run it, with the reason). A
//!   driver whose init answers `Skipped(reason)` skips every case of its kind
//!   with that reason.
//! * A [`Report`] renders as a table, JSON or JUnit XML, and records who was
//!   tested (manifest, plugin-api version, SHA-256 of the `.so`), this
//!   suite's version, the kernel release and the host [`features`] that
//!   gate cases.
//!
//! A driver crate runs the storage suite against itself in one line:
//!
//! ```ignore
//! let report = berth_conformance::run(
//!     &berth_conformance::storage::cases(),
//!     Some(&Subject::linked_storage("vfs", env!("CARGO_PKG_VERSION"), VfsDriver::new)),
//!     &Options::default(),
//! );
//! berth_conformance::assert_conforms(&report);
//! ```
//!
//! A volume driver crate does the same with [`volume::cases`] and
//! [`Subject::linked_volume`] (e.g. `LocalVolumeDriver::new`); the volume
//! cases run berth-core's own `VolumeService` over the driver, behind a
//! counting proxy that shows which calls the core made.
//!
//! An IPAM driver crate runs [`ipam::cases`] with [`Subject::linked_ipam`]
//! (e.g. `DefaultIpamDriver::new`); the cases call the driver black-box
//! through the trait, each on a fresh root (against a remote plugin, each
//! on prefixes of its own), and teardown releases every pool a case made.
//!
//! A network driver crate runs [`network::cases`] with
//! [`Subject::linked_network`]; the cases call the driver through the
//! trait and berth-core's sandbox code (what the daemon does on join), in
//! namespaces and links of their own, and a leak check after teardown
//! flags any link or nftables table the case left.
//!
//! The PL cases test this build's host side: PL-01..PL-08 ([`remote`])
//! its remote-plugin client against scripted fixture plugins the suite
//! serves itself (and the remote plugin under test, if any); PL-09 and
//! PL-10 ([`lifecycle`]) its loader against the fixture plugins of
//! `plugin-api/tests/compat/`.

pub mod case;
pub mod ctx;
pub mod features;
pub mod ipam;
pub mod leaks;
pub mod lifecycle;
pub mod network;
pub mod remote;
pub mod report;
pub mod runner;
pub mod storage;
pub mod subject;
pub mod sys;
pub mod volume;

pub use case::{Case, CaseResult, Failure, Outcome, Stop, Suite};
pub use ctx::Ctx;
pub use report::Report;
pub use runner::{run, Options, DEFAULT_REPEAT};
pub use subject::{Identity, Subject};

/// This suite's version, recorded in every report.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Every implemented case, in ID order within each suite.
pub fn catalog() -> Vec<Case> {
    let mut all = storage::cases();
    all.extend(network::cases());
    all.extend(ipam::cases());
    all.extend(volume::cases());
    all.extend(remote::cases());
    all.extend(lifecycle::cases());
    all
}

/// Panics with the human table unless every case passed or skipped.
pub fn assert_conforms(report: &Report) {
    assert!(!report.any_failed(), "conformance failures: {:?}\n{}", report.failed_ids(), report.to_human());
}

/// Picks cases from `catalog`: those of `suites` (every suite when empty),
/// then only the IDs in `only` (all when empty), minus the IDs in `skip`.
/// An ID that names no implemented case is an error naming it.
pub fn select(
    catalog: &[Case],
    suites: &[Suite],
    only: &[String],
    skip: &[String],
) -> Result<Vec<Case>, String> {
    let known = |id: &String| catalog.iter().any(|c| c.id.eq_ignore_ascii_case(id.trim()));
    if let Some(bad) = only.iter().chain(skip).find(|id| !known(id)) {
        return Err(format!("unknown case id {bad:?}: `berth-conformance list` shows the implemented ones"));
    }
    let listed = |ids: &[String], c: &Case| ids.iter().any(|id| c.id.eq_ignore_ascii_case(id.trim()));
    Ok(catalog
        .iter()
        .filter(|c| suites.is_empty() || suites.contains(&c.suite))
        .filter(|c| only.is_empty() || listed(only, c))
        .filter(|c| !listed(skip, c))
        .copied()
        .collect())
}
