//! Read-only bind mounts of layers, and the mount table.
//!
//! A read-only layer is exposed by `get` as a bind mount of its directory,
//! made private (so it neither receives nor sends mount events) and then
//! remounted read-only, `nosuid` and `nodev`, keeping the `noexec` and atime
//! flags of the file system underneath.

use std::io;
use std::path::{Path, PathBuf};

use berth_plugin_api::util::mounts::mount_points;

use crate::sys;

/// Bind-mounts `source` read-only on the existing directory `target`. On
/// failure nothing stays mounted.
///
/// The new mount API makes the mount read-only before it is attached; on
/// kernels without it (before 5.12) the classic bind-then-remount is used,
/// where a copy propagated to a peer mount namespace at bind time stays
/// writable there.
pub(crate) fn bind_ro(source: &Path, target: &Path) -> io::Result<()> {
    match sys::bind_ro_detached(source, target) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => bind_ro_classic(source, target),
        Err(e) => Err(e),
        Ok(()) => sys::remount(target, libc::MS_PRIVATE).inspect_err(|_| {
            let _ = sys::umount_detach(target);
        }),
    }
}

/// [`bind_ro`] with `mount(2)`: bind, make private, remount read-only.
fn bind_ro_classic(source: &Path, target: &Path) -> io::Result<()> {
    let keep = sys::mount_flags(source)?;
    sys::bind_mount(source, target)?;
    let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | keep;
    let made = sys::remount(target, libc::MS_PRIVATE).and_then(|()| sys::remount(target, ro));
    if let Err(e) = made {
        // Never leave a writable view behind: best effort, the mount error
        // is the one worth reporting.
        let _ = sys::umount_detach(target);
        return Err(e);
    }
    Ok(())
}

/// Unmounts `target`. A path that is not a mount point (`EINVAL`) counts as
/// already unmounted.
pub(crate) fn unmount(target: &Path) -> io::Result<()> {
    match sys::umount_detach(target) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !is_mount_point(target)? => Ok(()),
        other => other,
    }
}

/// Whether `path` is a mount point of this process's mount namespace.
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mount_points()?.iter().any(|m| m == path))
}

/// Every mount point strictly below `dir`, deepest first (so they can be
/// unmounted in order). A path mounted several times appears several times.
pub(crate) fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = berth_plugin_api::util::mounts::mounts_under(dir)?;
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mounts with `mount` and checks the result: read-only (a real write
    /// fails), `nosuid`, `nodev`, listed, and unmounted idempotently.
    fn check_bind_ro(mount: fn(&Path, &Path) -> io::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        mount(&src, &dst).unwrap();
        let write = std::fs::write(dst.join("g"), b"y");
        let mounted = is_mount_point(&dst).unwrap();
        let under = mounts_under(dir.path()).unwrap();
        let flags = sys::mount_flags(&dst);
        unmount(&dst).unwrap();
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
        assert!(mounted);
        assert_eq!(under, vec![dst.clone()]);
        let flags = flags.unwrap();
        assert_eq!(flags & (libc::MS_NOSUID | libc::MS_NODEV), libc::MS_NOSUID | libc::MS_NODEV);
        assert_eq!(std::fs::read(src.join("f")).unwrap(), b"x");
        assert!(!is_mount_point(&dst).unwrap());
        unmount(&dst).unwrap();
    }

    #[test]
    fn bind_ro_refuses_writes_and_unmount_is_idempotent() {
        check_bind_ro(bind_ro);
    }

    #[test]
    fn the_classic_fallback_is_read_only_too() {
        check_bind_ro(bind_ro_classic);
    }
}
