//! Reading a whole layer tree: what [`diff`](super::diff) compares.
//!
//! The walk goes through directory descriptors, one component at a time,
//! never following a symlink, so a tree a container is still changing cannot
//! lead it outside the root.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::DriverResult;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::resolve::{errno_error, list_dir, proc_path, Root};

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    /// Sockets cannot be put in a tar; they are left out of diffs.
    Socket,
}

/// What a diff compares of one entry.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) rdev: u64,
    pub(crate) size: u64,
    /// Seconds and nanoseconds.
    pub(crate) mtime: (i64, u32),
    pub(crate) ctime: i64,
    /// Device and inode, for hardlink groups.
    pub(crate) inode: (u64, u64),
    pub(crate) nlink: u64,
    /// A symlink's target.
    pub(crate) target: Option<Vec<u8>>,
    /// Xattrs, sorted by name; the overlay driver's own are left out.
    pub(crate) xattrs: Vec<(String, Vec<u8>)>,
}

/// Every entry beneath a root (the root itself left out), keyed by relative
/// path. `Path` orders by components, so the map iterates depth first with
/// siblings sorted by name: a directory right before its contents.
pub(crate) type Tree = BTreeMap<PathBuf, Meta>;

/// Reads the tree beneath `root`.
pub(crate) fn walk(root: &Root) -> DriverResult<Tree> {
    let mut tree = Tree::new();
    let mut buf = vec![0u8; 1 << 16];
    walk_dir(root.fd(), Path::new(""), &mut tree, &mut buf)
        .map_err(|e| errno_error(format!("read layer tree {}", root.path().display()), e))?;
    Ok(tree)
}

fn walk_dir(dir: BorrowedFd<'_>, rel: &Path, tree: &mut Tree, buf: &mut [u8]) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        let st = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing: a tree still in use. Leave it out.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::CharacterDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
            FileType::Fifo => Kind::Fifo,
            _ => Kind::Socket,
        };
        let target = if kind == Kind::Symlink {
            Some(rustix::fs::readlinkat(dir, &name, Vec::new())?.into_bytes())
        } else {
            None
        };
        let path = rel.join(&name);
        let meta = Meta {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: if kind == Kind::Dir { 0 } else { st.st_size as u64 },
            mtime: (st.st_mtime, st.st_mtime_nsec as u32),
            ctime: st.st_ctime,
            inode: (st.st_dev, st.st_ino),
            nlink: st.st_nlink,
            target,
            xattrs: read_xattrs(dir, &name, buf)?,
        };
        tree.insert(path.clone(), meta);
        if kind == Kind::Dir {
            let sub = rustix::fs::openat(
                dir,
                &name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            walk_dir(sub.as_fd(), &path, tree, buf)?;
        }
    }
    Ok(())
}

/// Whether an xattr is the overlay driver's bookkeeping, not content.
pub(crate) fn is_private_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// The xattrs of `name` in `dir`, without following it.
fn read_xattrs(dir: BorrowedFd<'_>, name: &OsStr, buf: &mut [u8]) -> Result<Vec<(String, Vec<u8>)>, Errno> {
    let p = proc_path(dir, name);
    let n = match rustix::fs::llistxattr(&p, &mut *buf) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter(|s| !is_private_xattr(s))
        .map(str::to_owned)
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for xname in names {
        match rustix::fs::lgetxattr(&p, xname.as_str(), &mut *buf) {
            Ok(len) => out.push((xname, buf[..len].to_vec())),
            // Removed since the listing.
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// `/` + `path`, as changes name paths.
pub(crate) fn absolute(path: &Path) -> String {
    let mut s = String::from("/");
    s.push_str(&String::from_utf8_lossy(path.as_os_str().as_bytes()));
    s
}
