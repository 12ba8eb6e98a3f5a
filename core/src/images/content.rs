//! The content store: blobs by digest under `<images dir>/blobs/sha256/<hex>`
//! (containerd's model), and the spool directories loads read archives
//! into (`<images dir>/tmp/`).
//!
//! A blob is written once, under a temporary name, synced and renamed into
//! place, so a blob that exists is whole. The service removes a blob when
//! no image uses it any more, and the start-up sweep removes any blob no
//! record names (what a crash between the two left behind).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};

use super::is_sha256_hex;

/// Blobs by digest, and spool space.
#[derive(Debug)]
pub(crate) struct ContentStore {
    /// `<dir>/blobs/sha256`.
    blobs: PathBuf,
    /// `<dir>/tmp`.
    tmp: PathBuf,
}

/// A spool directory under `tmp/`, removed with everything in it when
/// dropped, whatever happened.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
}

impl Spool {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "cannot remove load spool: {e}");
            }
        }
    }
}

impl ContentStore {
    /// Opens (creating) the store under `dir`, and empties `tmp/` of what
    /// an earlier run left.
    pub fn open(dir: &Path) -> DriverResult<ContentStore> {
        let blobs = dir.join("blobs").join("sha256");
        let tmp = dir.join("tmp");
        for d in [&blobs, &tmp] {
            fs::create_dir_all(d).map_err(|e| DriverError::io(format_args!("create {}", d.display()), &e))?;
        }
        let store = ContentStore { blobs, tmp };
        store.clean_tmp();
        Ok(store)
    }

    /// Removes everything under `tmp/` (spools of loads a crash cut short).
    fn clean_tmp(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else { return };
        for entry in entries.flatten() {
            let p = entry.path();
            let res = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(e) = res {
                tracing::warn!(path = %p.display(), "cannot remove stale load spool: {e}");
            }
        }
    }

    /// A fresh spool directory for one load.
    pub fn spool(&self) -> DriverResult<Spool> {
        let name = format!("load-{}", &crate::volumes::random_hex()?[..16]);
        let path = self.tmp.join(name);
        fs::create_dir(&path).map_err(|e| DriverError::io(format_args!("create {}", path.display()), &e))?;
        Ok(Spool { path })
    }

    /// Where blob `hex` lives.
    pub fn path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    /// Stores the file at `src` as blob `hex` (which the caller verified
    /// `src` hashes to), unless the blob is already there: a hard link when
    /// `src` is on the same filesystem, else a copy; synced before it is
    /// renamed into place. Answers whether the blob was new.
    pub fn put(&self, hex: &str, src: &Path) -> DriverResult<bool> {
        if !is_sha256_hex(hex) {
            return Err(DriverError::internal(format!("blob name {hex:?} is not a sha256 digest")));
        }
        let dst = self.path(hex);
        if dst.exists() {
            return Ok(false);
        }
        let part = self.blobs.join(format!(".part-{hex}"));
        let _ = fs::remove_file(&part);
        if fs::hard_link(src, &part).is_err() {
            fs::copy(src, &part).map_err(|e| {
                let _ = fs::remove_file(&part);
                DriverError::io(format_args!("copy {} to {}", src.display(), part.display()), &e)
            })?;
        }
        let synced = File::open(&part).and_then(|f| f.sync_all());
        let renamed = synced.and_then(|()| fs::rename(&part, &dst));
        if let Err(e) = renamed {
            let _ = fs::remove_file(&part);
            return Err(DriverError::io(format_args!("store blob {}", dst.display()), &e));
        }
        if let Err(e) = File::open(&self.blobs).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %self.blobs.display(), "cannot sync the blob directory: {e}");
        }
        Ok(true)
    }

    /// Opens blob `hex` for reading, checking it is `size` bytes.
    pub fn open_blob(&self, hex: &str, size: u64) -> DriverResult<File> {
        let p = self.path(hex);
        let f = File::open(&p).map_err(|e| {
            DriverError::io(
                format_args!("open blob {} (remove the image and load it again)", p.display()),
                &e,
            )
        })?;
        let len =
            f.metadata().map_err(|e| DriverError::io(format_args!("stat blob {}", p.display()), &e))?.len();
        if len != size {
            return Err(DriverError::internal(format!(
                "blob {} is {len} bytes but was stored as {size}: it is damaged; remove the image and load it again",
                p.display()
            )));
        }
        Ok(f)
    }

    /// Removes blob `hex`; a blob that is not there is no error.
    pub fn remove(&self, hex: &str) -> DriverResult<()> {
        let p = self.path(hex);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DriverError::io(format_args!("remove blob {}", p.display()), &e))
            }
            _ => Ok(()),
        }
    }

    /// Every blob's hex; half-written blobs (`.part-*`) are removed on the way.
    pub fn list(&self) -> DriverResult<Vec<String>> {
        let entries = fs::read_dir(&self.blobs)
            .map_err(|e| DriverError::io(format_args!("list {}", self.blobs.display()), &e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| DriverError::io(format_args!("list {}", self.blobs.display()), &e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_sha256_hex(&name) {
                out.push(name);
            } else if name.starts_with(".part-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }
}
