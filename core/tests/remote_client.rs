//! The remote-plugin client against scripted plugins: raw HTTP servers on
//! temporary unix sockets and loopback TCP, written in the tests.

#[path = "../src/remote/test_server.rs"]
mod test_server;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::remote::{Discovery, RemoteOptions, RemotePlugin, TlsConfig};
use berth_core::{ErrorKind, Kind};
use berth_plugin_api::storage::*;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DiffDriver, StorageDriver};
use test_server::{activate, Reply, Request, Server};

const ACCEPT: &str = "application/vnd.docker.plugins.v1.2+json";

/// A volume plugin at `<dir>/<name>.sock` answering `handler` after the
/// handshake.
fn volume_server(
    dir: &Path,
    name: &str,
    handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> Server {
    Server::unix(&dir.join(format!("{name}.sock")), move |r| match r.path.as_str() {
        "/Plugin.Activate" => activate(&["VolumeDriver"]),
        _ => handler(r),
    })
}

fn plugin(server: &Server, opts: RemoteOptions) -> Arc<RemotePlugin> {
    RemotePlugin::new("p", &server.address, opts).unwrap()
}

fn get(p: &Arc<RemotePlugin>, name: &str) -> Result<VolumeInfo, berth_core::DriverError> {
    p.volume().get(VolumeGetRequest::new(name))
}

const VOLUME: &str = r#"{"Volume":{"Name":"v1","Mountpoint":"/m"},"Err":""}"#;

#[test]
fn volume_endpoints_send_exactly_what_moby_sends() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| match r.path.as_str() {
        "/VolumeDriver.Mount" | "/VolumeDriver.Path" => Reply::ok(r#"{"Mountpoint":"/m","Err":""}"#),
        "/VolumeDriver.Get" => Reply::ok(
            r#"{"Volume":{"Name":"v1","Mountpoint":"/m","CreatedAt":"2024-01-01T00:00:00Z","Status":{"a":1}},"Err":""}"#,
        ),
        "/VolumeDriver.List" => Reply::ok(r#"{"Volumes":[{"Name":"v1"},{"Name":"v2","Mountpoint":"/n"}]}"#),
        "/VolumeDriver.Capabilities" => Reply::ok(r#"{"Capabilities":{"Scope":"global"}}"#),
        _ => Reply::ok(r#"{"Err":""}"#),
    });
    let p = plugin(&server, RemoteOptions::default());
    let vol = p.volume();
    let mut create = VolumeCreateRequest::new("v1");
    create.options.insert("size".into(), "1G".into());
    vol.create(create).unwrap();
    vol.create(VolumeCreateRequest::new("v0")).unwrap();
    vol.remove(VolumeRemoveRequest::new("v0")).unwrap();
    assert_eq!(vol.mount(VolumeMountRequest::new("v1", "abc")).unwrap().mountpoint, "/m");
    vol.unmount(VolumeUnmountRequest::new("v1", "abc")).unwrap();
    assert_eq!(vol.path(VolumePathRequest::new("v1")).unwrap().mountpoint, "/m");
    let v = vol.get(VolumeGetRequest::new("v1")).unwrap();
    assert_eq!(v.created_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(v.status["a"], 1);
    assert_eq!(vol.list(VolumeListRequest::default()).unwrap().len(), 2);
    let caps = vol.capabilities(VolumeCapabilitiesRequest::default()).unwrap();
    assert_eq!(caps.scope, berth_plugin_api::network::Scope::Global);

    let seen = server.requests();
    let expect = [
        ("/Plugin.Activate", ""),
        ("/VolumeDriver.Create", "{\"Name\":\"v1\",\"Opts\":{\"size\":\"1G\"}}\n"),
        ("/VolumeDriver.Create", "{\"Name\":\"v0\",\"Opts\":{}}\n"),
        ("/VolumeDriver.Remove", "{\"Name\":\"v0\"}\n"),
        ("/VolumeDriver.Mount", "{\"Name\":\"v1\",\"ID\":\"abc\"}\n"),
        ("/VolumeDriver.Unmount", "{\"Name\":\"v1\",\"ID\":\"abc\"}\n"),
        ("/VolumeDriver.Path", "{\"Name\":\"v1\"}\n"),
        ("/VolumeDriver.Get", "{\"Name\":\"v1\"}\n"),
        ("/VolumeDriver.List", "{}\n"),
        ("/VolumeDriver.Capabilities", "{}\n"),
    ];
    assert_eq!(seen.len(), expect.len(), "{:?}", server.paths());
    for (req, (path, body)) in seen.iter().zip(expect) {
        assert_eq!((req.method.as_str(), req.path.as_str(), req.text().as_str()), ("POST", path, body));
        assert_eq!(req.header("accept"), Some(ACCEPT));
        assert_eq!(req.header("host"), Some("plugin.moby.localhost"));
        assert_eq!(req.header("content-length"), Some(body.len().to_string().as_str()));
        let json_type = (!body.is_empty()).then_some("application/json");
        assert_eq!(req.header("content-type"), json_type, "{path}");
    }
    assert_eq!(server.accepts(), 1, "one keep-alive connection serves every call");
    assert_eq!(p.status().activations, 1);
}

#[test]
fn answers_decode_in_any_case_with_nulls_and_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| match r.path.as_str() {
        "/VolumeDriver.Get" => Reply::ok(
            r#"{"volume":{"NAME":"v","mountPoint":"/m","status":null,"CreatedAt":null,"Extra":[1]},"err":null,"Unknown":{}}"#,
        ),
        "/VolumeDriver.List" => Reply::ok(r#"{"Volumes":null,"Err":null}"#),
        "/VolumeDriver.Mount" => Reply::ok(r#"{"MOUNTPOINT":"/x","Err":null}"#),
        _ => Reply::ok(""),
    });
    let p = plugin(&server, RemoteOptions::default());
    let v = get(&p, "v").unwrap();
    assert_eq!((v.name.as_str(), v.mountpoint.as_str(), v.created_at.as_deref()), ("v", "/m", None));
    assert!(p.volume().list(VolumeListRequest::default()).unwrap().is_empty());
    assert_eq!(p.volume().mount(VolumeMountRequest::new("v", "i")).unwrap().mountpoint, "/x");
    // An empty 200 body is taken as `{}` (moby would fail on EOF).
    p.volume().unmount(VolumeUnmountRequest::new("v", "i")).unwrap();
}

#[test]
fn errors_keep_their_kind_and_name_the_plugin_and_method() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| match r.text().as_str() {
        "{\"Name\":\"busy\"}\n" => Reply::ok(r#"{"Err":"volume busy is still mounted"}"#),
        "{\"Name\":\"kind\"}\n" => Reply::json(500, r#"{"Err":"go away","Kind":"permission_denied"}"#),
        "{\"Name\":\"text\"}\n" => Reply::json(400, "json: cannot unmarshal number into Go value\n"),
        _ => Reply::json(500, ""),
    });
    let p = plugin(&server, RemoteOptions::default());
    let remove = |n: &str| p.volume().remove(VolumeRemoveRequest::new(n)).unwrap_err();
    let e = remove("busy");
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(e.message, "plugin \"p\": VolumeDriver.Remove: volume busy is still mounted");
    let e = remove("kind");
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::PermissionDenied, "plugin \"p\": VolumeDriver.Remove: go away")
    );
    let e = remove("text");
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.ends_with("json: cannot unmarshal number into Go value"), "{}", e.message);
    assert!(remove("other").message.ends_with("HTTP 500"));
    assert_eq!(server.accepts(), 1, "error answers keep the connection");
    let status = p.status();
    assert_eq!((status.failures, status.state.as_str()), (4, "active"));
    assert!(status.last_error.unwrap().ends_with("HTTP 500"));
}

#[test]
fn a_hung_plugin_times_out_while_another_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let hung = volume_server(dir.path(), "hung", |_| Reply::Hang);
    let fine = volume_server(dir.path(), "fine", |_| Reply::ok(VOLUME));
    let mut opts = RemoteOptions::default();
    opts.method_timeouts.insert("Get".into(), Duration::from_millis(400));
    let slow = RemotePlugin::new("hung", &hung.address, opts).unwrap();
    let quick = RemotePlugin::new("fine", &fine.address, RemoteOptions::default()).unwrap();
    let start = Instant::now();
    let waiting = std::thread::spawn(move || (get(&slow, "v"), start.elapsed()));
    std::thread::sleep(Duration::from_millis(50));
    while !waiting.is_finished() {
        let t = Instant::now();
        get(&quick, "v").unwrap();
        assert!(t.elapsed() < Duration::from_millis(200), "the other plugin was held up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (out, took) = waiting.join().unwrap();
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("plugin \"hung\": VolumeDriver.Get: no answer within 400ms"), "{}", e.message);
    assert!(took >= Duration::from_millis(390) && took < Duration::from_millis(1500), "{took:?}");
    assert!(fine.count("/VolumeDriver.Get") > 5);
}

#[test]
fn a_plugin_dying_mid_call_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |_| Reply::Close);
    let p = plugin(&server, RemoteOptions::default());
    let start = Instant::now();
    let e = get(&p, "v").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.starts_with("plugin \"p\": VolumeDriver.Get: no answer"), "{}", e.message);
    assert!(start.elapsed() < Duration::from_secs(1), "a request that reached the plugin is not retried");
    // The request went out on the connection the handshake just used: it
    // may have been carried out, so it is not sent again.
    assert_eq!(server.count("/VolumeDriver.Get"), 1);
    assert_eq!(p.status().state, "unreachable");
}

#[test]
fn stale_keep_alive_connections_are_retried_once_on_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&n);
    let server = volume_server(dir.path(), "p", move |_| match seen.fetch_add(1, Ordering::SeqCst) {
        1 => Reply::Close,
        _ => Reply::ok(VOLUME),
    });
    let p = plugin(&server, RemoteOptions::default());
    get(&p, "v").unwrap();
    get(&p, "v").unwrap();
    assert_eq!((server.count("/VolumeDriver.Get"), server.accepts()), (3, 2));
    assert_eq!(p.status().activations, 1, "a connection that broke without any error is no restart");
}

#[test]
fn garbage_answers_are_internal_errors_quoting_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| match r.text().contains("html") {
        true => Reply::ok("<html><body>oops</body></html>"),
        false => Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
    });
    let p = plugin(&server, RemoteOptions::default());
    let e = get(&p, "html").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.starts_with("plugin \"p\": VolumeDriver.Get: answered garbage"), "{}", e.message);
    assert!(e.message.contains("<html><body>oops"), "{}", e.message);
    let e = get(&p, "ssh").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal);
    assert!(e.message.contains("answered garbage") && e.message.contains("SSH-2.0"), "{}", e.message);
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_huge_answer_ends_quickly_in_a_bounded_error() {
    const HUGE: u64 = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| Reply::Huge(HUGE, r.text().contains("framed")));
    let p = plugin(&server, RemoteOptions::default());
    let before = peak_rss_kib();
    for name in ["framed", "to-the-close"] {
        let start = Instant::now();
        let e = get(&p, name).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ResourceExhausted, "{}", e.message);
        assert!(e.message.contains("16777216 bytes (max_body)"), "{}", e.message);
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    }
    let grew_mib = peak_rss_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 64, "the answer was buffered: peak RSS grew {grew_mib} MiB");
}

#[test]
fn a_socket_that_appears_late_is_still_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let d2 = dir.path().to_path_buf();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let server = volume_server(&d2, "late", |_| Reply::ok(VOLUME));
        let _ = wait.recv();
        server.count("/VolumeDriver.Get")
    });
    let p =
        RemotePlugin::new("late", &format!("unix://{}", path.display()), RemoteOptions::default()).unwrap();
    let start = Instant::now();
    let out = get(&p, "v");
    let took = start.elapsed();
    done.send(()).unwrap();
    assert_eq!(starter.join().unwrap(), 1);
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(6), "{took:?}");
    assert_eq!(out.unwrap().name, "v1");
}

#[test]
fn discovery_waits_for_a_plugin_that_starts_late() {
    let run = tempfile::tempdir().unwrap();
    let discovery = Discovery::new(vec![run.path().to_path_buf()], vec![]);
    let dir = run.path().to_path_buf();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let server = volume_server(&dir, "slow", |_| Reply::ok(VOLUME));
        std::thread::sleep(Duration::from_secs(3));
        drop(server);
    });
    let start = Instant::now();
    let found = discovery.wait_for("slow", Duration::from_secs(15)).unwrap().expect("found");
    assert!(start.elapsed() >= Duration::from_millis(2900));
    let p = RemotePlugin::from_found(&found, RemoteOptions::default()).unwrap();
    assert_eq!(get(&p, "v").unwrap().name, "v1");
    assert_eq!(discovery.wait_for("never", Duration::from_millis(300)).unwrap(), None);
    holder.join().unwrap();
}

#[test]
fn a_plugin_restarted_on_the_same_socket_is_activated_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = volume_server(dir.path(), "p", |_| Reply::ok(VOLUME));
    let p = plugin(&first, RemoteOptions::default());
    get(&p, "v").unwrap();
    get(&p, "v").unwrap();
    first.stop();
    let second = volume_server(dir.path(), "p", |_| Reply::ok(VOLUME));
    get(&p, "v").unwrap();
    assert_eq!(first.count("/Plugin.Activate"), 1);
    assert_eq!(second.count("/Plugin.Activate"), 1, "{:?}", second.paths());
    assert_eq!(second.paths()[0], "/Plugin.Activate");
    assert_eq!(p.status().activations, 2);
    // Down, then back: activated once more.
    second.stop();
    let quick = RemoteOptions { retry_window: Duration::ZERO, ..Default::default() };
    let q = plugin(&second, quick);
    assert_eq!(get(&q, "v").unwrap_err().kind, ErrorKind::Unavailable);
}

#[test]
fn the_breaker_opens_fails_fast_and_closes_when_the_plugin_returns() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&healthy);
    let server = Server::unix(&dir.path().join("p.sock"), move |r| {
        match (h.load(Ordering::SeqCst), r.path.as_str()) {
            (false, _) => Reply::Close,
            (true, "/Plugin.Activate") => activate(&["VolumeDriver"]),
            (true, _) => Reply::ok(VOLUME),
        }
    });
    let p = plugin(&server, RemoteOptions::default());
    for _ in 0..3 {
        assert_eq!(get(&p, "v").unwrap_err().kind, ErrorKind::Unavailable);
    }
    assert_eq!(p.status().state, "breaker_open");
    let (accepts, requests) = (server.accepts(), server.count("/VolumeDriver.Get"));
    let start = Instant::now();
    let e = get(&p, "v").unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(20), "{:?}", start.elapsed());
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.starts_with("plugin \"p\" is unreachable (breaker open since "), "{}", e.message);
    assert!(e.message.contains("last error: "), "{}", e.message);
    assert_eq!(server.count("/VolumeDriver.Get"), requests, "no request while open");
    assert!(server.accepts() <= accepts + 1, "at most the prober's connection");
    healthy.store(true, Ordering::SeqCst);
    let wait = Instant::now();
    while p.status().state == "breaker_open" {
        assert!(wait.elapsed() < Duration::from_secs(8), "the prober never closed the breaker");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&p, "v").unwrap().name, "v1");
    let status = p.status();
    assert_eq!((status.state.as_str(), status.activations), ("active", 1));
}

#[test]
fn http10_and_chunked_answers_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::unix(&dir.path().join("p.sock"), |r| match r.path.as_str() {
        "/Plugin.Activate" => Reply::Http10(200, br#"{"Implements": ["VolumeDriver"]}"#.to_vec()),
        "/VolumeDriver.Get" => {
            Reply::Chunked(200, vec![br#"{"Volume":{"Na"#.to_vec(), br#"me":"c"}}"#.to_vec()])
        }
        _ => Reply::Http10(200, br#"{"Volumes":[{"Name":"a"},{"Name":"b"}]}"#.to_vec()),
    });
    let p = plugin(&server, RemoteOptions::default());
    assert_eq!(get(&p, "c").unwrap().name, "c");
    assert_eq!(p.volume().list(VolumeListRequest::default()).unwrap().len(), 2);
    assert_eq!(get(&p, "c").unwrap().name, "c");
    // HTTP/1.0 closes: Activate, then Get+Get kept alive, then List.
    assert_eq!(server.accepts(), 3, "{:?}", server.paths());
}

#[test]
fn a_plugin_without_the_subsystem_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::unix(&dir.path().join("p.sock"), |_| activate(&["NetworkDriver", "authz", "FooDriver"]));
    let p = plugin(&server, RemoteOptions::default());
    assert_eq!(p.status().state, "not_activated");
    let e = get(&p, "v").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert_eq!(
        e.message,
        "plugin \"p\" does not implement VolumeDriver (it implements [\"NetworkDriver\", \"authz\", \"FooDriver\"])"
    );
    assert!(p.implements(Kind::Network).unwrap());
    assert!(!p.implements(Kind::Ipam).unwrap());
    assert_eq!(p.status().implements, ["NetworkDriver", "authz", "FooDriver"]);
    assert_eq!(server.count("/Plugin.Activate"), 1, "cached");
}

#[test]
fn graph_diffs_stream_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let tar: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let answer = tar.clone();
    let server = Server::unix(&dir.path().join("g.sock"), move |r| match r.path.as_str() {
        "/Plugin.Activate" => activate(&["GraphDriver"]),
        "/GraphDriver.Diff" => Reply::Full(200, answer.clone()),
        "/GraphDriver.Exists" => Reply::json(500, r#"{"Err":"boom"}"#),
        "/GraphDriver.Capabilities" => Reply::json(404, "404 page not found"),
        "/GraphDriver.Status" => Reply::ok(r#"{"Status":[["Layers","2"],["Backing","ext4"]]}"#),
        p if p.starts_with("/GraphDriver.ApplyDiff?") => Reply::ok(&format!("{{\"Size\":{}}}", r.body.len())),
        _ => Reply::ok("{}"),
    });
    let p = plugin(&server, RemoteOptions::default());
    let storage = berth_core::remote::RemoteStorage::new(Arc::clone(&p));
    storage.create(CreateRequest::new("l1", "")).unwrap();
    assert_eq!(server.last("/GraphDriver.Create").text(), "{\"ID\":\"l1\"}\n");
    let mut out = Vec::new();
    storage.as_diff().unwrap().diff(DiffRequest::new("l2", "l1"), &mut out).unwrap();
    assert!(out == tar, "the diff stream differs");
    assert_eq!(server.last("/GraphDriver.Diff").text(), "{\"ID\":\"l2\",\"Parent\":\"l1\"}\n");
    let size = storage.apply_diff(ApplyDiffRequest::new("l2", "l1"), &mut tar.as_slice()).unwrap().size;
    assert_eq!(size, tar.len() as u64);
    let sent = server.last("/GraphDriver.ApplyDiff?id=l2&parent=l1");
    assert!(sent.chunked && sent.body == tar && sent.header("content-length").is_none());
    assert!(!storage.exists(ExistsRequest::new("l1")).unwrap(), "an error is false");
    assert!(!storage.capabilities().unwrap().reproduces_exact_diffs);
    let status = storage.status(StatusRequest::default()).unwrap().status;
    assert_eq!(status[1], ("Backing".to_string(), "ext4".to_string()));
    assert_eq!(server.last("/GraphDriver.Status").text(), "{}\n");
    storage.init("/var/lib/berth/g", &[]).unwrap();
    assert_eq!(
        server.last("/GraphDriver.Init").text(),
        "{\"Home\":\"/var/lib/berth/g\",\"Opts\":null,\"UIDMaps\":null,\"GIDMaps\":null}\n"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn discovery_follows_dockers_precedence() {
    let root = tempfile::tempdir().unwrap();
    let d = |s: &str| root.path().join(s);
    let (run1, run2, etc1, etc2) = (d("run1"), d("run2"), d("etc1"), d("etc2"));
    for dir in [&run1, &run2, &etc1, &etc2] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let sock = |p: &Path| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::net::UnixListener::bind(p).unwrap()
    };
    let _a = sock(&run2.join("a.sock"));
    write(&etc1.join("a.spec"), "tcp://127.0.0.1:1");
    let _b1 = sock(&run1.join("b/b.sock"));
    let _b2 = sock(&run2.join("b.sock"));
    write(&etc1.join("c.json"), r#"{"Addr":"tcp://127.0.0.1:3"}"#);
    write(&etc1.join("c/c.spec"), "tcp://127.0.0.1:4");
    write(&etc2.join("c.spec"), "tcp://127.0.0.1:5");
    write(&etc2.join("d/d.json"), r#"{"Name":"ignored","Addr":"https://plugins.example:9443"}"#);
    write(&run1.join("e.sock"), "not a socket");
    write(&etc2.join("e.spec"), "  unix:///run/e.sock \n");
    write(&etc1.join("bad.spec"), "localhost:8080");
    write(
        &etc1.join("t.json"),
        r#"{"Addr":"https://h:1","TLSConfig":{"CAFile":"","CertFile":"/c.pem","KeyFile":"/k.pem"}}"#,
    );
    write(&etc1.join("u.json"), r#"{"addr":"https://h:1","tlsconfig":{"cafile":"/ca.pem"}}"#);
    write(&etc1.join("README.txt"), "ignored");
    let disc = Discovery::new(vec![run1.clone(), run2.clone()], vec![etc1.clone(), etc2.clone()]);
    let find = |n: &str| disc.find(n).unwrap().unwrap();
    assert_eq!(
        (find("a").address, find("a").tls),
        (format!("unix://{}", run2.join("a.sock").display()), None)
    );
    assert_eq!(find("b").source, run1.join("b/b.sock"));
    assert_eq!(find("c").address, "tcp://127.0.0.1:4", "a .spec before a .json of the same dir");
    assert_eq!(find("c").tls, Some(TlsConfig::insecure()), "spec files skip verification, as dockerd");
    let dd = find("d");
    assert_eq!((dd.name.as_str(), dd.address.as_str(), dd.tls), ("d", "https://plugins.example:9443", None));
    assert_eq!((find("e").address.as_str(), find("e").source), ("unix:///run/e.sock", etc2.join("e.spec")));
    let e = disc.find("bad").unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("unknown protocol") && e.message.contains("bad.spec"), "{}", e.message);
    let t = find("t").tls.unwrap();
    assert!(t.insecure_skip_verify, "a TLSConfig without CAFile turns verification off");
    assert_eq!((t.cert_file.unwrap(), t.key_file.unwrap()), ("/c.pem".into(), "/k.pem".into()));
    let u = find("u").tls.unwrap();
    assert_eq!((u.insecure_skip_verify, u.ca_file.unwrap()), (false, "/ca.pem".into()));
    assert_eq!(disc.find("nothing").unwrap(), None);
    let names: Vec<String> = disc.scan().into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["b", "a", "c", "t", "u", "d", "e"]);
}

#[test]
fn https_plugins_are_verified_against_their_ca_or_not_at_all() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::File::create(&ca).unwrap().write_all(cert.cert.pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let handler = |r: &Request| match r.path.as_str() {
        "/Plugin.Activate" => activate(&["VolumeDriver"]),
        _ => Reply::ok(VOLUME),
    };
    let server =
        Server::tcp_on(listener, handler, move |tcp: std::net::TcpStream, state: &test_server::State| {
            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else { return };
            test_server::serve_conn(rustls::StreamOwned::new(conn, tcp), state);
        });
    let url = server.address.replace("tcp://", "https://");
    let with = |tls: Option<TlsConfig>| {
        let opts = RemoteOptions { tls, retry_window: Duration::from_secs(2), ..Default::default() };
        RemotePlugin::new("tls", &url, opts).unwrap()
    };
    let verified = with(Some(TlsConfig::with_ca(&ca)));
    assert_eq!(get(&verified, "v").unwrap().name, "v1");
    assert_eq!(get(&verified, "v").unwrap().name, "v1");
    let status = verified.status();
    assert_eq!((status.transport.as_str(), status.activations), ("https", 1));
    assert_eq!(server.accepts(), 1, "the TLS connection is kept alive");
    assert_eq!(get(&with(Some(TlsConfig::insecure())), "v").unwrap().name, "v1");
    let start = Instant::now();
    let e = get(&with(None), "v").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("tls handshake") && e.message.contains("certificate"), "{}", e.message);
    assert!(start.elapsed() < Duration::from_secs(1), "a refused certificate is not retried");
}

#[test]
fn status_reports_transport_latency_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = volume_server(dir.path(), "p", |r| match r.text().contains("missing") {
        true => Reply::json(500, r#"{"Err":"no such volume"}"#),
        false => Reply::ok(VOLUME),
    });
    let method_timeouts = BTreeMap::from([("VolumeDriver.Mount".into(), Duration::from_secs(300))]);
    let opts = RemoteOptions { method_timeouts, ..Default::default() };
    let p = plugin(&server, opts);
    assert_eq!(p.max_timeout(), Duration::from_secs(300));
    for _ in 0..10 {
        get(&p, "v").unwrap();
    }
    assert_eq!(get(&p, "missing").unwrap_err().kind, ErrorKind::NotFound);
    let s = p.status();
    assert_eq!((s.transport.as_str(), s.state.as_str(), s.calls, s.failures), ("unix", "active", 11, 1));
    assert!(s.p50_us > 0 && s.p50_us < 100_000, "{}", s.p50_us);
    assert!(s.last_error.as_deref().unwrap().contains("no such volume"));
    assert!(s.last_error_at.unwrap().ends_with('Z'));
    assert_eq!(s.idle_connections, 1);
    let json = serde_json::to_value(p.status()).unwrap();
    for key in [
        "transport",
        "address",
        "state",
        "implements",
        "last_error",
        "activations",
        "p50_us",
        "calls",
        "failures",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
}
