//! The volumes on disk:
//!
//! ```text
//! <data_dir>/<name>/_data         the volume's data, handed out by mount
//! <data_dir>/<name>/opts.json     {"options": {"type": "tmpfs", …}, "created_at": "2024-…Z"}
//! <data_dir>/<name>/mounts.json   {"mounts": ["<id>", …]} active mount ids
//! <data_dir>/.berth-quota.json    project quota ids of sized volumes (util::quota)
//! <data_dir>/.berth-new-*         a volume being created (swept on open)
//! <data_dir>/.berth-old-*         a volume being removed (swept on open)
//! ```
//!
//! A volume appears whole: it is built under a temporary name and renamed
//! into place. It disappears whole too: it is renamed away before its tree
//! is deleted. Every metadata file is written atomically. A leftover with
//! something still mounted inside is never deleted (that could be a bind of
//! a host directory).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use berth_plugin_api::util::is_rfc3339;
use berth_plugin_api::util::mounts::mount_points;

const DATA: &str = "_data";
const OPTS: &str = "opts.json";
const MOUNTS: &str = "mounts.json";
const NEW_PREFIX: &str = ".berth-new-";
const OLD_PREFIX: &str = ".berth-old-";

/// A volume as the driver knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// RFC 3339; `None` for a volume found without one (made by hand, or by
    /// another engine).
    pub created_at: Option<String>,
    /// The options it was created with (`--opt`), as given.
    pub options: BTreeMap<String, String>,
    /// Ids of the active mounts.
    pub mounts: BTreeSet<String>,
}

/// `opts.json`. Unknown fields are tolerated: the directory may be shared
/// with an older or foreign writer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Meta {
    /// The options the volume was created with.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// When it was created, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MountsFile {
    #[serde(default)]
    mounts: BTreeSet<String>,
}

/// Where the volumes live.
#[derive(Debug)]
pub struct Layout {
    data_dir: PathBuf,
}

/// Checks a volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 bytes
/// (one path component).
pub fn validate_name(name: &str) -> DriverResult<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(DriverError::invalid_argument(format!(
            "invalid volume name {name:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )));
    }
    if name.len() > 255 {
        return Err(DriverError::invalid_argument(format!(
            "invalid volume name {:?}…: longer than 255 bytes",
            &name[..32]
        )));
    }
    Ok(())
}

/// A process-unique suffix for temporary names.
fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn mkdir(path: &Path) -> io::Result<()> {
    DirBuilder::new().mode(0o755).create(path)
}

impl Layout {
    /// Volumes under `data_dir`, which is created if missing.
    pub fn open(data_dir: PathBuf) -> DriverResult<Layout> {
        DirBuilder::new().recursive(true).mode(0o701).create(&data_dir).map_err(|e| {
            DriverError::io(format_args!("create volume directory {}", data_dir.display()), &e)
        })?;
        Ok(Layout { data_dir })
    }

    /// `<data_dir>`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// `<data_dir>/<name>/_data`.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir(name).join(DATA)
    }

    /// Every volume under the data directory, after sweeping what an
    /// interrupted create or remove left. A directory with a valid name and
    /// a `_data` directory is a volume; anything else is not ours and is
    /// left alone. An unreadable metadata file is an error naming it.
    pub fn load(&self) -> DriverResult<BTreeMap<String, Volume>> {
        let list_err =
            |e: &io::Error| DriverError::io(format_args!("list volumes in {}", self.data_dir.display()), e);
        let mut volumes = BTreeMap::new();
        let mut table = None;
        for entry in fs::read_dir(&self.data_dir).map_err(|e| list_err(&e))? {
            let entry = entry.map_err(|e| list_err(&e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            let path = entry.path();
            if name.starts_with(NEW_PREFIX) || name.starts_with(OLD_PREFIX) {
                // Never delete through a mount (a bind of a host path): a
                // leftover with something mounted inside stays until it is
                // unmounted.
                let table = match &mut table {
                    Some(t) => t,
                    None => table.insert(mount_points().map_err(|e| {
                        DriverError::io(format_args!("read the mount table to sweep {}", path.display()), &e)
                    })?),
                };
                let real = crate::mounting::table_path(&path);
                if table.iter().any(|m| m.starts_with(&real)) {
                    continue;
                }
                fs::remove_dir_all(&path)
                    .map_err(|e| DriverError::io(format_args!("remove leftover {}", path.display()), &e))?;
                continue;
            }
            if validate_name(&name).is_err() || !path.join(DATA).is_dir() {
                continue;
            }
            let meta: Meta = read_json(&path.join(OPTS))?.unwrap_or_default();
            if let Some(t) = &meta.created_at {
                if !is_rfc3339(t) {
                    return Err(corrupt(&path.join(OPTS), &format!("created_at {t:?} is not RFC 3339")));
                }
            }
            let mounts: MountsFile = read_json(&path.join(MOUNTS))?.unwrap_or_default();
            volumes.insert(
                name,
                Volume { created_at: meta.created_at, options: meta.options, mounts: mounts.mounts },
            );
        }
        Ok(volumes)
    }

    /// Creates volume `name` with `meta`. A directory of that name that is
    /// not a volume yet (no `_data`) is adopted, keeping what is in it.
    pub fn create(&self, name: &str, meta: &Meta) -> DriverResult<()> {
        let dir = self.dir(name);
        let opts = encode(meta)?;
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {
                let data = dir.join(DATA);
                match mkdir(&data) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && data.is_dir() => {}
                    Err(e) => return Err(DriverError::io(format_args!("create {}", data.display()), &e)),
                }
                write_atomic(&dir.join(OPTS), &opts)
            }
            Ok(_) => Err(DriverError::already_exists(format!(
                "cannot create volume {name}: {} exists and is not a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = self.data_dir.join(format!("{NEW_PREFIX}{}", unique()));
                // A volume with options is synced to disk before create
                // answers: its options say how to mount it. A plain volume is
                // not (as in Docker's local driver): the daemon's ledger is
                // durable, and a plain volume a power cut took is made again
                // by the next create. A process crash loses nothing either
                // way, since the rename comes after the write.
                let durable = !meta.options.is_empty();
                let built = (|| {
                    mkdir(&tmp)?;
                    mkdir(&tmp.join(DATA))?;
                    let mut f = File::create(tmp.join(OPTS))?;
                    f.write_all(&opts)?;
                    if durable {
                        f.sync_all()?;
                    }
                    fs::rename(&tmp, &dir)?;
                    if durable {
                        File::open(&self.data_dir)?.sync_all()?;
                    }
                    Ok(())
                })();
                built.map_err(|e| {
                    let _ = fs::remove_dir_all(&tmp);
                    DriverError::io(format_args!("create volume {name} at {}", dir.display()), &e)
                })
            }
            Err(e) => Err(DriverError::io(format_args!("create volume {name} at {}", dir.display()), &e)),
        }
    }

    /// Records the active mount ids of `name`.
    pub fn save_mounts(&self, name: &str, mounts: &BTreeSet<String>) -> DriverResult<()> {
        let file = MountsFile { mounts: mounts.clone() };
        write_atomic(&self.dir(name).join(MOUNTS), &encode(&file)?)
    }

    /// `<data_dir>/<name>`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir(name)
    }

    /// `<data_dir>/<file>`, for the driver's own files (names that cannot
    /// be volume names, e.g. starting with a dot).
    pub fn file(&self, file: &str) -> PathBuf {
        self.data_dir.join(file)
    }

    /// Removes volume `name` and its data. Once the directory is renamed
    /// away the volume is gone; a failure to delete the renamed tree is
    /// reported, and the tree is deleted again when the driver next opens.
    pub fn remove(&self, name: &str) -> DriverResult<RemoveOutcome> {
        let dir = self.dir(name);
        let old = self.data_dir.join(format!("{OLD_PREFIX}{}", unique()));
        match fs::rename(&dir, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RemoveOutcome::Done),
            Err(e) => {
                return Err(DriverError::io(format_args!("remove volume {name} at {}", dir.display()), &e))
            }
        }
        // No directory fsync (as in Docker's local driver): the daemon's
        // ledger is durable, and a volume a power cut brought back is
        // listed by the driver and can be removed again.
        match fs::remove_dir_all(&old) {
            Ok(()) => Ok(RemoveOutcome::Done),
            Err(e) => Ok(RemoveOutcome::Leftover(DriverError::io(
                format_args!(
                    "volume {name} is removed, but deleting its data at {} failed (retried when the driver restarts)",
                    old.display()
                ),
                &e,
            ))),
        }
    }
}

/// How a remove ended once the volume was gone.
#[derive(Debug)]
pub enum RemoveOutcome {
    /// Everything deleted.
    Done,
    /// The volume is gone but some data is left behind.
    Leftover(DriverError),
}

fn corrupt(path: &Path, detail: &str) -> DriverError {
    DriverError::internal(format!(
        "corrupt volume metadata {}: {detail}; repair or delete the file",
        path.display()
    ))
}

/// Reads a JSON file; `None` when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> DriverResult<Option<T>> {
    match fs::read(path) {
        // An empty file is what a power cut can leave of an unsynced write.
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(path, &e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::io(format_args!("read {}", path.display()), &e)),
    }
}

fn encode<T: Serialize>(value: &T) -> DriverResult<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| DriverError::internal(format!("encode volume metadata: {e}")))
}

pub use berth_plugin_api::util::write_atomic;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_docker_rule() {
        for ok in ["a", "A9", "data_1.bak-2", "0", &"x".repeat(255)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "/a", "a b", "é", "a:b", "..", &"x".repeat(256)] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.kind, berth_plugin_api::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn leftovers_are_swept_and_foreign_entries_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path().join("volumes")).unwrap();
        let root = layout.data_dir().to_path_buf();
        fs::create_dir_all(root.join(".berth-new-1-0/_data")).unwrap();
        fs::create_dir_all(root.join(".berth-old-1-1/_data/deep")).unwrap();
        fs::create_dir_all(root.join("not-a-volume")).unwrap();
        fs::create_dir_all(root.join("_bad_name/_data")).unwrap();
        fs::write(root.join("metadata.db"), "").unwrap();
        // A volume made by another engine: no created_at, foreign fields.
        fs::create_dir_all(root.join("docker-made/_data")).unwrap();
        fs::write(root.join("docker-made/opts.json"), r#"{"MountType":"","MountOpts":""}"#).unwrap();
        let volumes = layout.load().unwrap();
        assert_eq!(volumes.keys().collect::<Vec<_>>(), ["docker-made"]);
        assert_eq!(volumes["docker-made"], Volume::default());
        assert!(!root.join(".berth-new-1-0").exists() && !root.join(".berth-old-1-1").exists());
        assert!(root.join("not-a-volume").exists() && root.join("_bad_name").exists());
        assert!(root.join("metadata.db").exists());
        // The half-made directory is adopted by a create, keeping its files.
        fs::write(root.join("not-a-volume/keep"), "x").unwrap();
        layout.create("not-a-volume", &Meta::default()).unwrap();
        assert!(root.join("not-a-volume/_data").is_dir() && root.join("not-a-volume/keep").exists());
        assert!(layout.load().unwrap().contains_key("not-a-volume"));
    }

    #[test]
    fn metadata_that_cannot_be_read_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path().to_path_buf()).unwrap();
        layout.create("v", &Meta::default()).unwrap();
        for (file, text) in [(OPTS, "{"), (OPTS, r#"{"created_at": "today"}"#), (MOUNTS, r#"{"mounts": 3}"#)]
        {
            let path = dir.path().join("v").join(file);
            let saved = fs::read(&path).ok();
            fs::write(&path, text).unwrap();
            let e = layout.load().unwrap_err();
            assert!(e.message.contains(path.to_str().unwrap()), "{}", e.message);
            match saved {
                Some(b) => fs::write(&path, b).unwrap(),
                None => fs::remove_file(&path).unwrap(),
            }
        }
        layout.load().unwrap();
    }
}
