//! The few Linux system calls `std` lacks, each behind a small safe function
//! that returns a plain `io::Result` carrying `errno`.
//!
//! Every `unsafe` block of the crate lives here, and each one says why it is
//! sound. Nothing here knows about layers.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// `bytes` as a NUL-terminated C string; an interior NUL is `InvalidInput`.
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a name"))
}

fn c_path(path: &Path) -> io::Result<CString> {
    c_string(path.as_os_str().as_bytes())
}

/// libc's `-1` and `errno` convention as an `io::Result`.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs one of the xattr calls that fill a caller's buffer: first with no
/// buffer to learn the size, then with a buffer that large, and again if
/// the value grew in between (`ERANGE`).
///
/// `call(buf, len)` must pass `buf` and `len` unchanged to the kernel: it
/// is either a null pointer with `0`, or a buffer writable for `len` bytes.
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// The names of the extended attributes of `path` itself (a symlink is not
/// followed).
pub fn llistxattr(path: &Path) -> io::Result<Vec<OsString>> {
    let p = c_path(path)?;
    // SAFETY: `p` is a valid C string that outlives the call, and
    // `read_sized` hands us either (null, 0) or a buffer writable for `len`.
    let list = read_sized(|buf, len| unsafe { libc::llistxattr(p.as_ptr(), buf.cast(), len) })?;
    // The kernel answers "name1\0name2\0...".
    let names = list.split(|b| *b == 0).filter(|n| !n.is_empty());
    Ok(names.map(|n| OsString::from_vec(n.to_vec())).collect())
}

/// The value of extended attribute `name` of `path` itself.
pub fn lgetxattr(path: &Path, name: &OsStr) -> io::Result<Vec<u8>> {
    let p = c_path(path)?;
    let n = c_string(name.as_bytes())?;
    // SAFETY: as in `llistxattr`; `n` is a valid C string too.
    read_sized(|buf, len| unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, len) })
}

/// Sets extended attribute `name` of `path` itself to `value`.
pub fn lsetxattr(path: &Path, name: &OsStr, value: &[u8]) -> io::Result<()> {
    let p = c_path(path)?;
    let n = c_string(name.as_bytes())?;
    // SAFETY: both strings are valid C strings and `value` is readable for
    // `value.len()` bytes for the whole call.
    check(unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Creates a device node, fifo or socket: `mode` holds the file type and
/// permission bits, `rdev` the device number (0 for fifos and sockets).
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let p = c_path(path)?;
    // SAFETY: `p` is a valid C string; mknod reads nothing else of ours.
    check(unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

/// Sets the access and modification times of `path` itself (a symlink's
/// own times, not its target's), each as (seconds, nanoseconds).
pub fn lutimens(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = c_path(path)?;
    let ts = |(sec, nsec): (i64, i64)| libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: `p` is a valid C string and `times` the array of exactly two
    // timespecs that utimensat reads.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

/// `lseek(file, offset, whence)` for `SEEK_DATA` and `SEEK_HOLE`: the
/// offset found, or `None` when there is no data at or after `offset`
/// (`ENXIO`). File systems without them answer `EINVAL`.
pub fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: the fd is open for as long as `file` is borrowed; lseek only
    // moves its offset.
    let ret = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if ret >= 0 {
        return Ok(Some(ret as u64));
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        e => Err(e),
    }
}

/// `mount(2)`; `source` is `None` for a remount or a propagation change.
fn mount(source: Option<&Path>, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let none = c_string(b"none")?;
    let s = source.map(c_path).transpose()?;
    let t = c_path(target)?;
    let s_ptr = s.as_ref().unwrap_or(&none).as_ptr();
    // SAFETY: both strings are valid C strings that outlive the call; bind
    // mounts, remounts and propagation changes take no file system type and
    // no data, which may therefore be null.
    check(unsafe { libc::mount(s_ptr, t.as_ptr(), std::ptr::null(), flags, std::ptr::null()) })
}

/// The flags of the mount `path` lives on that a read-only remount of a
/// bind mount of it must keep (the kernel refuses to drop "locked" ones).
fn kept_flags(path: &Path) -> io::Result<libc::c_ulong> {
    let p = c_path(path)?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid C string and `st` a live, writable statvfs.
    check(unsafe { libc::statvfs(p.as_ptr(), &mut st) })?;
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

/// Bind-mounts directory `source` on the existing directory `target`,
/// private, read-only, `nosuid` and `nodev`. On failure nothing stays
/// mounted.
///
/// A bind mount is writable until it is remounted read-only, a moment
/// later; Linux 5.12's new mount API (`open_tree`, `mount_setattr`,
/// `move_mount`) closes even that window, see berth's vfs driver.
pub fn bind_mount_read_only(source: &Path, target: &Path) -> io::Result<()> {
    let keep = kept_flags(source)?;
    mount(Some(source), target, libc::MS_BIND)?;
    let read_only =
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | keep;
    let made = mount(None, target, libc::MS_PRIVATE).and_then(|()| mount(None, target, read_only));
    if let Err(e) = made {
        // Never leave a writable view behind; the mount error is the one
        // worth reporting.
        let _ = unmount(target);
        return Err(e);
    }
    Ok(())
}

/// Unmounts `target`, lazily (a process still inside does not make it
/// fail) and without following a symlink there. A path that is not mounted
/// (`EINVAL`) or does not exist counts as unmounted: unmounting twice works.
pub fn unmount(target: &Path) -> io::Result<()> {
    let t = c_path(target)?;
    // SAFETY: `t` is a valid C string.
    match check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) }) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => Ok(()),
        other => other,
    }
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        lsetxattr(&f, OsStr::new("user.a"), b"value").unwrap();
        lsetxattr(&f, OsStr::new("user.empty"), b"").unwrap();
        let names = llistxattr(&f).unwrap();
        assert!(names.contains(&OsString::from("user.a")), "{names:?}");
        assert_eq!(lgetxattr(&f, OsStr::new("user.a")).unwrap(), b"value");
        assert_eq!(lgetxattr(&f, OsStr::new("user.empty")).unwrap(), b"");
        let missing = lgetxattr(&f, OsStr::new("user.missing")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENODATA));
    }

    #[test]
    fn a_read_only_bind_mount_refuses_writes_and_unmounts_twice() {
        if geteuid() != 0 {
            return eprintln!("skipped: mounting needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&src).unwrap();
        std::fs::create_dir(&dst).unwrap();
        bind_mount_read_only(&src, &dst).unwrap();
        let write = std::fs::write(dst.join("f"), b"x");
        unmount(&dst).unwrap();
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
        unmount(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
    }
}
