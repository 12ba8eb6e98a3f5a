//! Where vfs keeps things, and the layer records on disk.
//!
//! ```text
//! <root>/dir/<id>         the layer's tree
//! <root>/meta/<id>.json   its record: parent and read-write flag
//! <root>/tmp/             trees being copied, records being written,
//!                         trees being deleted (all removed at start)
//! <run_root>/mnt/<id>     read-only bind mount of a layer while it is in use
//! ```
//!
//! A layer exists when both its tree and its record do. `create` renames a
//! finished tree into `dir/` and then writes the record; `remove` moves the
//! tree to `tmp/` and then deletes the record. A crash between the two steps
//! leaves a tree without a record or a record without a tree; both are swept
//! when the driver starts ([`Layout::reconcile`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

pub(crate) use berth_plugin_api::util::driver::validate_id;

/// The record of one layer, `meta/<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct LayerMeta {
    /// The parent's id; empty for a base layer.
    pub(crate) parent: String,
    /// Whether the layer was made by `create_rw`.
    pub(crate) read_write: bool,
}

/// The paths of one driver instance.
#[derive(Debug)]
pub(crate) struct Layout {
    /// Persistent root (canonical).
    pub(crate) root: PathBuf,
    /// Runtime root (canonical).
    pub(crate) run_root: PathBuf,
    /// Makes temporary names unique within this process.
    counter: AtomicU64,
}

impl Layout {
    /// Creates (mode `0700`, so nobody else can reach setuid binaries inside
    /// layers) the driver's directories under `root` and `run_root`.
    pub(crate) fn open(root: &str, run_root: &str) -> DriverResult<Layout> {
        let root = absolute_dir("root", root)?;
        let run_root = absolute_dir("run root", run_root)?;
        let layout = Layout { root, run_root, counter: AtomicU64::new(0) };
        for dir in [layout.dirs(), layout.metas(), layout.tmp(), layout.mounts()] {
            private_dir(&dir)?;
        }
        Ok(layout)
    }

    /// `<root>/dir`.
    pub(crate) fn dirs(&self) -> PathBuf {
        self.root.join("dir")
    }

    /// `<root>/meta`.
    pub(crate) fn metas(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// `<root>/tmp`.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `<run_root>/mnt`.
    pub(crate) fn mounts(&self) -> PathBuf {
        self.run_root.join("mnt")
    }

    /// The tree of layer `id`.
    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.dirs().join(id)
    }

    /// The record of layer `id`.
    pub(crate) fn meta(&self, id: &str) -> PathBuf {
        self.metas().join(format!("{id}.json"))
    }

    /// The mount point of read-only layer `id`.
    pub(crate) fn mount_point(&self, id: &str) -> PathBuf {
        self.mounts().join(id)
    }

    /// A fresh, unused path in `tmp/` (the same file system as `dir/`, so a
    /// rename between them is atomic). `what` only helps a human reading it.
    pub(crate) fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp().join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Writes the record of layer `id` atomically: a complete file appears
    /// under its final name, or nothing does.
    pub(crate) fn write_meta(&self, id: &str, meta: &LayerMeta) -> DriverResult<()> {
        let path = self.meta(id);
        let json = serde_json::to_vec(meta)
            .map_err(|e| DriverError::internal(format!("encode record of layer {id:?}: {e}")))?;
        let tmp = self.temp_path("meta");
        let written = (|| -> io::Result<()> {
            let mut f = fs::File::create_new(&tmp)?;
            f.write_all(&json)?;
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
    /// empties `tmp/`, drops records without a tree and trees without a
    /// record (the debris of an interrupted create or remove).
    pub(crate) fn reconcile(&self) -> DriverResult<BTreeMap<String, LayerMeta>> {
        let mut errors = Vec::new();
        for entry in read_dir(&self.tmp())? {
            let path = self.tmp().join(entry);
            if let Err(e) = remove_any(&path) {
                errors.push(DriverError::io(format_args!("remove leftover {}", path.display()), &e));
            }
        }

        let mut layers = BTreeMap::new();
        for name in read_dir(&self.metas())? {
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if validate_id("layer id", id).is_err() {
                continue;
            }
            let path = self.metas().join(&name);
            if !self.dir(id).is_dir() {
                if let Err(e) = fs::remove_file(&path) {
                    errors.push(DriverError::io(format_args!("remove stale record {}", path.display()), &e));
                }
                continue;
            }
            let bytes = fs::read(&path)
                .map_err(|e| DriverError::io(format_args!("read record {}", path.display()), &e))?;
            let meta: LayerMeta = serde_json::from_slice(&bytes).map_err(|e| {
                DriverError::internal(format!(
                    "record of layer {id:?} at {} is corrupt ({e}); remove the layer's files by hand",
                    path.display()
                ))
            })?;
            layers.insert(id.to_string(), meta);
        }

        for name in read_dir(&self.dirs())? {
            let known = name.to_str().is_some_and(|id| layers.contains_key(id));
            if !known {
                let path = self.dirs().join(&name);
                if let Err(e) = remove_any(&path) {
                    errors.push(DriverError::io(
                        format_args!("remove incomplete layer {}", path.display()),
                        &e,
                    ));
                }
            }
        }
        match berth_plugin_api::util::driver::combine(errors) {
            Some(e) => Err(e.context("recover vfs state")),
            None => Ok(layers),
        }
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

/// `path` as a canonical directory, created if missing; `what` names it in
/// errors.
fn absolute_dir(what: &str, path: &str) -> DriverResult<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(DriverError::invalid_argument(format!("vfs {what} {path:?} is not an absolute path")));
    }
    fs::create_dir_all(p).map_err(|e| DriverError::io(format_args!("create vfs {what} {path}"), &e))?;
    p.canonicalize().map_err(|e| DriverError::io(format_args!("resolve vfs {what} {path}"), &e))
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
        for good in ["a", "sha256:abc", ".hidden", "...", "with space", &"x".repeat(MAX_ID_LEN)] {
            validate_id("layer id", good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", &"x".repeat(MAX_ID_LEN + 1)] {
            let e = validate_id("layer id", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad:?}");
            assert!(e.message.starts_with("layer id "), "{}", e.message);
        }
    }

    #[test]
    fn relative_roots_are_refused() {
        let e = Layout::open("relative/root", "/tmp").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn reconcile_sweeps_debris_and_keeps_layers() {
        let root = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let l = Layout::open(root.path().to_str().unwrap(), run.path().to_str().unwrap()).unwrap();
        // A complete layer.
        fs::create_dir(l.dir("good")).unwrap();
        l.write_meta("good", &LayerMeta { parent: String::new(), read_write: true }).unwrap();
        // A tree without record (crash during create), a record without
        // tree (crash during remove), a half-copied tree in tmp.
        fs::create_dir(l.dir("orphan")).unwrap();
        l.write_meta("ghost", &LayerMeta::default()).unwrap();
        fs::create_dir_all(l.temp_path("copy").join("deep")).unwrap();

        let layers = l.reconcile().unwrap();
        assert_eq!(layers.keys().collect::<Vec<_>>(), ["good"]);
        assert!(layers["good"].read_write);
        assert!(!l.dir("orphan").exists());
        assert!(!l.meta("ghost").exists());
        assert_eq!(read_dir(&l.tmp()).unwrap().len(), 0);
    }

    #[test]
    fn layout_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let run = tempfile::tempdir().unwrap();
        let l = Layout::open(root.path().to_str().unwrap(), run.path().to_str().unwrap()).unwrap();
        for d in [l.dirs(), l.metas(), l.tmp(), l.mounts()] {
            assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700, "{}", d.display());
        }
    }
}
