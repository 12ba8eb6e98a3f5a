//! Exact copies of directory trees: the whole of what vfs does.
//!
//! [`copy_tree`] reproduces every entry of a tree: regular files, directories,
//! symlinks (target verbatim), fifos, sockets and device nodes, with their
//! ownership, permission bits (setuid, setgid and sticky included), access
//! and modification times to the nanosecond, extended attributes and
//! hardlink groups.
//!
//! Order matters, and is the same for every entry:
//!
//! 1. create it (a directory's children are all copied before step 2 runs on
//!    the directory, since creating them changes its times);
//! 2. `lchown`, which clears setuid/setgid bits and `security.capability`;
//! 3. `chmod` (not on symlinks, whose mode Linux ignores);
//! 4. extended attributes, `security.capability` included;
//! 5. access and modification times, without following symlinks.
//!
//! The walk keeps its own stack, so a deep tree cannot overflow the thread's
//! stack, and it refuses to cross into another mount.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};

use crate::sys::{self, Timestamp};

/// Extended attributes that must survive a copy on every file system that
/// holds them: failing to set one is an error even where the destination
/// claims not to support it. Any other namespace (`system.*`, other
/// `security.*` labels) is skipped where the destination file system does
/// not support it, as `cp -a` does.
const REQUIRED_XATTR_PREFIXES: [&[u8]; 3] = [b"user.", b"trusted.", b"security.capability"];

/// Work left on the explicit stack of [`copy_tree`].
enum Step {
    /// Create directory `rel` in the destination and schedule its children.
    Enter(PathBuf, Metadata),
    /// All of `rel`'s children are copied: set the directory's own
    /// attributes.
    Finish(PathBuf, Metadata),
}

/// Copies the directory tree `src` to `dst`, which must not exist yet.
///
/// `dst` is created here; on error it may be left half-copied, and the
/// caller removes it.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> DriverResult<()> {
    let root_meta = fs::symlink_metadata(src).map_err(|e| io_err("stat", src, &e))?;
    if !root_meta.is_dir() {
        return Err(DriverError::internal(format!("copy source {} is not a directory", src.display())));
    }
    let root_fd = File::open(src).map_err(|e| io_err("open", src, &e))?;
    let mut copier = Copier { src, dst, root_fd, root_dev: root_meta.dev(), links: HashMap::new() };
    let mut stack = vec![Step::Enter(PathBuf::new(), root_meta)];
    while let Some(step) = stack.pop() {
        match step {
            Step::Enter(rel, meta) => {
                let to = copier.dst_path(&rel);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&to)
                    .map_err(|e| io_err("create directory", &to, &e))?;
                let children = copier.children(&rel)?;
                stack.push(Step::Finish(rel, meta));
                for (child, child_meta) in children {
                    if child_meta.is_dir() {
                        stack.push(Step::Enter(child, child_meta));
                    } else {
                        copier.copy_entry(&child, &child_meta)?;
                    }
                }
            }
            Step::Finish(rel, meta) => copier.set_attributes(&rel, &meta)?,
        }
    }
    Ok(())
}

/// Creates the root of a layer without a parent: an empty directory,
/// mode `0755`, owned by `root:root`.
pub(crate) fn make_empty_root(dst: &Path) -> DriverResult<()> {
    fs::DirBuilder::new().mode(0o700).create(dst).map_err(|e| io_err("create directory", dst, &e))?;
    std::os::unix::fs::lchown(dst, Some(0), Some(0)).map_err(|e| io_err("chown", dst, &e))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).map_err(|e| io_err("chmod", dst, &e))
}

/// State of one copy.
struct Copier<'a> {
    src: &'a Path,
    dst: &'a Path,
    /// The source root, for opening files beneath it.
    root_fd: File,
    /// The source root's device: an entry on another device is a mount.
    root_dev: u64,
    /// First destination path of each multiply-linked source inode.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    fn src_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.src.to_path_buf()
        } else {
            self.src.join(rel)
        }
    }

    fn dst_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.dst.to_path_buf()
        } else {
            self.dst.join(rel)
        }
    }

    /// The entries of source directory `rel` with their metadata, sorted by
    /// name so that copies (and which name of a hardlink group is copied
    /// first) are deterministic.
    fn children(&self, rel: &Path) -> DriverResult<Vec<(PathBuf, Metadata)>> {
        let dir = self.src_path(rel);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err("read directory", &dir, &e))? {
            let entry = entry.map_err(|e| io_err("read directory", &dir, &e))?;
            names.push(entry.file_name());
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let child = rel.join(&name);
            let path = self.src.join(&child);
            let meta = fs::symlink_metadata(&path).map_err(|e| io_err("stat", &path, &e))?;
            if meta.dev() != self.root_dev {
                return Err(DriverError::failed_precondition(format!(
                    "{} is a mount point inside the layer; unmount it before copying the layer",
                    path.display()
                )));
            }
            out.push((child, meta));
        }
        Ok(out)
    }

    /// Copies one non-directory entry and sets its attributes.
    fn copy_entry(&mut self, rel: &Path, meta: &Metadata) -> DriverResult<()> {
        let from = self.src_path(rel);
        let to = self.dst_path(rel);
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&key) {
                // Same inode: link to the first copy, whose attributes are
                // already complete (link(2) changes only the ctime).
                return fs::hard_link(first, &to).map_err(|e| io_err("hardlink", &to, &e));
            }
        }
        let ft = meta.file_type();
        if ft.is_file() {
            self.copy_file(rel, meta, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_err("read symlink", &from, &e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_err("create symlink", &to, &e))?;
        } else if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
            sys::mknod(&to, meta.mode(), meta.rdev()).map_err(|e| io_err("mknod", &to, &e))?;
        } else {
            return Err(DriverError::unsupported(format!(
                "{} has a file type vfs cannot copy (mode {:o})",
                from.display(),
                meta.mode()
            )));
        }
        self.set_attributes(rel, meta)?;
        if meta.nlink() > 1 {
            self.links.insert(key, to);
        }
        Ok(())
    }

    /// Copies the content of regular file `rel`, opened beneath the source
    /// root and checked to be the inode that was listed.
    fn copy_file(&self, rel: &Path, meta: &Metadata, to: &Path) -> DriverResult<()> {
        let from = self.src_path(rel);
        let mut input =
            sys::open_beneath(&self.root_fd, self.src, rel).map_err(|e| io_err("open", &from, &e))?;
        let opened = input.metadata().map_err(|e| io_err("stat", &from, &e))?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(DriverError::conflict(format!(
                "{} changed while it was being copied; retry when the layer is not in use",
                from.display()
            )));
        }
        let mut output = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| io_err("create", to, &e))?;
        io::copy(&mut input, &mut output).map_err(|e| io_err("copy content to", to, &e))?;
        Ok(())
    }

    /// Owner, mode, xattrs and times of destination `rel`, from the source
    /// entry's `meta`, in the order the module documentation explains.
    fn set_attributes(&self, rel: &Path, meta: &Metadata) -> DriverResult<()> {
        let from = self.src_path(rel);
        let to = self.dst_path(rel);
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| io_err("chown", &to, &e))?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| io_err("chmod", &to, &e))?;
        }
        copy_xattrs(&from, &to)?;
        let atime = Timestamp { sec: meta.atime(), nsec: meta.atime_nsec() };
        let mtime = Timestamp { sec: meta.mtime(), nsec: meta.mtime_nsec() };
        sys::lutimens(&to, atime, mtime).map_err(|e| io_err("set times of", &to, &e))
    }
}

/// Copies every extended attribute of `from` to `to` (neither followed if
/// a symlink).
fn copy_xattrs(from: &Path, to: &Path) -> DriverResult<()> {
    let names = match sys::llistxattr(from) {
        Ok(names) => names,
        // The source file system has no xattrs at all: nothing to copy.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(io_err("list xattrs of", from, &e)),
    };
    for name in names {
        let value = match sys::lgetxattr(from, &name) {
            Ok(v) => v,
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(xattr_err("read", &name, from, &e)),
        };
        match sys::lsetxattr(to, &name, &value) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && !required_xattr(&name) => {}
            Err(e) => return Err(xattr_err("set", &name, to, &e)),
        }
    }
    Ok(())
}

/// Whether xattr `name` belongs to a namespace a copy must never drop.
fn required_xattr(name: &OsStr) -> bool {
    REQUIRED_XATTR_PREFIXES.iter().any(|p| name.as_bytes().starts_with(p))
}

/// An I/O error during a copy, naming the operation and the path.
fn io_err(op: &str, path: &Path, err: &io::Error) -> DriverError {
    DriverError::io(format_args!("{op} {}", path.display()), err)
}

/// An xattr error, naming the attribute too.
fn xattr_err(op: &str, name: &OsStr, path: &Path, err: &io::Error) -> DriverError {
    DriverError::io(format_args!("{op} xattr {:?} of {}", name, path.display()), err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(p: &Path) -> Metadata {
        fs::symlink_metadata(p).unwrap()
    }

    #[test]
    fn empty_root_is_0755_root_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layer");
        make_empty_root(&root).unwrap();
        let m = stat(&root);
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn setuid_survives_the_chown_of_a_non_root_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        let f = src.join("suid");
        fs::write(&f, b"#!/bin/true\n").unwrap();
        std::os::unix::fs::lchown(&f, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
        copy_tree(&src, &dst).unwrap();
        let m = stat(&dst.join("suid"));
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o6755, 1000, 1000));
    }

    #[test]
    fn directory_times_are_set_after_their_children() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/b/f"), b"x").unwrap();
        let t = Timestamp { sec: 1_234_567_890, nsec: 987_654_321 };
        for p in [src.join("a/b"), src.join("a"), src.clone()] {
            sys::lutimens(&p, t, t).unwrap();
        }
        copy_tree(&src, &dst).unwrap();
        for p in [dst.join("a/b"), dst.join("a"), dst.clone()] {
            let m = stat(&p);
            assert_eq!((m.mtime(), m.mtime_nsec()), (t.sec, t.nsec), "{}", p.display());
        }
    }

    #[test]
    fn a_mount_inside_the_tree_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("proc")).unwrap();
        crate::sys::bind_mount(Path::new("/proc"), &src.join("proc")).unwrap();
        let res = copy_tree(&src, &dst);
        crate::mount::unmount(&src.join("proc")).unwrap();
        let err = res.unwrap_err();
        assert_eq!(err.kind, berth_plugin_api::ErrorKind::FailedPrecondition, "{err}");
        assert!(err.message.contains("mount point"), "{err}");
    }

    #[test]
    fn required_namespaces() {
        assert!(required_xattr(OsStr::new("user.x")));
        assert!(required_xattr(OsStr::new("trusted.overlay.opaque")));
        assert!(required_xattr(OsStr::new("security.capability")));
        assert!(!required_xattr(OsStr::new("security.selinux")));
        assert!(!required_xattr(OsStr::new("system.posix_acl_access")));
    }
}
