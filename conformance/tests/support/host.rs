//! The real `berth-plugin-host` serving a plugin `.so` on a unix socket,
//! for the remote runs (built here with `cargo build -p berth-plugin-host`
//! in the tests' profile).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Builds `berth-plugin-host` and returns its binary.
pub fn plugin_host_bin() -> PathBuf {
    super::plugin_so("berth-plugin-host", "berth-plugin-host")
}

/// A running `berth-plugin-host`; stopped with SIGTERM on drop (and its
/// root removed).
pub struct PluginHost {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    dir: tempfile::TempDir,
    /// `unix://<dir>/<name>.sock`.
    pub address: String,
}

impl PluginHost {
    /// Serves `so` as plugin `name` on `<fresh dir>/<name>.sock`, its
    /// `--root` and `--run-root` in the same directory; waits for its
    /// "serving" line.
    pub fn start(so: &Path, name: &str) -> PluginHost {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(format!("{name}.sock"));
        let mut child = Command::new(plugin_host_bin())
            .arg("--plugin")
            .arg(so)
            .arg("--socket")
            .arg(&socket)
            .args(["--name", name, "--root"])
            .arg(dir.path().join("root"))
            .arg("--run-root")
            .arg(dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth-plugin-host");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if !line.starts_with("serving ") {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth-plugin-host printed no serving line (got {line:?}); stderr:\n{}",
                stderr.join().unwrap()
            );
        }
        let address = format!("unix://{}", socket.display());
        assert!(line.trim_end().ends_with(&address), "{line}");
        PluginHost { child, stderr: Some(stderr), dir, address }
    }

    /// The plugin's own state directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Whether the host still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Stops it with SIGTERM; answers its stderr.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) with the pid of our own child, not yet reaped (so
        // the pid cannot have been reused).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.terminate();
    }
}
