//! OCI whiteouts: what a name means, and applying deletions and opaque
//! markers beneath the layer root.
//!
//! Per the OCI image spec a whiteout applies only to what lies *below* the
//! layer: a path this layer itself unpacked is never deleted by a whiteout
//! or an opaque marker of the same layer, whatever their order in the tar.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use berth_plugin_api::{DriverError, DriverResult};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use super::apply::Applier;
use super::resolve::{errno_error, list_dir, lstat_at, remove_all_at, RelPath};
use super::{WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// What a tar entry's name makes of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// An ordinary entry.
    Entry,
    /// `.wh.<name>`: delete this path from below.
    Whiteout(RelPath),
    /// `.wh..wh..opq`: make this directory opaque.
    Opaque(RelPath),
    /// AUFS metadata (`.wh..wh.plnk/...`, `.wh..wh.aufs`): skipped.
    Meta,
}

/// Classifies `path`. A `.wh.` name anywhere but in the last component
/// (a whiteout cannot have children) is an invalid-argument error, except
/// under a top-level AUFS metadata directory, which is skipped whole.
pub(crate) fn classify(path: &RelPath) -> DriverResult<Class> {
    let Some((parent, name)) = path.split() else { return Ok(Class::Entry) };
    let first = path.components().next().map(OsStr::as_bytes).unwrap_or_default();
    if first.starts_with(WHITEOUT_META_PREFIX.as_bytes()) && first != WHITEOUT_OPAQUE.as_bytes() {
        return Ok(Class::Meta);
    }
    if let Some(bad) = parent.components().find(|c| c.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())) {
        return Err(DriverError::invalid_argument(format!(
            "entry {:?} lies under whiteout {:?}; a whiteout cannot have children",
            path.display(),
            bad.to_string_lossy()
        )));
    }
    let name = name.as_bytes();
    if name == WHITEOUT_OPAQUE.as_bytes() {
        return Ok(Class::Opaque(parent));
    }
    if name.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
        return Ok(Class::Meta);
    }
    let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) else { return Ok(Class::Entry) };
    if target.is_empty() || target == b"." || target == b".." {
        return Err(DriverError::invalid_argument(format!(
            "whiteout {:?} names no deletable entry",
            path.display()
        )));
    }
    Ok(Class::Whiteout(parent.join(OsStr::from_bytes(target))))
}

impl Applier<'_> {
    /// Deletes `target` (recursively, never following a symlink) unless this
    /// layer unpacked it. A missing target or parent is fine; a parent that
    /// passes through a symlink is an invalid-argument error.
    pub(crate) fn whiteout(&mut self, target: &RelPath) -> DriverResult<()> {
        if self.unpacked.contains(target) {
            return Ok(());
        }
        let Some((parent, name)) = target.split() else { return Ok(()) };
        let Ok(dir) = self.root.dir(&parent)? else { return Ok(()) };
        self.forget_dirs();
        remove_all_at(dir.as_fd(), name).map_err(|e| errno_error(self.root.describe(target, "delete"), e))
    }

    /// Makes `dir` opaque: removes everything beneath it that this layer did
    /// not unpack. Directories this layer unpacked are kept and cleared the
    /// same way, so nothing from below survives anywhere under `dir`.
    pub(crate) fn opaque(&mut self, dir: &RelPath) -> DriverResult<()> {
        let Ok(fd) = self.root.dir(dir)? else { return Ok(()) };
        self.forget_dirs();
        self.clear_below(fd.as_fd(), dir).map_err(|e| errno_error(self.root.describe(dir, "make opaque"), e))
    }

    fn clear_below(&self, fd: std::os::fd::BorrowedFd<'_>, dir: &RelPath) -> Result<(), Errno> {
        for name in list_dir(fd)? {
            let child = dir.join(&name);
            if !self.unpacked.contains(&child) {
                remove_all_at(fd, &name)?;
                continue;
            }
            let Some(st) = lstat_at(fd, &name)? else { continue };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = rustix::fs::openat(
                    fd,
                    &name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.clear_below(sub.as_fd(), &child)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(p: &str) -> DriverResult<Class> {
        classify(&RelPath::parse(p.as_bytes(), "entry").unwrap())
    }

    #[test]
    fn layers_whiteout_names_are_classified() {
        assert_eq!(class("a/b").unwrap(), Class::Entry);
        assert_eq!(class("a/.wh.b").unwrap(), Class::Whiteout(RelPath::parse(b"a/b", "").unwrap()));
        assert_eq!(class(".wh.b").unwrap(), Class::Whiteout(RelPath::parse(b"b", "").unwrap()));
        assert_eq!(class("a/.wh..wh..opq").unwrap(), Class::Opaque(RelPath::parse(b"a", "").unwrap()));
        assert_eq!(class(".wh..wh..opq").unwrap(), Class::Opaque(RelPath::root()));
        assert_eq!(class(".wh..wh.plnk/123").unwrap(), Class::Meta);
        assert_eq!(class("a/.wh..wh.aufs").unwrap(), Class::Meta);
        assert!(class("a/.wh.b/c").is_err());
        assert!(class("a/.wh.").is_err());
        assert!(class("a/.wh...").is_err());
    }
}
