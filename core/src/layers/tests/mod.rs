//! Tests of the layer engine against the real filesystem (they make device
//! nodes, set owners and `security.capability`, so they expect root).

mod hostile;
mod oracle;
mod roundtrip;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use super::ApplyOptions;

/// A fresh temporary directory.
pub(crate) fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Options allowing everything (devices included).
pub(crate) fn all_allowed() -> ApplyOptions {
    ApplyOptions { allow_devices: true, ..ApplyOptions::default() }
}

/// Writes `rel` under `root` with `content`, then owner and mode.
pub(crate) fn file(root: &Path, rel: &str, content: &[u8], mode: u32, owner: (u32, u32)) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    own_mode(&p, mode, owner);
    p
}

/// Makes directory `rel` (parents too), then owner and mode.
pub(crate) fn dir(root: &Path, rel: &str, mode: u32, owner: (u32, u32)) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(&p).unwrap();
    own_mode(&p, mode, owner);
    p
}

/// Owner first (a chown clears setuid/setgid), then mode.
pub(crate) fn own_mode(p: &Path, mode: u32, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    rustix::fs::chmod(p, Mode::from_raw_mode(mode)).unwrap();
}

/// Symlink `rel` → `target`.
pub(crate) fn symlink(root: &Path, rel: &str, target: impl AsRef<OsStr>) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(Path::new(target.as_ref()), &p).unwrap();
    p
}

/// Hardlink `rel` → `existing` (both under `root`).
pub(crate) fn hardlink(root: &Path, rel: &str, existing: &str) {
    std::fs::hard_link(root.join(existing), root.join(rel)).unwrap();
}

/// A device node or fifo.
pub(crate) fn node(root: &Path, rel: &str, ft: FileType, mode: u32, dev: (u32, u32)) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    rustix::fs::mknodat(CWD, &p, ft, Mode::from_raw_mode(mode), rustix::fs::makedev(dev.0, dev.1)).unwrap();
    rustix::fs::chmod(&p, Mode::from_raw_mode(mode)).unwrap();
}

/// Sets an xattr (on the path itself, not what it points to).
pub(crate) fn xattr(p: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()).unwrap();
}

/// A `security.capability` value granting `cap_net_raw` (v2, effective).
pub(crate) fn cap_net_raw() -> Vec<u8> {
    let words: [u32; 5] = [0x0200_0001, 1 << 13, 0, 0, 0];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Sets the mtime (and atime) of `p` without following it.
pub(crate) fn stamp(p: &Path, sec: i64, nsec: i64) {
    let t = Timespec { tv_sec: sec, tv_nsec: nsec };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps { last_access: t, last_modification: t },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Gives every entry under `root` a distinct nanosecond mtime derived from
/// `base`, children before their directories.
pub(crate) fn stamp_all(root: &Path, base: i64) {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if std::fs::symlink_metadata(p).unwrap().is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            for n in names {
                walk(&n, out);
            }
        }
        out.push(p.to_path_buf());
    }
    let mut all = Vec::new();
    walk(root, &mut all);
    for (i, p) in all.iter().enumerate() {
        if p != root {
            stamp(p, base + i as i64, 100_000_001 + i as i64 * 7);
        }
    }
}

/// `cp -a` of a whole tree (owners, modes, times, xattrs, hardlinks,
/// device nodes): an independent copy to apply a diff onto.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg("--preserve=all").arg(from.join(".")).arg(to).status().unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// A tar written header by header, so that tests can say what the `tar`
/// crate's builder refuses to write (absolute and `..` paths).
#[derive(Default)]
pub(crate) struct RawTar(Vec<u8>);

impl RawTar {
    /// Appends one entry. `kind` is the tar type byte (`b'0'` file,
    /// `b'1'` hardlink, `b'2'` symlink, `b'3'` char, `b'4'` block,
    /// `b'5'` dir, `b'6'` fifo).
    pub(crate) fn entry(
        mut self,
        name: impl AsRef<[u8]>,
        kind: u8,
        link: impl AsRef<[u8]>,
        data: &[u8],
    ) -> Self {
        let (name, link) = (name.as_ref(), link.as_ref());
        let mut h = tar::Header::new_gnu();
        let old = h.as_old_mut();
        assert!(name.len() <= 100 && link.len() <= 100, "raw tar names are at most 100 bytes");
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(if kind == b'5' { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if matches!(kind, b'3' | b'4') {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
        self
    }

    /// A regular file.
    pub(crate) fn file(self, name: impl AsRef<[u8]>, data: &[u8]) -> Self {
        self.entry(name, b'0', b"", data)
    }

    /// A symlink.
    pub(crate) fn symlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.entry(name, b'2', target, b"")
    }

    /// A hardlink.
    pub(crate) fn hardlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.entry(name, b'1', target, b"")
    }

    /// The finished archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// A path's bytes.
pub(crate) fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}
