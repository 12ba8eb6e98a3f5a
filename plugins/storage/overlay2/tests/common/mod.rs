//! Shared fixtures of the integration tests: a driver loaded through the
//! real ABI path and a guard that cleans up mounts even when a test fails.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, StorageDriver};

/// The two mount APIs the driver can be told to use.
pub const APIS: [&str; 2] = ["fsconfig", "mount"];

/// A fresh root with an overlay2 driver loaded through the ABI. Dropping
/// it calls `cleanup` and then detaches anything still mounted below its
/// directory, so a failing test leaks no mount.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub options: serde_json::Value,
    pub driver: Arc<dyn StorageDriver>,
}

impl Env {
    pub fn new() -> Env {
        Env::with_options(serde_json::Value::Null)
    }

    /// A driver told to use mount API `api` (`fsconfig` or `mount`).
    pub fn with_api(api: &str) -> Env {
        Env::with_options(serde_json::json!({ "mount_api": api }))
    }

    pub fn with_options(options: serde_json::Value) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let driver = ready(open_with(dir.path(), options.clone()).expect("overlay2 starts"));
        Env { dir, options, driver }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root").canonicalize().unwrap()
    }

    /// Drops the driver without `cleanup` (as a killed daemon would) and
    /// opens a new one on the same root.
    pub fn reopen(&mut self) {
        self.driver = ready(open_with(self.dir.path(), self.options.clone()).expect("overlay2 restarts"));
    }

    /// Mount points below this environment.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.dir.path())
    }

    pub fn create(&self, id: &str, parent: &str) -> DriverResult<()> {
        self.driver.create(CreateRequest::new(id, parent))
    }

    pub fn create_rw(&self, id: &str, parent: &str) -> DriverResult<()> {
        self.driver.create_rw(CreateRequest::new(id, parent))
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

    /// The `diff` dir of layer `id`, from its metadata.
    pub fn upper_of(&self, id: &str) -> PathBuf {
        PathBuf::from(&self.metadata(id).unwrap()["UpperDir"])
    }

    pub fn status(&self) -> BTreeMap<String, String> {
        self.driver.status(StatusRequest::default()).unwrap().status.into_iter().collect()
    }

    pub fn cleanup(&self) -> DriverResult<()> {
        self.driver.cleanup(CleanupRequest::default())
    }

    /// The chain `c0` .. `c{n-1}` of read-write layers, each adding the
    /// file `f<i>` through a mount of itself.
    pub fn chain(&self, n: usize) {
        for i in 0..n {
            let parent = if i == 0 { String::new() } else { format!("c{}", i - 1) };
            let id = format!("c{i}");
            self.create_rw(&id, &parent).unwrap();
            let p = self.get(&id).unwrap();
            std::fs::write(p.join(format!("f{i}")), i.to_string()).unwrap();
            self.put(&id).unwrap();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cleanup();
        for m in mounts_under(self.dir.path()) {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Opens an overlay2 driver on `<dir>/root` and `<dir>/run` through the ABI.
pub fn open_with(dir: &Path, options: serde_json::Value) -> DriverResult<Init<Arc<dyn StorageDriver>>> {
    let module = PluginModule::linked(berth_storage_overlay2::export::berth_plugin_root());
    let mut req =
        InitRequest::new("overlay2", dir.join("root").to_str().unwrap(), dir.join("run").to_str().unwrap());
    req.options = options;
    module.new_storage(&req)
}

/// The ready driver, or a panic with the reason it declined.
pub fn ready(init: Init<Arc<dyn StorageDriver>>) -> Arc<dyn StorageDriver> {
    match init {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("overlay2 declined to run: {why} (these tests need root and overlay)"),
    }
}

/// Asserts `res` failed with `kind` and returns the error.
#[track_caller]
pub fn expect_err<T>(res: DriverResult<T>, kind: ErrorKind) -> DriverError {
    let Err(err) = res else { panic!("expected a {kind} error, got success") };
    assert_eq!(err.kind, kind, "wrong kind for: {}", err.message);
    err
}

/// Mount points strictly below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    berth_plugin_api::util::mounts::mounts_under(dir).unwrap()
}

/// The sorted names in directory `dir`.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    out.sort();
    out
}
