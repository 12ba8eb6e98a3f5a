//! The real `berth-plugin-host` binary serving the real `local` volume
//! plugin (`libberth_volume_local.so`, built here with `cargo build -p
//! berth-volume-local` in this test's profile), talked to with raw HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// `<target>/<profile>`, from the running test binary (`.../deps/host-*`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent().and_then(Path::parent).expect("test binary lives in <target>/<profile>/deps").to_path_buf()
}

/// Builds the local volume plugin in this profile and target directory
/// (a no-op when it is up to date) and returns its `.so`.
fn local_so() -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("<target>/<profile>");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "berth-volume-local", "--target-dir"]).arg(target);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build -p berth-volume-local");
    assert!(
        out.status.success(),
        "cargo build -p berth-volume-local failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let so = profile.join("libberth_volume_local.so");
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

/// A running host; killed on drop if the test did not stop it.
struct Host {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
    dir: tempfile::TempDir,
    address: String,
}

impl Host {
    /// Starts the host on `so` with `extra` arguments, `--root`/`--run-root`
    /// in a fresh temporary directory, and waits for its "serving" line.
    fn start(so: &Path, extra: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-plugin-host"))
            .arg("--plugin")
            .arg(so)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--run-root")
            .arg(dir.path().join("run"))
            .args(extra.iter().map(|a| a.replace("{dir}", &dir.path().display().to_string())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth-plugin-host");
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if !line.starts_with("serving ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no serving line (got {line:?}); stderr:\n{}", stderr.join().unwrap());
        }
        let address = line.trim_end().rsplit(" on ").next().unwrap().to_string();
        assert!(line.contains(&format!("of {} on ", so.display())), "{line}");
        Host { child, stderr, dir, address }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn client(&self) -> Client {
        let stream: Box<dyn ReadWrite> = match self.address.strip_prefix("unix://") {
            Some(path) => Box::new(UnixStream::connect(path).unwrap()),
            None => Box::new(TcpStream::connect(self.address.strip_prefix("tcp://").unwrap()).unwrap()),
        };
        Client { stream, buf: Vec::new() }
    }

    /// Sends `signal` and waits for the exit; answers the status and stderr.
    fn stop(mut self, signal: libc::c_int) -> (ExitStatus, String) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of our own child, which has not been
        // reaped yet (so the pid cannot have been reused).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the host did not exit after signal {signal}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        (status, stderr.join().unwrap())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A hand-written HTTP/1.1 client for sized JSON answers.
struct Client {
    stream: Box<dyn ReadWrite>,
    buf: Vec<u8>,
}

impl Client {
    fn post(&mut self, path: &str, body: &str) -> (u16, Value) {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).unwrap();
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = String::from_utf8(self.buf.drain(..end).collect()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
            })
            .expect("a sized answer");
        while self.buf.len() < len {
            self.fill();
        }
        let body: Vec<u8> = self.buf.drain(..len).collect();
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body))),
        )
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the host closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn serves_the_local_volume_plugin_and_stops_on_sigterm() {
    let so = local_so();
    let host = Host::start(&so, &["--socket", "{dir}/plugins/local-iso.sock", "--name", "local-iso"]);
    let socket = host.dir.path().join("plugins/local-iso.sock");
    assert_eq!(host.address, format!("unix://{}", socket.display()));
    let mut c = host.client();

    assert_eq!(c.post("/Plugin.Activate", ""), (200, json!({"Implements": ["VolumeDriver"]})));
    assert_eq!(c.post("/VolumeDriver.Create", r#"{"Name":"v1","Opts":null}"#), (200, json!({})));
    let (status, got) = c.post("/VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!(status, 200, "{got}");
    let mountpoint = got["Volume"]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(got["Volume"]["Name"], "v1");
    assert!(Path::new(&mountpoint).starts_with(host.root()), "{mountpoint} lies under --root");
    assert!(got["Volume"]["CreatedAt"].is_string(), "{got}");
    let (status, list) = c.post("/VolumeDriver.List", "{}");
    assert_eq!(status, 200);
    let names: Vec<&str> =
        list["Volumes"].as_array().unwrap().iter().map(|v| v["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["v1"]);

    let mount = format!(r#"{{"Name":"v1","ID":"{}"}}"#, "0123456789abcdef".repeat(4));
    assert_eq!(c.post("/VolumeDriver.Mount", &mount), (200, json!({"Mountpoint": mountpoint})));
    assert!(Path::new(&mountpoint).is_dir());
    assert_eq!(c.post("/VolumeDriver.Path", r#"{"Name":"v1"}"#), (200, json!({"Mountpoint": mountpoint})));
    // Removing a mounted volume is a conflict, with its kind.
    let (status, err) = c.post("/VolumeDriver.Remove", r#"{"Name":"v1"}"#);
    assert_eq!((status, err["Kind"].as_str()), (500, Some("conflict")), "{err}");
    assert_eq!(c.post("/VolumeDriver.Unmount", &mount), (200, json!({})));
    assert_eq!(
        c.post("/VolumeDriver.Capabilities", "{}"),
        (200, json!({"Capabilities": {"Scope": "local"}}))
    );
    assert_eq!(c.post("/VolumeDriver.Remove", r#"{"Name":"v1"}"#), (200, json!({})));
    assert!(!Path::new(&mountpoint).exists());

    let (status, err) = c.post("/VolumeDriver.Get", r#"{"Name":"v1"}"#);
    assert_eq!((status, err["Kind"].as_str()), (500, Some("not_found")), "{err}");
    let (status, err) = c.post("/VolumeDriver.Create", r#"{"Name":"v2","Opts":{"bogus":"1"}}"#);
    assert_eq!((status, err["Kind"].as_str()), (500, Some("invalid_argument")), "{err}");
    let (status, err) = c.post("/VolumeDriver.Create", r#"{"Name":"../x"}"#);
    assert_eq!((status, err["Kind"].as_str()), (500, Some("invalid_argument")), "{err}");
    let (status, _) = c.post("/NetworkDriver.GetCapabilities", "");
    assert_eq!(status, 404);

    let (status, stderr) = host.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!socket.exists(), "the socket is removed on SIGTERM");
}

#[test]
fn serves_over_tcp_with_a_spec_file_and_stops_on_sigint() {
    let so = local_so();
    let host = Host::start(&so, &["--tcp", "127.0.0.1:0", "--spec-dir", "{dir}/spec"]);
    let spec = host.dir.path().join("spec/volume_local.spec");
    let url = std::fs::read_to_string(&spec).unwrap();
    assert_eq!(url.trim_end(), host.address);
    assert!(url.starts_with("tcp://127.0.0.1:") && !url.trim_end().ends_with(":0"), "{url}");
    let mut c = host.client();
    assert_eq!(c.post("/Plugin.Activate", ""), (200, json!({"Implements": ["VolumeDriver"]})));
    assert_eq!(c.post("/VolumeDriver.Create", r#"{"Name":"t1"}"#), (200, json!({})));
    assert_eq!(c.post("/VolumeDriver.List", "{}").1["Volumes"][0]["Name"], "t1");
    let (status, stderr) = host.stop(libc::SIGINT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!spec.exists(), "the spec file is removed on exit");
}

fn host_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-plugin-host"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "nothing is served");
    stderr
}

#[test]
fn a_missing_or_invalid_plugin_exits_1_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock").display().to_string();
    let root = dir.path().join("root").display().to_string();
    let missing = dir.path().join("libberth_ghost.so").display().to_string();
    let stderr =
        host_fails(&["--plugin", &missing, "--socket", &socket, "--root", &root, "--run-root", &root]);
    assert!(stderr.contains(&missing) && stderr.contains("not found"), "{stderr}");

    let junk = dir.path().join("libjunk.so");
    std::fs::write(&junk, "not an ELF file").unwrap();
    let junk = junk.display().to_string();
    let stderr = host_fails(&["--plugin", &junk, "--socket", &socket, "--root", &root, "--run-root", &root]);
    assert!(stderr.contains(&junk), "{stderr}");
    assert!(!Path::new(&socket).exists(), "nothing listens");
}

#[test]
fn bad_options_exit_1_with_the_reason() {
    let so = local_so();
    let so = so.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let base = ["--plugin", &so, "--socket", &d("s.sock"), "--root", &d("root"), "--run-root", &d("run")];
    let stderr = host_fails(&[&base[..], &["--options", "{not json"]].concat());
    assert!(stderr.contains("--options is not valid JSON"), "{stderr}");
    let stderr = host_fails(&[&base[..], &["--options", r#"{"nope":1}"#]].concat());
    assert!(stderr.contains("the volume driver of") && stderr.contains("invalid_argument"), "{stderr}");
    assert!(stderr.contains("nope"), "{stderr}");
}
