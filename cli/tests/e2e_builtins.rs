//! Acceptance 1: the built-in plugins load from `.so` files; `info`,
//! `version` and versioned API paths work.

mod common;

use common::{http, request, World};

#[test]
fn the_builtins_load_as_shared_objects_and_the_system_verbs_work() {
    let w = World::new("");
    // No --config: the embedded default, which finds the plugins beside
    // berthd; --root/--exec-root/--socket keep it inside the test's world.
    let args = [
        "--root",
        w.root.to_str().unwrap(),
        "--exec-root",
        w.exec_root.to_str().unwrap(),
        "--socket",
        w.socket.to_str().unwrap(),
    ];
    let mut daemon = w.spawn_bare(&args, &[]);
    daemon.wait_ready(&w.socket);

    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let plugins = plugins.as_array().unwrap();
    let want = [
        ("vfs", "storage"),
        ("none", "network"),
        ("host", "network"),
        ("bridge", "network"),
        ("macvlan", "network"),
        ("default", "ipam"),
        ("null", "ipam"),
        ("local", "volume"),
    ];
    assert_eq!(plugins.len(), want.len(), "{plugins:?}");
    for ((name, kind), p) in want.iter().zip(plugins) {
        assert_eq!(p["name"], *name);
        assert_eq!(p["status"], "ready", "{p}");
        assert_eq!(p["transport"], "shared-object", "{p}");
        assert_eq!(p["kinds"], serde_json::json!([kind]), "{p}");
        assert!(p["address"].as_str().unwrap().ends_with(".so"), "{p}");
        assert_eq!(p["drivers"][0]["status"], "ready");
    }

    let table = w.berth_ok(&["plugin", "ls"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "KINDS", "VERSION", "TRANSPORT", "STATUS", "REASON"] {
        assert!(header.contains(col), "{table}");
    }
    assert_eq!(
        table.lines().filter(|l| l.contains("shared-object") && l.contains("ready")).count(),
        want.len()
    );

    let one = w.berth_json(&["plugin", "inspect", "local"]);
    assert_eq!(one["name"], "local");

    let info = w.berth_ok(&["info"]);
    assert!(info.contains("Storage Driver: vfs"), "{info}");
    assert!(info.contains("Volume:  local"), "{info}");
    let info = w.berth_json(&["info", "--format", "json"]);
    assert_eq!(info["Driver"], "vfs");
    assert_eq!(info["OSType"], "linux");
    assert_eq!(info["Plugins"]["Volume"], serde_json::json!(["local"]));
    assert_eq!(info["Plugins"]["Network"], serde_json::json!(["none", "host", "bridge", "macvlan"]));
    assert_eq!(info["Berth"]["Plugins"]["Ready"], want.len());
    assert_eq!(info["Berth"]["ConfigSource"], "<embedded default>");
    assert_eq!(info["DockerRootDir"], w.root.to_str().unwrap());
    assert!(info["Berth"]["ListenUs"].as_u64().unwrap() > 0);

    let version = w.berth_ok(&["version"]);
    assert!(version.contains("Client:") && version.contains("Server: berth"), "{version}");
    assert!(version.contains("API version:  1.47 (minimum version 1.24)"), "{version}");
    let version = w.berth_json(&["version", "--format", "json"]);
    assert_eq!(version["Server"]["ApiVersion"], "1.47");

    // Raw requests with and without a version prefix.
    for path in ["/v1.47/version", "/v1.24/version", "/version"] {
        let r = http(&w.socket, &request("GET", path, None)).unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let v = r.json();
        assert_eq!(v["ApiVersion"], "1.47");
        assert_eq!(v["MinAPIVersion"], "1.24");
        assert_eq!(v["Components"][0]["Name"], "Engine");
        assert!(!v["KernelVersion"].as_str().unwrap().is_empty());
        assert_eq!(r.header("API-Version"), Some("1.47"));
    }
    let ping = http(&w.socket, &request("GET", "/v1.47/_ping", None)).unwrap();
    assert_eq!((ping.status, ping.body.as_str()), (200, "OK"));
    assert!(ping.header("Server").unwrap().starts_with("berth/"));
    assert!(ping.header("Content-Type").unwrap().starts_with("text/plain"));
    let head = http(&w.socket, &request("HEAD", "/_ping", None)).unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("API-Version"), Some("1.47"));
}
