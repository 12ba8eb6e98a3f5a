//! The btrfs ioctls the driver needs, and the few other system calls `std`
//! lacks, as safe functions.
//!
//! The argument structs are spelled out here from `linux/btrfs.h` and
//! `linux/btrfs_tree.h` (`#[repr(C)]`, sizes checked against the headers in
//! the tests below); every `unsafe` block of the crate that talks to btrfs
//! lives in this file, next to the argument it needs to be sound. Callers
//! see plain `io::Result`s carrying `errno`.
//!
//! Every call takes an open directory: the subvolume to act on, or the
//! directory in which a subvolume is made or destroyed by leaf name.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `BTRFS_SUPER_MAGIC` of `linux/magic.h`: `statfs(2)`'s `f_type` on btrfs.
pub(crate) const BTRFS_SUPER_MAGIC: u32 = 0x9123_683e;

/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root
/// directory (the "inode number trick" that tells a subvolume from a plain
/// directory).
pub(crate) const FIRST_FREE_OBJECTID: u64 = 256;

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u32 = 0x94;
/// `BTRFS_PATH_NAME_MAX`.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_INO_LOOKUP_PATH_MAX`.
const INO_LOOKUP_PATH_MAX: usize = 4080;
/// `BTRFS_SEARCH_ARGS_BUFSIZE`: what is left of a page after the key.
const SEARCH_BUF_SIZE: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `BTRFS_SUBVOL_RDONLY`: a read-only subvolume (or snapshot).
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`: limit the referenced bytes.
const QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;
/// `BTRFS_QUOTA_TREE_OBJECTID`.
const QUOTA_TREE_OBJECTID: u64 = 8;
/// `BTRFS_QGROUP_STATUS_KEY`: the item that exists when quotas are enabled.
const QGROUP_STATUS_KEY: u32 = 240;

/// `_IOC(dir, 0x94, nr, size)` of `asm-generic/ioctl.h`.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr
}
/// `_IOW(0x94, nr, T)`.
const fn iow<T>(nr: u32) -> u32 {
    ioc(1, nr, std::mem::size_of::<T>())
}
/// `_IOR(0x94, nr, T)`.
const fn ior<T>(nr: u32) -> u32 {
    ioc(2, nr, std::mem::size_of::<T>())
}
/// `_IOWR(0x94, nr, T)`.
const fn iowr<T>(nr: u32) -> u32 {
    ioc(3, nr, std::mem::size_of::<T>())
}

const IOC_SUBVOL_CREATE: u32 = iow::<VolArgs>(14);
const IOC_SNAP_DESTROY: u32 = iow::<VolArgs>(15);
const IOC_TREE_SEARCH: u32 = iowr::<SearchArgs>(17);
const IOC_INO_LOOKUP: u32 = iowr::<InoLookupArgs>(18);
const IOC_SNAP_CREATE_V2: u32 = iow::<VolArgsV2>(23);
const IOC_SUBVOL_GETFLAGS: u32 = ior::<u64>(25);
const IOC_SUBVOL_SETFLAGS: u32 = iow::<u64>(26);
const IOC_QGROUP_CREATE: u32 = iow::<QgroupCreateArgs>(42);
const IOC_QGROUP_LIMIT: u32 = ior::<QgroupLimitArgs>(43);

/// `struct btrfs_ioctl_vol_args`: a file descriptor and a name.
#[repr(C)]
#[allow(dead_code)] // the kernel reads every field
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`, with its first union as the four
/// `unused` words (the driver passes no size and no qgroup inheritance) and
/// its second as the name.
#[repr(C)]
#[allow(dead_code)] // the kernel reads every field
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
#[allow(dead_code)] // the kernel reads every field
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // the kernel reads every field
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// `struct btrfs_ioctl_search_args`.
#[repr(C)]
#[allow(dead_code)] // the kernel reads every field
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF_SIZE],
}

/// `struct btrfs_ioctl_search_header`, which precedes every item found.
#[repr(C)]
#[allow(dead_code)] // the kernel reads every field
struct SearchHeader {
    transid: u64,
    objectid: u64,
    offset: u64,
    kind: u32,
    len: u32,
}

/// `struct btrfs_qgroup_limit`.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // the kernel reads every field
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_qgroup_limit_args`.
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // the kernel reads every field
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

/// `struct btrfs_ioctl_qgroup_create_args` (`create` 0 removes).
#[repr(C)]
#[derive(Default)]
#[allow(dead_code)] // the kernel reads every field
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

/// Issues ioctl `request` on `fd` with argument `arg`.
///
/// # Safety
///
/// `arg` must point to a live, initialised value of exactly the type the
/// kernel reads (and, for `_IOR`/`_IOWR` requests, writes) for `request`.
unsafe fn ioctl<T>(fd: &File, request: u32, arg: *mut T) -> io::Result<()> {
    // SAFETY: the fd is open for the whole call; the caller vouches that
    // `arg` matches what `request` reads and writes.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Copies `name` into a NUL-terminated name field: a single path component,
/// non-empty, without NUL, at most 255 bytes (the kernel's `NAME_MAX`).
fn fill_name(field: &mut [u8], name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() > 255
        || bytes.len() >= field.len()
        || bytes.contains(&0)
        || bytes.contains(&b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} cannot name a subvolume (one path component of at most 255 bytes)"),
        ));
    }
    field[..bytes.len()].copy_from_slice(bytes);
    field[bytes.len()] = 0;
    Ok(())
}

/// Opens directory `path` for ioctls, not following a final symlink.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path)
}

/// `BTRFS_IOC_SUBVOL_CREATE`: makes the empty subvolume `name` in `dir`.
pub(crate) fn create_subvolume(dir: &File, name: &OsStr) -> io::Result<()> {
    let mut args = Box::new(VolArgs { fd: 0, name: [0; PATH_NAME_MAX + 1] });
    fill_name(&mut args.name, name)?;
    // SAFETY: `args` is a live, fully initialised `btrfs_ioctl_vol_args`,
    // which is what SUBVOL_CREATE reads; the name is NUL-terminated.
    unsafe { ioctl(dir, IOC_SUBVOL_CREATE, &mut *args) }
}

/// `BTRFS_IOC_SNAP_CREATE_V2`: makes `name` in `dir` a snapshot of the
/// subvolume `source` (an fd of its root directory), read-only when asked.
pub(crate) fn snapshot(source: &File, dir: &File, name: &OsStr, read_only: bool) -> io::Result<()> {
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    });
    fill_name(&mut args.name, name)?;
    // SAFETY: `args` is a live, fully initialised
    // `btrfs_ioctl_vol_args_v2`, which is what SNAP_CREATE_V2 reads; the
    // source fd in it stays open (borrowed) for the whole call.
    unsafe { ioctl(dir, IOC_SNAP_CREATE_V2, &mut *args) }
}

/// `BTRFS_IOC_SNAP_DESTROY`: deletes subvolume `name` of `dir` (a
/// read-only one too). Fails with `ENOTEMPTY` while it holds other
/// subvolumes, which must be destroyed first.
pub(crate) fn destroy_subvolume(dir: &File, name: &OsStr) -> io::Result<()> {
    let mut args = Box::new(VolArgs { fd: 0, name: [0; PATH_NAME_MAX + 1] });
    fill_name(&mut args.name, name)?;
    // SAFETY: `args` is a live, fully initialised `btrfs_ioctl_vol_args`,
    // which is what SNAP_DESTROY reads; the name is NUL-terminated.
    unsafe { ioctl(dir, IOC_SNAP_DESTROY, &mut *args) }
}

/// The flags of subvolume `subvol` (`BTRFS_IOC_SUBVOL_GETFLAGS`).
fn subvolume_flags(subvol: &File) -> io::Result<u64> {
    let mut flags = 0u64;
    // SAFETY: SUBVOL_GETFLAGS writes one `u64` into the live `flags`.
    unsafe { ioctl(subvol, IOC_SUBVOL_GETFLAGS, &mut flags) }?;
    Ok(flags)
}

/// Whether subvolume `subvol` is read-only.
pub(crate) fn is_read_only(subvol: &File) -> io::Result<bool> {
    Ok(subvolume_flags(subvol)? & SUBVOL_RDONLY != 0)
}

/// Makes subvolume `subvol` read-only or writable
/// (`BTRFS_IOC_SUBVOL_SETFLAGS`), keeping its other flags.
pub(crate) fn set_read_only(subvol: &File, read_only: bool) -> io::Result<()> {
    let old = subvolume_flags(subvol)?;
    let mut flags = if read_only { old | SUBVOL_RDONLY } else { old & !SUBVOL_RDONLY };
    if flags == old {
        return Ok(());
    }
    // SAFETY: SUBVOL_SETFLAGS reads one `u64` from the live `flags`.
    unsafe { ioctl(subvol, IOC_SUBVOL_SETFLAGS, &mut flags) }
}

/// The id of the subvolume `fd` lives in (`BTRFS_IOC_INO_LOOKUP` with tree
/// 0, which the kernel answers with the containing subvolume's id). Its
/// level-0 qgroup is `0/<id>`.
pub(crate) fn subvolume_id(fd: &File) -> io::Result<u64> {
    let mut args =
        Box::new(InoLookupArgs { treeid: 0, objectid: FIRST_FREE_OBJECTID, name: [0; INO_LOOKUP_PATH_MAX] });
    // SAFETY: `args` is a live, fully initialised
    // `btrfs_ioctl_ino_lookup_args`, which INO_LOOKUP reads and writes.
    unsafe { ioctl(fd, IOC_INO_LOOKUP, &mut *args) }?;
    if args.treeid == 0 {
        return Err(io::Error::other("the kernel answered subvolume id 0"));
    }
    Ok(args.treeid)
}

/// Whether quotas (qgroups) are enabled on the btrfs filesystem of `fd`:
/// whether its quota tree holds the qgroup status item
/// (`BTRFS_IOC_TREE_SEARCH`, needs `CAP_SYS_ADMIN`). A missing quota tree
/// (`ENOENT`) means disabled.
pub(crate) fn quota_enabled(fd: &File) -> io::Result<bool> {
    let mut args = Box::new(SearchArgs {
        key: SearchKey {
            tree_id: QUOTA_TREE_OBJECTID,
            max_objectid: u64::MAX,
            max_offset: u64::MAX,
            max_transid: u64::MAX,
            min_type: QGROUP_STATUS_KEY,
            max_type: QGROUP_STATUS_KEY,
            nr_items: 1,
            ..SearchKey::default()
        },
        buf: [0; SEARCH_BUF_SIZE],
    });
    // SAFETY: `args` is a live, fully initialised
    // `btrfs_ioctl_search_args`, which TREE_SEARCH reads and writes (the
    // results go into `buf`, within its size).
    match unsafe { ioctl(fd, IOC_TREE_SEARCH, &mut *args) } {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    }
    if args.key.nr_items == 0 {
        return Ok(false);
    }
    // SAFETY: with at least one item found, `buf` starts with a complete
    // search header; `buf` is only byte-aligned, hence the unaligned read.
    let header = unsafe { std::ptr::read_unaligned(args.buf.as_ptr().cast::<SearchHeader>()) };
    Ok(header.kind == QGROUP_STATUS_KEY)
}

/// Limits the referenced bytes of qgroup `0/<subvol_id>` to `bytes`
/// (`BTRFS_IOC_QGROUP_LIMIT`, issued on `fd`, any directory of the same
/// filesystem). `ENOTCONN` means quotas are not enabled.
pub(crate) fn qgroup_limit(fd: &File, subvol_id: u64, bytes: u64) -> io::Result<()> {
    let mut args = QgroupLimitArgs {
        qgroupid: subvol_id,
        lim: QgroupLimit { flags: QGROUP_LIMIT_MAX_RFER, max_rfer: bytes, ..QgroupLimit::default() },
    };
    // SAFETY: `args` is a live, fully initialised
    // `btrfs_ioctl_qgroup_limit_args`, which QGROUP_LIMIT reads.
    unsafe { ioctl(fd, IOC_QGROUP_LIMIT, &mut args) }
}

/// Removes qgroup `0/<subvol_id>` (`BTRFS_IOC_QGROUP_CREATE` with `create`
/// 0), e.g. the stale qgroup of a destroyed subvolume.
pub(crate) fn qgroup_remove(fd: &File, subvol_id: u64) -> io::Result<()> {
    let mut args = QgroupCreateArgs { create: 0, qgroupid: subvol_id };
    // SAFETY: `args` is a live, fully initialised
    // `btrfs_ioctl_qgroup_create_args`, which QGROUP_CREATE reads.
    unsafe { ioctl(fd, IOC_QGROUP_CREATE, &mut args) }
}

/// The `statfs(2)` magic number of the filesystem `fd` lives on.
pub(crate) fn fs_magic(fd: &File) -> io::Result<u32> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open and `st` is a live, writable statfs.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Magic numbers are 32-bit; `f_type` is wider on some targets.
    Ok(st.f_type as u32)
}

/// Renames `from` to `to`, failing with `EEXIST` instead of replacing an
/// existing `to`.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let f = cstring(from)?;
    let t = cstring(to)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the
    // call; AT_FDCWD makes them relative to the working directory as with
    // rename(2).
    let ret = unsafe {
        libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A path as a NUL-terminated C string.
fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("path {} contains a NUL byte", path.display()))
    })
}

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// [`cstring`] for the tests of other modules.
#[cfg(test)]
pub(crate) fn tests_cstring(path: &Path) -> CString {
    cstring(path).expect("test paths have no NUL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets as `linux/btrfs.h` (Linux 6.x) lays them out, and
    /// the ioctl numbers its macros give (checked with a C program).
    #[test]
    fn structs_match_the_kernel_headers() {
        assert_eq!(size_of::<VolArgs>(), 4096);
        assert_eq!(size_of::<VolArgsV2>(), 4096);
        assert_eq!(offset_of!(VolArgsV2, flags), 16);
        assert_eq!(offset_of!(VolArgsV2, name), 56);
        assert_eq!(size_of::<InoLookupArgs>(), 4096);
        assert_eq!(size_of::<SearchKey>(), 104);
        assert_eq!(size_of::<SearchArgs>(), 4096);
        assert_eq!(size_of::<SearchHeader>(), 32);
        assert_eq!(size_of::<QgroupLimitArgs>(), 48);
        assert_eq!(size_of::<QgroupCreateArgs>(), 16);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(IOC_SNAP_DESTROY, 0x5000_940f);
        assert_eq!(IOC_TREE_SEARCH, 0xd000_9411);
        assert_eq!(IOC_INO_LOOKUP, 0xd000_9412);
        assert_eq!(IOC_SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(IOC_SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(IOC_SUBVOL_SETFLAGS, 0x4008_941a);
        assert_eq!(IOC_QGROUP_CREATE, 0x4010_942a);
        assert_eq!(IOC_QGROUP_LIMIT, 0x8030_942b);
    }

    #[test]
    fn names_are_single_bounded_components() {
        let mut field = [0xffu8; 300];
        fill_name(&mut field, OsStr::new("layer")).unwrap();
        assert_eq!(&field[..6], b"layer\0");
        for bad in ["", "a/b", "a\0b", &"x".repeat(256)] {
            let e = fill_name(&mut field, OsStr::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        fill_name(&mut field, OsStr::new(&"x".repeat(255))).unwrap();
    }

    #[test]
    fn ioctls_on_a_non_btrfs_directory_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir(dir.path()).unwrap();
        if fs_magic(&fd).unwrap() == BTRFS_SUPER_MAGIC {
            println!("skipped: the temp dir is on btrfs here");
            return;
        }
        assert!(create_subvolume(&fd, OsStr::new("x")).is_err());
        assert!(subvolume_id(&fd).is_err());
        assert!(!dir.path().join("x").exists());
    }
}
