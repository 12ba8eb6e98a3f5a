//! Path handling beneath a layer root.
//!
//! Every path a layer tar names is first checked lexically ([`RelPath`]: no
//! absolute paths, no `..`), then resolved with `openat2(2)` relative to a
//! descriptor of the layer root with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`: the kernel itself keeps the walk
//! inside the root, refuses to pass through any symlink (one a hostile layer
//! planted or one from below) and refuses to cross into another mount.
//! The last component is then handled with the `*at` calls on the parent's
//! descriptor, never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A path inside a layer, checked lexically: relative, made of normal
/// components only. The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RelPath(PathBuf);

impl RelPath {
    /// Parses a path as a tar names it. `.` and empty components are
    /// dropped (`./etc//passwd` is `etc/passwd`); an absolute path or a `..`
    /// component is an invalid-argument error.
    pub(crate) fn parse(raw: &[u8], what: &str) -> DriverResult<RelPath> {
        if raw.first() == Some(&b'/') {
            return Err(DriverError::invalid_argument(format!(
                "{what} {:?} is absolute; layer paths must be relative to the layer root",
                String::from_utf8_lossy(raw)
            )));
        }
        let mut out = PathBuf::new();
        for comp in raw.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    return Err(DriverError::invalid_argument(format!(
                        "{what} {:?} has a `..` component; layer paths must stay beneath the layer root",
                        String::from_utf8_lossy(raw)
                    )))
                }
                c => out.push(OsStr::from_bytes(c)),
            }
        }
        Ok(RelPath(out))
    }

    /// The root itself.
    pub(crate) fn root() -> RelPath {
        RelPath(PathBuf::new())
    }

    /// Whether this is the root itself.
    pub(crate) fn is_root(&self) -> bool {
        self.0.as_os_str().is_empty()
    }

    /// The path as a [`Path`] (empty for the root).
    pub(crate) fn as_path(&self) -> &Path {
        &self.0
    }

    /// The parent directory and the last component; `None` for the root.
    pub(crate) fn split(&self) -> Option<(RelPath, &OsStr)> {
        let name = self.0.file_name()?;
        let parent = self.0.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((RelPath(parent), name))
    }

    /// `self/name`.
    pub(crate) fn join(&self, name: &OsStr) -> RelPath {
        RelPath(self.0.join(name))
    }

    /// The components.
    pub(crate) fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.0.iter()
    }

    /// For messages.
    pub(crate) fn display(&self) -> String {
        if self.is_root() {
            ".".to_owned()
        } else {
            self.0.display().to_string()
        }
    }
}

/// The flags every resolution beneath a root uses.
fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

/// A layer root, held open: every path operation starts from this descriptor.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens the directory `path` (which must exist).
    pub(crate) fn open(path: &Path) -> DriverResult<Root> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| errno_error(format!("open layer root {}", path.display()), e))?;
        Ok(Root { fd, path: path.to_path_buf() })
    }

    /// The descriptor of the root directory.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path the root was opened at, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `openat2` beneath the root. Errors are raw, for the caller to judge.
    pub(crate) fn openat2(&self, rel: &RelPath, flags: OFlags) -> Result<OwnedFd, Errno> {
        let path: &Path = if rel.is_root() { Path::new(".") } else { rel.as_path() };
        loop {
            match rustix::fs::openat2(&self.fd, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve_flags())
            {
                // The kernel asks for a retry when a rename raced the walk.
                Err(Errno::AGAIN) => continue,
                other => return other,
            }
        }
    }

    /// Opens the existing directory `rel`. A missing directory is
    /// [`Errno::NOENT`]; anything that makes the path unsafe or not a
    /// directory is an invalid-argument error.
    pub(crate) fn dir(&self, rel: &RelPath) -> DriverResult<Result<OwnedFd, Errno>> {
        match self.openat2(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) {
            Ok(fd) => Ok(Ok(fd)),
            Err(Errno::NOENT) => Ok(Err(Errno::NOENT)),
            Err(e) => Err(self.resolve_error(rel, e)),
        }
    }

    /// Opens directory `rel`, creating missing components (mode 0755, owned
    /// by the caller) one at a time, each resolved beneath the root.
    pub(crate) fn dir_all(&self, rel: &RelPath) -> DriverResult<OwnedFd> {
        if let Ok(fd) = self.dir(rel)? {
            return Ok(fd);
        }
        let mut cur = RelPath::root();
        let mut fd = self.dir(&cur)?.map_err(|e| self.resolve_error(&cur, e))?;
        for name in rel.components() {
            cur = cur.join(name);
            match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(errno_error(self.describe(&cur, "create directory"), e)),
            }
            fd = self.dir(&cur)?.map_err(|e| self.resolve_error(&cur, e))?;
        }
        Ok(fd)
    }

    /// Opens the regular file `rel` for reading, never through a symlink.
    pub(crate) fn open_file(&self, rel: &RelPath) -> DriverResult<std::fs::File> {
        self.openat2(rel, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK)
            .map(std::fs::File::from)
            .map_err(|e| self.resolve_error(rel, e))
    }

    /// The error for a failed resolution of `rel`: path-safety failures are
    /// invalid-argument errors, the rest keep their I/O kind.
    pub(crate) fn resolve_error(&self, rel: &RelPath, e: Errno) -> DriverError {
        let why = match e {
            Errno::LOOP => "passes through a symlink; layer entries may not be written through symlinks",
            Errno::XDEV => "leaves the layer root or crosses a mount point",
            Errno::NOTDIR => "has a component that is not a directory",
            Errno::NAMETOOLONG => "is too long",
            Errno::NOSYS => {
                return DriverError::unsupported(format!(
                    "resolve {:?} beneath {}: the kernel lacks openat2(2) (Linux 5.6 or later is needed)",
                    rel.display(),
                    self.path.display()
                ))
            }
            _ => return errno_error(self.describe(rel, "resolve"), e),
        };
        DriverError::invalid_argument(format!(
            "path {:?} {why} (layer root {})",
            rel.display(),
            self.path.display()
        ))
    }

    /// `verb "rel" beneath /root`.
    pub(crate) fn describe(&self, rel: &RelPath, verb: &str) -> String {
        format!("{verb} {:?} beneath {}", rel.display(), self.path.display())
    }
}

/// An errno as a [`DriverError`] with `context`, keeping the I/O kind.
pub(crate) fn errno_error(context: impl std::fmt::Display, e: Errno) -> DriverError {
    DriverError::io(context, &std::io::Error::from(e))
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<rustix::fs::Stat>, Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` from `dir`, recursively when it is a directory; never
/// follows a symlink. Absent is fine.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let Some(st) = lstat_at(dir, name)? else { return Ok(()) };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Err(Errno::NOENT) => Ok(()),
            other => other,
        };
    }
    let sub = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    empty_dir(sub.as_fd(), &mut |_| false)?;
    drop(sub);
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Err(Errno::NOENT) => Ok(()),
        other => other,
    }
}

/// Removes every entry of the open directory `dir` for which `keep` (given
/// the entry's name) answers false. Kept entries are left as they are.
pub(crate) fn empty_dir(dir: BorrowedFd<'_>, keep: &mut dyn FnMut(&OsStr) -> bool) -> Result<(), Errno> {
    for name in list_dir(dir)? {
        if !keep(&name) {
            remove_all_at(dir, &name)?;
        }
    }
    Ok(())
}

/// The names in the open directory `dir`, without `.` and `..`, sorted.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    Ok(names)
}

/// A path naming `name` in the open directory `dir` through `/proc`, for
/// the calls that have no `*at` form (`lsetxattr`, `llistxattr`). Only the
/// directory is reached through the magic link; `name` is a single
/// component and the `l*` calls do not follow it.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_relpath_parse_normalises_and_refuses_escapes() {
        assert_eq!(RelPath::parse(b"./etc//passwd", "entry").unwrap().display(), "etc/passwd");
        assert!(RelPath::parse(b"./", "entry").unwrap().is_root());
        for bad in [&b"/etc/passwd"[..], b"../x", b"a/../../x", b"a/.."] {
            let err = RelPath::parse(bad, "entry").unwrap_err();
            assert_eq!(err.kind, berth_plugin_api::ErrorKind::InvalidArgument, "{bad:?}");
        }
    }
}
