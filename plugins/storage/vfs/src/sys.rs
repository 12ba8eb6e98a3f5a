//! Thin, safe wrappers around the few Linux system calls that `std` lacks.
//!
//! Every `unsafe` block of the crate that talks to the kernel about files
//! lives here, next to the argument it needs to be sound. Callers see plain
//! `io::Result`s carrying `errno`.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// A path as a NUL-terminated C string; a path with an interior NUL is an
/// `InvalidInput` error.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("path {} contains a NUL byte", path.display()))
    })
}

/// Turns the `-1`/`errno` convention of libc into an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Same as [`check`] for calls returning a size.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// The names of the extended attributes of `path`, not following a final
/// symlink.
pub(crate) fn llistxattr(path: &Path) -> io::Result<Vec<OsString>> {
    let c = cstring(path)?;
    loop {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the
        // call; a null buffer with size 0 asks only for the needed size.
        let size = check_size(unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) })?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` is writable for `buf.len()` bytes and the kernel
        // writes at most that many; `c` is valid as above.
        let ret = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(ret) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|name| !name.is_empty())
                    .map(|name| OsString::from_vec(name.to_vec()))
                    .collect());
            }
            // The list grew between the two calls: ask again.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of extended attribute `name` of `path`, not following a final
/// symlink.
pub(crate) fn lgetxattr(path: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
    let c = cstring(path)?;
    let n = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains a NUL byte"))?;
    loop {
        // SAFETY: both strings are valid and NUL-terminated; a null buffer
        // with size 0 asks only for the value's size.
        let size = check_size(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` is writable for `buf.len()` bytes and the kernel
        // writes at most that many; the strings are valid as above.
        let ret = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        match check_size(ret) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sets extended attribute `name` of `path` to `value`, not following a
/// final symlink.
pub(crate) fn lsetxattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let c = cstring(path)?;
    let n = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains a NUL byte"))?;
    // SAFETY: the strings are valid and NUL-terminated; `value` is readable
    // for `value.len()` bytes for the duration of the call.
    check(unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Creates a special file (fifo, socket, character or block device) with
/// `mode` (file type and permission bits) and device number `rdev`.
pub(crate) fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated string; mknod reads nothing else
    // from our memory.
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

/// A point in time as the kernel stores it: seconds and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp {
    /// Seconds since the epoch.
    pub(crate) sec: i64,
    /// Nanoseconds within the second.
    pub(crate) nsec: i64,
}

/// Sets the access and modification times of `path` to the nanosecond,
/// without following a final symlink (so a symlink's own times are set).
pub(crate) fn lutimens(path: &Path, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
    let c = cstring(path)?;
    let times = [
        libc::timespec { tv_sec: atime.sec as libc::time_t, tv_nsec: atime.nsec as _ },
        libc::timespec { tv_sec: mtime.sec as libc::time_t, tv_nsec: mtime.nsec as _ },
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` is an array of
    // exactly the two timespecs utimensat reads.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// Renames `from` to `to`, failing with `EEXIST` instead of replacing an
/// existing `to` (a plain `rename` silently replaces an empty directory).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let f = cstring(from)?;
    let t = cstring(to)?;
    // SAFETY: both paths are valid NUL-terminated strings; AT_FDCWD makes
    // them relative to the working directory as with rename(2).
    check(unsafe {
        libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE)
    })
}

/// `struct open_how` of `linux/openat2.h` (libc's is `#[non_exhaustive]`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens the regular file `rel` below the directory `root` for reading,
/// refusing to follow any symlink on the way, to leave `root` by `..` or to
/// cross a mount: a tree that changes while it is copied cannot make the
/// copy read a file from elsewhere. `O_NOATIME` is used when permitted, so
/// copying a layer does not touch its access times. Kernels before 5.6 get a
/// plain `open` with `O_NOFOLLOW` of `root/rel`.
pub(crate) fn open_beneath(root: &File, root_path: &Path, rel: &Path) -> io::Result<File> {
    let c = cstring(rel)?;
    let base = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    let resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    for flags in [base | libc::O_NOATIME as u64, base] {
        let how = OpenHow { flags, mode: 0, resolve };
        // SAFETY: openat2 reads `size_of::<OpenHow>()` bytes from `&how`,
        // which is a live `repr(C)` value laid out as the kernel's
        // `struct open_how`; `c` is a valid NUL-terminated path and the fd
        // of `root` stays open for the whole call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this fd to us; nobody else
            // owns it, so the File may close it.
            return Ok(unsafe { File::from_raw_fd(fd as libc::c_int) });
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // O_NOATIME needs ownership or CAP_FOWNER: retry without it.
            Some(libc::EPERM) if flags != base => continue,
            Some(libc::ENOSYS) => return open_nofollow(&root_path.join(rel)),
            _ => return Err(err),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EPERM))
}

/// Fallback of [`open_beneath`] for kernels without openat2.
fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// `struct mount_attr` of `linux/mount.h`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

// Kernel ABI constants of `linux/mount.h` and `linux/fcntl.h`, spelled out
// here because the workspace only requires libc 0.2, whose older releases
// lack them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Bind-mounts `source` on `target` read-only, `nosuid` and `nodev` with
/// the new mount API (Linux 5.12+): the mount is made read-only while still
/// detached, so no copy of it is ever writable, not even one propagated to
/// another mount namespace at attach time. Other flags (`noexec`, atime)
/// are kept from `source`'s mount. `ENOSYS` means the kernel lacks the API.
pub(crate) fn bind_ro_detached(source: &Path, target: &Path) -> io::Result<()> {
    let s = cstring(source)?;
    let t = cstring(target)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `s` is a valid NUL-terminated path; open_tree reads nothing
    // else from our memory.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, s.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns
    // it; dropping it dissolves the detached mount if we never attach it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty: &CStr = c"";
    // SAFETY: `tree` is an open mount fd, `empty` a valid string selecting
    // it through AT_EMPTY_PATH, and the kernel reads exactly
    // `size_of::<MountAttr>()` bytes from the live `repr(C)` `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tree` is an open mount fd selected by the empty path, and
    // `t` is a valid NUL-terminated target path.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind-mounts `source` on `target` (not recursively).
pub(crate) fn bind_mount(source: &Path, target: &Path) -> io::Result<()> {
    let s = cstring(source)?;
    let t = cstring(target)?;
    // SAFETY: both paths are valid NUL-terminated strings; a bind mount
    // ignores the file system type and data, which may therefore be null.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) })
}

/// Changes the mount at `target` with `flags` (e.g. `MS_PRIVATE`, or
/// `MS_BIND | MS_REMOUNT | MS_RDONLY`).
pub(crate) fn remount(target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let t = cstring(target)?;
    let none: &CStr = c"none";
    // SAFETY: `t` and `none` are valid NUL-terminated strings; remount and
    // propagation changes take no file system type or data.
    check(unsafe { libc::mount(none.as_ptr(), t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) })
}

/// The `MS_*` flags of the mount `path` lives on that a bind remount must
/// keep (`nosuid`, `nodev`, `noexec`, atime policy).
pub(crate) fn mount_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let c = cstring(path)?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid path and `st` a live, writable statvfs.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map.iter().filter(|(st_flag, _)| st.f_flag & st_flag != 0).fold(0, |acc, (_, ms)| acc | ms))
}

/// Detaches the mount at `target` (lazily, so a process still inside it does
/// not make the call fail), never following a symlink at `target`.
pub(crate) fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cstring(target)?;
    // SAFETY: `t` is a valid NUL-terminated string.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
}

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_round_trip_on_files_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        lsetxattr(&file, OsStr::new("user.berth"), b"value").unwrap();
        lsetxattr(&file, OsStr::new("user.empty"), b"").unwrap();
        let mut names = llistxattr(&file).unwrap();
        names.sort();
        assert!(names.contains(&OsString::from("user.berth")), "{names:?}");
        assert_eq!(lgetxattr(&file, OsStr::new("user.berth")).unwrap(), b"value");
        assert_eq!(lgetxattr(&file, OsStr::new("user.empty")).unwrap(), b"");

        // A dangling symlink: the l* calls act on the link itself.
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/nonexistent/target", &link).unwrap();
        assert!(llistxattr(&link).unwrap().iter().all(|n| !n.as_bytes().starts_with(b"user.")));
    }

    #[test]
    fn lutimens_sets_nanoseconds_on_a_symlink_itself() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("dangling", &link).unwrap();
        let t = Timestamp { sec: 1_000_000_000, nsec: 123_456_789 };
        lutimens(&link, t, t).unwrap();
        let m = std::fs::symlink_metadata(&link).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (t.sec, t.nsec));
    }

    #[test]
    fn rename_noreplace_refuses_an_existing_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        std::fs::remove_dir(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(b.is_dir() && !a.exists());
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::fs::write(root.join("ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let fd = File::open(&root).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut open_beneath(&fd, &root, Path::new("ok")).unwrap(), &mut s)
            .unwrap();
        assert_eq!(s, "ok");
        assert!(open_beneath(&fd, &root, Path::new("up/secret")).is_err());
        assert!(open_beneath(&fd, &root, Path::new("../secret")).is_err());
    }
}
