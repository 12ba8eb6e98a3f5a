//! Where btrfs keeps things, and the layer records on disk.
//!
//! ```text
//! <root>/subvolumes/<id>         the layer: a subvolume (moby's layout); a
//!                                read-only layer is a read-only subvolume
//! <root>/subvolumes/.berth-*     a subvolume being made (a staging name)
//! <root>/meta/<id>               the record: `rw` or `ro`, a newline, the
//!                                size limit in bytes (0: none), a newline,
//!                                the parent's id
//! <root>/meta/.berth-*           a record being written
//! ```
//!
//! A layer is made under a staging name in `subvolumes/` (the same
//! directory as its final name: a read-only subvolume cannot move to
//! another directory, whose `..` it would have to rewrite), renamed to its
//! id, then its record is written. `remove` destroys the subvolume, then
//! deletes the record. A crash at any point leaves a staging subvolume, a
//! subvolume without record or a record without subvolume, all of which
//! [`Layout::reconcile`] sweeps at the next start. Ids starting with
//! `.berth-` are therefore reserved.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_api::{DriverError, DriverResult};

use crate::subvol;
use crate::sys;

/// The prefix of the driver's own names in `subvolumes/` and `meta/`.
pub(crate) const RESERVED_PREFIX: &str = ".berth-";

/// Checks that `id` can name a layer: not starting with
/// [`RESERVED_PREFIX`], then the shared rules
/// ([`berth_plugin_api::util::driver::validate_id`]).
pub(crate) fn validate_id(what: &str, id: &str) -> DriverResult<()> {
    if id.starts_with(RESERVED_PREFIX) {
        return Err(DriverError::invalid_argument(format!(
            "{what} {id:?} starts with \".berth-\", which btrfs reserves for its staging names"
        )));
    }
    berth_plugin_api::util::driver::validate_id(what, id)
}

/// The record of one layer, `meta/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerMeta {
    /// The parent's id; empty for a base layer.
    pub(crate) parent: String,
    /// Whether the layer was made by `create_rw`.
    pub(crate) read_write: bool,
    /// The qgroup limit on its referenced bytes; 0 for none.
    pub(crate) size: u64,
}

impl LayerMeta {
    /// The record's bytes.
    fn encode(&self) -> Vec<u8> {
        let kind = if self.read_write { "rw" } else { "ro" };
        format!("{kind}\n{}\n{}", self.size, self.parent).into_bytes()
    }

    /// Parses a record; the error says what is wrong.
    fn decode(bytes: &[u8]) -> Result<LayerMeta, &'static str> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8")?;
        let mut parts = text.splitn(3, '\n');
        let read_write = match parts.next() {
            Some("rw") => true,
            Some("ro") => false,
            _ => return Err("the first line is neither \"rw\" nor \"ro\""),
        };
        let size =
            parts.next().and_then(|s| s.parse().ok()).ok_or("the second line is not a size in bytes")?;
        let parent = parts.next().ok_or("the parent line is missing")?.to_string();
        Ok(LayerMeta { parent, read_write, size })
    }
}

/// The paths of one driver instance.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The persistent root (canonical).
    pub(crate) root: PathBuf,
    /// Makes staging names unique within this process.
    counter: AtomicU64,
}

impl Layout {
    /// Creates the driver's directories under `root` (mode `0700`: nobody
    /// else may reach setuid binaries inside layers).
    pub(crate) fn open(root: &str) -> DriverResult<Layout> {
        let p = Path::new(root);
        if !p.is_absolute() {
            return Err(DriverError::invalid_argument(format!(
                "btrfs root {root:?} is not an absolute path"
            )));
        }
        fs::create_dir_all(p).map_err(|e| DriverError::io(format_args!("create btrfs root {root}"), &e))?;
        let root =
            p.canonicalize().map_err(|e| DriverError::io(format_args!("resolve btrfs root {root}"), &e))?;
        let layout = Layout { root, counter: AtomicU64::new(0) };
        for dir in [layout.subvolumes(), layout.metas()] {
            private_dir(&dir)?;
        }
        Ok(layout)
    }

    /// `<root>/subvolumes`.
    pub(crate) fn subvolumes(&self) -> PathBuf {
        self.root.join("subvolumes")
    }

    /// `<root>/meta`.
    pub(crate) fn metas(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// The subvolume of layer `id`.
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.subvolumes().join(id)
    }

    /// The record of layer `id`.
    pub(crate) fn meta(&self, id: &str) -> PathBuf {
        self.metas().join(id)
    }

    /// A fresh reserved name (`.berth-<what>-<pid>-<n>`).
    fn reserved_name(&self, what: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{RESERVED_PREFIX}{what}-{}-{n}", std::process::id())
    }

    /// A fresh staging path in `subvolumes/`, for a subvolume being made.
    pub(crate) fn staging(&self) -> PathBuf {
        self.subvolumes().join(self.reserved_name("create"))
    }

    /// Writes the record of layer `id` atomically: a complete file appears
    /// under its final name, or nothing does.
    pub(crate) fn write_meta(&self, id: &str, meta: &LayerMeta) -> DriverResult<()> {
        let path = self.meta(id);
        let tmp = self.metas().join(self.reserved_name("meta"));
        let written = (|| -> io::Result<()> {
            let mut f = fs::File::create_new(&tmp)?;
            f.write_all(&meta.encode())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(self.metas())?.sync_all()
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            DriverError::io(format_args!("write record of layer {id:?} at {}", path.display()), &e)
        })
    }

    /// Deletes the record of layer `id`.
    pub(crate) fn remove_meta(&self, id: &str) -> DriverResult<()> {
        let path = self.meta(id);
        fs::remove_file(&path).map_err(|e| {
            DriverError::io(format_args!("remove record of layer {id:?} at {}", path.display()), &e)
        })
    }

    /// Makes the disk consistent after a crash and loads every layer:
    /// destroys staging subvolumes and subvolumes without a record, drops
    /// records without a subvolume and half-written records, and sets each
    /// layer's read-only flag as its record says. Every step is tried;
    /// every failure is reported.
    pub(crate) fn reconcile(&self) -> DriverResult<BTreeMap<String, LayerMeta>> {
        let mut errors = Vec::new();
        for name in read_dir(&self.subvolumes())? {
            if name.to_str().is_some_and(|n| n.starts_with(RESERVED_PREFIX)) {
                sweep(&self.subvolumes().join(&name), "half-made layer", &mut errors);
            }
        }

        let mut layers = BTreeMap::new();
        for name in read_dir(&self.metas())? {
            let path = self.metas().join(&name);
            let Some(id) = name.to_str().filter(|id| validate_id("layer id", id).is_ok()) else {
                if let Err(e) = fs::remove_file(&path) {
                    errors.push(DriverError::io(format_args!("remove stray record {}", path.display()), &e));
                }
                continue;
            };
            let dir = self.dir(id);
            let is_subvolume = subvol::path_is_subvolume(&dir).map_err(|e| {
                DriverError::io(format_args!("inspect layer {id:?} at {}", dir.display()), &e)
            })?;
            if !is_subvolume {
                sweep(&dir, "broken layer", &mut errors);
                if let Err(e) = fs::remove_file(&path) {
                    errors.push(DriverError::io(format_args!("remove stale record {}", path.display()), &e));
                }
                continue;
            }
            let bytes = fs::read(&path)
                .map_err(|e| DriverError::io(format_args!("read record {}", path.display()), &e))?;
            let meta = LayerMeta::decode(&bytes).map_err(|why| {
                DriverError::internal(format!(
                    "record of layer {id:?} at {} is corrupt ({why}); remove the record and the subvolume {} \
                     (`btrfs subvolume delete`) by hand",
                    path.display(),
                    dir.display()
                ))
            })?;
            let flagged = sys::open_dir(&dir).and_then(|fd| {
                if sys::is_read_only(&fd)? == meta.read_write {
                    sys::set_read_only(&fd, !meta.read_write)?;
                }
                Ok(())
            });
            if let Err(e) = flagged {
                errors.push(DriverError::io(format_args!("set the read-only flag of layer {id:?}"), &e));
            }
            layers.insert(id.to_string(), meta);
        }

        for name in read_dir(&self.subvolumes())? {
            if !name.to_str().is_some_and(|id| layers.contains_key(id)) {
                sweep(&self.subvolumes().join(&name), "layer without record", &mut errors);
            }
        }
        match berth_plugin_api::util::driver::combine(errors) {
            Some(e) => Err(e.context("recover btrfs state")),
            None => Ok(layers),
        }
    }
}

/// Removes debris at `path` (see [`subvol::remove_debris`]), adding a
/// failure to `errors`.
fn sweep(path: &Path, what: &str, errors: &mut Vec<DriverError>) {
    if let Err(e) = subvol::remove_debris(path) {
        errors.push(DriverError::io(format_args!("remove {what} {}", path.display()), &e));
    }
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

    #[test]
    fn ids_are_checked() {
        for good in ["a", "sha256:abc", ".hidden", "...", ".berth", "with space", &"x".repeat(MAX_ID_LEN)] {
            validate_id("layer id", good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", ".berth-create-1-1", &"x".repeat(MAX_ID_LEN + 1)] {
            let e = validate_id("layer id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message.starts_with("layer id "), "{}", e.message);
        }
    }

    #[test]
    fn records_round_trip() {
        for meta in [
            LayerMeta { parent: String::new(), read_write: true, size: 0 },
            LayerMeta { parent: "sha256:abc".into(), read_write: false, size: 10 << 20 },
            LayerMeta { parent: "odd\nparent".into(), read_write: true, size: 1 },
        ] {
            assert_eq!(LayerMeta::decode(&meta.encode()).unwrap(), meta);
        }
        assert_eq!(LayerMeta { parent: "p".into(), read_write: false, size: 7 }.encode(), b"ro\n7\np");
        for bad in [&b""[..], b"xx\n0\n", b"rw\n", b"rw\nbig\np", b"rw\n0", b"\xff\n0\n"] {
            assert!(LayerMeta::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_roots_are_refused() {
        assert_eq!(Layout::open("relative/root").unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn layout_directories_are_private_and_staging_names_reserved() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let l = Layout::open(root.path().to_str().unwrap()).unwrap();
        for d in [l.subvolumes(), l.metas()] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
        let (a, b) = (l.staging(), l.staging());
        assert_ne!(a, b);
        for s in [a, b] {
            assert_eq!(s.parent(), Some(l.subvolumes().as_path()));
            let name = s.file_name().unwrap().to_str().unwrap();
            assert!(validate_id("layer id", name).is_err(), "{name} must not be a valid id");
        }
    }

    #[test]
    fn records_are_written_atomically_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::open(root.path().to_str().unwrap()).unwrap();
        let meta = LayerMeta { parent: "p".into(), read_write: true, size: 0 };
        l.write_meta("a", &meta).unwrap();
        assert_eq!(fs::read(l.meta("a")).unwrap(), b"rw\n0\np");
        assert_eq!(read_dir(&l.metas()).unwrap().len(), 1, "no temporary file left");
        l.remove_meta("a").unwrap();
        assert_eq!(l.remove_meta("a").unwrap_err().kind, ErrorKind::NotFound);
    }
}
