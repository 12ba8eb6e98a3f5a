//! Helpers shared by the ABI tests: the driver is built through the real
//! plugin root, linked in-process, exactly as the daemon builds a `.so`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, VolumeDriver};

pub type Volumes = Arc<dyn VolumeDriver>;

pub fn module() -> PluginModule {
    PluginModule::linked(berth_volume_local::export::berth_plugin_root())
}

pub fn try_open(root: &Path, options: serde_json::Value) -> DriverResult<Volumes> {
    let mut init = InitRequest::new("local", root.to_str().unwrap(), root.join("run").to_str().unwrap());
    init.options = options;
    match module().new_volume(&init)? {
        Init::Ready(d) => Ok(d),
        Init::Skipped(why) => panic!("the local volume driver declined: {why}"),
    }
}

pub fn open(root: &Path) -> Volumes {
    try_open(root, serde_json::Value::Null).unwrap()
}

pub fn create(d: &Volumes, name: &str) -> DriverResult<()> {
    d.create(VolumeCreateRequest::new(name))
}

pub fn create_with(d: &Volumes, name: &str, opts: &[(&str, &str)]) -> DriverResult<()> {
    let mut req = VolumeCreateRequest::new(name);
    req.options = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    d.create(req)
}

pub fn remove(d: &Volumes, name: &str) -> DriverResult<()> {
    let mut req = VolumeRemoveRequest::default();
    req.name = name.into();
    d.remove(req)
}

pub fn mount(d: &Volumes, name: &str, id: &str) -> DriverResult<String> {
    let mut req = VolumeMountRequest::default();
    req.name = name.into();
    req.id = id.into();
    d.mount(req).map(|r| r.mountpoint)
}

pub fn unmount(d: &Volumes, name: &str, id: &str) -> DriverResult<()> {
    let mut req = VolumeUnmountRequest::default();
    req.name = name.into();
    req.id = id.into();
    d.unmount(req)
}

pub fn path(d: &Volumes, name: &str) -> DriverResult<String> {
    let mut req = VolumePathRequest::default();
    req.name = name.into();
    d.path(req).map(|r| r.mountpoint)
}

pub fn get(d: &Volumes, name: &str) -> DriverResult<VolumeInfo> {
    let mut req = VolumeGetRequest::default();
    req.name = name.into();
    d.get(req)
}

pub fn list(d: &Volumes) -> Vec<VolumeInfo> {
    d.list(VolumeListRequest::default()).unwrap()
}

pub fn names(d: &Volumes) -> Vec<String> {
    list(d).into_iter().map(|v| v.name).collect()
}

/// A 64-hex mount id, as the core makes them.
pub fn id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// Asserts `result` failed with `kind` and a message containing `text`.
#[track_caller]
pub fn assert_err<T>(result: DriverResult<T>, kind: ErrorKind, text: &str) -> DriverError {
    let Err(err) = result else { panic!("expected a {kind} error containing {text:?}, got success") };
    assert_eq!(err.kind, kind, "{}", err.message);
    assert!(err.message.contains(text), "{:?} does not contain {text:?}", err.message);
    err
}

// ---- Real-kernel helpers: every test that mounts works in a Sandbox, whose
// Drop unmounts what is left under it and detaches its loop devices before
// the directory is deleted, even when the test fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use berth_plugin_api::util::mounts::{mount_points, mounts_under};

/// Prints why a test did not run, past the test harness's capture, so a
/// skip is never mistaken for a pass.
pub fn skip(test: &str, reason: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIP {test}: {reason}");
}

/// Runs a command; its stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A temporary directory that cleans up mounts and loop devices first.
pub struct Sandbox {
    dir: tempfile::TempDir,
    loops: Mutex<Vec<String>>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().unwrap(), loops: Mutex::new(Vec::new()) }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<sandbox>/<rel>`, created.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A sparse image of `mib` MiB made by `mkfs` with `args`, attached to
    /// a loop device (detached when the sandbox goes). Err: why not.
    pub fn loop_fs(&self, name: &str, mib: u64, mkfs: &str, args: &[&str]) -> Result<String, String> {
        let img = self.path().join(format!("{name}.img"));
        std::fs::File::create(&img).and_then(|f| f.set_len(mib << 20)).map_err(|e| e.to_string())?;
        let img = img.to_str().unwrap();
        let mut all = args.to_vec();
        all.push(img);
        run(mkfs, &all)?;
        let dev = run("losetup", &["-f", "--show", img])?;
        self.loops.lock().unwrap().push(dev.clone());
        Ok(dev)
    }

    /// Mounts `dev` (type `fs_type`, options `o`) at `<sandbox>/<rel>`.
    pub fn mount(&self, fs_type: &str, dev: &str, rel: &str, o: &str) -> Result<PathBuf, String> {
        let at = self.mkdir(rel);
        let mut args = vec!["-t", fs_type];
        if !o.is_empty() {
            args.extend(["-o", o]);
        }
        args.extend([dev, at.to_str().unwrap()]);
        run("mount", &args)?;
        Ok(at)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.path()).unwrap_or_else(|_| self.path().to_path_buf());
        for _ in 0..32 {
            let mut left = mounts_under(&root).unwrap_or_default();
            if left.is_empty() {
                break;
            }
            left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in left {
                let _ = run("umount", &["-l", m.to_str().unwrap()]);
            }
        }
        for dev in self.loops.lock().unwrap().drain(..) {
            let _ = run("losetup", &["-d", &dev]);
        }
    }
}

/// How many times `path` is a mount point.
pub fn mount_count(path: &Path) -> usize {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mount_points().unwrap().iter().filter(|m| **m == p).count()
}

/// The raw OS error of a failed write of `len` bytes to `path`, if it fails.
pub fn write_error(path: &Path, len: usize) -> Option<i32> {
    let chunk = vec![0x5au8; 1 << 16];
    let res = (|| {
        let mut f = std::fs::File::create(path)?;
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n])?;
            left -= n;
        }
        f.sync_all()
    })();
    res.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// The options of a tmpfs volume of `size`.
pub fn tmpfs_opts(o: &str) -> Vec<(&'static str, String)> {
    vec![("type", "tmpfs".into()), ("device", "tmpfs".into()), ("o", o.to_owned())]
}

pub fn create_owned(d: &Volumes, name: &str, opts: &[(&str, String)]) -> DriverResult<()> {
    let pairs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    create_with(d, name, &pairs)
}
