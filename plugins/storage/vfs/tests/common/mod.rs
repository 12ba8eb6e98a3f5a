//! Shared fixtures of the integration tests: a driver loaded through the
//! real ABI path, a guard that cleans up mounts even when a test fails, a
//! tree oracle and small syscall helpers.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, StorageDriver};

/// A fresh root and run root with a vfs driver loaded through the ABI.
/// Dropping it calls `cleanup` and then detaches anything still mounted
/// below its directory, so a failing test leaks no mount.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub driver: Arc<dyn StorageDriver>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let driver = open(dir.path()).expect("vfs driver starts");
        Env { dir, driver }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Drops the driver without `cleanup` (as a crash would) and opens a new
    /// one on the same roots.
    pub fn reopen(&mut self) {
        self.driver = open(self.dir.path()).expect("vfs driver restarts");
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
        let mut r = GetRequest::default();
        r.id = id.into();
        self.driver.get(r).map(|g| PathBuf::from(g.path))
    }

    pub fn put(&self, id: &str) -> DriverResult<()> {
        let mut r = PutRequest::default();
        r.id = id.into();
        self.driver.put(r)
    }

    pub fn remove(&self, id: &str) -> DriverResult<()> {
        let mut r = RemoveRequest::default();
        r.id = id.into();
        self.driver.remove(r)
    }

    pub fn exists(&self, id: &str) -> bool {
        let mut r = ExistsRequest::default();
        r.id = id.into();
        self.driver.exists(r).expect("exists never fails")
    }

    pub fn metadata(&self, id: &str) -> DriverResult<BTreeMap<String, String>> {
        let mut r = MetadataRequest::default();
        r.id = id.into();
        self.driver.metadata(r).map(|m| m.metadata)
    }

    /// The directory of layer `id`, from its metadata.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        PathBuf::from(&self.metadata(id).unwrap()["Dir"])
    }

    pub fn status(&self) -> BTreeMap<String, String> {
        self.driver.status(StatusRequest::default()).unwrap().status.into_iter().collect()
    }

    pub fn cleanup(&self) -> DriverResult<()> {
        self.driver.cleanup(CleanupRequest::default())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.cleanup();
        for m in mounts_under(self.dir.path()) {
            let c = CString::new(m.as_os_str().as_bytes()).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path for the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Opens a vfs driver on `<dir>/root` and `<dir>/run` through the ABI.
pub fn open(dir: &Path) -> DriverResult<Arc<dyn StorageDriver>> {
    open_with(dir, serde_json::Value::Null)
}

/// Same as [`open`], with driver options.
pub fn open_with(dir: &Path, options: serde_json::Value) -> DriverResult<Arc<dyn StorageDriver>> {
    let module = PluginModule::linked(berth_storage_vfs::export::berth_plugin_root());
    let mut req =
        InitRequest::new("vfs", dir.join("root").to_str().unwrap(), dir.join("run").to_str().unwrap());
    req.options = options;
    match module.new_storage(&req)? {
        Init::Ready(d) => Ok(d),
        Init::Skipped(why) => panic!("vfs declined to run: {why} (these tests need root)"),
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

/// One entry of the flat-directory oracle: everything a copy must keep,
/// except the access time (reading a tree changes it; checked separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Vec<u8>,
    pub link_target: Option<PathBuf>,
    pub rdev: u64,
    pub mtime: (i64, i64),
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// The first path (in sorted order) of this entry's hardlink group.
    pub link_group: Option<PathBuf>,
}

/// The flat oracle of the tree at `root`: relative path → entry.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(rel) = todo.pop() {
        let path = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let m = fs::symlink_metadata(&path).unwrap();
        all.push((rel.clone(), m.clone()));
        if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(&path).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            todo.extend(names.into_iter().rev().map(|n| rel.join(n)));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, m) in all {
        let path = if rel.as_os_str().is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let ft = m.file_type();
        let kind = match () {
            _ if ft.is_dir() => "dir",
            _ if ft.is_file() => "file",
            _ if ft.is_symlink() => "symlink",
            _ if ft.is_fifo() => "fifo",
            _ if ft.is_socket() => "socket",
            _ if ft.is_char_device() => "char",
            _ if ft.is_block_device() => "block",
            _ => "unknown",
        };
        let link_group = (!ft.is_dir() && m.nlink() > 1)
            .then(|| inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone());
        let entry = Entry {
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_dir() { 0 } else { m.size() },
            content: if ft.is_file() { fs::read(&path).unwrap() } else { Vec::new() },
            link_target: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
            rdev: m.rdev(),
            mtime: (m.mtime(), m.mtime_nsec()),
            xattrs: xattrs(&path),
            link_group,
        };
        out.insert(rel, entry);
    }
    out
}

/// Asserts two oracles are equal, naming the first differing path.
#[track_caller]
pub fn assert_same_tree(expected: &BTreeMap<PathBuf, Entry>, actual: &BTreeMap<PathBuf, Entry>) {
    let e: Vec<_> = expected.keys().collect();
    let a: Vec<_> = actual.keys().collect();
    assert_eq!(e, a, "the trees list different paths");
    for (path, want) in expected {
        assert_eq!(want, &actual[path], "entry {} differs", path.display());
    }
}

/// All xattrs of `path` (not following a symlink).
pub fn xattrs(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `c` is a valid path; `buf` is writable for its full length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
    buf.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in buf.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: both strings are valid; `val` is writable for its length.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        assert!(len >= 0, "lgetxattr {}: {}", path.display(), std::io::Error::last_os_error());
        val.truncate(len as usize);
        out.insert(OsString::from_vec(name.to_vec()), val);
    }
    out
}

/// Sets xattr `name` of `path` (not following a symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are valid; `value` is readable for its length.
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "lsetxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

/// mknod(2).
pub fn mknod(path: &Path, mode: u32, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) };
    assert_eq!(r, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

/// Sets atime and mtime of `path` (not following a symlink), to the
/// nanosecond.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 },
        libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 },
    ];
    // SAFETY: `c` is a valid path and `ts` holds the two timespecs read.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// lchown(2) through std.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// chmod, exactly `mode` (umask does not apply).
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}
