//! The naive diff: compare a child's full tree with its parent's and write
//! the layer tar that turns one into the other (see [`diff`]).

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::storage::{Change, ChangeKind};
use berth_plugin_api::{DriverError, DriverResult};
use tar::{EntryType, Header};

use super::resolve::{RelPath, Root};
use super::tree::{absolute, walk, Kind, Meta, Tree};
use super::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};

/// Lists what differs between `lower` (the parent's tree; `None` for no
/// parent) and `upper` (the child's): added and modified paths, and deleted
/// ones (a deleted directory once, not its contents). Directories holding a
/// change are listed as modified, as Docker does. Paths are absolute
/// (`/etc/hosts`), sorted depth first.
pub fn changes(lower: Option<&Path>, upper: &Path) -> DriverResult<Vec<Change>> {
    let a = Analysis::new(lower, upper)?;
    let mut out: Vec<(PathBuf, ChangeKind)> = Vec::new();
    out.extend(a.added.iter().map(|p| (p.clone(), ChangeKind::Add)));
    out.extend(a.changed.iter().map(|p| (p.clone(), ChangeKind::Modify)));
    out.extend(a.deleted.iter().map(|p| (p.clone(), ChangeKind::Delete)));
    out.sort();
    Ok(out.into_iter().map(|(p, k)| Change::new(absolute(&p), k)).collect())
}

/// Writes to `out` the layer tar that turns `lower` (the parent's tree;
/// `None` for no parent) into `upper` (the child's). Answers the bytes of
/// regular-file content in it, which is what [`apply`](super::apply) of it
/// reports.
///
/// What counts as changed (moby's `ChangesDirs`, made exact where it can be
/// cheaply): type, mode with the special bits, owner, device number, symlink
/// target and xattrs for every entry; size and mtime (to the nanosecond)
/// for everything but directories (a directory's size and mtime follow its
/// contents, which are compared themselves). A regular file whose size and
/// mtime are unchanged while its own ctime lies within a second of that
/// mtime may have been rewritten inside one timestamp tick, so its content
/// is compared byte for byte; older files are not read.
///
/// Hardlink groups are compared too: a path whose group changed is
/// re-emitted, and the tar records every further member of a group as a
/// hardlink to the first one — or to an unchanged member the parent already
/// has, which is how a new link to a lower file stays one.
///
/// Every directory holding a change is emitted as modified (so its mode,
/// owner and times are carried), deletions become `.wh.<name>`, and a
/// directory whose every lower entry is gone and that holds only new entries
/// becomes opaque (`.wh..wh..opq`) instead of one whiteout per old entry.
/// Entries come depth first, siblings by name, each directory's opaque
/// marker and whiteouts right after it: the same trees give the same bytes.
pub fn diff(lower: Option<&Path>, upper: &Path, out: impl Write) -> DriverResult<u64> {
    let a = Analysis::new(lower, upper)?;
    let ops = a.plan();
    a.write(&ops, out).map_err(|e| e.context(format!("diff of {}", upper.display())))
}

/// The bytes of regular-file content [`diff`] would write, without writing.
pub fn diff_size(lower: Option<&Path>, upper: &Path) -> DriverResult<u64> {
    let a = Analysis::new(lower, upper)?;
    let mut links = a.link_seeds();
    let mut size = 0;
    for op in a.plan() {
        if let Op::Entry(p) = op {
            let m = &a.upper[&p];
            if m.kind == Kind::File && a.link_target(&mut links, &p, m).is_none() {
                size += m.size;
            }
        }
    }
    Ok(size)
}

/// One tar entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Entry(PathBuf),
    Opaque(PathBuf),
    Whiteout(PathBuf),
}

/// The comparison of two trees.
struct Analysis {
    upper_root: Root,
    upper: Tree,
    lower: Tree,
    /// In upper only.
    added: BTreeSet<PathBuf>,
    /// In both and changed, or a directory holding a change.
    changed: BTreeSet<PathBuf>,
    /// In lower only, topmost (not inside another deleted directory).
    deleted: BTreeSet<PathBuf>,
    /// Directories to mark opaque (`""` for the root).
    opaque: BTreeSet<PathBuf>,
}

impl Analysis {
    fn new(lower: Option<&Path>, upper: &Path) -> DriverResult<Analysis> {
        let upper_root = Root::open(upper)?;
        let upper_tree = walk(&upper_root)?;
        let (lower_root, lower_tree) = match lower {
            Some(p) => {
                let r = Root::open(p)?;
                let t = walk(&r)?;
                (Some(r), t)
            }
            None => (None, Tree::new()),
        };
        let mut a = Analysis {
            upper_root,
            upper: upper_tree,
            lower: lower_tree,
            added: BTreeSet::new(),
            changed: BTreeSet::new(),
            deleted: BTreeSet::new(),
            opaque: BTreeSet::new(),
        };
        for (p, u) in &a.upper {
            if u.kind == Kind::Socket {
                continue;
            }
            match a.lower.get(p) {
                None => {
                    a.added.insert(p.clone());
                }
                Some(l) => {
                    if differs(l, u) || racy_content_differs(lower_root.as_ref(), &a.upper_root, p, l, u)? {
                        a.changed.insert(p.clone());
                    }
                }
            }
        }
        a.fix_hardlink_groups();
        a.find_deletions();
        a.mark_parents();
        Ok(a)
    }

    /// Marks changed every path whose hardlink group the parent's tree does
    /// not already have, until nothing more changes.
    fn fix_hardlink_groups(&mut self) {
        let groups = |t: &Tree| {
            let mut g: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
            for (p, m) in t {
                if m.kind != Kind::Dir && m.kind != Kind::Socket && m.nlink > 1 {
                    g.entry(m.inode).or_default().push(p.clone());
                }
            }
            g.retain(|_, v| v.len() > 1);
            g
        };
        let (ug, lg) = (groups(&self.upper), groups(&self.lower));
        let lower_key = |p: &PathBuf| self.lower.get(p).map(|m| m.inode);
        loop {
            let unchanged = |p: &PathBuf| !self.added.contains(p) && !self.changed.contains(p);
            let mut more: Vec<PathBuf> = Vec::new();
            // Each upper group's unchanged members must be exactly the
            // unchanged members of one lower group.
            for members in ug.values() {
                let u: BTreeSet<&PathBuf> = members.iter().filter(|p| unchanged(p)).collect();
                let Some(first) = u.first() else { continue };
                let key = lower_key(first);
                let same_group = u.iter().all(|p| lower_key(p) == key);
                let lower_members: BTreeSet<&PathBuf> = match key.and_then(|k| lg.get(&k)) {
                    Some(l) => l.iter().filter(|p| self.upper.contains_key(*p) && unchanged(p)).collect(),
                    None => [*first].into_iter().collect(),
                };
                if !same_group || lower_members != u {
                    more.extend(u.into_iter().cloned());
                }
            }
            // And a lower group's unchanged members must share one inode above.
            for members in lg.values() {
                let u: Vec<&PathBuf> =
                    members.iter().filter(|p| self.upper.contains_key(*p) && unchanged(p)).collect();
                let Some(first) = u.first() else { continue };
                let key = self.upper[*first].inode;
                if u.iter().any(|p| self.upper[*p].inode != key) {
                    more.extend(u.into_iter().cloned());
                }
            }
            if more.is_empty() {
                return;
            }
            self.changed.extend(more);
        }
    }

    /// Topmost deletions, and which directories become opaque.
    fn find_deletions(&mut self) {
        let mut lower_children: HashMap<&Path, usize> = HashMap::new();
        let mut upper_children: HashMap<&Path, usize> = HashMap::new();
        for p in self.lower.keys() {
            *lower_children.entry(p.parent().unwrap_or(Path::new(""))).or_default() += 1;
        }
        for p in self.upper.keys() {
            *upper_children.entry(p.parent().unwrap_or(Path::new(""))).or_default() += 1;
        }
        let mut gone: HashMap<&Path, usize> = HashMap::new();
        for p in self.lower.keys() {
            if self.upper.contains_key(p) {
                continue;
            }
            let parent = p.parent().unwrap_or(Path::new(""));
            let parent_is_dir =
                parent.as_os_str().is_empty() || self.upper.get(parent).is_some_and(|m| m.kind == Kind::Dir);
            if parent_is_dir {
                self.deleted.insert(p.clone());
                *gone.entry(parent).or_default() += 1;
            }
        }
        for (dir, n) in gone {
            if lower_children.get(dir) == Some(&n) && upper_children.get(dir).copied().unwrap_or(0) > 0 {
                self.opaque.insert(dir.to_path_buf());
            }
        }
    }

    /// Every directory above a change is itself emitted, as modified.
    fn mark_parents(&mut self) {
        let mut dirs = BTreeSet::new();
        let all = self.added.iter().chain(&self.changed).chain(&self.deleted).chain(&self.opaque);
        for p in all {
            let start = if self.opaque.contains(p) { Some(p.as_path()) } else { p.parent() };
            for a in start.into_iter().flat_map(Path::ancestors) {
                if a.as_os_str().is_empty() || !dirs.insert(a.to_path_buf()) {
                    break;
                }
            }
        }
        for d in dirs {
            if self.lower.contains_key(&d) && !self.added.contains(&d) {
                self.changed.insert(d);
            }
        }
    }

    /// The tar's entries in order.
    fn plan(&self) -> Vec<Op> {
        type Key = Vec<(u8, OsString)>;
        let key = |p: &Path| -> Key { p.iter().map(|c| (1u8, c.to_os_string())).collect() };
        let mut ops: Vec<(Key, Op)> = Vec::new();
        for p in self.added.iter().chain(&self.changed) {
            ops.push((key(p), Op::Entry(p.clone())));
        }
        for d in &self.opaque {
            let mut k = key(d);
            k.push((0, OsString::new()));
            ops.push((k, Op::Opaque(d.clone())));
        }
        for p in &self.deleted {
            let parent = p.parent().unwrap_or(Path::new(""));
            if self.opaque.contains(parent) {
                continue;
            }
            let mut k = key(parent);
            k.push((0, p.file_name().unwrap_or_default().to_os_string()));
            ops.push((k, Op::Whiteout(p.clone())));
        }
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        ops.into_iter().map(|(_, op)| op).collect()
    }

    /// Link targets known before writing: for each upper hardlink group
    /// with a member left unchanged, that member (the smallest path).
    fn link_seeds(&self) -> HashMap<(u64, u64), PathBuf> {
        let mut seeds: HashMap<(u64, u64), PathBuf> = HashMap::new();
        for (p, m) in &self.upper {
            if m.kind == Kind::Dir || m.nlink < 2 || self.added.contains(p) || self.changed.contains(p) {
                continue;
            }
            seeds.entry(m.inode).or_insert_with(|| p.clone());
        }
        seeds
    }

    /// The path `p` is written as a hardlink to, if any; else records `p`
    /// as the target for the rest of its group.
    fn link_target(&self, links: &mut HashMap<(u64, u64), PathBuf>, p: &Path, m: &Meta) -> Option<PathBuf> {
        if m.kind == Kind::Dir || m.nlink < 2 {
            return None;
        }
        match links.get(&m.inode) {
            Some(t) => Some(t.clone()),
            None => {
                links.insert(m.inode, p.to_path_buf());
                None
            }
        }
    }

    fn write(&self, ops: &[Op], out: impl Write) -> DriverResult<u64> {
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
        let mut links = self.link_seeds();
        let mut size = 0;
        for op in ops {
            match op {
                Op::Entry(p) => {
                    let m = &self.upper[p];
                    let target = self.link_target(&mut links, p, m);
                    size +=
                        self.write_entry(&mut tar, p, m, target.as_deref()).map_err(|e| tar_error(p, e))?;
                }
                Op::Opaque(d) => whiteout(&mut tar, &d.join(WHITEOUT_OPAQUE)).map_err(|e| tar_error(d, e))?,
                Op::Whiteout(p) => {
                    let mut name = OsString::from(WHITEOUT_PREFIX);
                    name.push(p.file_name().unwrap_or_default());
                    whiteout(&mut tar, &p.with_file_name(name)).map_err(|e| tar_error(p, e))?;
                }
            }
        }
        let buf = tar.into_inner().map_err(|e| DriverError::io("finish layer tar", &e))?;
        buf.into_inner()
            .map_err(|e| DriverError::io("flush layer tar", e.error()))?
            .flush()
            .map_err(|e| DriverError::io("flush layer tar", &e))?;
        Ok(size)
    }

    /// Writes one entry; answers the content bytes written.
    fn write_entry<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        p: &Path,
        m: &Meta,
        link: Option<&Path>,
    ) -> std::io::Result<u64> {
        let mut h = Header::new_gnu();
        h.set_mode(m.mode);
        h.set_uid(m.uid.into());
        h.set_gid(m.gid.into());
        h.set_mtime(m.mtime.0.max(0) as u64);
        h.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if m.mtime.1 != 0 || m.mtime.0 < 0 {
            pax.push(("mtime".into(), pax_time(m.mtime).into_bytes()));
        }
        for (name, value) in &m.xattrs {
            pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
        }
        if !pax.is_empty() {
            tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        if let Some(target) = link {
            h.set_entry_type(EntryType::Link);
            tar.append_link(&mut h, p, target)?;
            return Ok(0);
        }
        match m.kind {
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                let mut name = p.as_os_str().to_os_string();
                name.push("/");
                tar.append_data(&mut h, Path::new(&name), std::io::empty())?;
            }
            Kind::File => {
                let rel = RelPath::parse(p.as_os_str().as_bytes(), "path")
                    .map_err(|e| std::io::Error::other(e.message))?;
                let file = self.upper_root.open_file(&rel).map_err(|e| std::io::Error::other(e.message))?;
                let st = file.metadata()?;
                if !st.is_file() || st.len() != m.size {
                    return Err(std::io::Error::other(
                        "changed while the diff was taken; diff a layer nobody is writing to",
                    ));
                }
                h.set_entry_type(EntryType::Regular);
                h.set_size(m.size);
                tar.append_data(&mut h, p, Exact { inner: file, left: m.size })?;
                return Ok(m.size);
            }
            Kind::Symlink => {
                h.set_entry_type(EntryType::Symlink);
                let target = OsStr::from_bytes(m.target.as_deref().unwrap_or_default());
                tar.append_link(&mut h, p, Path::new(target))?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                h.set_entry_type(match m.kind {
                    Kind::Char => EntryType::Char,
                    Kind::Block => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                if m.kind != Kind::Fifo {
                    h.set_device_major(rustix::fs::major(m.rdev))?;
                    h.set_device_minor(rustix::fs::minor(m.rdev))?;
                }
                tar.append_data(&mut h, p, std::io::empty())?;
            }
            Kind::Socket => {}
        }
        Ok(0)
    }
}

/// An error writing the entry for `p`.
fn tar_error(p: &Path, e: std::io::Error) -> DriverError {
    DriverError::io(format!("write {:?} to layer tar", p.display().to_string()), &e)
}

/// Reads exactly `left` bytes, failing on a short file.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while the diff was taken; diff a layer nobody is writing to",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// An empty regular entry named `p` (a whiteout or opaque marker). Its
/// metadata is fixed so that the same trees give the same bytes.
fn whiteout<W: Write>(tar: &mut tar::Builder<W>, p: &Path) -> std::io::Result<()> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    tar.append_data(&mut h, p, std::io::empty())
}

/// A PAX time: `1700000000.123456789`, `-1.5`.
fn pax_time((sec, nsec): (i64, u32)) -> String {
    if nsec == 0 {
        format!("{sec}")
    } else if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        // -2 s + 0.5 s is -1.5 s.
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    }
}

/// Whether the metadata of `l` and `u` (the same path) differ.
fn differs(l: &Meta, u: &Meta) -> bool {
    l.kind != u.kind
        || l.mode != u.mode
        || l.uid != u.uid
        || l.gid != u.gid
        || l.xattrs != u.xattrs
        || l.target != u.target
        || (matches!(u.kind, Kind::Char | Kind::Block) && l.rdev != u.rdev)
        || (u.kind != Kind::Dir && (l.size != u.size || l.mtime != u.mtime))
}

/// For a regular file whose metadata looks unchanged but whose mtime is
/// racy (its ctime within a second of it): whether the content differs.
fn racy_content_differs(
    lower: Option<&Root>,
    upper: &Root,
    p: &Path,
    l: &Meta,
    u: &Meta,
) -> DriverResult<bool> {
    let Some(lower) = lower else { return Ok(false) };
    if u.kind != Kind::File || l.kind != Kind::File || u.ctime > u.mtime.0 + 1 {
        return Ok(false);
    }
    let rel = RelPath::parse(p.as_os_str().as_bytes(), "path")?;
    let (mut a, mut b) = (lower.open_file(&rel)?, upper.open_file(&rel)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let read = |f: &mut std::fs::File, buf: &mut [u8]| -> DriverResult<usize> {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DriverError::io(format!("compare {}", p.display()), &e)),
            }
        }
        Ok(got)
    };
    loop {
        let (na, nb) = (read(&mut a, &mut ba)?, read(&mut b, &mut bb)?);
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(true);
        }
        if na == 0 {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_pax_time_formats() {
        assert_eq!(pax_time((12, 0)), "12");
        assert_eq!(pax_time((12, 5)), "12.000000005");
        assert_eq!(pax_time((-2, 500_000_000)), "-1.500000000");
    }
}
