//! Building trees for the storage cases: small file-system edits that run
//! the same way on a mounted layer and on a plain model directory, and the
//! helpers that fill a layer, read it back and compare it with its model.
//!
//! A model is the flat replay of what a case did to a chain of layers, made
//! in a plain directory under the case root with the same edits; the
//! driver's view of the top layer must equal it (see [`super::oracle`]).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use super::oracle::{self, Snapshot};
use crate::case::{io, CaseResult, Stop};
use crate::ctx::Ctx;

/// An edit of a tree, run on a layer and on its model alike.
pub type Edit<'a> = &'a dyn Fn(&Path) -> io::Result<()>;

/// Writes file `rel` (replacing one there) with `content`, then owner, then
/// mode (a chown clears setuid/setgid).
pub fn file(root: &Path, rel: &str, content: &[u8], mode: u32, owner: (u32, u32)) -> io::Result<()> {
    let p = root.join(rel);
    std::fs::write(&p, content)?;
    own(&p, mode, owner)
}

/// Makes directory `rel` (its parent must exist), then owner and mode.
pub fn dir(root: &Path, rel: &str, mode: u32, owner: (u32, u32)) -> io::Result<()> {
    let p = root.join(rel);
    std::fs::create_dir(&p)?;
    own(&p, mode, owner)
}

/// Owner first, then mode.
pub fn own(p: &Path, mode: u32, (uid, gid): (u32, u32)) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// Changes the mode of `rel`.
pub fn chmod(root: &Path, rel: &str, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode))
}

/// Symlink `rel` → `target`.
pub fn symlink(root: &Path, rel: &str, target: impl AsRef<OsStr>) -> io::Result<()> {
    std::os::unix::fs::symlink(Path::new(target.as_ref()), root.join(rel))
}

/// Hardlink `rel` to the existing `existing` (both relative to `root`).
pub fn hardlink(root: &Path, rel: &str, existing: &str) -> io::Result<()> {
    std::fs::hard_link(root.join(existing), root.join(rel))
}

/// A fifo of `mode`.
pub fn fifo(root: &Path, rel: &str, mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    rustix::fs::mknodat(CWD, &p, FileType::Fifo, Mode::from_raw_mode(mode), 0)?;
    chmod(root, rel, mode)
}

/// Sets xattr `name` on `rel` itself.
pub fn xattr(root: &Path, rel: &str, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::lsetxattr(root.join(rel), name, value, XattrFlags::empty())?)
}

/// Removes `rel`, a whole tree for a directory.
pub fn remove(root: &Path, rel: &str) -> io::Result<()> {
    let p = root.join(rel);
    if std::fs::symlink_metadata(&p)?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// `rel`'s mtime (seconds, nanoseconds).
pub fn mtime(root: &Path, rel: &str) -> io::Result<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(root.join(rel))?;
    Ok((m.mtime(), m.mtime_nsec()))
}

/// Sets `rel`'s atime and mtime to `(sec, nsec)`, without following it.
pub fn set_mtime(root: &Path, rel: &str, (sec, nsec): (i64, i64)) -> io::Result<()> {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    let times = Timestamps { last_access: t, last_modification: t };
    Ok(rustix::fs::utimensat(CWD, root.join(rel), &times, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Moves `from` to `to` inside `root` as `mv` does: `rename(2)`, and where
/// the file system answers `EXDEV` (overlay without `redirect_dir`, for a
/// directory from a lower layer) a copy of the tree — types, content,
/// modes, owners, symlinks, xattrs — then removal of the original.
/// Answers whether it had to copy.
pub fn rename(root: &Path, from: &str, to: &str) -> io::Result<bool> {
    let (src, dst) = (root.join(from), root.join(to));
    match std::fs::rename(&src, &dst) {
        Ok(()) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(&src, &dst)?;
            remove(root, from)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Copies the tree at `src` to `dst` (which must not exist).
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(src)?;
    let t = m.file_type();
    if t.is_dir() {
        std::fs::create_dir(dst)?;
        for e in std::fs::read_dir(src)? {
            let name = e?.file_name();
            copy_tree(&src.join(&name), &dst.join(&name))?;
        }
    } else if t.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if t.is_file() {
        std::fs::copy(src, dst)?;
    } else {
        return Err(io::Error::other(format!("cannot copy special file {}", src.display())));
    }
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid()))?;
    if !t.is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    for (name, value) in oracle::xattrs(src)? {
        rustix::fs::lsetxattr(dst, name.as_str(), &value, XattrFlags::empty())?;
    }
    Ok(())
}

/// A `security.capability` value (revision 2): `cap_net_bind_service`
/// permitted and effective.
pub const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted[0]: bit 10
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

/// The owner of new files: the suite's own (root in any real run).
pub fn me() -> (u32, u32) {
    (crate::sys::euid(), crate::sys::egid())
}

/// Skips unless running as root (to give files other owners, device
/// nodes or capabilities).
pub fn need_root(why: &str) -> CaseResult {
    if crate::sys::euid() == 0 {
        Ok(())
    } else {
        Err(Stop::Skip(format!("needs root: {why}")))
    }
}

impl Ctx {
    /// Mounts layer `id`, runs `edits` on it in order, and releases it.
    pub fn edit_layer(&mut self, id: &str, what: &str, edits: &[Edit<'_>]) -> CaseResult {
        let p = self.get(id)?;
        for e in edits {
            io(format!("{what} in layer {id:?} ({})", p.display()), e(&p))?;
        }
        self.put(id)
    }

    /// The tree of layer `id` as `get` shows it.
    pub fn layer_tree(&mut self, id: &str) -> Result<Snapshot, Stop> {
        let p = self.get(id)?;
        let snap = io(format!("read the tree of layer {id:?} at {}", p.display()), oracle::snapshot(&p))?;
        self.put(id)?;
        Ok(snap)
    }

    /// Fails unless layer `id` shows exactly `want`; `what` says what the
    /// layer is and what it must equal.
    pub fn expect_layer(&mut self, id: &str, want: &Snapshot, what: &str) -> CaseResult {
        let have = self.layer_tree(id)?;
        oracle::expect_same(format!("tree of layer {id:?}"), what, want, &have)
    }

    /// Builds the model `name`: a fresh plain directory under the case root
    /// (root `0755`, the suite's owner), `edits` run on it in order; answers
    /// its snapshot.
    pub fn model(&self, name: &str, edits: &[Edit<'_>]) -> Result<Snapshot, Stop> {
        let dir = self.model_dir(name);
        let step = format!("build model {name:?} at {}", dir.display());
        if dir.exists() {
            io(&step, std::fs::remove_dir_all(&dir))?;
        }
        io(&step, std::fs::create_dir_all(&dir))?;
        io(&step, own(&dir, 0o755, me()))?;
        for e in edits {
            io(&step, e(&dir))?;
        }
        io(&step, oracle::snapshot(&dir))
    }

    /// Where model `name` lives.
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.dir().join("models").join(name)
    }
}

/// `rel` as bytes, for tar names.
pub fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}
