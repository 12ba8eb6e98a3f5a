//! Acceptance 2: a driver that panics, fails or hangs costs one request an
//! error of the right kind, never the daemon.

mod common;

use std::time::{Duration, Instant};

use common::{describe, World, FAULTY};

#[test]
fn a_panicking_or_failing_driver_answers_an_error_and_the_daemon_keeps_serving() {
    let w = World::new(FAULTY);
    let _d = w.start();

    let out = w.berth(&["volume", "create", "--driver", "faulty", "panic1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Error: ") && err.trim_end().ends_with("(internal)"), "{err}");
    assert!(err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // Right after, the daemon still answers.
    assert!(w.berth_ok(&["version"]).contains("Server: berth"));
    assert!(w.berth_ok(&["volume", "ls"]).starts_with("DRIVER"));
    assert!(!w.volume_names().contains(&"panic1".to_string()));

    let out = w.berth(&["volume", "create", "--driver", "faulty", "fail1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("acme backend refused") && err.contains("(unavailable)"), "{err}");

    // A well-behaved volume on the faulty driver still works.
    assert_eq!(w.berth_ok(&["volume", "create", "-d", "faulty", "fine1"]).trim(), "fine1");
    let vols = w.berth_json(&["volume", "inspect", "fine1"]);
    assert_eq!(vols[0]["Driver"], "faulty");
    w.berth_ok(&["volume", "rm", "fine1"]);

    let metrics = w.berth_json(&["plugin", "inspect", "faulty"]);
    assert!(metrics["drivers"][0]["metrics"]["errors"].as_u64().unwrap() >= 2, "{metrics}");
}

#[test]
fn a_hanging_driver_times_out_while_other_requests_answer_promptly() {
    let w = World::new(FAULTY);
    let _d = w.start();
    w.berth_ok(&["volume", "create", "keep1"]);

    let host = w.host();
    let start = Instant::now();
    let hang = std::thread::spawn(move || {
        let out = common::berth(&host, &["volume", "create", "--driver", "faulty", "hang1"]);
        (out, start.elapsed())
    });
    // While the create hangs, listings answer promptly.
    std::thread::sleep(Duration::from_millis(200));
    let mut quick = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let names = w.volume_names();
        quick.push(t.elapsed());
        assert!(names.contains(&"keep1".to_string()), "{names:?}");
        assert!(!hang.is_finished() || start.elapsed() >= Duration::from_millis(900));
    }
    let (out, took) = hang.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim_end().ends_with("(timeout)"), "{err}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "create took {took:?}");
    for t in &quick {
        assert!(*t < Duration::from_millis(700), "a listing took {t:?} during the hang: {quick:?}");
    }
    // The timed-out create left nothing behind and the daemon still serves.
    assert!(!w.volume_names().contains(&"hang1".to_string()));
    assert!(w.berth_ok(&["version"]).contains("Server: berth"));
    let p = w.berth_json(&["plugin", "inspect", "faulty"]);
    assert_eq!(p["drivers"][0]["metrics"]["timeouts"], 1, "{p}");

    // The timed-out create stayed in the ledger: the next start rolls back
    // whatever the driver may have finished after the deadline.
    drop(_d);
    let _d = w.start();
    let info = w.berth_json(&["info", "--format", "json"]);
    let resolved = info["Berth"]["Reconcile"]["Resolved"].as_array().cloned().unwrap_or_default();
    assert!(
        resolved.iter().any(|r| r.as_str().is_some_and(|r| r.contains("rolled back") && r.contains("hang1"))),
        "{info}"
    );
    assert_eq!(w.volume_names(), ["keep1"]);
}

#[test]
fn concurrent_creates_of_one_name_on_two_drivers_never_both_win() {
    let w = World::new(FAULTY);
    let _d = w.start();
    for round in 0..3 {
        let name = format!("dup{round}");
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (host, name) = (w.host(), name.clone());
                let driver = if i % 2 == 0 { "local" } else { "faulty" };
                std::thread::spawn(move || {
                    let out = common::berth(&host, &["volume", "create", "--driver", driver, &name]);
                    (driver, out)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: std::collections::BTreeSet<&str> =
            results.iter().filter(|(_, o)| o.status.success()).map(|(d, _)| *d).collect();
        assert_eq!(winners.len(), 1, "both drivers won {name}: {results:?}");
        for (driver, out) in &results {
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("already exists with driver") && err.contains("(conflict)"),
                    "{driver}: {err}"
                );
            }
        }
        let vol = w.berth_json(&["volume", "inspect", &name]);
        assert_eq!(vol[0]["Driver"], *winners.iter().next().unwrap());
    }
}
