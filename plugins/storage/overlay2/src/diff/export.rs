//! A layer's `diff` dir as an OCI layer tar.
//!
//! Overlay records a deletion as a character device 0/0 and an opaque
//! directory (one whose lower contents are hidden) with the xattr
//! `trusted.overlay.opaque=y`. The tar says the same thing the OCI way: an
//! empty file `.wh.<name>` beside the deleted name, and an empty file
//! `.wh..wh..opq` inside the opaque directory. Everything else is written as
//! it is: modes (setuid, setgid, sticky), owners, modification times,
//! symlinks, hardlinks (the second and later names of an inode as links to
//! the first), device nodes, fifos, and xattrs as PAX `SCHILY.xattr.*`
//! records (`trusted.overlay.*` excepted: overlay's own bookkeeping).
//! Sockets are skipped, as tar cannot hold them. Entries come parents first,
//! names sorted, so the same tree always gives the same tar.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{OFlags, ResolveFlags};
use tar::{EntryType, Header};

/// Prefix of a whiteout file.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Overlay's opaque-directory xattr.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Whether `m` is an overlay whiteout: a character device 0/0.
pub(crate) fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Whether the directory at `path` is opaque.
pub(crate) fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut buf[..]).is_ok_and(|n| &buf[..n] == b"y")
}

/// The sorted names in directory `dir`.
pub(crate) fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Writes the tree at `diff` to `out` as an OCI layer tar.
pub(crate) fn write_tar(diff: &Path, out: &mut dyn Write) -> io::Result<()> {
    let root = File::open(diff)?;
    let mut tar = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack: Vec<PathBuf> = sorted_names(diff)?.into_iter().rev().map(PathBuf::from).collect();
    while let Some(rel) = stack.pop() {
        let path = diff.join(&rel);
        let m = fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        if is_whiteout(&m) {
            // Before the hardlink check: overlay shares one whiteout inode.
            let name = rel.file_name().unwrap_or_default();
            let mut wh = OsString::from(WHITEOUT_PREFIX);
            wh.push(name);
            append_marker(&mut tar, &m, &rel.with_file_name(wh))?;
            continue;
        }
        if ft.is_socket() {
            continue;
        }
        let mut h = header_of(&m);
        let key = (m.dev(), m.ino());
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                h.set_entry_type(EntryType::Link);
                tar.append_link(&mut h, &rel, first)?;
                continue;
            }
            links.insert(key, rel.clone());
        }
        let xattrs = xattrs_of(&path)?;
        if !xattrs.is_empty() {
            tar.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            tar.append_data(&mut h, &rel, io::empty())?;
            if is_opaque(&path) {
                append_marker(&mut tar, &m, &rel.join(OPAQUE_MARKER))?;
            }
            let children = sorted_names(&path)?;
            stack.extend(children.into_iter().rev().map(|n| rel.join(n)));
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(m.len());
            tar.append_data(&mut h, &rel, open_beneath(&root, &rel)?)?;
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            tar.append_link(&mut h, &rel, fs::read_link(&path)?)?;
        } else {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            h.set_entry_type(kind);
            if kind != EntryType::Fifo {
                h.set_device_major(rustix::fs::major(m.rdev()))?;
                h.set_device_minor(rustix::fs::minor(m.rdev()))?;
            }
            tar.append_data(&mut h, &rel, io::empty())?;
        }
    }
    tar.finish()
}

/// A header with `m`'s owner, permission bits and modification time.
fn header_of(m: &Metadata) -> Header {
    let mut h = Header::new_gnu();
    h.set_uid(u64::from(m.uid()));
    h.set_gid(u64::from(m.gid()));
    h.set_mode(m.mode() & 0o7777);
    h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
    h.set_size(0);
    h
}

/// An empty regular file `rel` (a whiteout or the opaque marker).
fn append_marker<W: Write>(tar: &mut tar::Builder<W>, m: &Metadata, rel: &Path) -> io::Result<()> {
    let mut h = header_of(m);
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    tar.append_data(&mut h, rel, io::empty())
}

/// The xattrs of `path` as PAX records, overlay's own left out.
fn xattrs_of(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let size = rustix::fs::llistxattr_query(path)?;
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut list[..])?;
    let mut out = Vec::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let len = rustix::fs::lgetxattr_query(path, name)?;
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut value[..])?;
        value.truncate(got);
        out.push((format!("SCHILY.xattr.{name}"), value));
    }
    Ok(out)
}

/// Opens the regular file `rel` below `root` for reading, following no
/// symlink and leaving neither the tree nor its mount.
pub(crate) fn open_beneath(root: &File, rel: &Path) -> io::Result<File> {
    let resolve = ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV;
    let fd = rustix::fs::openat2(
        root,
        rel.as_os_str().as_bytes(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        rustix::fs::Mode::empty(),
        resolve,
    )?;
    Ok(File::from(fd))
}
