//! Network namespaces as files: made on a dedicated thread with
//! `unshare(CLONE_NEWNET)` and kept alive by a bind mount of
//! `/proc/thread-self/ns/net` at the sandbox's key; entered only by
//! dedicated short-lived threads (`setns` changes the calling thread for
//! good, so it never runs on a thread that is used for anything else).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};

use super::netlink::Netlink;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Bind-mounts `source` at `target` (an existing file).
fn bind(source: &Path, target: &Path) -> io::Result<()> {
    let (s, t) = (cpath(source)?, cpath(target)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the
    // call; filesystem type and data may be null for a bind mount.
    let rc =
        unsafe { libc::mount(s.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detaches the mount at `target`; not being a mount point (or not
/// existing) is not an error.
fn unmount(target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: `t` is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
    }
}

/// Whether `path` is a namespace file (a bind mount of an `nsfs` inode).
pub fn is_netns(path: &Path) -> bool {
    let Ok(c) = cpath(path) else { return false };
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// `NSFS_MAGIC` of `linux/magic.h`.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Runs `f` on a new thread that first enters the network namespace
/// `netns_fd`; the thread ends with `f`, so no other work ever runs in a
/// thread whose namespace was changed.
pub fn run_in_fd<R: Send>(netns_fd: RawFd, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    std::thread::scope(|s| {
        let t = std::thread::Builder::new().name("berth-netns".into()).spawn_scoped(s, move || {
            // SAFETY: setns on this fresh thread only; the fd is a valid
            // namespace fd the caller keeps open for the call.
            if unsafe { libc::setns(netns_fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })?;
        t.join().map_err(|_| io::Error::other("a namespace thread panicked"))?
    })
}

/// Runs `f` inside the namespace whose file is `key`, on a dedicated thread
/// that ends with it.
pub fn run_in<R: Send>(key: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let ns = File::open(key)?;
    run_in_fd(ns.as_raw_fd(), f)
}

/// Creates a network namespace kept at `key` (a new file), with its
/// loopback up. Nothing is left behind when it fails.
pub fn create(key: &Path) -> DriverResult<()> {
    if let Some(dir) = key.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DriverError::io(format!("create {}", dir.display()), &e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(key)
        .map_err(|e| DriverError::io(format!("create namespace file {}", key.display()), &e))?;
    let made = std::thread::scope(|s| {
        let t = std::thread::Builder::new().name("berth-netns-new".into()).spawn_scoped(s, || {
            // SAFETY: unshare on this fresh thread only: it moves this
            // thread (not the process) into a new network namespace, and
            // the thread ends right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(("unshare(CLONE_NEWNET)", io::Error::last_os_error()));
            }
            bind(Path::new("/proc/thread-self/ns/net"), key).map_err(|e| ("bind-mount the namespace", e))?;
            let mut nl = Netlink::open().map_err(|e| ("open netlink", e))?;
            let lo = nl.link("lo").map_err(|e| ("find lo", e))?.map(|l| l.index).unwrap_or(1);
            nl.set_link(lo, Vec::new(), Some(true)).map_err(|e| ("set lo up", e))
        });
        match t {
            Ok(t) => t.join().unwrap_or_else(|_| Err(("create", io::Error::other("the thread panicked")))),
            Err(e) => Err(("spawn a thread", e)),
        }
    });
    match made {
        Ok(()) => Ok(()),
        Err((what, e)) => {
            let mut err = DriverError::io(format!("create network namespace {}: {what}", key.display()), &e);
            if let Err(undo) = remove(key) {
                err.message.push_str(&format!("; undoing it failed too: {undo}"));
            }
            Err(err)
        }
    }
}

/// Removes the namespace kept at `key`: detaches the mount and deletes the
/// file; tries both and reports every failure. A missing file is done.
pub fn remove(key: &Path) -> DriverResult<()> {
    let mut errors = Vec::new();
    if let Err(e) = unmount(key) {
        errors.push(format!("unmount {}: {e}", key.display()));
    }
    match std::fs::remove_file(key) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("remove {}: {e}", key.display())),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(DriverError::internal(format!("remove network namespace: {}", errors.join("; "))))
    }
}

/// Makes `key` a namespace file of the daemon's own (host) namespace, as
/// moby's `netns/default`; an existing one is kept.
pub fn bind_host(key: &Path) -> DriverResult<()> {
    if is_netns(key) {
        return Ok(());
    }
    if let Some(dir) = key.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DriverError::io(format!("create {}", dir.display()), &e))?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).open(key) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(DriverError::io(format!("create namespace file {}", key.display()), &e)),
    }
    bind(Path::new("/proc/self/ns/net"), key).map_err(|e| {
        let _ = std::fs::remove_file(key);
        DriverError::io(format!("bind-mount the host namespace at {}", key.display()), &e)
    })
}
