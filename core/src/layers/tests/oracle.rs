//! A flat-directory oracle (as the conformance suite's): path, type, mode,
//! owner, size, content digest, symlink target, device number, mtime,
//! hardlink groups and xattrs — and, for sentinel trees, ctime and link
//! counts, so that any touch from outside shows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The facts about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `d` `f` `l` `c` `b` `p` `s`.
    pub(crate) kind: char,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) digest: Option<String>,
    pub(crate) target: Option<PathBuf>,
    pub(crate) rdev: u64,
    pub(crate) mtime: (i64, i64),
    pub(crate) xattrs: BTreeMap<String, Vec<u8>>,
    /// Sentinel snapshots only.
    pub(crate) ctime: Option<(i64, i64)>,
    pub(crate) nlink: Option<u64>,
}

/// A whole tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Relative path (`""` is the root) → facts.
    pub(crate) entries: BTreeMap<PathBuf, Facts>,
    /// Sets of paths sharing one inode.
    pub(crate) links: BTreeSet<Vec<PathBuf>>,
}

impl Snapshot {
    /// Without the root's own entry (a layer root's times change with its
    /// contents, and it is not part of a diff).
    pub(crate) fn without_root(mut self) -> Snapshot {
        self.entries.remove(Path::new(""));
        self
    }

    /// Every difference between two snapshots, for assertion messages.
    pub(crate) fn differences(&self, other: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let keys: BTreeSet<&PathBuf> = self.entries.keys().chain(other.entries.keys()).collect();
        for k in keys {
            match (self.entries.get(k), other.entries.get(k)) {
                (Some(a), Some(b)) if a != b => out.push(format!("{}: {a:?} != {b:?}", k.display())),
                (Some(_), None) => out.push(format!("{}: only on the left", k.display())),
                (None, Some(_)) => out.push(format!("{}: only on the right", k.display())),
                _ => {}
            }
        }
        if self.links != other.links {
            out.push(format!("hardlink groups {:?} != {:?}", self.links, other.links));
        }
        out
    }
}

/// Asserts two trees are equal, listing every difference.
#[track_caller]
pub(crate) fn assert_same(want: &Snapshot, got: &Snapshot) {
    let d = want.differences(got);
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", p.display()),
    };
    let names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let mut v = vec![0u8; 1 << 16];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(len);
        out.insert(name, v);
    }
    out
}

/// Reads the tree at `root`. `strict` adds ctimes and link counts.
pub(crate) fn snapshot(root: &Path, strict: bool) -> Snapshot {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
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
        let digest = (kind == 'f').then(|| format!("{:x}", Sha256::digest(fs::read(&full).unwrap())));
        let target = (kind == 'l').then(|| fs::read_link(&full).unwrap());
        entries.insert(
            rel.clone(),
            Facts {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == 'd' { 0 } else { md.size() },
                digest,
                target,
                rdev: if matches!(kind, 'c' | 'b') { md.rdev() } else { 0 },
                mtime: (md.mtime(), md.mtime_nsec()),
                xattrs: xattrs(&full),
                ctime: strict.then(|| (md.ctime(), md.ctime_nsec())),
                nlink: strict.then(|| md.nlink()),
            },
        );
        if kind != 'd' && md.nlink() > 1 {
            inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
        }
        if kind == 'd' {
            for e in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
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
    Snapshot { entries, links }
}
