//! Shared fixtures of the integration tests: a loop-mounted btrfs made for
//! one test and always taken down, a driver on it loaded through the real
//! ABI path, and small helpers.
//!
//! Only tests run the `btrfs-progs` commands (`mkfs.btrfs`, `btrfs`); the
//! driver never does.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, StorageDriver};

/// Runs `cmd` with `args`; the error is its exit status and stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` and panics when it fails.
#[track_caller]
pub fn must(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A btrfs filesystem of its own: a 1 GiB sparse image in a fresh temp
/// dir, attached to a loop device, made with `mkfs.btrfs` and mounted
/// below the temp dir. Dropping it (also when a test panics) unmounts
/// lazily, detaches the loop device and deletes the image.
pub struct LoopBtrfs {
    dev: Option<String>,
    mounted: bool,
    mnt: PathBuf,
    dir: tempfile::TempDir,
}

impl LoopBtrfs {
    pub fn new() -> LoopBtrfs {
        assert!(
            run("mkfs.btrfs", &["--version"]).is_ok(),
            "mkfs.btrfs is missing: install btrfs-progs (`apt-get install -y btrfs-progs`)"
        );
        let dir = tempfile::Builder::new().prefix("berth-btrfs-test-").tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut fs = LoopBtrfs { dev: None, mounted: false, mnt, dir };
        // From here on a panic drops `fs`, which undoes what was done.
        let dev = must("losetup", &["--find", "--show", image.to_str().unwrap()]).trim().to_string();
        fs.dev = Some(dev.clone());
        must("mkfs.btrfs", &["-q", &dev]);
        must("mount", &["-t", "btrfs", &dev, fs.mnt.to_str().unwrap()]);
        fs.mounted = true;
        fs
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Enables quotas (qgroups) with the `btrfs` command.
    pub fn enable_quota(&self) -> Result<String, String> {
        run("btrfs", &["quota", "enable", self.mnt.to_str().unwrap()])
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = run("umount", &["--lazy", self.mnt.to_str().unwrap()]) {
                eprintln!("cannot unmount the test btrfs: {e}");
            }
        }
        if let Some(dev) = &self.dev {
            if let Err(e) = run("losetup", &["--detach", dev]) {
                eprintln!("cannot detach {dev}: {e}");
            }
        }
        // `dir`, with the image, is deleted after this, as fields drop.
    }
}

/// A btrfs driver loaded through the ABI, on `<mount>/root` of a loop
/// btrfs of its own. Dropping it calls `cleanup`, drops the driver, then
/// takes the filesystem down.
pub struct Env {
    pub driver: Arc<dyn StorageDriver>,
    pub fs: LoopBtrfs,
}

impl Env {
    pub fn new() -> Env {
        let fs = LoopBtrfs::new();
        let driver = ready(open(fs.path()));
        Env { driver, fs }
    }

    /// The driver root (canonical).
    pub fn root(&self) -> PathBuf {
        self.fs.path().join("root").canonicalize().unwrap()
    }

    /// Drops the driver without `cleanup` (as a crash would) and opens a new
    /// one on the same root.
    pub fn reopen(&mut self) {
        self.driver = ready(open(self.fs.path()));
    }

    pub fn create(&self, id: &str, parent: &str) -> DriverResult<()> {
        self.driver.create(CreateRequest::new(id, parent))
    }

    pub fn create_rw(&self, id: &str, parent: &str) -> DriverResult<()> {
        self.driver.create_rw(CreateRequest::new(id, parent))
    }

    /// `create_rw` (or `create`) with storage option `size`.
    pub fn create_sized(&self, id: &str, parent: &str, size: &str, rw: bool) -> DriverResult<()> {
        let mut req = CreateRequest::new(id, parent);
        req.storage_opt.insert("size".into(), size.into());
        if rw {
            self.driver.create_rw(req)
        } else {
            self.driver.create(req)
        }
    }

    pub fn get(&self, id: &str) -> DriverResult<PathBuf> {
        self.driver.get(GetRequest::new(id)).map(|g| PathBuf::from(g.path))
    }

    pub fn put(&self, id: &str) -> DriverResult<()> {
        self.driver.put(PutRequest::new(id))
    }

    pub fn remove(&self, id: &str) -> DriverResult<()> {
        self.driver.remove(RemoveRequest::new(id))
    }

    pub fn exists(&self, id: &str) -> bool {
        self.driver.exists(ExistsRequest::new(id)).expect("exists never fails")
    }

    pub fn metadata(&self, id: &str) -> DriverResult<BTreeMap<String, String>> {
        self.driver.metadata(MetadataRequest::new(id)).map(|m| m.metadata)
    }

    pub fn status(&self) -> BTreeMap<String, String> {
        self.driver.status(StatusRequest::default()).unwrap().status.into_iter().collect()
    }

    pub fn cleanup(&self) -> DriverResult<()> {
        self.driver.cleanup(CleanupRequest::default())
    }

    /// Writes `content` to `name` in read-write layer `id` through `get`.
    pub fn write(&self, id: &str, name: &str, content: &[u8]) {
        let p = self.get(id).unwrap();
        std::fs::write(p.join(name), content).unwrap();
        self.put(id).unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}

/// Opens a btrfs driver on `<dir>/root` and `<dir>/run` through the ABI.
pub fn open(dir: &Path) -> DriverResult<Init<Arc<dyn StorageDriver>>> {
    open_with(dir, serde_json::Value::Null)
}

/// Same as [`open`], with driver options.
pub fn open_with(dir: &Path, options: serde_json::Value) -> DriverResult<Init<Arc<dyn StorageDriver>>> {
    let module = PluginModule::linked(berth_storage_btrfs::export::berth_plugin_root());
    let mut req =
        InitRequest::new("btrfs", dir.join("root").to_str().unwrap(), dir.join("run").to_str().unwrap());
    req.options = options;
    module.new_storage(&req)
}

/// The ready driver, or a panic with the reason it declined.
#[track_caller]
pub fn ready(init: DriverResult<Init<Arc<dyn StorageDriver>>>) -> Arc<dyn StorageDriver> {
    match init.expect("btrfs driver starts") {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("btrfs declined to run: {why} (these tests need root)"),
    }
}

/// Asserts `res` failed with `kind` and returns the error.
#[track_caller]
pub fn expect_err<T>(res: DriverResult<T>, kind: ErrorKind) -> DriverError {
    let Err(err) = res else { panic!("expected a {kind} error, got success") };
    assert_eq!(err.kind, kind, "wrong kind for: {}", err.message);
    err
}

/// Whether `path` is the root of a btrfs subvolume (inode 256).
pub fn is_subvolume(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

/// Whether subvolume `path` is read-only, asked with the `btrfs` command.
pub fn is_read_only(path: &Path) -> bool {
    must("btrfs", &["property", "get", "-ts", path.to_str().unwrap(), "ro"]).trim() == "ro=true"
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}
