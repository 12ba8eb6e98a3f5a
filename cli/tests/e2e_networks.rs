//! Networks and sandboxes end to end: real berthd with the built-in `none`,
//! `host` and `default` plugins, the `berth` CLI, the raw API, Debian's
//! docker client, and crashes at ledger steps followed by a restart.
//! Every namespace file a test makes lives under its world's exec root;
//! the guard below unmounts them even when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{describe, docker, docker_ok, http, request, World};

/// Unmounts every namespace file under the world's exec root on drop (the
/// World guard then removes the directory).
struct NetnsGuard(PathBuf);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).status();
        }
    }
}

fn world() -> (World, NetnsGuard) {
    let w = World::new("");
    let g = NetnsGuard(w.exec_root.join("netns"));
    (w, g)
}

fn namespace_files(w: &World) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(w.exec_root.join("netns"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Interface names inside the namespace at `key`.
fn links_in(key: &str) -> Vec<String> {
    let out =
        Command::new("nsenter").arg(format!("--net={key}")).args(["ip", "-j", "link"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
}

fn host_links() -> Vec<String> {
    let out = Command::new("ip").args(["-j", "link"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
}

#[test]
fn networks_lifecycle_through_the_cli() {
    let (w, _g) = world();
    let _d = w.start();
    let id = w.berth_ok(&["network", "create", "--label", "team=a", "nonet"]).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let table = w.berth_ok(&["network", "ls"]);
    assert!(table.starts_with("NETWORK ID"), "{table}");
    assert!(table.contains(&format!("{}  nonet  none    local", &id[..12])), "{table}");
    assert_eq!(w.berth_ok(&["network", "ls", "-q", "--no-trunc"]).trim(), id);
    let dup = w.berth(&["network", "create", "nonet"]);
    assert_eq!(dup.status.code(), Some(1), "{}", describe(&dup));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"), "{}", describe(&dup));
    w.berth_ok(&["network", "create", "-d", "host", "hostnet"]);
    let json = w.berth_json(&["network", "ls", "--format", "json", "--filter", "driver=host"]);
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["Name"], "hostnet");
    let inspect = w.berth_json(&["network", "inspect", "nonet"]);
    let n = &inspect[0];
    assert_eq!(
        (n["Id"].as_str(), n["Driver"].as_str(), n["Scope"].as_str()),
        (Some(id.as_str()), Some("none"), Some("local"))
    );
    assert_eq!(n["Labels"]["team"], "a");
    assert_eq!(n["IPAM"]["Driver"], "default");
    for k in ["Ingress", "ConfigOnly", "Internal", "EnableIPv6"] {
        assert_eq!(n[k], false, "{k}");
    }

    // A sandbox on `none`: its own namespace, loopback only.
    let sb = w.berth_ok(&["sandbox", "create", "box"]).trim().to_string();
    assert_eq!(namespace_files(&w), [sb[..12].to_string()]);
    let key = w.exec_root.join("netns").join(&sb[..12]).display().to_string();
    w.berth_ok(&["network", "connect", "nonet", "box"]);
    assert_eq!(links_in(&key), ["lo"]);
    let n = &w.berth_json(&["network", "inspect", &id[..8]])[0];
    assert_eq!(n["Containers"][&sb]["Name"], "box");
    let ls = w.berth_ok(&["sandbox", "ls"]);
    assert!(ls.contains("box") && ls.contains("nonet") && ls.contains(&key), "{ls}");
    let rm = w.berth(&["network", "rm", "nonet"]);
    assert_eq!(rm.status.code(), Some(1), "in use: {}", describe(&rm));
    w.berth_ok(&["network", "disconnect", "nonet", "box"]);
    let again = w.berth(&["network", "disconnect", "nonet", "box"]);
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    w.berth_ok(&["network", "connect", "nonet", &sb[..12]]);
    // Removing the sandbox disconnects it.
    assert_eq!(w.berth_ok(&["sandbox", "rm", "box"]).trim(), "box");
    assert!(namespace_files(&w).is_empty());
    assert_eq!(w.berth_ok(&["network", "rm", "nonet"]).trim(), "nonet");
    let pruned = w.berth_ok(&["network", "prune", "-f"]);
    assert_eq!(pruned, "Deleted Networks:\nhostnet\n");
    assert!(w.berth_ok(&["network", "ls", "-q"]).trim().is_empty());
}

#[test]
fn networks_host_sandboxes_share_the_host_namespace() {
    let (w, _g) = world();
    let _d = w.start();
    w.berth_ok(&["network", "create", "-d", "host", "hostnet"]);
    let before = host_links();
    let made = w.berth_json(&["sandbox", "create", "--host-namespace", "hb", "--format", "json"]);
    let key = made["Key"].as_str().unwrap().to_string();
    assert_eq!(key, w.exec_root.join("netns/default").display().to_string());
    w.berth_ok(&["network", "connect", "hostnet", "hb"]);
    assert_eq!(host_links(), before, "a host network adds no link");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().ino(),
        std::fs::metadata("/proc/self/ns/net").unwrap().ino(),
        "the host's namespace"
    );
    w.berth_ok(&["sandbox", "create", "own"]);
    let refused = w.berth(&["network", "connect", "hostnet", "own"]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    w.berth_ok(&["sandbox", "rm", "hb", "own"]);
    w.berth_ok(&["network", "rm", "hostnet"]);
    assert!(namespace_files(&w).is_empty(), "{:?}", namespace_files(&w));
}

#[test]
fn networks_a_pool_the_driver_refuses_goes_back_to_ipam() {
    let (w, _g) = world();
    let _d = w.start();
    for _ in 0..2 {
        // The IPAM reserves the pool and gateway, `none` refuses them, the
        // daemon gives them back: the second try gets the same answer, not
        // an IPAM conflict.
        let out =
            w.berth(&["network", "create", "--subnet", "10.254.77.0/24", "--gateway", "10.254.77.1", "bad"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("takes no addresses") && err.contains("invalid_argument"), "{err}");
    }
    let out =
        w.berth(&["network", "create", "--subnet", "10.254.77.0/24", "--gateway", "10.254.78.1", "bad"]);
    assert_eq!(out.status.code(), Some(2), "caught by the CLI: {}", describe(&out));
    assert!(w.berth_ok(&["network", "ls", "-q"]).trim().is_empty());
}

#[test]
fn networks_raw_api_answers_in_dockers_shapes() {
    let (w, _g) = world();
    let _d = w.start();
    let body = r#"{"Name":"raw","Driver":"none","CheckDuplicate":true,"IPAM":{"Driver":"default","Config":[],"Options":{}},"Options":{},"Labels":{}}"#;
    let r = http(&w.socket, &request("POST", "/v1.47/networks/create", Some(body))).unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let made = r.json();
    assert_eq!(made["Warning"], "");
    let id = made["Id"].as_str().unwrap().to_string();
    let r = http(&w.socket, &request("GET", "/networks/raw", None)).unwrap();
    assert_eq!((r.status, r.json()["Id"].as_str()), (200, Some(id.as_str())));
    let r = http(&w.socket, &request("POST", "/sandboxes/create", Some(r#"{"Name":"s"}"#))).unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["Key"].as_str().unwrap().starts_with(w.exec_root.join("netns").to_str().unwrap()));
    let c = r#"{"Container":"s","EndpointConfig":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":""}}"#;
    let r = http(&w.socket, &request("POST", "/v1.47/networks/raw/connect", Some(c))).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(&w.socket, &request("DELETE", "/networks/raw", None)).unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let r = http(
        &w.socket,
        &request("POST", "/networks/raw/disconnect", Some(r#"{"Container":"s","Force":false}"#)),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http(&w.socket, &request("GET", "/networks/nope", None)).unwrap();
    assert_eq!(r.status, 404);
    let r = http(&w.socket, &request("DELETE", "/sandboxes/s", None)).unwrap();
    assert_eq!(r.status, 204);
    let r = http(&w.socket, &request("DELETE", &format!("/v1.47/networks/{}", &id[..12]), None)).unwrap();
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http(&w.socket, &request("POST", "/networks/prune", None)).unwrap();
    assert_eq!(r.json(), serde_json::json!({"NetworksDeleted": []}));
}

#[test]
fn networks_the_debian_docker_client_manages_networks_on_berthd() {
    let (w, _g) = world();
    let _d = w.start();
    let id = docker_ok(&w, &["network", "create", "-d", "none", "--label", "a=b", "dn"]).trim().to_string();
    assert_eq!(id.len(), 64);
    let ls = docker_ok(&w, &["network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}"]);
    assert_eq!(ls.trim(), "dn none local");
    let inspect =
        docker_ok(&w, &["network", "inspect", "--format", "{{.Id}} {{.Labels.a}} {{.IPAM.Driver}}", "dn"]);
    assert_eq!(inspect.trim(), format!("{id} b default"));
    w.berth_ok(&["sandbox", "create", "box"]);
    docker_ok(&w, &["network", "connect", "dn", "box"]);
    let containers =
        docker_ok(&w, &["network", "inspect", "--format", "{{range .Containers}}{{.Name}}{{end}}", "dn"]);
    assert_eq!(containers.trim(), "box");
    docker_ok(&w, &["network", "disconnect", "dn", "box"]);
    assert_eq!(docker_ok(&w, &["network", "rm", "dn"]).trim(), "dn");
    let missing = docker(&w, &["network", "inspect", "dn"]);
    assert!(!missing.status.success(), "{}", describe(&missing));
    w.berth_ok(&["sandbox", "rm", "box"]);
}

fn reconcile_resolved(w: &World) -> Vec<String> {
    let info = w.berth_json(&["info", "--format", "json"]);
    info["Berth"]["Reconcile"]["Resolved"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Runs `args` under a daemon that aborts at `point`, then restarts and
/// answers what reconcile reported.
fn crash_at(w: &World, point: &str, args: &[&str]) -> Vec<String> {
    let mut d = w.start_with(&[], &[("BERTH_CRASH_AT", point)]);
    let out = w.berth(args);
    assert!(!out.status.success(), "{point}: {}", describe(&out));
    assert!(d.wait_exit(Duration::from_secs(10)).is_some_and(|s| !s.success()), "{point}: berthd must abort");
    drop(d);
    let _d = w.start();
    let resolved = reconcile_resolved(w);
    drop(_d);
    resolved
}

#[test]
fn networks_interrupted_operations_are_reconciled_at_restart() {
    let (w, _g) = world();
    let resolved = crash_at(&w, "sandbox.create:after-netns", &["sandbox", "create", "box"]);
    assert!(resolved.iter().any(|l| l.contains("rolled back interrupted create of sandbox")), "{resolved:?}");
    assert!(namespace_files(&w).is_empty(), "{:?}", namespace_files(&w));

    let resolved = crash_at(&w, "network.create:after-driver", &["network", "create", "nonet"]);
    assert!(
        resolved.iter().any(|l| l.contains("rolled back interrupted create of network \"nonet\"")),
        "{resolved:?}"
    );

    {
        let _d = w.start();
        w.berth_ok(&["network", "create", "nonet"]);
        w.berth_ok(&["sandbox", "create", "box"]);
    }
    let resolved = crash_at(&w, "endpoint.connect:after-program", &["network", "connect", "nonet", "box"]);
    assert!(resolved.iter().any(|l| l.contains("rolled back interrupted connect")), "{resolved:?}");
    let resolved = crash_at(&w, "sandbox.remove:after-intent", &["sandbox", "rm", "box"]);
    assert!(resolved.iter().any(|l| l.contains("finished interrupted removal of sandbox")), "{resolved:?}");
    let resolved = crash_at(&w, "network.delete:after-intent", &["network", "rm", "nonet"]);
    assert!(
        resolved.iter().any(|l| l.contains("finished interrupted removal of network \"nonet\"")),
        "{resolved:?}"
    );

    let _d = w.start();
    assert!(w.berth_ok(&["network", "ls", "-q"]).trim().is_empty());
    assert!(w.berth_ok(&["sandbox", "ls", "-q"]).trim().is_empty());
    assert!(namespace_files(&w).is_empty(), "{:?}", namespace_files(&w));
    // The none driver forgot the network too: a new one can be made.
    w.berth_ok(&["network", "create", "again"]);
    assert!(Path::new(&w.exec_root).exists());
}

#[test]
fn networks_bad_published_ports_are_typed_errors_and_create_nothing() {
    let (w, _g) = world();
    let _d = w.start();
    // The CLI refuses a bad -p before asking the daemon: exit 2, one line.
    for (spec, needle) in [
        ("80/icmp", "not tcp, udp or sctp"),
        ("0", "out of range"),
        ("70000:80", "out of range"),
        ("1.2.3:80:80", "not an IP address"),
        ("9000-8000:80", "end is below its start"),
        ("8000-8001:80-82", "different lengths"),
    ] {
        let out = w.berth(&["sandbox", "create", "-p", spec, "badports"]);
        assert_eq!(out.status.code(), Some(2), "-p {spec}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "-p {spec}: one line: {err}");
        assert!(err.contains(needle) && err.contains(spec), "-p {spec}: {err}");
    }
    // The API refuses a bad PortBindings or ExposedPorts body: 400,
    // invalid_argument, the message naming what is wrong.
    for (body, needle) in [
        (r#"{"Name":"badports","PortBindings":{"80/icmp":[{"HostIp":"","HostPort":""}]}}"#, "icmp"),
        (r#"{"Name":"badports","PortBindings":{"0/tcp":[]}}"#, "1 to 65535"),
        (r#"{"Name":"badports","PortBindings":{"80/tcp":[{"HostIp":"nowhere","HostPort":""}]}}"#, "nowhere"),
        (
            r#"{"Name":"badports","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"99999"}]}}"#,
            "out of range",
        ),
        (
            r#"{"Name":"badports","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"10-5"}]}}"#,
            "end is below",
        ),
        (r#"{"Name":"badports","PortBindings":{"80/tcp":[{"HostAddr":""}]}}"#, "unknown field"),
        (r#"{"Name":"badports","ExposedPorts":{"http/tcp":{}}}"#, "not a port number"),
        (r#"{"Name":"badports","Host":true,"PortBindings":{"80/tcp":[{}]}}"#, "host's namespace"),
    ] {
        let resp = http(&w.socket, &request("POST", "/sandboxes/create", Some(body))).unwrap();
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["kind"], "invalid_argument", "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let list = w.berth_json(&["sandbox", "ls", "--format", "json"]);
    assert_eq!(list, serde_json::json!([]), "nothing was created");
    assert!(namespace_files(&w).is_empty(), "no namespace was made: {:?}", namespace_files(&w));

    // A good one is kept canonical and shows its ports, unpublished, as
    // `docker ps` shows a created container's.
    let id = w.berth_ok(&["sandbox", "create", "-p", "127.0.0.1:8080:80", "-p", "53/UDP", "goodports"]);
    let v = w.berth_json(&["sandbox", "inspect", id.trim()]);
    assert_eq!(
        v[0]["PortBindings"]["80/tcp"],
        serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}])
    );
    assert_eq!(v[0]["Ports"], serde_json::json!({"53/udp": null, "80/tcp": null}));
    let table = w.berth_ok(&["sandbox", "ls"]);
    assert!(table.contains("PORTS") && table.contains("53/udp, 80/tcp"), "{table}");
    w.berth_ok(&["sandbox", "rm", "goodports"]);
}
