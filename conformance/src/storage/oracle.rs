//! The flat-directory oracle of `CONFORMANCE.md`: a whole tree as a flat
//! map from path to what a layer must preserve — type, mode with the special
//! bits, owner, size, content digest, symlink target, device number and
//! xattrs — plus its hardlink groups. Two snapshots are compared field by
//! field, and every difference is named by path and field.
//!
//! Modification times are not part of a layer's identity (a directory's
//! follows its contents), so only [`snapshot_strict`] — for sentinel trees
//! that nothing may touch — records them, with ctimes and link counts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::case::{CaseResult, Failure};

/// Xattrs that are not layer content: overlay's own bookkeeping, and the
/// host's SELinux labels.
pub fn is_private_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") || name == "security.selinux"
}

/// What one path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d` directory, `f` file, `l` symlink, `c` char device, `b` block
    /// device, `p` fifo, `s` socket.
    pub kind: char,
    /// Permission bits with setuid, setgid and sticky (0 for symlinks).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes (0 for directories and devices).
    pub size: u64,
    /// SHA-256 of a regular file's content.
    pub digest: Option<String>,
    /// A symlink's target.
    pub target: Option<PathBuf>,
    /// A device node's number.
    pub rdev: u64,
    /// Xattrs, private ones left out.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Strict snapshots only: what any touch of the path changes.
    pub touch: Option<Touch>,
}

/// The mtime, ctime (seconds, nanoseconds) and link count of a path:
/// anything touching it changes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    /// Modification time.
    pub mtime: (i64, i64),
    /// Status change time.
    pub ctime: (i64, i64),
    /// Link count.
    pub nlink: u64,
}

impl Entry {
    /// `file mode 0644 owner 0:0 size 5`, for messages.
    pub fn describe(&self) -> String {
        let kind = kind_name(self.kind);
        match self.kind {
            'l' => format!(
                "{kind} to {:?} owner {}:{}",
                self.target.as_deref().unwrap_or(Path::new("")),
                self.uid,
                self.gid
            ),
            'f' => {
                format!("{kind} mode {:04o} owner {}:{} size {}", self.mode, self.uid, self.gid, self.size)
            }
            _ => format!("{kind} mode {:04o} owner {}:{}", self.mode, self.uid, self.gid),
        }
    }
}

fn kind_name(k: char) -> &'static str {
    match k {
        'd' => "directory",
        'f' => "file",
        'l' => "symlink",
        'c' => "char device",
        'b' => "block device",
        'p' => "fifo",
        's' => "socket",
        _ => "unknown",
    }
}

/// A whole tree: relative path (`""` is the root) to entry, and the sets of
/// paths sharing one inode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every path beneath the root, and the root itself as `""`.
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Hardlink groups: sorted paths of non-directories sharing an inode.
    pub links: BTreeSet<Vec<PathBuf>>,
}

/// `/` + `rel`, as the suite names paths inside a layer.
pub fn show(rel: &Path) -> String {
    format!("/{}", rel.display())
}

impl Snapshot {
    /// The entry at `rel`, if any.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(Path::new(rel))
    }

    /// Every way `have` differs from `self` (what is wanted), by path and
    /// field, paths in order, then hardlink groups.
    pub fn differences(&self, have: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let keys: BTreeSet<&PathBuf> = self.entries.keys().chain(have.entries.keys()).collect();
        // A directory's new mtime, ctime or link count is explained by a
        // difference beneath it, and then not listed.
        let below = |dir: &Path| {
            keys.iter().any(|k| {
                k.as_path() != dir && k.starts_with(dir) && self.entries.get(*k) != have.entries.get(*k)
            })
        };
        for k in &keys {
            let p = show(k);
            match (self.entries.get(*k), have.entries.get(*k)) {
                (Some(w), None) => out.push(format!("{p}: missing (want {})", w.describe())),
                (None, Some(h)) => out.push(format!("{p}: unexpected {}", h.describe())),
                (Some(w), Some(h)) => {
                    let touch = !(w.kind == 'd' && below(k));
                    entry_differences(&p, w, h, touch, &mut out)
                }
                (None, None) => {}
            }
        }
        for g in self.links.difference(&have.links) {
            out.push(format!("hardlink group {}: missing (not one inode)", group(g)));
        }
        for g in have.links.difference(&self.links) {
            out.push(format!("unexpected hardlink group {}", group(g)));
        }
        out
    }
}

fn group(g: &[PathBuf]) -> String {
    let names: Vec<String> = g.iter().map(|p| show(p)).collect();
    format!("{{{}}}", names.join(", "))
}

fn entry_differences(p: &str, w: &Entry, h: &Entry, touch: bool, out: &mut Vec<String>) {
    if w.kind != h.kind {
        out.push(format!("{p}: type: want {}, have {}", w.describe(), h.describe()));
        return;
    }
    if w.mode != h.mode {
        out.push(format!("{p}: mode: want {:04o}, have {:04o}", w.mode, h.mode));
    }
    if (w.uid, w.gid) != (h.uid, h.gid) {
        out.push(format!("{p}: owner: want {}:{}, have {}:{}", w.uid, w.gid, h.uid, h.gid));
    }
    if w.size != h.size {
        out.push(format!("{p}: size: want {}, have {}", w.size, h.size));
    }
    if w.digest != h.digest {
        let short = |d: &Option<String>| d.as_deref().map(|d| d[..12].to_string()).unwrap_or_default();
        out.push(format!(
            "{p}: content: want sha256 {}…, have sha256 {}…",
            short(&w.digest),
            short(&h.digest)
        ));
    }
    if w.target != h.target {
        out.push(format!("{p}: symlink target: want {:?}, have {:?}", w.target, h.target));
    }
    if w.rdev != h.rdev {
        out.push(format!("{p}: device: want {}, have {}", dev(w.rdev), dev(h.rdev)));
    }
    let names: BTreeSet<&String> = w.xattrs.keys().chain(h.xattrs.keys()).collect();
    for n in names {
        match (w.xattrs.get(n), h.xattrs.get(n)) {
            (Some(a), None) => out.push(format!("{p}: xattr {n}: want {}, have none (lost)", value(a))),
            (None, Some(b)) => out.push(format!("{p}: xattr {n}: unexpected {}", value(b))),
            (Some(a), Some(b)) if a != b => {
                out.push(format!("{p}: xattr {n}: want {}, have {}", value(a), value(b)))
            }
            _ => {}
        }
    }
    if let (true, Some(wt), Some(ht)) = (touch, w.touch, h.touch) {
        let (wm, wc, wn) = (wt.mtime, wt.ctime, wt.nlink);
        let (hm, hc, hn) = (ht.mtime, ht.ctime, ht.nlink);
        if wm != hm {
            out.push(format!("{p}: mtime: want {}.{:09}, have {}.{:09}", wm.0, wm.1, hm.0, hm.1));
        }
        if wc != hc {
            out.push(format!("{p}: ctime: want {}.{:09}, have {}.{:09} (changed)", wc.0, wc.1, hc.0, hc.1));
        }
        if wn != hn {
            out.push(format!("{p}: link count: want {wn}, have {hn}"));
        }
    }
}

fn dev(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// An xattr value for messages: quoted when printable, else hex.
pub fn value(v: &[u8]) -> String {
    if v.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(v))
    } else {
        let mut s = String::from("0x");
        for b in v {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// Reads the tree at `root`.
pub fn snapshot(root: &Path) -> std::io::Result<Snapshot> {
    read_tree(root, false)
}

/// Reads the tree at `root` with mtimes, ctimes and link counts, so that
/// any touch shows.
pub fn snapshot_strict(root: &Path) -> std::io::Result<Snapshot> {
    read_tree(root, true)
}

fn read_tree(root: &Path, strict: bool) -> std::io::Result<Snapshot> {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full)?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let entry = Entry {
            kind,
            mode: if kind == 'l' { 0 } else { md.mode() & 0o7777 },
            uid: md.uid(),
            gid: md.gid(),
            size: if matches!(kind, 'f' | 'l') { md.size() } else { 0 },
            digest: if kind == 'f' { Some(digest(&full)?) } else { None },
            target: if kind == 'l' { Some(std::fs::read_link(&full)?) } else { None },
            rdev: if matches!(kind, 'c' | 'b') { md.rdev() } else { 0 },
            xattrs: xattrs(&full)?,
            touch: strict.then(|| Touch {
                mtime: (md.mtime(), md.mtime_nsec()),
                ctime: (md.ctime(), md.ctime_nsec()),
                nlink: md.nlink(),
            }),
        };
        entries.insert(rel.clone(), entry);
        if kind != 'd' && md.nlink() > 1 {
            inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
        }
        if kind == 'd' {
            for e in std::fs::read_dir(&full)? {
                stack.push(rel.join(e?.file_name()));
            }
        }
    }
    let links = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Ok(Snapshot { entries, links })
}

fn digest(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The xattrs of `p` itself (not what a symlink points to), private ones
/// left out.
pub fn xattrs(p: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(e.into()),
    };
    let names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| !is_private_xattr(s))
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let mut v = vec![0u8; 64 * 1024];
        match rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]) {
            Ok(len) => {
                v.truncate(len);
                out.insert(name, v);
            }
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// How many differences a failure lists before it says how many more.
const SHOWN: usize = 24;

/// Fails at `step` unless `have` equals `want`, listing every difference
/// (up to a limit) by path and field.
pub fn expect_same(step: impl Into<String>, want_what: &str, want: &Snapshot, have: &Snapshot) -> CaseResult {
    let d = want.differences(have);
    if d.is_empty() {
        return Ok(());
    }
    let mut actual = d.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if d.len() > SHOWN {
        let _ = write!(actual, "; and {} more", d.len() - SHOWN);
    }
    Err(Failure::new(step, want_what, format!("{} difference(s): {actual}", d.len())).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_path_and_field() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("same"), b"x").unwrap();
        }
        std::fs::write(a.join("f"), b"one").unwrap();
        std::fs::write(b.join("f"), b"two!").unwrap();
        std::fs::write(a.join("gone"), b"").unwrap();
        std::fs::hard_link(a.join("same"), a.join("link")).unwrap();
        std::fs::write(b.join("link"), b"x").unwrap();
        let (sa, sb) = (snapshot(&a).unwrap(), snapshot(&b).unwrap());
        let d = sa.differences(&sb).join("\n");
        assert!(d.contains("/f: size: want 3, have 4"), "{d}");
        assert!(d.contains("/f: content: want sha256"), "{d}");
        assert!(d.contains("/gone: missing (want file mode"), "{d}");
        assert!(d.contains("hardlink group {/link, /same}: missing"), "{d}");
        assert!(snapshot(&a).unwrap().differences(&sa).is_empty());
    }

    #[test]
    fn values_show_printable_text_or_hex() {
        assert_eq!(value(b"abc"), "\"abc\"");
        assert_eq!(value(&[1, 0, 255]), "0x0100ff");
    }
}
