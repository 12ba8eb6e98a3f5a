//! An OCI layer tar applied to a layer's `diff` dir.
//!
//! OCI whiteouts become overlay's: `.wh.<name>` a character device 0/0 at
//! `<name>` (whatever this layer held there is removed first), and
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory.
//! Everything else is made as the tar says: owner, then permission bits
//! (setuid and friends survive), then xattrs (`security.capability` after
//! the owner, which would clear it), then times; directories' times once
//! all their entries are in.
//!
//! Every path is resolved beneath the `diff` dir, one directory fd at a
//! time, with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …)`, and the
//! last component is only ever used with `*at` calls that do not follow it.
//! A hostile tar — an absolute path, a `..`, a path or whiteout through a
//! symlink, a hardlink to anything outside this layer, a character device
//! 0/0 (which overlay would read as a whiteout), an entry type tar cannot
//! safely express — is refused as an invalid argument, and nothing outside
//! the `diff` dir is created, changed or deleted. What was applied before
//! the bad entry stays: the caller removes the layer.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::export::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};

/// One refused or failed entry.
enum Bad {
    /// The tar asks for something it must not: an invalid argument.
    Hostile(String),
    /// The file system said no.
    Io(String, io::Error),
}

impl Bad {
    fn into_driver(self, layer: &str) -> DriverError {
        match self {
            Bad::Hostile(why) => {
                DriverError::invalid_argument(format!("refused layer tar for layer {layer:?}: {why}"))
            }
            Bad::Io(what, e) => {
                DriverError::io(format_args!("apply layer tar to layer {layer:?}: {what}"), &e)
            }
        }
    }
}

/// Maps an I/O error of an operation on `path`: a symlink, a non-directory
/// or a way out met while resolving is the tar's fault.
fn io_err<'a>(what: &'a str, path: &'a str) -> impl FnOnce(Errno) -> Bad + 'a {
    move |e| match e {
        Errno::LOOP | Errno::XDEV | Errno::NOTDIR => {
            Bad::Hostile(format!("{path:?} goes through a symlink or a non-directory"))
        }
        e => Bad::Io(format!("{what} {path:?}"), e.into()),
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Applies the tar read from `input` to the tree at `diff`; answers the
/// bytes of file content written.
pub(crate) fn apply_tar(diff: &Path, input: &mut dyn Read, layer: &str) -> DriverResult<u64> {
    let root = rustix::fs::open(diff, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| DriverError::io(format_args!("open {}", diff.display()), &e.into()))?;
    let mut applied = Applier { root, size: 0, dir_times: Vec::new() };
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| DriverError::invalid_argument(format!("layer tar for layer {layer:?}: {e}")))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| DriverError::invalid_argument(format!("layer tar for layer {layer:?}: {e}")))?;
        applied.entry(entry).map_err(|b| b.into_driver(layer))?;
    }
    // Directory times last, deepest first: making their entries changed them.
    for (comps, times) in std::mem::take(&mut applied.dir_times).into_iter().rev() {
        let shown = show(&comps);
        let fd = applied.open_dir(&comps, false).map_err(|b| b.into_driver(layer))?;
        rustix::fs::futimens(&fd, &times)
            .map_err(|e| Bad::Io(format!("set the times of {shown:?}"), e.into()).into_driver(layer))?;
    }
    Ok(applied.size)
}

/// The state of one apply.
struct Applier {
    root: OwnedFd,
    size: u64,
    /// Directories made or changed, with the times they get at the end.
    dir_times: Vec<(Vec<OsString>, Timestamps)>,
}

/// The components of a tar path, or why it is refused.
fn components(raw: &[u8]) -> Result<Vec<OsString>, Bad> {
    let shown = String::from_utf8_lossy(raw);
    if raw.starts_with(b"/") {
        return Err(Bad::Hostile(format!("absolute path {shown:?}")));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(Bad::Hostile(format!("path {shown:?} climbs out with \"..\""))),
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

/// A path for messages.
fn show(comps: &[OsString]) -> String {
    comps.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// `(atime, mtime)` from the header's mtime and the PAX `atime`/`mtime`
/// records (which carry fractions of a second).
fn times(mtime: u64, pax: &[(String, Vec<u8>)]) -> Timestamps {
    let parse = |key: &str| {
        let (_, v) = pax.iter().find(|(k, _)| k == key)?;
        let s = std::str::from_utf8(v).ok()?;
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        let secs: i64 = secs.parse().ok()?;
        let digits: String = frac.chars().take(9).collect();
        let nanos: i64 = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
        Some(Timespec { tv_sec: secs, tv_nsec: nanos as _ })
    };
    let mtime = parse("mtime").unwrap_or(Timespec { tv_sec: mtime as i64, tv_nsec: 0 });
    Timestamps { last_access: parse("atime").unwrap_or(mtime), last_modification: mtime }
}

impl Applier {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), Bad> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = components(&entry.path_bytes())?;
        let Some((name, parents)) = comps.split_last() else { return Ok(()) };
        let shown = show(&comps);
        let nb = name.as_bytes();
        if let Some(target) = nb.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.open_dir(parents, true)?;
            if nb == OPAQUE_MARKER.as_bytes() {
                return rustix::fs::fsetxattr(&parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| Bad::Io(format!("mark {:?} opaque", show(parents)), e.into()));
            }
            if matches!(target, b"" | b"." | b"..") || target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Err(Bad::Hostile(format!("malformed whiteout {shown:?}")));
            }
            let target = OsStr::from_bytes(target);
            remove_entry(&parent, target).map_err(io_err("remove", &shown))?;
            return rustix::fs::mknodat(&parent, target, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(io_err("make whiteout", &shown));
        }

        let header = entry.header().clone();
        let mode = Mode::from_raw_mode(
            header.mode().map_err(|e| Bad::Hostile(format!("malformed mode of {shown:?}: {e}")))? & 0o7777,
        );
        let uid = header.uid().map_err(|e| Bad::Hostile(format!("malformed owner of {shown:?}: {e}")))?;
        let gid = header.gid().map_err(|e| Bad::Hostile(format!("malformed group of {shown:?}: {e}")))?;
        let owner = (
            Some(rustix::fs::Uid::from_raw(
                u32::try_from(uid).map_err(|_| Bad::Hostile(format!("uid of {shown:?}")))?,
            )),
            Some(rustix::fs::Gid::from_raw(
                u32::try_from(gid).map_err(|_| Bad::Hostile(format!("gid of {shown:?}")))?,
            )),
        );
        let pax = pax_records(&mut entry).map_err(|e| Bad::Io(format!("PAX records of {shown:?}"), e))?;
        let stamp = times(header.mtime().unwrap_or(0), &pax);
        let xattrs: Vec<(&str, &[u8])> = pax
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("SCHILY.xattr.")?, v.as_slice())))
            .filter(|(k, _)| !k.starts_with("trusted.overlay."))
            .collect();
        let parent = self.open_dir(parents, true)?;
        let existing = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_dir =
            existing.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if kind == EntryType::Directory {
            if !existing_dir {
                remove_entry(&parent, name).map_err(io_err("replace", &shown))?;
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                    .map_err(io_err("mkdir", &shown))?;
            }
            let dir = rustix::fs::openat(
                &parent,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("open", &shown))?;
            set_attrs(&dir, owner, mode, &xattrs).map_err(io_err("set attributes of", &shown))?;
            self.dir_times.push((comps.clone(), stamp));
            return Ok(());
        }
        if existing.is_some() {
            remove_entry(&parent, name).map_err(io_err("replace", &shown))?;
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create", &shown))?;
                let mut file = File::from(fd);
                self.size +=
                    io::copy(&mut entry, &mut file).map_err(|e| Bad::Io(format!("write {shown:?}"), e))?;
                set_attrs(&file, owner, mode, &xattrs).map_err(io_err("set attributes of", &shown))?;
                rustix::fs::futimens(&file, &stamp).map_err(io_err("set the times of", &shown))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Bad::Hostile(format!("symlink {shown:?} without a target")))?;
                rustix::fs::symlinkat(target.as_ref(), &parent, name).map_err(io_err("symlink", &shown))?;
                self.finish_at(&parent, name, owner, None, &xattrs, &stamp, &shown)
            }
            EntryType::Link => {
                let raw = entry
                    .link_name_bytes()
                    .ok_or_else(|| Bad::Hostile(format!("hardlink {shown:?} without a target")))?;
                let target = components(&raw)?;
                let Some((tname, tparents)) = target.split_last() else {
                    return Err(Bad::Hostile(format!("hardlink {shown:?} to the layer root")));
                };
                let tdir = self.open_dir(tparents, false)?;
                rustix::fs::linkat(&tdir, tname, &parent, name, AtFlags::empty()).map_err(|e| match e {
                    Errno::NOENT => Bad::Hostile(format!(
                        "hardlink {shown:?} to {:?}, which is not in this layer",
                        show(&target)
                    )),
                    e => io_err("hardlink", &shown)(e),
                })
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let ft = match kind {
                    EntryType::Char if (major, minor) == (0, 0) => {
                        return Err(Bad::Hostile(format!(
                            "character device 0/0 {shown:?}, which overlay would take for a whiteout"
                        )))
                    }
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                rustix::fs::mknodat(&parent, name, ft, Mode::empty(), rustix::fs::makedev(major, minor))
                    .map_err(io_err("make node", &shown))?;
                self.finish_at(&parent, name, owner, Some(mode), &xattrs, &stamp, &shown)
            }
            other => Err(Bad::Hostile(format!("entry {shown:?} of unsupported type {other:?}"))),
        }
    }

    /// Owner, mode, xattrs and times of the non-regular entry `name` in
    /// `parent`, never following it.
    #[allow(clippy::too_many_arguments)]
    fn finish_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        owner: (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>),
        mode: Option<Mode>,
        xattrs: &[(&str, &[u8])],
        stamp: &Timestamps,
        shown: &str,
    ) -> Result<(), Bad> {
        rustix::fs::chownat(parent, name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("chown", shown))?;
        if let Some(mode) = mode {
            rustix::fs::chmodat(parent, name, mode, AtFlags::empty()).map_err(io_err("chmod", shown))?;
        }
        // No fd can carry xattrs of a node or symlink: name it through the
        // directory fd, without following the last component.
        let mut via = OsString::from(format!("/proc/self/fd/{}/", parent.as_raw_fd()));
        via.push(name);
        for (k, v) in xattrs {
            rustix::fs::lsetxattr(Path::new(&via), *k, v, XattrFlags::empty())
                .map_err(|e| Bad::Io(format!("set xattr {k} of {shown:?}"), e.into()))?;
        }
        rustix::fs::utimensat(parent, name, stamp, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("set the times of", shown))
    }

    /// The directory `comps` below the root, resolved without following any
    /// symlink or leaving the tree; with `create`, missing directories are
    /// made (`0755`, root-owned, as moby does for implied parents).
    fn open_dir(&self, comps: &[OsString], create: bool) -> Result<OwnedFd, Bad> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let whole: Vec<u8> = comps.iter().map(|c| c.as_bytes()).collect::<Vec<_>>().join(&b'/');
        let shown = show(comps);
        let path = if whole.is_empty() { OsString::from(".") } else { OsString::from_vec(whole) };
        match rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(e) => return Err(io_err("open directory", &shown)(e)),
        }
        let mut cur = rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), RESOLVE)
            .map_err(io_err("open", "."))?;
        for c in comps {
            match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err("mkdir", &shown)(e)),
            }
            cur = rustix::fs::openat2(&cur, c, flags, Mode::empty(), RESOLVE)
                .map_err(io_err("open directory", &shown))?;
        }
        Ok(cur)
    }
}

/// Owner, then mode, then xattrs, through an open fd.
fn set_attrs<F: std::os::fd::AsFd>(
    fd: &F,
    owner: (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>),
    mode: Mode,
    xattrs: &[(&str, &[u8])],
) -> rustix::io::Result<()> {
    rustix::fs::fchown(fd, owner.0, owner.1)?;
    rustix::fs::fchmod(fd, mode)?;
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(fd, *k, v, XattrFlags::empty())?;
    }
    Ok(())
}

/// The entry's PAX records (xattrs, precise times).
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Ok(k) = ext.key() {
                out.push((k.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

/// Removes whatever is at `name` in `dir` (a whole tree for a directory,
/// reached through the directory fd, never through a symlink).
fn remove_entry(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let mut via = OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
            via.push(name);
            std::fs::remove_dir_all(&via).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
    }
}
