//! Where overlay2 keeps things, and the layer records on disk.
//!
//! ```text
//! <root>/<id>/diff          the layer's own changes: the upper dir while it is
//!                           mounted read-write, a lower dir of its children
//! <root>/<id>/work          overlay's work dir (read-write layers with a parent)
//! <root>/<id>/merged        the mount point while the layer is in use
//! <root>/<id>/link          the layer's short name: 26 random characters
//! <root>/<id>/lower         `l/<short>:l/<short>…` of its parents, nearest
//!                           first (absent for a base layer)
//! <root>/<id>/meta          the record: `rw` or `ro`, a newline, the parent's id
//! <root>/l/<short>          symlink to `../<id>/diff`
//! <root>/.berth/tmp/        layers being made or deleted, probes (emptied at start)
//! <root>/.berth/empty/      an empty directory: the bottom lower dir of a
//!                           read-only base layer (overlay needs two lower
//!                           dirs when there is no upper dir)
//! <root>/.berth/quota.json  the project ids of layers with a size limit
//! ```
//!
//! The short links keep a mount's option string small: a lower dir is named
//! by `l/<short>` (29 bytes with its `:`) instead of the layer's full path,
//! so even with the classic `mount(2)`, whose data must fit in one page, a
//! chain of 128 layers mounts (moby's scheme).
//!
//! A layer is made complete in `.berth/tmp/` and renamed into place, then its
//! short link is made. `remove` renames the layer back into `.berth/tmp/`
//! (after which it no longer exists), deletes the link, then the tree. A
//! crash at any point leaves debris that [`Layout::reconcile`] sweeps, or a
//! missing link that it restores.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_api::{DriverError, DriverResult};

/// The most parents a layer may have, as in moby: with short links their
/// lower dirs fit in one page of mount options.
pub(crate) const MAX_DEPTH: usize = 128;

/// Length of a short link name.
pub(crate) const SHORT_LEN: usize = 26;

/// Names in the root that are not layers.
const RESERVED: [&str; 2] = ["l", ".berth"];

/// Checks that `id` can name a layer: not a name the driver uses itself
/// (`l`, `.berth`), then the shared rules
/// ([`berth_plugin_api::util::driver::validate_id`]).
pub(crate) fn validate_id(what: &str, id: &str) -> DriverResult<()> {
    if RESERVED.contains(&id) {
        return Err(DriverError::invalid_argument(format!(
            "{what} {id:?} is reserved by overlay2 for its own files"
        )));
    }
    berth_plugin_api::util::driver::validate_id(what, id)
}

/// What the driver knows of one layer, all read from its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerMeta {
    /// The parent's id; empty for a base layer.
    pub(crate) parent: String,
    /// Whether the layer was made by `create_rw`.
    pub(crate) read_write: bool,
    /// Its short name: `l/<link>` points at its `diff`.
    pub(crate) link: String,
    /// The short names of its parents, nearest first.
    pub(crate) lowers: Vec<String>,
}

impl LayerMeta {
    /// The record's bytes: `rw` or `ro`, a newline, the parent's id.
    fn record(&self) -> Vec<u8> {
        let mut out = if self.read_write { b"rw\n".to_vec() } else { b"ro\n".to_vec() };
        out.extend_from_slice(self.parent.as_bytes());
        out
    }

    /// The `lower` file's content, or `None` for a base layer.
    fn lower_file(&self) -> Option<String> {
        if self.lowers.is_empty() {
            return None;
        }
        Some(self.lowers.iter().map(|s| format!("l/{s}")).collect::<Vec<_>>().join(":"))
    }
}

/// The paths of one driver instance.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The persistent root (canonical).
    pub(crate) root: PathBuf,
    /// Makes temporary names unique within this process.
    counter: AtomicU64,
}

impl Layout {
    /// Creates (mode `0700`: nobody else may reach setuid binaries inside
    /// layers) the driver's directories under `root`.
    pub(crate) fn open(root: &str) -> DriverResult<Layout> {
        let p = Path::new(root);
        if !p.is_absolute() {
            return Err(DriverError::invalid_argument(format!(
                "overlay2 root {root:?} is not an absolute path"
            )));
        }
        fs::create_dir_all(p)
            .map_err(|e| DriverError::io(format_args!("create overlay2 root {root}"), &e))?;
        let root = p
            .canonicalize()
            .map_err(|e| DriverError::io(format_args!("resolve overlay2 root {root}"), &e))?;
        let layout = Layout { root, counter: AtomicU64::new(0) };
        for dir in
            [layout.root.clone(), layout.links(), layout.root.join(".berth"), layout.tmp(), layout.empty()]
        {
            private_dir(&dir)?;
        }
        Ok(layout)
    }

    /// `<root>/l`.
    pub(crate) fn links(&self) -> PathBuf {
        self.root.join("l")
    }

    /// `<root>/.berth/tmp`.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join(".berth/tmp")
    }

    /// `<root>/.berth/empty`.
    pub(crate) fn empty(&self) -> PathBuf {
        self.root.join(".berth/empty")
    }

    /// `<root>/.berth/quota.json`.
    pub(crate) fn quota_file(&self) -> PathBuf {
        self.root.join(".berth/quota.json")
    }

    /// The directory of layer `id`.
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The `diff` directory of layer `id`.
    pub(crate) fn diff(&self, id: &str) -> PathBuf {
        self.dir(id).join("diff")
    }

    /// The `merged` mount point of layer `id`.
    pub(crate) fn merged(&self, id: &str) -> PathBuf {
        self.dir(id).join("merged")
    }

    /// A fresh, unused path in `.berth/tmp/` (the same file system as the
    /// layers, so a rename between them is atomic).
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp().join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// A short name no link uses yet.
    pub(crate) fn new_short_name(&self) -> DriverResult<String> {
        for _ in 0..16 {
            let name = random_short_name()
                .map_err(|e| DriverError::io("read random bytes for a layer's short name", &e))?;
            if fs::symlink_metadata(self.links().join(&name)).is_err() {
                return Ok(name);
            }
        }
        Err(DriverError::internal("16 random short names in a row were taken; the random source is broken"))
    }

    /// Makes layer `id` on disk: its directory complete in `.berth/tmp/`,
    /// `prepare` run on it (a quota), renamed into place, and its short
    /// link. On error nothing is left behind.
    pub(crate) fn make_layer(
        &self,
        id: &str,
        meta: &LayerMeta,
        prepare: impl FnOnce(&Path) -> DriverResult<()>,
    ) -> DriverResult<()> {
        let tmp = self.temp_path("create");
        let ctx = || format!("create layer {id:?} in {}", tmp.display());
        let built = (|| -> DriverResult<()> {
            fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(|e| DriverError::io(ctx(), &e))?;
            prepare(&tmp)?;
            let made = (|| -> io::Result<()> {
                // Explicit modes: the umask must not change what a layer is.
                fs::create_dir(tmp.join("diff"))?;
                fs::set_permissions(tmp.join("diff"), fs::Permissions::from_mode(0o755))?;
                if meta.read_write && !meta.lowers.is_empty() {
                    fs::DirBuilder::new().mode(0o700).create(tmp.join("work"))?;
                }
                write_file(&tmp.join("link"), meta.link.as_bytes())?;
                if let Some(lower) = meta.lower_file() {
                    write_file(&tmp.join("lower"), lower.as_bytes())?;
                }
                write_file(&tmp.join("meta"), &meta.record())
            })();
            made.map_err(|e| DriverError::io(ctx(), &e))
        })();
        if let Err(e) = built {
            let _ = remove_any(&tmp);
            return Err(e);
        }
        let dir = self.dir(id);
        if let Err(e) = rename_noreplace(&tmp, &dir) {
            let _ = remove_any(&tmp);
            return Err(DriverError::io(
                format_args!("move new layer {id:?} into place at {}", dir.display()),
                &e,
            ));
        }
        let link = self.links().join(&meta.link);
        let linked = std::os::unix::fs::symlink(format!("../{id}/diff"), &link)
            .and_then(|()| fs::File::open(&self.root)?.sync_all());
        if let Err(e) = linked {
            let _ = fs::rename(&dir, &tmp).and_then(|()| remove_any(&tmp));
            return Err(DriverError::io(format_args!("link {} to layer {id:?}", link.display()), &e));
        }
        Ok(())
    }

    /// Reads the record of the layer in directory `dir`.
    fn read_layer(dir: &Path) -> io::Result<LayerMeta> {
        let record = fs::read(dir.join("meta"))?;
        let corrupt =
            |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} in {}", dir.display()));
        let (kind, parent) = match record.iter().position(|b| *b == b'\n') {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => return Err(corrupt("no newline in the record `meta`")),
        };
        let read_write = match kind {
            b"rw" => true,
            b"ro" => false,
            _ => return Err(corrupt("unknown layer kind in the record `meta`")),
        };
        let parent =
            String::from_utf8(parent.to_vec()).map_err(|_| corrupt("a parent id that is not UTF-8"))?;
        let link = fs::read_to_string(dir.join("link"))?;
        if link.len() != SHORT_LEN || !link.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(corrupt("a malformed short name in `link`"));
        }
        let lowers = match fs::read_to_string(dir.join("lower")) {
            Ok(s) => s
                .split(':')
                .map(|l| {
                    l.strip_prefix("l/").map(str::to_string).ok_or_else(|| corrupt("a malformed `lower`"))
                })
                .collect::<io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if lowers.is_empty() != parent.is_empty() {
            return Err(corrupt("`lower` and the parent in `meta` disagree"));
        }
        Ok(LayerMeta { parent, read_write, link, lowers })
    }

    /// Makes the disk consistent after a crash and loads every layer:
    /// empties `.berth/tmp/`, removes directories without a record (none
    /// are made outside `tmp/`, so they are not layers), and makes the
    /// short links match the layers exactly. Mounts must be swept first.
    pub(crate) fn reconcile(&self) -> DriverResult<BTreeMap<String, LayerMeta>> {
        let mut errors = Vec::new();
        for name in read_dir(&self.tmp())? {
            let path = self.tmp().join(name);
            if let Err(e) = remove_any(&path) {
                errors.push(DriverError::io(format_args!("remove leftover {}", path.display()), &e));
            }
        }

        let mut layers = BTreeMap::new();
        for name in read_dir(&self.root)? {
            let Some(id) = name.to_str().filter(|n| !RESERVED.contains(n)) else { continue };
            let dir = self.root.join(id);
            if validate_id("layer id", id).is_err() || !dir.is_dir() {
                continue;
            }
            match Self::read_layer(&dir) {
                Ok(meta) => {
                    layers.insert(id.to_string(), meta);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Err(e) = remove_any(&dir) {
                        errors.push(DriverError::io(
                            format_args!("remove incomplete layer {}", dir.display()),
                            &e,
                        ));
                    }
                }
                Err(e) => errors.push(DriverError::internal(format!(
                    "layer {id:?} is corrupt ({e}); remove {} by hand",
                    dir.display()
                ))),
            }
        }

        // Short links: exactly one per layer, pointing at its diff.
        let wanted: BTreeMap<&str, String> =
            layers.iter().map(|(id, m)| (m.link.as_str(), format!("../{id}/diff"))).collect();
        for name in read_dir(&self.links())? {
            let path = self.links().join(&name);
            let keep = name
                .to_str()
                .and_then(|n| wanted.get(n))
                .is_some_and(|target| fs::read_link(&path).is_ok_and(|t| t.as_os_str() == target.as_str()));
            if !keep {
                if let Err(e) = remove_any(&path) {
                    errors.push(DriverError::io(format_args!("remove stale link {}", path.display()), &e));
                }
            }
        }
        for (link, target) in &wanted {
            let path = self.links().join(link);
            if fs::symlink_metadata(&path).is_err() {
                if let Err(e) = std::os::unix::fs::symlink(target, &path) {
                    errors.push(DriverError::io(format_args!("restore link {}", path.display()), &e));
                }
            }
        }
        match berth_plugin_api::util::driver::combine(errors) {
            Some(e) => Err(e.context("recover overlay2 state")),
            None => Ok(layers),
        }
    }
}

/// The characters of a short name (base32, as moby's).
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A random short name of [`SHORT_LEN`] characters.
fn random_short_name() -> io::Result<String> {
    let mut bytes = [0u8; SHORT_LEN];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // 32 divides 256: every character is equally likely.
    Ok(bytes.iter().map(|b| ALPHABET[usize::from(*b) % 32] as char).collect())
}

/// Writes a small file and syncs it.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create_new(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Renames `from` to `to`, failing with `EEXIST` instead of replacing an
/// existing (empty) directory at `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

/// The names in directory `dir`.
pub(crate) fn read_dir(dir: &Path) -> DriverResult<Vec<std::ffi::OsString>> {
    let ctx = || format!("read directory {}", dir.display());
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DriverError::io(ctx(), &e))? {
        names.push(entry.map_err(|e| DriverError::io(ctx(), &e))?.file_name());
    }
    Ok(names)
}

/// Deletes `path`, a whole tree if it is a directory (symlinks are removed,
/// never followed).
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates directory `dir` with mode `0700` unless it exists.
fn private_dir(dir: &Path) -> DriverResult<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(DriverError::io(format_args!("create {}", dir.display()), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::util::driver::MAX_ID_LEN;
    use berth_plugin_api::ErrorKind;

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(dir.path().join("root").to_str().unwrap()).unwrap();
        (dir, l)
    }

    #[test]
    fn ids_are_checked() {
        for good in ["a", "sha256:abc", ".hidden", "L", "with space", &"x".repeat(MAX_ID_LEN)] {
            validate_id("layer id", good).unwrap();
        }
        for bad in ["", ".", "..", "l", ".berth", "a/b", "/", "a\0b", &"x".repeat(MAX_ID_LEN + 1)] {
            let e = validate_id("layer id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message.starts_with("layer id "), "{}", e.message);
        }
    }

    #[test]
    fn short_names_are_26_base32_characters_and_differ() {
        let (_d, l) = layout();
        let a = l.new_short_name().unwrap();
        let b = l.new_short_name().unwrap();
        assert_eq!(a.len(), SHORT_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_layer_round_trips_through_its_files() {
        let (_d, l) = layout();
        let base = LayerMeta { link: l.new_short_name().unwrap(), ..LayerMeta::default() };
        l.make_layer("base", &base, |_| Ok(())).unwrap();
        let top = LayerMeta {
            parent: "base".into(),
            read_write: true,
            link: l.new_short_name().unwrap(),
            lowers: vec![base.link.clone()],
        };
        l.make_layer("weird\nid", &top, |_| Ok(())).unwrap();
        assert_eq!(Layout::read_layer(&l.dir("base")).unwrap(), base);
        assert_eq!(Layout::read_layer(&l.dir("weird\nid")).unwrap(), top);
        assert_eq!(fs::read_to_string(l.dir("weird\nid").join("lower")).unwrap(), format!("l/{}", base.link));
        assert_eq!(fs::read_link(l.links().join(&top.link)).unwrap(), Path::new("../weird\nid/diff"));
        assert!(l.dir("weird\nid").join("work").is_dir() && !l.dir("base").join("work").exists());
        let mode = fs::metadata(l.diff("base")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        let e = l.make_layer("base", &base, |_| Ok(())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
        assert_eq!(read_dir(&l.tmp()).unwrap().len(), 0, "a failed make leaves nothing");
    }

    #[test]
    fn reconcile_sweeps_debris_and_restores_links() {
        let (_d, l) = layout();
        let good = LayerMeta { link: l.new_short_name().unwrap(), ..LayerMeta::default() };
        l.make_layer("good", &good, |_| Ok(())).unwrap();
        // A tree without a record, a half-made layer in tmp, a dangling
        // link (crash during remove), a lost link (crash during create).
        fs::create_dir_all(l.dir("orphan").join("diff")).unwrap();
        fs::create_dir_all(l.temp_path("create").join("diff")).unwrap();
        std::os::unix::fs::symlink("../gone/diff", l.links().join("DANGLING")).unwrap();
        fs::remove_file(l.links().join(&good.link)).unwrap();

        let layers = l.reconcile().unwrap();
        assert_eq!(layers.keys().collect::<Vec<_>>(), ["good"]);
        assert!(!l.dir("orphan").exists());
        assert_eq!(read_dir(&l.tmp()).unwrap().len(), 0);
        let links = read_dir(&l.links()).unwrap();
        assert_eq!(links, vec![std::ffi::OsString::from(&good.link)]);
        assert_eq!(fs::read_link(l.links().join(&good.link)).unwrap(), Path::new("../good/diff"));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_layer() {
        let (_d, l) = layout();
        let meta = LayerMeta { link: l.new_short_name().unwrap(), ..LayerMeta::default() };
        l.make_layer("bad", &meta, |_| Ok(())).unwrap();
        fs::write(l.dir("bad").join("meta"), b"xx\n").unwrap();
        let e = l.reconcile().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("\"bad\""), "{e}");
        assert!(l.dir("bad").exists(), "never deleted on a guess");
    }

    #[test]
    fn relative_roots_are_refused() {
        assert_eq!(Layout::open("relative/root").unwrap_err().kind, ErrorKind::InvalidArgument);
    }
}
