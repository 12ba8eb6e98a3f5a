//! Exact copies of directory trees: how a new layer gets its parent's
//! content.
//!
//! [`copy_tree`] reproduces every entry: regular files (holes stay holes),
//! directories, symlinks (target verbatim), hardlinks (one inode, many
//! names), device nodes, fifos and sockets, each with its owner, its
//! permission bits (setuid, setgid and sticky included), its extended
//! attributes and its access and modification times.
//!
//! Order matters, and is the same for every entry:
//!
//! 1. create it; a directory gets its own attributes only after all its
//!    children are copied, since creating them changes its times;
//! 2. `lchown`, which clears setuid/setgid bits and `security.capability`,
//!    so it must come before both are set;
//! 3. `chmod` (not on symlinks: Linux ignores their mode);
//! 4. extended attributes, `security.capability` included;
//! 5. times last, without following symlinks. Times matter: berth finds a
//!    layer's changes by comparing it with its parent, and a copy with new
//!    times would look as if every file had changed.
//!
//! The walk keeps its own stack rather than recursing, so a deep tree cannot
//! overflow a thread's stack, and it refuses to cross into another mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};

use crate::sys;

/// Extended attributes a copy must never lose: failing to set one is an
/// error. Other namespaces (`security.selinux`, `system.posix_acl_*`) are
/// skipped where the destination file system does not support them, as
/// `cp -a` does.
const REQUIRED_XATTRS: [&str; 3] = ["user.", "trusted.", "security.capability"];

/// Creates the root of a layer without a parent: an empty directory, mode
/// `0755`, owned by `root:root`.
pub fn make_empty_root(dst: &Path) -> DriverResult<()> {
    fs::DirBuilder::new().mode(0o700).create(dst).map_err(|e| io_err("create directory", dst, &e))?;
    lchown(dst, Some(0), Some(0)).map_err(|e| io_err("chown", dst, &e))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).map_err(|e| io_err("chmod", dst, &e))
}

/// Copies the directory tree `src` to `dst`, which must not exist yet. On
/// error `dst` may be left half-made; the caller removes it.
pub fn copy_tree(src: &Path, dst: &Path) -> DriverResult<()> {
    let root = fs::symlink_metadata(src).map_err(|e| io_err("stat", src, &e))?;
    let mut copier = Copier { device: root.dev(), links: HashMap::new() };
    // Work left to do: `Enter` a directory (create it, schedule its
    // children) or `Finish` it (set its attributes, once its children are
    // done). A stack, so a directory's children are all done before it.
    enum Step {
        Enter(PathBuf, PathBuf, Metadata),
        Finish(PathBuf, PathBuf, Metadata),
    }
    let mut stack = vec![Step::Enter(src.to_path_buf(), dst.to_path_buf(), root)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(from, to, meta) => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&to)
                    .map_err(|e| io_err("create directory", &to, &e))?;
                let children = copier.children(&from)?;
                stack.push(Step::Finish(from.clone(), to.clone(), meta));
                for (name, child) in children {
                    let (f, t) = (from.join(&name), to.join(&name));
                    if child.is_dir() {
                        stack.push(Step::Enter(f, t, child));
                    } else {
                        copier.copy_entry(&f, &t, &child)?;
                    }
                }
            }
            Step::Finish(from, to, meta) => set_attributes(&from, &to, &meta)?,
        }
    }
    Ok(())
}

/// What one copy remembers as it goes.
struct Copier {
    /// The device of the source root: an entry on another one is a mount.
    device: u64,
    /// The first copy of each source inode with several names, by
    /// (device, inode): the other names become hardlinks to it.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier {
    /// The entries of directory `dir` with their metadata, sorted by name so
    /// that copies are deterministic.
    fn children(&self, dir: &Path) -> DriverResult<Vec<(std::ffi::OsString, Metadata)>> {
        let entries = fs::read_dir(dir).map_err(|e| io_err("read directory", dir, &e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("read directory", dir, &e))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| io_err("stat", &path, &e))?;
            if meta.dev() != self.device {
                return Err(DriverError::failed_precondition(format!(
                    "{} is a mount point inside the layer; unmount it before copying the layer",
                    path.display()
                )));
            }
            out.push((entry.file_name(), meta));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Copies one entry that is not a directory, with its attributes.
    fn copy_entry(&mut self, from: &Path, to: &Path, meta: &Metadata) -> DriverResult<()> {
        let inode = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&inode) {
                // Another name of an inode copied already, attributes and
                // all: link to that copy.
                return fs::hard_link(first, to).map_err(|e| io_err("hardlink", to, &e));
            }
        }
        let ft = meta.file_type();
        if ft.is_file() {
            copy_file(from, to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(from).map_err(|e| io_err("read symlink", from, &e))?;
            symlink(&target, to).map_err(|e| io_err("create symlink", to, &e))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            sys::mknod(to, meta.mode(), meta.rdev()).map_err(|e| io_err("mknod", to, &e))?;
        } else {
            return Err(DriverError::unsupported(format!(
                "{} has a file type this driver cannot copy (mode {:o})",
                from.display(),
                meta.mode()
            )));
        }
        set_attributes(from, to, meta)?;
        if meta.nlink() > 1 {
            self.links.insert(inode, to.to_path_buf());
        }
        Ok(())
    }
}

/// Copies the content of regular file `from` into the new file `to`,
/// keeping holes: only the data segments are copied, and the length is set
/// at the end.
fn copy_file(from: &Path, to: &Path) -> DriverResult<()> {
    // O_NOFOLLOW: if `from` was replaced by a symlink since it was listed,
    // fail rather than copy whatever the link points to.
    let input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(|e| io_err("open", from, &e))?;
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| io_err("create", to, &e))?;
    let len = input.metadata().map_err(|e| io_err("stat", from, &e))?.len();
    let mut pos = 0;
    while let Some((start, end)) = next_data(&input, pos, len).map_err(|e| io_err("seek in", from, &e))? {
        copy_range(&input, &output, start, end).map_err(|e| io_err("copy content to", to, &e))?;
        pos = end;
    }
    output.set_len(len).map_err(|e| io_err("set the length of", to, &e))
}

/// The next data segment of `file` at or after `pos`, as `[start, end)`;
/// `None` when only a hole (or nothing) is left. A file system without
/// `SEEK_DATA` has no holes to keep: all of it is data.
fn next_data(file: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    if pos >= len {
        return Ok(None);
    }
    let start = match sys::seek(file, pos, libc::SEEK_DATA) {
        Ok(Some(start)) => start,
        Ok(None) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Some((pos, len))),
        Err(e) => return Err(e),
    };
    let end = sys::seek(file, start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
    Ok((start < end).then_some((start, end)))
}

/// Copies bytes `[start, end)` of `input` to the same offsets of `output`.
fn copy_range(input: &File, output: &File, start: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 128 << 10];
    let mut pos = start;
    while pos < end {
        let want = buf.len().min((end - pos) as usize);
        let n = input.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break; // the file shrank while it was copied
        }
        output.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Gives `to` the owner, mode, extended attributes and times of `from`
/// (whose metadata is `meta`), in the order the module documentation
/// explains.
fn set_attributes(from: &Path, to: &Path, meta: &Metadata) -> DriverResult<()> {
    lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(|e| io_err("chown", to, &e))?;
    if !meta.file_type().is_symlink() {
        let mode = fs::Permissions::from_mode(meta.mode() & 0o7777);
        fs::set_permissions(to, mode).map_err(|e| io_err("chmod", to, &e))?;
    }
    copy_xattrs(from, to)?; // conformance: copies extended attributes (ST-14)
    let atime = (meta.atime(), meta.atime_nsec());
    let mtime = (meta.mtime(), meta.mtime_nsec());
    sys::lutimens(to, atime, mtime).map_err(|e| io_err("set the times of", to, &e))
}

/// Copies every extended attribute of `from` to `to` (neither followed if
/// it is a symlink).
fn copy_xattrs(from: &Path, to: &Path) -> DriverResult<()> {
    let names = match sys::llistxattr(from) {
        Ok(names) => names,
        // The source file system has no xattrs at all: nothing to copy.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(io_err("list the xattrs of", from, &e)),
    };
    for name in names {
        let value = match sys::lgetxattr(from, &name) {
            Ok(value) => value,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue, // removed meanwhile
            Err(e) => return Err(xattr_err("read", &name, from, &e)),
        };
        match sys::lsetxattr(to, &name, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && !required(&name) => {}
            Err(e) => return Err(xattr_err("set", &name, to, &e)),
        }
    }
    Ok(())
}

/// Whether xattr `name` is in a namespace a copy must never drop.
fn required(name: &OsStr) -> bool {
    REQUIRED_XATTRS.iter().any(|p| name.as_bytes().starts_with(p.as_bytes()))
}

/// An I/O error of a copy, naming the operation and the path.
fn io_err(op: &str, path: &Path, err: &io::Error) -> DriverError {
    DriverError::io(format_args!("{op} {}", path.display()), err)
}

fn xattr_err(op: &str, name: &OsStr, path: &Path, err: &io::Error) -> DriverError {
    DriverError::io(format_args!("{op} xattr {name:?} of {}", path.display()), err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn stat(p: &Path) -> Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    #[test]
    fn every_kind_of_entry_is_copied_with_its_attributes() {
        if sys::geteuid() != 0 {
            return eprintln!("skipped: keeping owners and making device nodes needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/suid"), b"#!/bin/true\n").unwrap();
        lchown(src.join("sub/suid"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(src.join("sub/suid"), fs::Permissions::from_mode(0o6755)).unwrap();
        fs::hard_link(src.join("sub/suid"), src.join("link")).unwrap();
        symlink("sub/suid", src.join("sym")).unwrap();
        sys::mknod(&src.join("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
        sys::mknod(&src.join("fifo"), libc::S_IFIFO | 0o600, 0).unwrap();
        sys::lsetxattr(&src.join("sub"), OsStr::new("user.k"), b"v").unwrap();
        sys::lutimens(&src.join("sub"), (1, 2), (1_000_000_000, 123)).unwrap();

        copy_tree(&src, &dst).unwrap();

        let m = stat(&dst.join("sub/suid"));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.nlink()), (0o6755, 1000, 1000, 2));
        assert_eq!(m.ino(), stat(&dst.join("link")).ino(), "one inode, two names");
        assert_eq!(fs::read_link(dst.join("sym")).unwrap(), Path::new("sub/suid"));
        assert_eq!(stat(&dst.join("null")).rdev(), libc::makedev(1, 3));
        assert!(stat(&dst.join("fifo")).file_type().is_fifo());
        assert_eq!(sys::lgetxattr(&dst.join("sub"), OsStr::new("user.k")).unwrap(), b"v");
        let sub = stat(&dst.join("sub"));
        assert_eq!((sub.mtime(), sub.mtime_nsec()), (1_000_000_000, 123), "set after its children");
    }

    #[test]
    fn holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        let f = File::create(src.join("sparse")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"end", 64 << 20).unwrap();
        copy_tree(&src, &dst).unwrap();
        let (a, b) = (stat(&src.join("sparse")), stat(&dst.join("sparse")));
        assert_eq!(a.len(), b.len());
        assert!(b.blocks() <= a.blocks() + 64, "{} blocks copied from {}", b.blocks(), a.blocks());
        let copy = File::open(dst.join("sparse")).unwrap();
        let mut end = [0u8; 3];
        copy.read_exact_at(&mut end, 64 << 20).unwrap();
        assert_eq!(&end, b"end");
    }

    #[test]
    fn required_namespaces() {
        assert!(required(OsStr::new("user.x")));
        assert!(required(OsStr::new("security.capability")));
        assert!(!required(OsStr::new("security.selinux")));
    }
}
