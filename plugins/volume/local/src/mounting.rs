//! The host seam: mounting a mount-backed volume's filesystem on its data
//! directory, unmounting it, and reading the mount table.
//!
//! [`Kernel`] does it with mount(2) the way moby's `mount.Mount` does: one
//! call with every flag but the propagation type, one to change the
//! propagation type if `o` names one, and for a read-only bind a remount to
//! make it read-only (a bind ignores `MS_RDONLY` on the first call). Unlike
//! moby, a failure in a later step undoes the earlier ones, so a failed
//! mount leaves nothing mounted. Unit tests swap in a fake.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::util::mounts;

use crate::options::{Backing, PROPAGATION};

/// How many mounts stacked on one data directory an unmount peels off
/// before it gives up.
const MAX_STACKED: usize = 16;

/// What the driver needs from the host to mount volumes.
pub trait Host: Send + Sync + fmt::Debug {
    /// Mounts `backing` on the existing directory `target`. On failure
    /// nothing stays mounted there.
    fn mount(&self, backing: &Backing, target: &Path) -> io::Result<()>;

    /// Unmounts `target` until nothing is mounted there; a path with
    /// nothing mounted succeeds.
    fn unmount(&self, target: &Path) -> io::Result<()>;

    /// The mount points of the mount table.
    fn mount_points(&self) -> io::Result<Vec<PathBuf>>;
}

/// The path the mount table would show for `path` (symlinks resolved).
pub fn table_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether something is mounted on `path`, given a mount table.
pub fn is_mounted_in(table: &[PathBuf], path: &Path) -> bool {
    let path = table_path(path);
    table.contains(&path)
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Kernel;

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains a NUL byte")))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2) with optional source, type and data.
fn sys_mount(
    source: Option<&CStr>,
    target: &CStr,
    fs_type: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a valid NUL-terminated string that
    // outlives the call; mount(2) reads the data page only as a string
    // here, since no filesystem we pass gets binary data.
    check(unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fs_type), flags, ptr(data).cast()) })
}

fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

impl Host for Kernel {
    fn mount(&self, b: &Backing, target: &Path) -> io::Result<()> {
        let source = cstring(b.device.as_bytes(), "device")?;
        let fs_type = cstring(b.fs_type.as_bytes(), "type")?;
        let data = cstring(b.data.as_bytes(), "o")?;
        let t = cstring(target.as_os_str().as_bytes(), "target path")?;
        let first = b.flags & !PROPAGATION;
        let data = (!b.data.is_empty()).then_some(data.as_c_str());
        sys_mount(Some(&source), &t, Some(&fs_type), first, data)?;
        let mut rest = Ok(());
        if b.flags & PROPAGATION != 0 {
            let prop = b.flags & (PROPAGATION | libc::MS_REC | libc::MS_SILENT);
            rest = sys_mount(None, &t, None, prop, None);
        }
        let ro_bind = libc::MS_BIND | libc::MS_RDONLY;
        if rest.is_ok() && first & ro_bind == ro_bind {
            rest = sys_mount(None, &t, None, first | libc::MS_REMOUNT, None);
        }
        if let Err(e) = rest {
            // Never leave a half-made (say, writable) mount behind; the
            // error worth reporting is the mount's.
            let _ = umount2(&t, libc::MNT_DETACH);
            return Err(e);
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        let t = cstring(target.as_os_str().as_bytes(), "target path")?;
        for _ in 0..MAX_STACKED {
            if !is_mounted_in(&self.mount_points()?, target) {
                return Ok(());
            }
            match umount2(&t, libc::UMOUNT_NOFOLLOW) {
                Ok(()) => {}
                // Still in use by someone: detach it from the tree now; the
                // kernel frees it when the last user goes.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    umount2(&t, libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW)?
                }
                // Gone meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        if is_mounted_in(&self.mount_points()?, target) {
            return Err(io::Error::other(format!(
                "still mounted after {MAX_STACKED} unmounts (mounts stacked on it?)"
            )));
        }
        Ok(())
    }

    fn mount_points(&self) -> io::Result<Vec<PathBuf>> {
        mounts::mount_points()
    }
}

#[cfg(test)]
pub mod fake {
    //! A mount table in memory, for unit tests that run unprivileged.

    use std::sync::Mutex;

    use super::*;

    /// Counts mounts per path; `fail` makes the next mount fail.
    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub table: Mutex<Vec<PathBuf>>,
        pub fail: Mutex<Option<i32>>,
        pub calls: Mutex<usize>,
    }

    impl FakeHost {
        pub fn count(&self, path: &Path) -> usize {
            let p = table_path(path);
            self.table.lock().unwrap().iter().filter(|m| **m == p).count()
        }
    }

    impl Host for FakeHost {
        fn mount(&self, _b: &Backing, target: &Path) -> io::Result<()> {
            *self.calls.lock().unwrap() += 1;
            if let Some(errno) = self.fail.lock().unwrap().take() {
                return Err(io::Error::from_raw_os_error(errno));
            }
            self.table.lock().unwrap().push(table_path(target));
            Ok(())
        }

        fn unmount(&self, target: &Path) -> io::Result<()> {
            let p = table_path(target);
            self.table.lock().unwrap().retain(|m| *m != p);
            Ok(())
        }

        fn mount_points(&self) -> io::Result<Vec<PathBuf>> {
            Ok(self.table.lock().unwrap().clone())
        }
    }
}
