//! The command line: listing, help, usage errors and exit codes.

use std::process::{Command, Output};

use berth_conformance::{catalog, lifecycle};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth-conformance"))
        .args(args)
        .env_remove(lifecycle::FIXTURES_ENV)
        .output()
        .expect("run berth-conformance")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_prints_every_implemented_id_with_its_line() {
    let out = bin(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for c in catalog() {
        assert!(
            text.lines().any(|l| l.starts_with(c.id) && l.ends_with(c.description)),
            "{} missing:\n{text}",
            c.id
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&bin(&["list", "--format", "json"]).stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), catalog().len());
    let storage: serde_json::Value =
        serde_json::from_slice(&bin(&["list", "--kind", "storage", "--format", "json"]).stdout).unwrap();
    let ids: Vec<&str> = storage.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    let want: Vec<String> = (1..=19).map(|n| format!("ST-{n:02}")).collect();
    assert_eq!(ids, want);
    let out = bin(&["list", "--kind", "volume"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ids, ["VL-01", "VL-02", "VL-03", "VL-04", "VL-05", "VL-06", "VL-07", "VL-08", "VL-09"]);
    assert!(text.lines().all(|l| l.split_whitespace().nth(1) == Some("volume")), "{text}");
}

#[test]
fn help_is_everywhere() {
    for args in [&["--help"][..], &["run", "--help"], &["list", "--help"], &["help", "run"]] {
        let out = bin(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
    let run_help = String::from_utf8_lossy(&bin(&["run", "--help"]).stdout).into_owned();
    for flag in [
        "--plugin",
        "--remote",
        "--name",
        "--fixtures",
        "--kind",
        "--only",
        "--skip",
        "--repeat",
        "--format",
        "--output",
    ] {
        assert!(run_help.contains(flag), "{flag} missing from run --help");
    }
    assert!(run_help.contains("berth-conformance run --remote unix:///"), "{run_help}");
}

#[test]
fn usage_and_load_errors_exit_2_with_one_line() {
    let cases: [(&[&str], &str); 6] = [
        (&["run", "--plugin", "/nonexistent/libberth_x.so"], "cannot open plugin /nonexistent/libberth_x.so"),
        (&["run", "--only", "ST-99"], "unknown case id \"ST-99\""),
        (&["run", "--kind", "storage"], "need a driver under test: give --plugin"),
        (&["run", "--kind", "network"], "need a driver under test"),
        (&["run", "--repeat", "0"], "--repeat"),
        (&["run", "--format", "xml"], "--format"),
    ];
    for (args, needle) in cases {
        let out = bin(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if !needle.starts_with("--") {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
}

#[test]
fn remote_usage_and_connection_errors_exit_2_with_one_line() {
    let missing = "unix:///nonexistent/berth-conformance/x.sock";
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["run", "--plugin", "/x/libx.so", "--remote", "/y.sock"],
            &["either --plugin PATH.so or --remote ADDR, not both"],
        ),
        (
            &["run", "--kind", "volume"],
            &["VL-01", "need a driver under test: give --plugin PATH.so or --remote ADDR"],
        ),
        (&["run", "--only", "ST-01"], &["give --plugin PATH.so or --remote ADDR"]),
        (&["run", "--remote", "nonsense"], &["remote plugin at nonsense cannot be used", "has no protocol"]),
        (
            &["run", "--remote", missing],
            &[missing, "cannot be used: unavailable", "No such file or directory"],
        ),
    ];
    for (args, needles) in cases {
        let out = bin(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} missing from {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = bin(&["run", "--name", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--remote"), "{}", stderr(&out));
}

#[test]
fn pl_cases_without_fixtures_run_the_protocol_cases_skip_the_loader_ones_and_exit_0() {
    let out = bin(&["run", "--kind", "plugin"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PL-09") && text.contains("skip") && text.contains("fixture plugins not built"),
        "{text}"
    );
    assert!(text.contains("8 passed, 0 failed, 2 skipped"), "{text}");
}
