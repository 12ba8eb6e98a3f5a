//! Helpers for the network-suite tests: one run with its leak checks, and
//! readers for the report.

use berth_conformance::{network, run, sys, Options, Report, Subject};

/// Runs the network suite with case roots under a fresh workdir, and
/// checks nothing was left: no case root, no link, no nftables table.
pub fn run_network(subject: &Subject) -> Report {
    let work = tempfile::tempdir().unwrap();
    let opts = Options { repeat: 3, workdir: Some(work.path().into()), ..Options::default() };
    let (links, tables) = (network::host_links(), network::nft_tables());
    let report = run(&network::cases(), Some(subject), &opts);
    println!("{}", report.to_human());
    assert!(sys::mounts_under(work.path()).unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "case roots left in the workdir: {left:?}");
    let new_links: Vec<_> = network::host_links().difference(&links).cloned().collect();
    assert!(new_links.is_empty(), "links left on the host: {new_links:?}");
    let new_tables: Vec<_> = network::nft_tables().difference(&tables).cloned().collect();
    assert!(new_tables.is_empty(), "nftables tables left on the host: {new_tables:?}");
    super::check_junit(&report);
    report
}

/// The IDs that ended `result`.
pub fn ids(report: &Report, result: &str) -> Vec<String> {
    report.cases.iter().filter(|c| c.result == result).map(|c| c.id.clone()).collect()
}

/// The message (skip reason or failure) of case `id`.
pub fn reason(report: &Report, id: &str) -> String {
    report.cases.iter().find(|c| c.id == id).and_then(|c| c.message.clone()).unwrap_or_default()
}

/// Network cases need root (namespaces, links, nftables).
pub fn privileged() -> bool {
    if sys::euid() != 0 {
        eprintln!("skipped: the network suite needs root (namespaces, links, nftables)");
        return false;
    }
    true
}

/// Owned copies of `ids`.
pub fn list(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The bridge driver's expected report, in process or remote: everything
/// passes but the cases for other drivers, which skip saying why.
pub fn check_bridge_report(report: &Report) {
    berth_conformance::assert_conforms(report);
    assert_eq!(
        ids(report, "pass"),
        list(&["NW-01", "NW-02", "NW-03", "NW-04", "NW-05", "NW-06", "NW-07", "NW-08", "NW-09", "NW-13"])
    );
    assert_eq!(ids(report, "skip"), list(&["NW-10", "NW-11", "NW-12"]));
    assert!(reason(report, "NW-10").contains("host and none"), "{}", reason(report, "NW-10"));
    assert!(reason(report, "NW-11").contains("bridge-like"), "{}", reason(report, "NW-11"));
    assert!(
        reason(report, "NW-12").contains("overlay driver is not built yet"),
        "{}",
        reason(report, "NW-12")
    );
}
