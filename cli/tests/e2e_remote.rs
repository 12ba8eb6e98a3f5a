//! Remote volume drivers under berthd, end to end: a plugin berth did not
//! write (Python, from the protocol reference alone), and the faults a
//! remote plugin can throw at the daemon — it hangs, dies mid-call, answers
//! garbage or 100 MiB, appears late, or is restarted. Every fault must give
//! the API client a typed error within its timeout while the daemon keeps
//! answering for the other drivers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{describe, World};

/// A volume plugin in Python, written from
/// `shared/reference/docker-plugin-protocol.md` §3–4 alone: Python's
/// `http.server` on a unix socket, HTTP/1.0 (one request per connection,
/// answers read to EOF), directories as volumes, mounts counted by ID.
///
/// `argv`: socket, data dir, mode. Modes other than `normal` misbehave on
/// purpose: `hang` never answers Create, `die` exits in the middle of
/// Create, `garbage` answers Get and List with non-JSON, `huge` answers
/// List with a 100 MiB body. Every Activate appends a line to
/// `<data>/activations`.
const PY_PLUGIN: &str = r#"
import http.server, json, os, shutil, socketserver, sys, threading, time

SOCK, DATA, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(DATA, exist_ok=True)
mounts = {}
lock = threading.Lock()

def vol_dir(name):
    return os.path.join(DATA, "vols", name)

def volume(name):
    return {"Name": name, "Mountpoint": vol_dir(name), "Status": {"mounts": len(mounts.get(name, ()))}}

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        req = json.loads(raw) if raw.strip() else {}
        method = self.path.lstrip("/")
        name = req.get("Name") or ""
        if method == "Plugin.Activate":
            with open(os.path.join(DATA, "activations"), "a") as f:
                f.write("activated\n")
            return self.answer({"Implements": ["VolumeDriver"]})
        if MODE == "hang" and method == "VolumeDriver.Create":
            time.sleep(3600)
        if MODE == "die" and method == "VolumeDriver.Create":
            os._exit(3)
        if MODE == "garbage" and method in ("VolumeDriver.Get", "VolumeDriver.List"):
            body = b"\x00<html>this is not JSON"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if MODE == "huge" and method == "VolumeDriver.List":
            size = 100 * 1024 * 1024
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * (1024 * 1024)
            try:
                for _ in range(100):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        with lock:
            if method == "VolumeDriver.Create":
                os.makedirs(vol_dir(name), exist_ok=True)
                return self.answer({"Err": ""})
            if method == "VolumeDriver.Get":
                if not os.path.isdir(vol_dir(name)):
                    return self.answer({"Err": "no such volume: " + name})
                return self.answer({"Volume": volume(name), "Err": ""})
            if method == "VolumeDriver.List":
                root = os.path.join(DATA, "vols")
                names = sorted(os.listdir(root)) if os.path.isdir(root) else []
                return self.answer({"Volumes": [{"Name": v, "Mountpoint": vol_dir(v)} for v in names]})
            if method == "VolumeDriver.Path":
                return self.answer({"Mountpoint": vol_dir(name) if mounts.get(name) else ""})
            if method == "VolumeDriver.Mount":
                if not os.path.isdir(vol_dir(name)):
                    return self.answer({"Err": "no such volume: " + name}, 500)
                mounts.setdefault(name, set()).add(req["ID"])
                return self.answer({"Mountpoint": vol_dir(name)})
            if method == "VolumeDriver.Unmount":
                mounts.get(name, set()).discard(req["ID"])
                return self.answer({})
            if method == "VolumeDriver.Remove":
                if mounts.get(name):
                    return self.answer({"Err": "volume " + name + " is in use"}, 500)
                shutil.rmtree(vol_dir(name), ignore_errors=True)
                return self.answer({})
            if method == "VolumeDriver.Capabilities":
                return self.answer({"Capabilities": {"Scope": "local"}})
        self.answer({"Err": "unknown method " + method}, 404)

class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if os.path.exists(SOCK):
    os.unlink(SOCK)
Server(SOCK, Handler).serve_forever()
"#;

/// A running Python plugin; killed on drop.
struct PyPlugin {
    child: Option<Child>,
    socket: PathBuf,
    data: PathBuf,
}

impl PyPlugin {
    /// Starts the plugin on `socket` and waits for the socket to appear.
    fn start(w: &World, socket: &Path, mode: &str) -> PyPlugin {
        let mut p = PyPlugin::spawn(w, socket, mode);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the python plugin did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(c) = p.child.as_mut() {
            assert!(c.try_wait().unwrap().is_none(), "the python plugin exited");
        }
        p
    }

    /// Starts the plugin without waiting.
    fn spawn(w: &World, socket: &Path, mode: &str) -> PyPlugin {
        let script = w.dir.path().join("pyvol.py");
        std::fs::write(&script, PY_PLUGIN).expect("write the plugin script");
        let data = w.dir.path().join(format!("py-{mode}"));
        let child = Command::new("python3")
            .arg(&script)
            .arg(socket)
            .arg(&data)
            .arg(mode)
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs (apt-get install -y python3)");
        PyPlugin { child: Some(child), socket: socket.to_path_buf(), data }
    }

    fn activations(&self) -> usize {
        std::fs::read_to_string(self.data.join("activations")).map(|s| s.lines().count()).unwrap_or(0)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for PyPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `berth` and answers (exit success, stdout+stderr, seconds taken).
fn timed(w: &World, args: &[&str]) -> (bool, String, f64) {
    let start = Instant::now();
    let out = w.berth(args);
    (out.status.success(), describe(&out), start.elapsed().as_secs_f64())
}

/// `berth volume ls` restricted to the local driver answers at once.
fn local_still_answers(w: &World) {
    let (ok, out, secs) = timed(w, &["volume", "ls", "--filter", "driver=local", "--format", "json"]);
    assert!(ok, "{out}");
    assert!(secs < 2.0, "volume ls on the local driver took {secs:.1}s while a plugin misbehaved");
}

#[test]
fn a_python_plugin_berth_did_not_write_serves_volumes_by_discovery() {
    let w = World::new("");
    let _d = w.start();
    let socket = w.plugins_dir().join("pyvol.sock");
    let py = PyPlugin::start(&w, &socket, "normal");

    let created = w.berth_json(&["volume", "create", "-d", "pyvol", "--format", "json", "py1"]);
    assert_eq!(created["Driver"], "pyvol");
    assert_eq!(created["Scope"], "local");
    w.berth_ok(&["volume", "create", "-d", "pyvol", "py2"]);
    let listed = w.berth_json(&["volume", "ls", "--filter", "driver=pyvol", "--format", "json"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|v| v["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["py1", "py2"]);
    let inspect = w.berth_json(&["volume", "inspect", "py1"]);
    assert_eq!(inspect[0]["Driver"], "pyvol");
    assert_eq!(inspect[0]["Status"]["mounts"], 0, "{inspect}");

    let m = w.berth_json(&["volume", "mount", "py1", "--format", "json"]);
    let id = m["ID"].as_str().unwrap().to_string();
    assert_eq!(m["Mountpoint"].as_str().unwrap(), py.data.join("vols/py1").to_str().unwrap());
    let (ok, out, _) = timed(&w, &["volume", "rm", "py1"]);
    assert!(!ok && out.contains("in use"), "{out}");
    w.berth_ok(&["volume", "unmount", "py1", &id]);
    w.berth_ok(&["volume", "rm", "py1", "py2"]);
    assert!(!py.data.join("vols/py1").exists());

    // The plugin shows in `berth plugin ls` as discovered, remote and active.
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let p = plugins.as_array().unwrap().iter().find(|p| p["name"] == "pyvol").expect("pyvol listed");
    assert_eq!(p["transport"], "remote");
    assert_eq!(p["status"], "active", "{p}");
    assert_eq!(p["remote"]["transport"], "unix");
    assert!(p["source"].as_str().unwrap().ends_with("pyvol.sock"), "{p}");
    assert_eq!(py.activations(), 1, "one handshake for the daemon's lifetime while the plugin stays up");
    let table = w.berth_ok(&["plugin", "ls"]);
    assert!(table.lines().any(|l| l.starts_with("pyvol") && l.contains("active")), "{table}");
}

/// A world whose config names the fault plugin `faulty-py` at a socket in
/// the world (not in the discovery directory), with call timeout `timeout`.
fn fault_world(timeout: &str) -> (World, PathBuf) {
    let w = World::new("");
    let socket = w.dir.path().join("fault.sock");
    let extra = format!(
        "\n[[plugin]]\nname = \"faulty-py\"\nremote = \"unix://{}\"\ntimeout = \"{timeout}\"\n",
        socket.display()
    );
    std::fs::write(&w.config, w.config_text(&extra)).unwrap();
    (w, socket)
}

#[test]
fn a_hung_plugin_times_out_and_other_drivers_keep_answering() {
    let (w, socket) = fault_world("2s");
    let _py = PyPlugin::start(&w, &socket, "hang");
    let _d = w.start();
    let w2 = &w;
    std::thread::scope(|s| {
        let hung = s.spawn(move || timed(w2, &["volume", "create", "-d", "faulty-py", "stuck"]));
        std::thread::sleep(Duration::from_millis(300));
        local_still_answers(w2);
        w2.berth_ok(&["volume", "create", "meanwhile"]);
        let (ok, out, secs) = hung.join().unwrap();
        assert!(!ok, "{out}");
        assert!(out.contains("(timeout)"), "a typed timeout error: {out}");
        assert!(secs < 8.0, "the timeout is 2s per call; the client waited {secs:.1}s");
    });
    assert!(w.volume_names().contains(&"meanwhile".to_string()));
    assert!(!w.volume_names().contains(&"stuck".to_string()), "a failed create leaves nothing registered");
}

#[test]
fn a_plugin_that_dies_mid_call_is_an_unavailable_error() {
    let (w, socket) = fault_world("5s");
    let _py = PyPlugin::start(&w, &socket, "die");
    let _d = w.start();
    let (ok, out, secs) = timed(&w, &["volume", "create", "-d", "faulty-py", "doomed"]);
    assert!(!ok, "{out}");
    assert!(out.contains("(unavailable)"), "{out}");
    assert!(secs < 10.0, "{secs:.1}s");
    local_still_answers(&w);
    assert!(!w.volume_names().contains(&"doomed".to_string()));
}

#[test]
fn garbage_and_huge_answers_are_typed_errors_and_bounded() {
    let (w, socket) = fault_world("10s");
    let mut py = PyPlugin::start(&w, &socket, "garbage");
    let _d = w.start();
    let (ok, out, _) = timed(&w, &["volume", "inspect", "--format", "json", "anything"]);
    assert!(!ok, "{out}");
    let listed = w.berth_json(&["volume", "ls", "--format", "json"]);
    assert!(listed.is_array(), "listing survives a plugin answering garbage: {listed}");
    let warnings = w.berth_ok(&["volume", "ls"]);
    assert!(!warnings.is_empty());
    py.stop();

    let _py = PyPlugin::start(&w, &socket, "huge");
    let (ok, out, secs) = timed(&w, &["volume", "ls", "--filter", "driver=faulty-py", "--format", "json"]);
    assert!(ok, "a failing driver is a warning in a listing: {out}");
    assert!(secs < 10.0, "the 100 MiB answer is cut off, not read: {secs:.1}s");
    let raw = common::http(
        &w.socket,
        &common::request("GET", "/volumes?filters=%7B%22driver%22%3A%5B%22faulty-py%22%5D%7D", None),
    )
    .unwrap();
    assert_eq!(raw.status, 200, "{}", raw.body);
    let warnings = raw.json()["Warnings"].to_string();
    assert!(
        warnings.contains("faulty-py") && warnings.contains("limit"),
        "the warning names the plugin and the limit: {}",
        raw.body
    );
    local_still_answers(&w);
}

#[test]
fn a_plugin_that_appears_late_is_used_and_a_restarted_one_is_activated_again() {
    let (w, socket) = fault_world("10s");
    let _d = w.start();
    // Nothing listens yet; the plugin comes up 3 s after the request.
    let w2 = &w;
    let mut py = std::thread::scope(|s| {
        let late = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            PyPlugin::start(w2, &socket, "normal")
        });
        let (ok, out, secs) = timed(w2, &["volume", "create", "-d", "faulty-py", "late"]);
        assert!(ok, "a plugin that appears 3 s late is still used: {out}");
        assert!(secs >= 2.5, "the call waited for the plugin ({secs:.1}s)");
        late.join().unwrap()
    });
    assert_eq!(py.activations(), 1);

    // Restarted on the same socket: the daemon activates it again.
    py.stop();
    let py = PyPlugin::start(&w, &socket, "normal");
    let m = w.berth_json(&["volume", "mount", "late", "--format", "json"]);
    assert!(m["Mountpoint"].as_str().unwrap().ends_with("vols/late"), "{m}");
    assert_eq!(py.activations(), 2, "the restarted plugin was activated again (a second handshake)");
    let plugins = w.berth_json(&["plugin", "inspect", "faulty-py"]);
    assert_eq!(plugins["status"], "active", "{plugins}");
}
