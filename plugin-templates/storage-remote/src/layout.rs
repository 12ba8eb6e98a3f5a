//! Where the driver keeps things, and how it recovers after a crash.
//!
//! ```text
//! <root>/dir/<id>        the layer's tree
//! <root>/meta/<id>.json  its record: parent and read-write flag
//! <root>/tmp/            trees being copied or deleted (emptied at start)
//! <run_root>/mnt/<id>    the read-only bind mount of a layer in use
//! ```
//!
//! A layer exists when both its tree and its record do. `create` moves a
//! finished copy into `dir/`, then writes the record; `remove` moves the
//! tree out to `tmp/`, then deletes the record. A crash in between leaves a
//! tree without record or a record without tree; [`Layout::recover`]
//! sweeps both when the driver starts.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_api::util::driver::{combine, validate_id};
use berth_plugin_api::util::{mounts, write_atomic};
use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::sys;

/// The record of one layer, `meta/<id>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The parent's id; empty for a layer without parent.
    pub parent: String,
    /// Made by `create_rw` (writable) rather than `create` (read-only).
    pub read_write: bool,
}

/// The paths of one driver instance.
#[derive(Debug)]
pub struct Layout {
    pub root: PathBuf,
    pub run_root: PathBuf,
    /// Makes names in `tmp/` unique.
    counter: AtomicU64,
}

impl Layout {
    /// The layout under `root` and `run_root`, its directories made if
    /// missing (mode `0700`: nobody else may reach setuid files in layers).
    pub fn open(root: &Path, run_root: &Path) -> DriverResult<Layout> {
        let layout = Layout { root: root.into(), run_root: run_root.into(), counter: AtomicU64::new(0) };
        for dir in [root.join("dir"), root.join("meta"), root.join("tmp"), run_root.join("mnt")] {
            let made = fs::create_dir_all(&dir).and_then(|()| fs::set_permissions(&dir, private()));
            made.map_err(|e| DriverError::io(format_args!("create {}", dir.display()), &e))?;
        }
        Ok(layout)
    }

    /// The tree of layer `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("dir").join(id)
    }

    /// Where read-only layer `id` is mounted while in use.
    pub fn mount_point(&self, id: &str) -> PathBuf {
        self.run_root.join("mnt").join(id)
    }

    /// A fresh name in `tmp/`: the file system of `dir/`, so a rename
    /// between them is atomic. `what` only helps a human reading it.
    pub fn temp(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{what}-{}-{n}", std::process::id()))
    }

    fn record(&self, id: &str) -> PathBuf {
        self.root.join("meta").join(format!("{id}.json"))
    }

    /// Writes the record of layer `id`: a crash leaves the whole record or
    /// none.
    pub fn write_record(&self, id: &str, layer: &Layer) -> DriverResult<()> {
        let json = serde_json::to_vec(layer)
            .map_err(|e| DriverError::internal(format!("encode the record of layer {id:?}: {e}")))?;
        write_atomic(&self.record(id), &json)
    }

    /// Deletes the record of layer `id`.
    pub fn remove_record(&self, id: &str) -> DriverResult<()> {
        let path = self.record(id);
        fs::remove_file(&path).map_err(|e| DriverError::io(format_args!("remove {}", path.display()), &e))
    }

    /// Empties `tmp/`, drops records without a tree and trees without a
    /// record (the debris of an interrupted create or remove), and answers
    /// the layers that are whole.
    pub fn recover(&self) -> DriverResult<BTreeMap<String, Layer>> {
        let tmp = self.root.join("tmp");
        for name in names(&tmp)? {
            remove_tree(&tmp.join(name))?;
        }
        let meta = self.root.join("meta");
        let mut layers = BTreeMap::new();
        for name in names(&meta)? {
            let Some(id) = name.strip_suffix(".json") else { continue };
            if validate_id("layer id", id).is_err() {
                continue;
            }
            let record = meta.join(&name);
            if !self.dir(id).is_dir() {
                fs::remove_file(&record)
                    .map_err(|e| DriverError::io(format_args!("remove {}", record.display()), &e))?;
                continue;
            }
            let read = |e: io::Error| DriverError::io(format_args!("read {}", record.display()), &e);
            let layer = serde_json::from_slice(&fs::read(&record).map_err(read)?).map_err(|e| {
                DriverError::internal(format!("{} is corrupt ({e}); remove it by hand", record.display()))
            })?;
            layers.insert(id.to_string(), layer);
        }
        for name in names(&self.root.join("dir"))? {
            if !layers.contains_key(&name) {
                remove_tree(&self.dir(&name))?;
            }
        }
        Ok(layers)
    }

    /// Unmounts everything under `<run_root>/mnt` (what this instance, or
    /// a crashed one, mounted) and removes the mount points. Tries every
    /// one and reports every failure.
    pub fn unmount_all(&self) -> DriverResult<()> {
        let mnt = self.run_root.join("mnt");
        let mut errors = Vec::new();
        match mounts::mounts_under(&mnt) {
            Ok(mut points) => {
                points.sort_by_key(|p| std::cmp::Reverse(p.components().count())); // deepest first
                for p in points {
                    if let Err(e) = sys::unmount(&p) {
                        errors.push(DriverError::io(format_args!("unmount {}", p.display()), &e));
                    }
                }
            }
            Err(e) => errors.push(DriverError::io("read /proc/self/mountinfo", &e)),
        }
        for name in names(&mnt)? {
            let _ = fs::remove_dir(mnt.join(name)); // a mount point still in use stays
        }
        combine(errors).map_or(Ok(()), Err)
    }
}

/// Mode `0700`.
fn private() -> fs::Permissions {
    fs::Permissions::from_mode(0o700)
}

/// The names in directory `dir` (those that are UTF-8: ids are strings).
fn names(dir: &Path) -> DriverResult<Vec<String>> {
    let entries =
        fs::read_dir(dir).map_err(|e| DriverError::io(format_args!("read {}", dir.display()), &e))?;
    Ok(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
}

/// Deletes `path`, a whole tree if it is a directory (symlinks are removed,
/// never followed); a missing path is fine.
pub fn remove_tree(path: &Path) -> DriverResult<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|e| DriverError::io(format_args!("delete {}", path.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_sweeps_debris_and_keeps_whole_layers() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::open(&dir.path().join("root"), &dir.path().join("run")).unwrap();
        fs::create_dir(l.dir("whole")).unwrap();
        l.write_record("whole", &Layer { parent: String::new(), read_write: true }).unwrap();
        fs::create_dir(l.dir("tree-only")).unwrap(); // a crash during create
        l.write_record("record-only", &Layer::default()).unwrap(); // a crash during remove
        fs::create_dir_all(l.temp("create").join("half")).unwrap(); // a crash during a copy

        let layers = l.recover().unwrap();
        assert_eq!(layers.keys().collect::<Vec<_>>(), ["whole"]);
        assert!(layers["whole"].read_write);
        assert!(!l.dir("tree-only").exists());
        assert!(!l.record("record-only").exists());
        assert!(names(&l.root.join("tmp")).unwrap().is_empty());
    }
}
