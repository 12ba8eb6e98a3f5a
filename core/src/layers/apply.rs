//! Applying a layer tar onto a directory.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::compress::{decompress, STREAM_BUF};
use super::resolve::{errno_error, lstat_at, proc_path, remove_all_at, RelPath, Root};
use super::whiteout::{classify, Class};
use super::{ApplyOptions, ApplyReport};

/// Applies the layer tar `tar` (plain, gzip or zstd) onto the existing
/// directory `root`, as described in the [module docs](super): entries are
/// created or replace what is there, whiteouts delete from below. Every
/// path is resolved beneath `root`; a hostile tar fails with an
/// invalid-argument error and touches nothing outside it.
///
/// Answers the bytes of regular-file content applied, and counts.
pub fn apply(root: &Path, tar: impl Read, opts: &ApplyOptions) -> DriverResult<ApplyReport> {
    let root = Root::open(root)?;
    let (_, stream) = decompress(tar)?;
    let mut applier = Applier {
        root: &root,
        opts,
        unpacked: HashSet::new(),
        cache: None,
        creator: (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()),
        umask: read_umask(),
        dirs_removed: false,
        dir_times: Vec::new(),
        buf: vec![0; STREAM_BUF],
        report: ApplyReport::default(),
    };
    applier.run(stream).map_err(|e| e.context(format!("apply layer to {}", root.path().display())))?;
    Ok(applier.report)
}

/// The state of one apply.
pub(crate) struct Applier<'r> {
    /// The layer root.
    pub(crate) root: &'r Root,
    opts: &'r ApplyOptions,
    /// Paths this layer created (whiteouts never delete them).
    pub(crate) unpacked: HashSet<RelPath>,
    /// The last parent directory resolved, reused by the next entry in the
    /// same directory. Dropped whenever a directory is removed, since that
    /// is the only way a resolved path can come to mean something else.
    cache: Option<(RelPath, Parent)>,
    /// Who new files belong to before any chown: effective uid and gid.
    creator: (u32, u32),
    /// The process umask, when known (to skip needless `fchmod`s).
    umask: Option<u32>,
    dirs_removed: bool,
    /// Directory times, set last (creating entries changes them).
    dir_times: Vec<(RelPath, Timestamps)>,
    buf: Vec<u8>,
    report: ApplyReport,
}

/// An open parent directory, and what a file created in it gets.
struct Parent {
    fd: OwnedFd,
    /// The group of a new file (the directory's when it is setgid).
    new_gid: u32,
    /// Whether the directory has a default ACL (which, not the umask,
    /// then decides the mode of a new file).
    default_acl: bool,
}

/// The process umask, from `/proc/self/status` (reading it with
/// `umask(2)` would mean changing it under other threads).
fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The metadata of one entry.
struct Meta {
    mode: u32,
    owner: Option<(u32, u32)>,
    times: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A tar reading error: a malformed or truncated tar is an invalid
/// argument; a failing source keeps its kind.
fn read_error(e: std::io::Error) -> DriverError {
    use std::io::ErrorKind as Io;
    match e.kind() {
        Io::Other | Io::InvalidData | Io::InvalidInput | Io::UnexpectedEof => {
            DriverError::invalid_argument(format!("malformed or truncated layer tar: {e}"))
        }
        _ => DriverError::io("read layer tar", &e),
    }
}

/// Parses a PAX time (`1700000000.123456789`, `-1.5`).
fn pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    Some(if !neg {
        Timespec { tv_sec: secs, tv_nsec: nanos }
    } else if nanos == 0 {
        Timespec { tv_sec: -secs, tv_nsec: 0 }
    } else {
        Timespec { tv_sec: -secs - 1, tv_nsec: 1_000_000_000 - nanos }
    })
}

impl Applier<'_> {
    fn run(&mut self, stream: impl Read) -> DriverResult<()> {
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(read_error)? {
            let mut entry = entry.map_err(read_error)?;
            let raw = entry.path_bytes().into_owned();
            let path = RelPath::parse(&raw, "entry")?;
            self.entry(&mut entry, &raw, &path)
                .map_err(|e| e.context(format!("entry {:?}", path.display())))?;
        }
        self.finish_dirs()
    }

    /// Directory removal invalidates the cached parent.
    pub(crate) fn forget_dirs(&mut self) {
        self.cache = None;
        self.dirs_removed = true;
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        path: &RelPath,
    ) -> DriverResult<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        match classify(path)? {
            Class::Entry => {}
            Class::Meta => return Ok(()),
            Class::Whiteout(target) => {
                self.report.entries += 1;
                self.report.whiteouts += 1;
                return self.whiteout(&target);
            }
            Class::Opaque(dir) => {
                self.report.entries += 1;
                self.report.whiteouts += 1;
                return self.opaque(&dir);
            }
        }
        let is_dir = kind == EntryType::Directory
            || (matches!(kind, EntryType::Regular | EntryType::Continuous) && raw.ends_with(b"/"));
        // Refuse what is not allowed before creating anything for it.
        match kind {
            EntryType::Block | EntryType::Char if !self.opts.allow_devices => {
                return Err(DriverError::invalid_argument(
                    "device nodes are not allowed in this layer (ApplyOptions::allow_devices)",
                ))
            }
            EntryType::Fifo if !self.opts.allow_fifos => {
                return Err(DriverError::invalid_argument(
                    "fifos are not allowed in this layer (ApplyOptions::allow_fifos)",
                ))
            }
            EntryType::Symlink => check_symlink_target(path, &link_name(entry)?)?,
            _ => {}
        }
        self.report.entries += 1;
        let meta = self.meta(entry)?;
        let Some((parent, name)) = path.split() else {
            if !is_dir {
                return Err(DriverError::invalid_argument("only a directory may name the layer root"));
            }
            let root = self.root;
            return self.set_dir_meta(root.fd(), path, meta);
        };

        let parent_dir = self.take_parent(&parent)?;
        let dir = &parent_dir.fd;
        let done = match kind {
            _ if is_dir => self.make_dir(dir.as_fd(), name, path, meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(&parent_dir, name, path, entry, meta)
            }
            EntryType::Symlink => self.make_symlink(dir.as_fd(), name, path, &link_name(entry)?, meta),
            EntryType::Link => self.make_hardlink(dir.as_fd(), name, path, &link_name(entry)?),
            EntryType::Block | EntryType::Char | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    k => {
                        let h = entry.header();
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if k == EntryType::Block {
                            FileType::BlockDevice
                        } else {
                            FileType::CharacterDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                self.make_node(dir.as_fd(), name, path, ft, dev, meta)
            }
            other => Err(DriverError::invalid_argument(format!(
                "unsupported tar entry type {:?}",
                other.as_byte()
            ))),
        };
        if !std::mem::take(&mut self.dirs_removed) {
            self.cache = Some((parent, parent_dir));
        }
        done?;
        self.unpacked.insert(path.clone());
        Ok(())
    }

    /// The open parent directory of an entry, created when missing.
    fn take_parent(&mut self, parent: &RelPath) -> DriverResult<Parent> {
        if let Some((p, dir)) = self.cache.take() {
            if &p == parent {
                return Ok(dir);
            }
        }
        let fd = self.root.dir_all(parent)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| errno_error(self.root.describe(parent, "stat"), e))?;
        let new_gid = if st.st_mode & 0o2000 != 0 { st.st_gid } else { self.creator.1 };
        let default_acl = !matches!(
            rustix::fs::fgetxattr(&fd, "system.posix_acl_default", &mut [0u8; 64][..]),
            Err(Errno::NODATA | Errno::NOTSUP)
        );
        Ok(Parent { fd, new_gid, default_acl })
    }

    fn meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> DriverResult<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: std::io::Error| {
            DriverError::invalid_argument(format!("bad {what} in header: {e}"))
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = h.uid().map_err(|e| bad("uid", e))?;
        let gid = h.gid().map_err(|e| bad("gid", e))?;
        let secs = h.mtime().map_err(|e| bad("mtime", e))?;
        let mut mtime = Timespec { tv_sec: i64::try_from(secs).unwrap_or(i64::MAX), tv_nsec: 0 };
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(read_error)? {
            for ext in exts {
                let ext = ext.map_err(read_error)?;
                match ext.key_bytes() {
                    b"mtime" => mtime = pax_time(ext.value_bytes()).unwrap_or(mtime),
                    b"atime" => atime = pax_time(ext.value_bytes()),
                    k if k.starts_with(b"SCHILY.xattr.") => match std::str::from_utf8(&k[13..]) {
                        Ok(name) if xattr_allowed(name, self.opts) => {
                            xattrs.push((name.to_owned(), ext.value_bytes().to_vec()))
                        }
                        _ => self.report.skipped_xattrs += 1,
                    },
                    _ => {}
                }
            }
        }
        let owner = if self.opts.same_owner {
            let (uid, gid) = (
                u32::try_from(uid)
                    .map_err(|_| DriverError::invalid_argument(format!("uid {uid} out of range")))?,
                u32::try_from(gid)
                    .map_err(|_| DriverError::invalid_argument(format!("gid {gid} out of range")))?,
            );
            Some(match &self.opts.id_map {
                Some(map) => map.map(uid, gid)?,
                None => (uid, gid),
            })
        } else {
            None
        };
        let times = Timestamps { last_access: atime.unwrap_or(mtime), last_modification: mtime };
        Ok(Meta { mode, owner, times, xattrs })
    }

    /// Removes whatever is at `dir/name` so a new entry can take its place.
    fn clear(&mut self, dir: BorrowedFd<'_>, name: &OsStr, path: &RelPath) -> DriverResult<()> {
        if let Ok(Some(st)) = lstat_at(dir, name) {
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                self.forget_dirs();
            }
        }
        remove_all_at(dir, name).map_err(|e| errno_error(self.root.describe(path, "replace"), e))
    }

    fn make_dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        meta: Meta,
    ) -> DriverResult<()> {
        let root = self.root;
        let fail = |e| errno_error(root.describe(path, "create directory"), e);
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing = lstat_at(dir, name).map_err(fail)?;
                if existing.map(|st| FileType::from_raw_mode(st.st_mode)) != Some(FileType::Directory) {
                    self.clear(dir, name, path)?;
                    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)).map_err(fail)?;
                }
            }
            Err(e) => return Err(fail(e)),
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(fail)?;
        self.set_dir_meta(fd.as_fd(), path, meta)
    }

    fn set_dir_meta(&mut self, fd: BorrowedFd<'_>, path: &RelPath, meta: Meta) -> DriverResult<()> {
        self.set_fd_meta(fd, path, &meta, true, true)?;
        self.dir_times.push((path.clone(), meta.times));
        Ok(())
    }

    /// Owner, then mode (a chown clears setuid/setgid), then xattrs (a chown
    /// clears `security.capability` too).
    fn set_fd_meta(
        &mut self,
        fd: BorrowedFd<'_>,
        path: &RelPath,
        meta: &Meta,
        chown: bool,
        chmod: bool,
    ) -> DriverResult<()> {
        if let Some((uid, gid)) = meta.owner.filter(|_| chown) {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| errno_error(self.root.describe(path, "set owner of"), e))?;
        }
        if chmod {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
                .map_err(|e| errno_error(self.root.describe(path, "set mode of"), e))?;
        }
        for (name, value) in &meta.xattrs {
            let r = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty());
            self.xattr_result(r, path, name)?;
        }
        Ok(())
    }

    fn xattr_result(&mut self, r: Result<(), Errno>, path: &RelPath, name: &str) -> DriverResult<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (Errno::NOTSUP | Errno::PERM)) => {
                tracing::warn!(path = %path.display(), xattr = name, error = %e, "layer xattr not applied");
                self.report.skipped_xattrs += 1;
                Ok(())
            }
            Err(e) => Err(errno_error(self.root.describe(path, &format!("set xattr {name} on")), e)),
        }
    }

    fn make_file<R: Read>(
        &mut self,
        parent: &Parent,
        name: &OsStr,
        path: &RelPath,
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
    ) -> DriverResult<()> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = parent.fd.as_fd();
        let create_mode = Mode::from_raw_mode(meta.mode & 0o777);
        let root = self.root;
        let fail = |e| errno_error(root.describe(path, "create file"), e);
        let fd = match rustix::fs::openat(dir, name, flags, create_mode) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                self.clear(dir, name, path)?;
                rustix::fs::openat(dir, name, flags, create_mode).map_err(fail)?
            }
            Err(e) => return Err(fail(e)),
        };
        let mut file = File::from(fd);
        let want = entry.size();
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| DriverError::io(self.root.describe(path, "write file"), &e))?;
            written += n as u64;
        }
        if written < want && entry.header().entry_type() != EntryType::GNUSparse {
            return Err(DriverError::invalid_argument(format!(
                "layer tar is truncated: {written} of {want} bytes of content"
            )));
        }
        self.report.size += written;
        // The common case needs neither call: a file created by its owner
        // already has the right owner, and the umask left the mode alone.
        let chown = meta.owner.is_some_and(|(uid, gid)| (uid, gid) != (self.creator.0, parent.new_gid));
        let chmod = parent.default_acl
            || meta.mode & 0o7000 != 0
            || !matches!(self.umask, Some(umask) if meta.mode & 0o777 & umask == 0);
        self.set_fd_meta(file.as_fd(), path, &meta, chown, chmod)?;
        rustix::fs::futimens(&file, &meta.times)
            .map_err(|e| errno_error(self.root.describe(path, "set times of"), e))
    }

    fn make_symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        target: &[u8],
        meta: Meta,
    ) -> DriverResult<()> {
        let target = OsStr::from_bytes(target);
        let root = self.root;
        let fail = |e| errno_error(root.describe(path, "create symlink"), e);
        match rustix::fs::symlinkat(target, dir, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.clear(dir, name, path)?;
                rustix::fs::symlinkat(target, dir, name).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        }
        self.set_path_meta(dir, name, path, &meta, false)
    }

    fn make_node(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        ft: FileType,
        dev: u64,
        meta: Meta,
    ) -> DriverResult<()> {
        let mode = Mode::from_raw_mode(meta.mode & 0o777);
        let root = self.root;
        let fail = |e| errno_error(root.describe(path, "create node"), e);
        match rustix::fs::mknodat(dir, name, ft, mode, dev) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                self.clear(dir, name, path)?;
                rustix::fs::mknodat(dir, name, ft, mode, dev).map_err(fail)?;
            }
            Err(e) => return Err(fail(e)),
        }
        self.set_path_meta(dir, name, path, &meta, true)
    }

    /// Metadata of an entry that cannot be opened for it (symlinks, device
    /// nodes, fifos): `*at` calls that do not follow the last component.
    fn set_path_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        meta: &Meta,
        chmod: bool,
    ) -> DriverResult<()> {
        if let Some((uid, gid)) = meta.owner {
            let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
            rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| errno_error(self.root.describe(path, "set owner of"), e))?;
        }
        if chmod {
            // Not a symlink (just made by mknodat), so following is moot.
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| errno_error(self.root.describe(path, "set mode of"), e))?;
        }
        if !meta.xattrs.is_empty() {
            let p = proc_path(dir, name);
            for (xname, value) in &meta.xattrs {
                let r = rustix::fs::lsetxattr(&p, xname.as_str(), value, XattrFlags::empty());
                self.xattr_result(r, path, xname)?;
            }
        }
        rustix::fs::utimensat(dir, name, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| errno_error(self.root.describe(path, "set times of"), e))
    }

    fn make_hardlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        target: &[u8],
    ) -> DriverResult<()> {
        let target = RelPath::parse(target, "hardlink target")?;
        let Some((tparent, tname)) = target.split() else {
            return Err(DriverError::invalid_argument("hardlink to the layer root"));
        };
        let missing = || {
            DriverError::invalid_argument(format!(
                "hardlink target {:?} does not exist in the layer",
                target.display()
            ))
        };
        let tdir = self.root.dir(&tparent)?.map_err(|_| missing())?;
        let tst = lstat_at(tdir.as_fd(), tname)
            .map_err(|e| errno_error(self.root.describe(&target, "stat"), e))?
            .ok_or_else(missing)?;
        if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
            return Err(DriverError::invalid_argument(format!(
                "hardlink target {:?} is a directory",
                target.display()
            )));
        }
        let root = self.root;
        let fail = |e| errno_error(root.describe(path, "create hardlink"), e);
        match rustix::fs::linkat(tdir.as_fd(), tname, dir, name, AtFlags::empty()) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                if let Ok(Some(st)) = lstat_at(dir, name) {
                    if st.st_ino == tst.st_ino && st.st_dev == tst.st_dev {
                        return Ok(());
                    }
                }
                self.clear(dir, name, path)?;
                rustix::fs::linkat(tdir.as_fd(), tname, dir, name, AtFlags::empty()).map_err(fail)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// Sets the times of the directories the layer named, now that nothing
    /// more is created in them. One that a later entry removed or replaced
    /// is skipped.
    fn finish_dirs(&mut self) -> DriverResult<()> {
        self.cache = None;
        for (path, times) in std::mem::take(&mut self.dir_times) {
            let fd = match self.root.openat2(&path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                Err(e) => return Err(self.root.resolve_error(&path, e)),
            };
            rustix::fs::futimens(&fd, &times)
                .map_err(|e| errno_error(self.root.describe(&path, "set times of"), e))?;
        }
        Ok(())
    }
}

/// The link name of a symlink or hardlink entry.
fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> DriverResult<Vec<u8>> {
    match entry.link_name_bytes() {
        Some(l) if !l.is_empty() => Ok(l.into_owned()),
        _ => Err(DriverError::invalid_argument("link entry without a target")),
    }
}

/// A symlink may point anywhere absolute (a container resolves that inside
/// its root), but a relative target may not climb above the layer root.
fn check_symlink_target(path: &RelPath, target: &[u8]) -> DriverResult<()> {
    if target.is_empty() {
        return Err(DriverError::invalid_argument("symlink with an empty target"));
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let mut depth = path.components().count() as i64 - 1;
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(DriverError::invalid_argument(format!(
                        "symlink target {:?} climbs above the layer root",
                        String::from_utf8_lossy(target)
                    )));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// The xattr namespaces a layer may set.
fn xattr_allowed(name: &str, opts: &ApplyOptions) -> bool {
    if let Some(rest) = name.strip_prefix("user.") {
        !rest.starts_with("overlay.")
    } else if name.starts_with("security.") {
        true
    } else if let Some(rest) = name.strip_prefix("trusted.") {
        opts.trusted_xattrs && !rest.starts_with("overlay.")
    } else {
        name == "system.posix_acl_access" || name == "system.posix_acl_default"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_pax_times_parse() {
        let t = pax_time(b"1700000000.123456789").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = pax_time(b"12.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 500_000_000));
        let t = pax_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        assert!(pax_time(b"x").is_none());
    }

    #[test]
    fn layers_symlink_targets_may_not_climb_out() {
        let p = RelPath::parse(b"usr/lib/x", "").unwrap();
        assert!(check_symlink_target(&p, b"../../etc/x").is_ok());
        assert!(check_symlink_target(&p, b"/etc/x").is_ok());
        assert!(check_symlink_target(&p, b"../../../etc/x").is_err());
        assert!(check_symlink_target(&p, b"a/../../../..").is_err());
    }
}
