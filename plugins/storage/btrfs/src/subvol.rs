//! Deleting trees that may hold subvolumes.
//!
//! A subvolume cannot be removed with `rmdir`; it is destroyed by name from
//! its parent directory (`BTRFS_IOC_SNAP_DESTROY`), and only once every
//! subvolume nested in it is gone (`ENOTEMPTY` otherwise). A subvolume's
//! root directory is the one with inode number 256. Nothing here crosses a
//! mount: callers refuse, or report, a path with mounts below it first.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys::{self as ioctl, FIRST_FREE_OBJECTID};

/// Whether `meta` (of a path on btrfs, not following symlinks) is the root
/// directory of a subvolume.
pub(crate) fn is_subvolume(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.ino() == FIRST_FREE_OBJECTID
}

/// Whether `path` is the root directory of a subvolume (`false` when it
/// does not exist).
pub(crate) fn path_is_subvolume(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(is_subvolume(&m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Destroys subvolume `path`: tries at once (the common case, one ioctl),
/// and when the kernel says it still holds subvolumes, destroys those first
/// (each with its own nested ones) and tries again. A read-only subvolume
/// is destroyed as well.
pub(crate) fn destroy(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no subvolume", path.display()),
        ));
    };
    let dir = ioctl::open_dir(parent)?;
    match ioctl::destroy_subvolume(&dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            destroy_nested(path)?;
            ioctl::destroy_subvolume(&dir, name)
        }
        other => other,
    }
}

/// Destroys every subvolume found below directory `dir` (not `dir`
/// itself), descending through plain directories only: a nested
/// subvolume's own nested subvolumes are handled by [`destroy`].
fn destroy_nested(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if is_subvolume(&meta) {
            destroy(&path)?;
        } else {
            destroy_nested(&path)?;
        }
    }
    Ok(())
}

/// Deletes `path` whatever it is: a subvolume (with those nested in it), a
/// plain directory (with any subvolume inside), a file or a symlink (never
/// followed). A missing path is fine.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if is_subvolume(&meta) {
        return destroy(path);
    }
    for entry in fs::read_dir(path)? {
        remove_any(&entry?.path())?;
    }
    fs::remove_dir(path)
}

/// [`remove_any`] for debris found under the driver root, refusing
/// (`EBUSY`) when something is mounted below `path`, which a recursive
/// delete must never reach through.
pub(crate) fn remove_debris(path: &Path) -> io::Result<()> {
    if let Some(m) = berth_plugin_api::util::mounts::mounts_under(path)?.first() {
        // `ErrorKind::ResourceBusy` by way of `EBUSY` (the name itself is
        // newer than the workspace's minimum Rust).
        let busy = io::Error::from_raw_os_error(libc::EBUSY).kind();
        return Err(io::Error::new(busy, format!("{} is mounted inside it; unmount it first", m.display())));
    }
    remove_any(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_trees_files_and_symlinks_are_removed_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        remove_debris(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists(), "a symlink is removed, never followed");
        remove_any(&tree).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        remove_any(&file).unwrap();
        assert!(!file.exists());
        assert!(!path_is_subvolume(&file).unwrap());
    }

    #[test]
    fn debris_with_a_mount_inside_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("proc");
        fs::create_dir(&inner).unwrap();
        let (src, dst) = (std::ffi::CString::new("/proc").unwrap(), crate::sys::tests_cstring(&inner));
        // SAFETY: both strings are valid and NUL-terminated; a bind mount
        // reads no type or data.
        let ret = unsafe {
            libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
        };
        assert_eq!(ret, 0, "bind /proc: {}", io::Error::last_os_error());
        let res = remove_debris(dir.path());
        // SAFETY: `dst` is a valid NUL-terminated path.
        unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) };
        let e = res.unwrap_err();
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::EBUSY).kind());
        assert!(e.to_string().contains("proc"), "{e}");
        assert!(inner.exists(), "nothing deleted through the mount");
    }
}
