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
//! symlink, a hardlink to anything outside the layers, a character device
//! 0/0 (which overlay would read as a whiteout), an entry type tar cannot
//! safely express — is refused as an invalid argument, and nothing outside
//! the `diff` dir is created, changed or deleted. What was applied before
//! the bad entry stays: the caller removes the layer.
//!
//! The layers below (`lowers`, nearest first) are only read, each
//! resolved beneath its own root with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`,
//! and seen as overlay merges them ([`Applier::lookup`]): a whiteout or an
//! opaque directory above hides what is below. A hardlink to a file only a
//! lower layer has copies that file up first (content, owner, mode, xattrs
//! but `trusted.overlay.*`, times; parents made with the lower directories'
//! metadata), as overlay's own copy-up does. A parent directory the tar
//! implies is copied up the same way; one that is a symlink or another
//! non-directory in the merged lower view is refused, as is any path or
//! hardlink target through one. A symlink whose relative target climbs
//! above the layer root is refused (absolute targets are fine: a container
//! resolves them inside its root), as berth-core's engine does.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::export::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};

/// One refused or failed entry.
enum Bad {
    /// The tar asks for something it must not: an invalid argument.
    Hostile(String),
    /// The file system said no.
    Io(String, io::Error),
    /// A directory looked up without `create` is not there.
    Missing(String),
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
            Bad::Missing(path) => DriverError::io(
                format_args!("apply layer tar to layer {layer:?}: open directory {path:?}"),
                &io::Error::from(io::ErrorKind::NotFound),
            ),
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

/// How a lower layer's paths are resolved: beneath its own root.
const RESOLVE_LOWER: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Where the merged view (this layer's `diff` dir over its lowers) has a path.
enum Found {
    /// Nowhere, or hidden by a whiteout or an opaque directory.
    Absent,
    /// A directory: the layers that merge into it (0 is this layer's own
    /// `diff` dir, then the lowers), topmost first, with its fd in each.
    Dir(Vec<(usize, OwnedFd)>),
    /// Something else, topmost in `layer`: its parent directory there, and
    /// its `lstat`.
    Other { layer: usize, parent: OwnedFd, st: Stat },
}

/// Whether `st` is overlay's whiteout, a character device 0/0.
fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Whether the open directory `fd` is marked opaque.
fn is_opaque(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 2];
    rustix::fs::fgetxattr(fd, OPAQUE_XATTR, &mut buf[..]).is_ok_and(|n| &buf[..n] == b"y")
}

/// A relative symlink target must not climb above the layer root from the
/// link's directory, `depth` components below the root (absolute targets
/// are resolved by a container inside its root, and are fine).
fn check_symlink_target(depth: usize, target: &[u8], shown: &str) -> Result<(), Bad> {
    if target.is_empty() {
        return Err(Bad::Hostile(format!("symlink {shown:?} with an empty target")));
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let mut depth = depth as i64;
    for comp in target.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(Bad::Hostile(format!(
                        "symlink {shown:?} to {:?}, which climbs above the layer root",
                        String::from_utf8_lossy(target)
                    )));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Applies the tar read from `input` to the tree at `diff`; answers the
/// bytes of file content written.
pub(crate) fn apply_tar(
    diff: &Path,
    lowers: &[PathBuf],
    input: &mut dyn Read,
    layer: &str,
) -> DriverResult<u64> {
    let open = |dir: &Path| {
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| DriverError::io(format_args!("open {}", dir.display()), &e.into()))
    };
    let root = open(diff)?;
    let lowers = lowers.iter().map(|l| open(l)).collect::<DriverResult<Vec<_>>>()?;
    let mut applied = Applier { root, lowers, size: 0, dir_times: Vec::new() };
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| DriverError::invalid_argument(format!("layer tar for layer {layer:?}: {e}")))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| DriverError::invalid_argument(format!("layer tar for layer {layer:?}: {e}")))?;
        applied.entry(entry).map_err(|b| b.into_driver(layer))?;
    }
    // Directory times last: making their entries changed them. The last
    // times given for a directory win; one a later entry removed or
    // replaced is skipped.
    let mut done = HashSet::new();
    for (comps, times) in std::mem::take(&mut applied.dir_times).into_iter().rev() {
        if !done.insert(comps.clone()) {
            continue;
        }
        let shown = show(&comps);
        let fd = match applied.open_dir(&comps, false) {
            Ok(fd) => fd,
            Err(Bad::Hostile(_) | Bad::Missing(_)) => continue,
            Err(b) => return Err(b.into_driver(layer)),
        };
        rustix::fs::futimens(&fd, &times)
            .map_err(|e| Bad::Io(format!("set the times of {shown:?}"), e.into()).into_driver(layer))?;
    }
    Ok(applied.size)
}

/// The state of one apply.
struct Applier {
    root: OwnedFd,
    /// The roots of the layers below, nearest first.
    lowers: Vec<OwnedFd>,
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
                check_symlink_target(parents.len(), &target, &shown)?;
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
                let missing = || {
                    Bad::Hostile(format!(
                        "hardlink {shown:?} to {:?}, which is in neither this layer nor one below",
                        show(&target)
                    ))
                };
                let tdir = match self.lookup(&target)? {
                    Found::Absent => return Err(missing()),
                    Found::Dir(_) => {
                        return Err(Bad::Hostile(format!(
                            "hardlink {shown:?} to {:?}, which is a directory",
                            show(&target)
                        )))
                    }
                    Found::Other { layer: 0, parent, .. } => parent,
                    Found::Other { layer, parent: lower, st } => {
                        self.copy_up(tparents, tname, layer, &lower, &st)?
                    }
                };
                rustix::fs::linkat(&tdir, tname, &parent, name, AtFlags::empty()).map_err(|e| match e {
                    Errno::NOENT => missing(),
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
        let via = proc_path(parent, name);
        for (k, v) in xattrs {
            rustix::fs::lsetxattr(&via, *k, v, XattrFlags::empty())
                .map_err(|e| Bad::Io(format!("set xattr {k} of {shown:?}"), e.into()))?;
        }
        rustix::fs::utimensat(parent, name, stamp, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("set the times of", shown))
    }

    /// The directory `comps` below the root, resolved without following any
    /// symlink or leaving the tree. With `create`, missing directories are
    /// made: copied up (owner, mode, xattrs, times) when the merged lower
    /// view has them as directories, refused when it has a symlink or
    /// another non-directory there, else `0755`, root-owned, as moby does
    /// for implied parents.
    fn open_dir(&mut self, comps: &[OsString], create: bool) -> Result<OwnedFd, Bad> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let whole: Vec<u8> = comps.iter().map(|c| c.as_bytes()).collect::<Vec<_>>().join(&b'/');
        let shown = show(comps);
        let path = if whole.is_empty() { OsString::from(".") } else { OsString::from_vec(whole) };
        match rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Err(Bad::Missing(shown)),
            Err(e) => return Err(io_err("open directory", &shown)(e)),
        }
        let mut cur = rustix::fs::openat2(&self.root, ".", flags, Mode::empty(), RESOLVE)
            .map_err(io_err("open", "."))?;
        for (i, c) in comps.iter().enumerate() {
            match rustix::fs::openat2(&cur, c, flags, Mode::empty(), RESOLVE) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(io_err("open directory", &shown)(e)),
            }
            let prefix = &comps[..=i];
            let here = show(prefix);
            let from = match self.lookup(prefix)? {
                Found::Absent => None,
                Found::Dir(mut layers) => Some(layers.swap_remove(0).1),
                Found::Other { .. } => {
                    return Err(Bad::Hostile(format!(
                        "{shown:?} goes through {here:?}, a symlink or a non-directory in a lower layer"
                    )))
                }
            };
            let mode = if from.is_some() { 0o700 } else { 0o755 };
            match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err("mkdir", &shown)(e)),
            }
            cur = rustix::fs::openat2(&cur, c, flags, Mode::empty(), RESOLVE)
                .map_err(io_err("open directory", &shown))?;
            if let Some(lower) = from {
                let st = rustix::fs::fstat(&lower).map_err(io_err("stat the lower directory", &here))?;
                let xattrs = read_xattrs(
                    |buf| rustix::fs::flistxattr(&lower, buf),
                    |k, buf| rustix::fs::fgetxattr(&lower, k, buf),
                )
                .map_err(io_err("read the xattrs of the lower directory", &here))?;
                copy_meta_fd(&cur, &st, &xattrs).map_err(io_err("copy up", &here))?;
                self.dir_times.push((prefix.to_vec(), stat_times(&st)));
            }
        }
        Ok(cur)
    }

    /// Where the merged view of this layer over its lowers has `comps`, as
    /// overlay looks it up: component by component, the topmost layer that
    /// has it decides; a whiteout hides it, a directory merges with the
    /// directories below it unless it is opaque. A path through a symlink
    /// or another non-directory is refused.
    fn lookup(&self, comps: &[OsString]) -> Result<Found, Bad> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let shown = show(comps);
        let mut dirs = Vec::new();
        for (i, root) in std::iter::once(&self.root).chain(&self.lowers).enumerate() {
            let resolve = if i == 0 { RESOLVE } else { RESOLVE_LOWER };
            let fd = rustix::fs::openat2(root, ".", flags, Mode::empty(), resolve)
                .map_err(io_err("open a layer root for", &shown))?;
            dirs.push((i, fd));
        }
        let mut found = Found::Dir(dirs);
        for (n, c) in comps.iter().enumerate() {
            let dirs = match found {
                Found::Dir(dirs) => dirs,
                Found::Absent => return Ok(Found::Absent),
                Found::Other { .. } => {
                    return Err(Bad::Hostile(format!(
                        "{shown:?} goes through {:?}, a symlink or a non-directory",
                        show(&comps[..n])
                    )))
                }
            };
            let mut merged = Vec::new();
            let mut other = None;
            for (layer, dir) in dirs {
                let st = match rustix::fs::statat(&dir, c, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(Errno::NOENT) => continue,
                    Err(e) => return Err(io_err("look up", &shown)(e)),
                };
                if is_whiteout(&st) {
                    break;
                }
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    if merged.is_empty() {
                        other = Some(Found::Other { layer, parent: dir, st });
                    }
                    break;
                }
                let resolve = if layer == 0 { RESOLVE } else { RESOLVE_LOWER };
                let sub = rustix::fs::openat2(&dir, c, flags, Mode::empty(), resolve)
                    .map_err(io_err("open directory", &shown))?;
                let opaque = is_opaque(&sub);
                merged.push((layer, sub));
                if opaque {
                    break;
                }
            }
            found = match other {
                Some(o) => o,
                None if merged.is_empty() => Found::Absent,
                None => Found::Dir(merged),
            };
        }
        Ok(found)
    }

    /// Copies `name`, which lower layer `layer` has in its directory
    /// `lower` (and `st` describes), up to the same path in this layer,
    /// as overlay's copy-up does; answers the directory it is now in here.
    fn copy_up(
        &mut self,
        parents: &[OsString],
        name: &OsStr,
        layer: usize,
        lower: &OwnedFd,
        st: &Stat,
    ) -> Result<OwnedFd, Bad> {
        let mut comps = parents.to_vec();
        comps.push(name.to_os_string());
        let shown = show(&comps);
        let dir = self.open_dir(parents, true)?;
        let via = proc_path(lower, name);
        let xattrs = read_xattrs(
            |buf| rustix::fs::llistxattr(&via, buf),
            |k, buf| rustix::fs::lgetxattr(&via, k, buf),
        )
        .map_err(io_err("read the xattrs of the lower file", &shown))?;
        let stamp = stat_times(st);
        let ft = FileType::from_raw_mode(st.st_mode);
        match ft {
            FileType::RegularFile => {
                let src = rustix::fs::openat2(
                    lower,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE_LOWER,
                )
                .map_err(io_err("open the lower file", &shown))?;
                let dst = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("copy up", &shown))?;
                let (mut src, mut dst) = (File::from(src), File::from(dst));
                self.size +=
                    io::copy(&mut src, &mut dst).map_err(|e| Bad::Io(format!("copy up {shown:?}"), e))?;
                copy_meta_fd(&dst, st, &xattrs).map_err(io_err("copy up", &shown))?;
                rustix::fs::futimens(&dst, &stamp).map_err(io_err("set the times of", &shown))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(lower, name, Vec::new())
                    .map_err(io_err("read the lower symlink", &shown))?;
                rustix::fs::symlinkat(target.as_c_str(), &dir, name).map_err(io_err("copy up", &shown))?;
                self.copy_meta_at(&dir, name, st, &xattrs, &shown)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
                rustix::fs::mknodat(&dir, name, ft, Mode::empty(), st.st_rdev)
                    .map_err(io_err("copy up", &shown))?;
                self.copy_meta_at(&dir, name, st, &xattrs, &shown)?;
            }
            _ => {
                return Err(Bad::Hostile(format!(
                    "{shown:?} in lower layer {layer} is of a type that cannot be copied up"
                )))
            }
        }
        Ok(dir)
    }

    /// Owner, mode (not for a symlink), xattrs and times of `st` given to
    /// the new non-regular `name` in `dir`, never following it.
    fn copy_meta_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        st: &Stat,
        xattrs: &[(String, Vec<u8>)],
        shown: &str,
    ) -> Result<(), Bad> {
        let xattrs: Vec<(&str, &[u8])> = xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
        self.finish_at(
            dir,
            name,
            (Some(rustix::fs::Uid::from_raw(st.st_uid)), Some(rustix::fs::Gid::from_raw(st.st_gid))),
            (!symlink).then(|| Mode::from_raw_mode(st.st_mode & 0o7777)),
            &xattrs,
            &stat_times(st),
            shown,
        )
    }
}

/// `/proc/self/fd/<dir>/<name>`: `name` in the open directory `dir`, for
/// the `l*xattr` calls (only the directory goes through the magic link;
/// the last component is not followed).
fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

/// The `(atime, mtime)` of `st`.
fn stat_times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: st.st_atime as _, tv_nsec: st.st_atime_nsec as _ },
        last_modification: Timespec { tv_sec: st.st_mtime as _, tv_nsec: st.st_mtime_nsec as _ },
    }
}

/// The xattrs `list` and `get` read, but overlay's own (`trusted.overlay.*`).
fn read_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&str, &mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 65536];
    let n = match list(&mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => 0,
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; 65536];
    for k in names[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let Ok(k) = std::str::from_utf8(k) else { continue };
        if k.starts_with("trusted.overlay.") {
            continue;
        }
        match get(k, &mut value[..]) {
            Ok(len) => out.push((k.to_string(), value[..len].to_vec())),
            Err(Errno::NODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Owner, mode and xattrs of `st` given to the open `fd`.
fn copy_meta_fd<F: std::os::fd::AsFd>(
    fd: &F,
    st: &Stat,
    xattrs: &[(String, Vec<u8>)],
) -> rustix::io::Result<()> {
    let xattrs: Vec<(&str, &[u8])> = xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    set_attrs(
        fd,
        (Some(rustix::fs::Uid::from_raw(st.st_uid)), Some(rustix::fs::Gid::from_raw(st.st_gid))),
        Mode::from_raw_mode(st.st_mode & 0o7777),
        &xattrs,
    )
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
