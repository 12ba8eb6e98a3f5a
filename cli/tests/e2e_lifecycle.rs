//! Acceptance 5: socket mode, one daemon per socket, request validation,
//! and a clean stop on SIGTERM.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{describe, http, request, World};

#[test]
fn the_socket_is_0660_and_a_second_daemon_on_it_refuses_to_start() {
    let w = World::new("");
    let _d = w.start();
    let mode = std::fs::metadata(&w.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");

    // Another root, same socket.
    let other = w.dir.path().join("other");
    let mut second = w.spawn(
        &["--root", other.join("root").to_str().unwrap(), "--exec-root", other.join("run").to_str().unwrap()],
        &[],
    );
    let status = second.wait_exit(Duration::from_secs(10)).expect("the second daemon must exit");
    assert_eq!(status.code(), Some(1));
    let log = second.log();
    assert!(log.contains("already listening on") && log.contains("berth.sock"), "{log}");
    // The first one is unharmed.
    assert!(w.berth_ok(&["version"]).contains("Server: berth"));
    assert!(w.socket.exists());
}

#[test]
fn bad_requests_get_json_errors_with_the_right_status() {
    let w = World::new("");
    let _d = w.start();
    let post = |body: &str| http(&w.socket, &request("POST", "/v1.47/volumes/create", Some(body))).unwrap();

    let r = post("{\"Name\": ");
    assert_eq!(r.status, 400, "{r:?}");
    let v = r.json();
    assert_eq!(v["kind"], "invalid_argument");
    assert!(v["message"].as_str().unwrap().contains("EOF while parsing"), "{v}");

    let r = post(r#"{"Name":"a","Colour":"red"}"#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.json()["message"].as_str().unwrap().contains("unknown field `Colour`"), "{}", r.body);

    let r = post(r#"{"Name":"bad/name"}"#);
    assert_eq!((r.status, r.json()["kind"].as_str()), (400, Some("invalid_argument")));

    let r = post(r#"{"Name":"ok1"}"#);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["Mountpoint"], w.root.join("volumes/ok1/_data").to_str().unwrap());

    let r = http(&w.socket, &request("GET", "/volumes/nope", None)).unwrap();
    assert_eq!((r.status, r.json()["kind"].as_str()), (404, Some("not_found")));
    let r = http(&w.socket, &request("GET", "/v1.47/containers/json", None)).unwrap();
    assert_eq!((r.status, r.json()["kind"].as_str()), (404, Some("not_found")));
    let r = http(&w.socket, &request("POST", "/version", Some("{}"))).unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET"));
    let r = http(&w.socket, &request("GET", "/plugins/nope/json", None)).unwrap();
    assert_eq!(r.status, 404);

    let r = http(&w.socket, &request("DELETE", "/volumes/ok1?force=true", None)).unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    let r = http(&w.socket, &request("DELETE", "/volumes/ok1", None)).unwrap();
    assert_eq!(r.status, 404);
    let r = http(&w.socket, &request("DELETE", "/volumes/ok1?force=1", None)).unwrap();
    assert_eq!(r.status, 204, "force on a missing volume is not an error");

    // The CLI: kind in parentheses, exit codes 1 / 2 / 3.
    let out = w.berth(&["volume", "inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "Error: no such volume: nope (not_found)");
    let out = w.berth(&["volume", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let gone = format!("unix://{}", w.dir.path().join("none.sock").display());
    let out = common::berth(&gone, &["volume", "ls"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none.sock") && err.contains("berthd"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let w = World::new("");
    let mut d = w.start();
    w.berth_ok(&["volume", "create", "v"]);
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5)).expect("berthd must stop within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", d.log());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!w.socket.exists(), "the socket must be removed");
    let log = d.log();
    assert!(log.contains("SIGTERM") && log.contains("berthd stopped"), "{log}");
    assert!(log.contains("start-up took"), "{log}");

    // And it starts again on the same root with the volume there.
    let mut d = w.start();
    assert_eq!(w.volume_names(), ["v"]);
    d.signal(libc::SIGINT);
    assert_eq!(d.wait_exit(Duration::from_secs(5)).and_then(|s| s.code()), Some(0));
}
