//! berth's drivers under a real dockerd: Debian's `dockerd` (package
//! `docker.io`) started by hand on its own socket, data root and exec root
//! with `--iptables=false --bridge=none`, and berth's built-in `local`
//! volume driver and `default` IPAM driver served out of process by
//! `berth-plugin-host` in dockerd's plugin directory. Debian's client
//! (`/usr/bin/docker`) creates, lists, inspects and removes volumes through
//! the one, and creates and removes a network through the other.
//!
//! Everything is removed afterwards, even when an assertion fails: dockerd
//! (stopped by its pid, with the containerd it started), the plugin
//! processes and sockets, the bridge, and the FORWARD policy is put back.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{describe, target_dir};

const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// dockerd's fixed socket directory for legacy plugins.
const DOCKER_PLUGINS: &str = "/run/docker/plugins";

/// Everything the test started; torn down on drop, every step tried.
struct Rig {
    dir: tempfile::TempDir,
    hosts: Vec<Child>,
    sockets: Vec<PathBuf>,
    dockerd: Option<Child>,
    forward_policy: Option<String>,
    bridge: String,
}

impl Rig {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}\n--- dockerd log\n{}", describe(&out), self.log());
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Serves `lib` with berth-plugin-host as Docker plugin `name`.
    fn host_plugin(&mut self, lib: &str, name: &str) {
        let socket = Path::new(DOCKER_PLUGINS).join(format!("{name}.sock"));
        std::fs::create_dir_all(DOCKER_PLUGINS).expect("create /run/docker/plugins");
        let root = self.dir.path().join(name);
        let child = Command::new(target_dir().join("berth-plugin-host"))
            .arg("--plugin")
            .arg(target_dir().join(lib))
            .arg("--socket")
            .arg(&socket)
            .arg("--name")
            .arg(name)
            .arg("--root")
            .arg(root.join("root"))
            .arg("--run-root")
            .arg(root.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap())
            .spawn()
            .expect("spawn berth-plugin-host");
        self.hosts.push(child);
        self.sockets.push(socket.clone());
        wait_for(&format!("{} to appear", socket.display()), || socket.exists());
    }

    fn start_dockerd(&mut self) {
        let d = self.dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--host")
            .arg(format!("unix://{}", self.socket().display()))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .args(["--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none"])
            .args(["--storage-driver", "vfs", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.docker(&["version"]).status.success() {
                return;
            }
            if let Some(s) = self.dockerd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("dockerd exited ({s}) before answering:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "dockerd did not answer within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut d) = self.dockerd.take() {
            // SIGTERM by pid: dockerd stops the containerd it started.
            // SAFETY: kill(2) on our own child's pid has no memory-safety
            // preconditions.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while d.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
        for mut h in self.hosts.drain(..) {
            // SAFETY: as above.
            unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(100));
            let _ = h.kill();
            let _ = h.wait();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
        if let Some(policy) = &self.forward_policy {
            let _ = Command::new("iptables").args(["-P", "FORWARD", policy]).status();
        }
        // Whatever dockerd left mounted under its roots.
        common::unmount_under(self.dir.path());
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn forward_policy() -> Option<String> {
    let out = Command::new("iptables").args(["-S", "FORWARD"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("-P FORWARD ").map(|p| p.trim().to_string()))
}

#[test]
fn dockerd_uses_berth_volume_and_ipam_drivers_served_by_the_plugin_host() {
    for bin in [DOCKER, DOCKERD] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install Debian's docker with `apt-get install -y docker.io` (.ci/test does)"
        );
    }
    common::ensure_built();
    let tag = std::process::id();
    let (vol, ipam) = (format!("berthvol{tag}"), format!("berthipam{tag}"));
    let mut rig = Rig {
        dir: tempfile::Builder::new().prefix("berth-dockerd-").tempdir().unwrap(),
        hosts: Vec::new(),
        sockets: Vec::new(),
        dockerd: None,
        forward_policy: forward_policy(),
        bridge: format!("bth{}", tag % 100_000),
    };
    rig.host_plugin("libberth_volume_local.so", &vol);
    rig.host_plugin("libberth_ipam_default.so", &ipam);
    rig.start_dockerd();

    // Volumes through the remote volume driver.
    assert_eq!(rig.ok(&["volume", "create", "-d", &vol, "--label", "team=db", "alpha"]).trim(), "alpha");
    rig.ok(&["volume", "create", "-d", &vol, "beta"]);
    let ls = rig.ok(&["volume", "ls", "--format", "{{.Driver}}/{{.Name}}"]);
    let mut listed: Vec<&str> = ls.lines().collect();
    listed.sort();
    assert_eq!(listed, [format!("{vol}/alpha"), format!("{vol}/beta")], "{ls}");
    let inspect =
        rig.ok(&["volume", "inspect", "--format", "{{.Driver}} {{.Mountpoint}} {{.Labels.team}}", "alpha"]);
    let root = rig.dir.path().join(&vol).join("root");
    assert_eq!(inspect.trim(), format!("{vol} {}/alpha/_data {}", root.display(), "db"), "{inspect}");
    assert!(root.join("alpha/_data").is_dir(), "the volume's data lives where berth's local driver keeps it");
    rig.ok(&["volume", "rm", "alpha", "beta"]);
    assert!(rig.ok(&["volume", "ls", "-q"]).trim().is_empty());
    assert!(!root.join("alpha").exists());

    // A network whose addresses come from the remote IPAM driver.
    let net = format!("bn{tag}");
    let bridge_opt = format!("com.docker.network.bridge.name={}", rig.bridge);
    let create = [
        "network",
        "create",
        "-d",
        "bridge",
        "--ipam-driver",
        &ipam,
        "--subnet",
        "10.231.7.0/24",
        "-o",
        &bridge_opt,
        &net,
    ];
    rig.ok(&create);
    let ipam_view = rig.ok(&[
        "network",
        "inspect",
        "--format",
        "{{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        &net,
    ]);
    assert_eq!(ipam_view.trim(), format!("{ipam} 10.231.7.0/24"), "{ipam_view}");
    // The gateway dockerd put on the bridge is the address the IPAM driver
    // handed out for it.
    let addr = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &rig.bridge]).output().unwrap();
    let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
    assert!(addr.contains("10.231.7.1/24"), "bridge {} carries the IPAM's gateway: {addr}", rig.bridge);
    rig.ok(&["network", "rm", &net]);
    let link = Command::new("ip").args(["link", "show", &rig.bridge]).output().unwrap();
    assert!(!link.status.success(), "dockerd removed the bridge with the network");
    // The pool went back to the IPAM driver: the same subnet can be had again.
    rig.ok(&create);
    rig.ok(&["network", "rm", &net]);
}
