//! The outer archive: every file spooled to disk and hashed on the way, links
//! recorded (and refused when they point outside the archive).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::hex;
use crate::layers::decompress;

/// How many links a name may go through before it is refused as a loop.
const MAX_LINK_HOPS: usize = 40;
/// Copy buffer size.
const BUF: usize = 1 << 20;

/// One file of the archive, spooled.
#[derive(Debug, Clone)]
pub(super) struct Spooled {
    /// Where the bytes are now.
    pub path: PathBuf,
    /// The sha256 of the bytes, lower-case hex.
    pub hex: String,
    /// The size in bytes.
    pub size: u64,
}

/// The files of an archive, by normalised path (`a/b`, no `./`).
#[derive(Debug, Default)]
pub(super) struct Files {
    files: HashMap<String, Spooled>,
    /// Symlinks and hardlinks: name → normalised target.
    links: HashMap<String, String>,
}

impl Files {
    /// Whether the archive holds `name` (a file, or a link to one).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_ok()
    }

    /// The file the archive holds at `name`, following links; an
    /// invalid-argument error when it has none.
    pub fn get(&self, name: &str) -> DriverResult<&Spooled> {
        let mut cur = normalize(name)?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(f) = self.files.get(&cur) {
                return Ok(f);
            }
            match self.links.get(&cur) {
                Some(target) => cur = target.clone(),
                None => {
                    return Err(DriverError::invalid_argument(format!(
                        "image archive names {name:?} but does not contain it"
                    )))
                }
            }
        }
        Err(DriverError::invalid_argument(format!(
            "image archive entry {name:?} goes through more than {MAX_LINK_HOPS} links (a link loop?)"
        )))
    }

    /// The file at `name` parsed as JSON of type `T`; `what` names the type
    /// in errors (`manifest.json`, `image config`).
    pub fn json<T: DeserializeOwned>(&self, name: &str, what: &str) -> DriverResult<(T, &Spooled)> {
        let f = self.get(name)?;
        let file = File::open(&f.path)
            .map_err(|e| DriverError::io(format_args!("open spooled {name} at {}", f.path.display()), &e))?;
        let value = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
            DriverError::invalid_argument(format!("image archive entry {name:?} is not a valid {what}: {e}"))
        })?;
        Ok((value, f))
    }

    /// Every regular file, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Spooled)> {
        self.files.iter()
    }
}

/// Reads the (possibly compressed) tar from `reader`, spooling every regular
/// file into `dir` as `sha256-<hex>`.
pub(super) fn spool(reader: impl Read, dir: &Path) -> DriverResult<Files> {
    let (_, plain) = decompress(reader).map_err(|e| e.context("read image archive"))?;
    let mut archive = tar::Archive::new(plain);
    let entries = archive.entries().map_err(|e| DriverError::io("read image archive", &e))?;
    let mut files = Files::default();
    let mut buf = vec![0u8; BUF];
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| DriverError::io("read image archive entry", &e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => continue,
            _ => {}
        }
        let name = normalize(&raw)?;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                if name.is_empty() {
                    return Err(DriverError::invalid_argument(format!(
                        "image archive entry {raw:?} is a file without a name"
                    )));
                }
                let f = spool_one(&mut entry, dir, n, &name, &mut buf)?;
                files.links.remove(&name);
                files.files.insert(name, f);
            }
            EntryType::Directory => {}
            EntryType::Symlink => {
                let target = link_target(&entry, &name)?;
                let resolved = resolve_symlink(&name, &target)?;
                files.files.remove(&name);
                files.links.insert(name, resolved);
            }
            EntryType::Link => {
                let target = link_target(&entry, &name)?;
                let resolved = normalize(&target).map_err(|_| {
                    DriverError::invalid_argument(format!(
                        "image archive hardlink {name:?} points outside the archive ({target:?})"
                    ))
                })?;
                files.files.remove(&name);
                files.links.insert(name, resolved);
            }
            other => {
                return Err(DriverError::invalid_argument(format!(
                    "image archive entry {name:?} is a {other:?} entry; an image archive holds only files, \
                     directories and links"
                )))
            }
        }
    }
    Ok(files)
}

/// The link target of `entry`, as a string.
fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> DriverResult<String> {
    match entry.link_name_bytes() {
        Some(t) => String::from_utf8(t.into_owned()).map_err(|_| {
            DriverError::invalid_argument(format!(
                "image archive link {name:?} has a target that is not utf-8"
            ))
        }),
        None => Err(DriverError::invalid_argument(format!("image archive link {name:?} has no target"))),
    }
}

/// Copies one entry into `dir`, hashing it; renames it after its digest.
fn spool_one(
    entry: &mut impl Read,
    dir: &Path,
    n: usize,
    name: &str,
    buf: &mut [u8],
) -> DriverResult<Spooled> {
    let tmp = dir.join(format!(".spool-{n}"));
    let mut out = File::create(&tmp)
        .map_err(|e| DriverError::io(format_args!("create spool file {}", tmp.display()), &e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let got = match entry.read(buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(DriverError::io(format_args!("read image archive entry {name:?}"), &e));
            }
        };
        hasher.update(&buf[..got]);
        size += got as u64;
        if let Err(e) = out.write_all(&buf[..got]) {
            let _ = std::fs::remove_file(&tmp);
            return Err(DriverError::io(format_args!("write spool file {}", tmp.display()), &e));
        }
    }
    drop(out);
    let hex = hex(&hasher.finalize());
    let path = dir.join(format!("sha256-{hex}"));
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DriverError::io(format_args!("rename spool file {} to {}", tmp.display(), path.display()), &e)
    })?;
    Ok(Spooled { path, hex, size })
}

/// Normalises an archive path (`./a//b` → `a/b`); an absolute path or a `..`
/// component is an invalid-argument error.
pub(super) fn normalize(raw: &str) -> DriverResult<String> {
    if raw.starts_with('/') {
        return Err(DriverError::invalid_argument(format!(
            "image archive entry {raw:?} is an absolute path; an image archive holds relative paths only"
        )));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(DriverError::invalid_argument(format!(
                    "image archive entry {raw:?} has a '..' component, which would escape the archive"
                )))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink's target against the directory of `name`; a target that
/// is absolute or climbs above the archive root is an invalid-argument error.
fn resolve_symlink(name: &str, target: &str) -> DriverResult<String> {
    let outside = || {
        DriverError::invalid_argument(format!(
            "image archive symlink {name:?} points outside the archive ({target:?})"
        ))
    };
    if target.starts_with('/') {
        return Err(outside());
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(outside)?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}
