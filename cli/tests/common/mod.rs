//! Shared harness of the end-to-end tests: real `berthd` and `berth`
//! binaries, real plugin `.so` files, one fresh temporary directory per
//! test holding root, exec root, socket and config. The guards kill the
//! daemon and remove the directory even when a test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The packages the tests need built besides `berth` itself.
const PACKAGES: [&str; 8] = [
    "berth-daemon",
    "berth-storage-vfs",
    "berth-network-none",
    "berth-network-host",
    "berth-ipam-default",
    "berth-volume-local",
    "berth-fixture-faulty",
    "berth-plugin-host",
];

/// Where cargo put `berth` (and so `berthd` and the plugins).
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth")).parent().expect("berth has a directory").to_path_buf()
}

/// Builds berthd and the plugins once per test binary, in the profile the
/// tests were built with.
pub fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build").current_dir(env!("CARGO_MANIFEST_DIR"));
        for p in PACKAGES {
            cmd.args(["-p", p]);
        }
        if target_dir().file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build of berthd and the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The berthd binary.
pub fn berthd_bin() -> PathBuf {
    ensure_built();
    target_dir().join("berthd")
}

/// One test's world: a temporary directory with root, exec root, socket
/// and a config file. Removed on drop.
pub struct World {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub exec_root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
}

/// Extra `[[plugin]]` text appended to the five built-ins.
pub const FAULTY: &str = r#"
[[plugin]]
name = "faulty"
path = "libberth_fixture_faulty.so"
timeout = "1s"
"#;

impl World {
    /// A world whose config loads the five built-ins plus `extra` plugin
    /// tables, searching the target directory.
    pub fn new(extra: &str) -> World {
        ensure_built();
        let dir = tempfile::Builder::new().prefix("berth-e2e-").tempdir().expect("temp dir");
        let root = dir.path().join("root");
        let exec_root = dir.path().join("run");
        let socket = dir.path().join("run/berth.sock");
        let config = dir.path().join("berth.toml");
        let w = World { root, exec_root, socket, config, dir };
        std::fs::write(&w.config, w.config_text(extra)).expect("write config");
        w
    }

    /// The config text of this world.
    pub fn config_text(&self, extra: &str) -> String {
        format!(
            r#"[daemon]
root = "{root}"
exec_root = "{run}"
socket = "{sock}"
plugin_dirs = ["{target}"]
call_timeout = "10s"
plugin_socket_dirs = ["{plugins}"]
plugin_spec_dirs = ["{plugins}"]
plugin_wait = "5s"

[storage]
driver = "vfs"

[network]
default = "none"
ipam = "default"

[volume]
default = "local"

[[plugin]]
name = "vfs"
path = "libberth_storage_vfs.so"

[[plugin]]
name = "none"
path = "libberth_network_none.so"

[[plugin]]
name = "host"
path = "libberth_network_host.so"

[[plugin]]
name = "default"
path = "libberth_ipam_default.so"

[[plugin]]
name = "local"
path = "libberth_volume_local.so"
options = {{ data_dir = "${{root}}/volumes" }}
{extra}"#,
            root = self.root.display(),
            run = self.exec_root.display(),
            sock = self.socket.display(),
            target = target_dir().display(),
            plugins = self.plugins_dir().display(),
        )
    }

    /// Where this world's daemon discovers remote plugins (sockets and
    /// spec files); created on first use.
    pub fn plugins_dir(&self) -> PathBuf {
        let d = self.dir.path().join("plugins");
        std::fs::create_dir_all(&d).expect("create the plugins dir");
        d
    }

    /// Writes another config file in this world.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// `unix://<socket>`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Starts berthd on this world's config and waits until it answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&[], &[])
    }

    /// Starts berthd with extra arguments and environment.
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut d = self.spawn(args, env);
        d.wait_ready(&self.socket);
        d
    }

    /// Spawns berthd on this world's config without waiting.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut all = vec!["--config", self.config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        self.spawn_bare(&all, env)
    }

    /// Spawns berthd with exactly `args` (no --config) without waiting.
    pub fn spawn_bare(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = unique(self.dir.path().join("berthd"));
        let mut cmd = Command::new(berthd_bin());
        cmd.args(args).env_remove("BERTH_CRASH_AT").env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let file = std::fs::File::create(&log).expect("log file");
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file);
        let child = cmd.spawn().expect("spawn berthd");
        Daemon { child: Some(child), log }
    }

    /// Runs `berth` against this world's daemon.
    pub fn berth(&self, args: &[&str]) -> Output {
        berth(&self.host(), args)
    }

    /// Runs `berth`, asserts it succeeded, answers its stdout.
    pub fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(out.status.success(), "berth {args:?} failed: {}", describe(&out));
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `berth ... --format json` style commands and parses stdout.
    pub fn berth_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.berth_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("berth {args:?}: not JSON ({e}): {out}"))
    }

    /// Names listed by `berth volume ls --format json`.
    pub fn volume_names(&self) -> Vec<String> {
        let v = self.berth_json(&["volume", "ls", "--format", "json"]);
        v.as_array().expect("array").iter().map(|v| v["Name"].as_str().expect("Name").to_string()).collect()
    }
}

impl Drop for World {
    /// Whatever a failed test left mounted under the world (a volume's
    /// backing tmpfs, say) is detached before the directory goes.
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

/// Detaches every mount at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let base = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> =
        table.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&base)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

fn unique(p: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let candidate = p.with_extension(format!("{n}.log"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

/// Runs `berth` with `--host host`.
pub fn berth(host: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--host")
        .arg(host)
        .args(args)
        .env_remove("BERTH_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

/// Exit status, stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running berthd; killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/_ping` answers, or panics with the log.
    pub fn wait_ready(&mut self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(resp) = http(socket, "GET /_ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") {
                if resp.status == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                panic!("berthd exited ({status}) before answering; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not answer /_ping within 20 s; log:\n{}", self.log());
    }

    /// Waits at most `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of our own child process and a
        // valid signal number has no memory-safety preconditions.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill {sig}");
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- berthd log {}:\n{}", self.log.display(), self.log());
            }
        }
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one raw request (which should say `Connection: close`) over the
/// socket with std's UnixStream and reads the whole answer.
pub fn http(socket: &Path, request: &str) -> std::io::Result<RawResponse> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(RawResponse { status, headers, body: body.to_string() })
}

/// A `Connection: close` request with an optional JSON body.
pub fn request(method: &str, path: &str, body: Option<&str>) -> String {
    match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    }
}

/// Debian's docker client (package `docker.io`), pointed at berthd in the
/// interoperability tests.
pub const DOCKER: &str = "/usr/bin/docker";

/// Runs Debian's `docker` against `w`'s daemon, with a private client
/// config and no inherited host or context.
pub fn docker(w: &World, args: &[&str]) -> Output {
    assert!(
        Path::new(DOCKER).exists(),
        "{DOCKER} is missing: install Debian's client with `apt-get install -y docker.io` (.ci/test does)"
    );
    Command::new(DOCKER)
        .arg("-H")
        .arg(w.host())
        .args(args)
        .env("DOCKER_CONFIG", w.dir.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("run docker")
}

/// [`docker`], asserting success; answers stdout.
pub fn docker_ok(w: &World, args: &[&str]) -> String {
    let out = docker(w, args);
    assert!(out.status.success(), "docker {args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
