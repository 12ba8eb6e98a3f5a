//! The reference driver's optional `DiffDriver`: berth-core's engine over
//! the layer directories, with the diff flaws of [`Flaws`](super::refdriver::Flaws).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_core::layers::{self, ApplyOptions};
use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, DriverError, DriverResult};

use super::refdriver::RefDriver;

impl RefDriver {
    fn lower(&self, parent: &str) -> Option<std::path::PathBuf> {
        (!parent.is_empty()).then(|| self.dir(parent))
    }
}

/// Applies `input` to `root` the unsafe way: `root.join(name)` (an
/// absolute name replaces the root, `..` climbs out), every symlink on the
/// way followed. Whiteouts and opaque markers work as OCI says.
fn naive_untar(root: &Path, input: &mut dyn Read) -> std::io::Result<u64> {
    let mut archive = tar::Archive::new(input);
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut size = 0;
    for e in archive.entries()? {
        let mut e = e?;
        let raw = e.path_bytes().into_owned();
        let name = OsStr::from_bytes(raw.strip_suffix(b"/").unwrap_or(&raw));
        let p = root.join(name);
        let file_name = p.file_name().unwrap_or_default().as_bytes().to_vec();
        let dir = p.parent().unwrap_or(root).to_path_buf();
        if file_name == b".wh..wh..opq" {
            for c in std::fs::read_dir(&dir)? {
                let c = c?.path();
                if !made.contains(&c) {
                    remove_any(&c)?;
                }
            }
            continue;
        }
        if let Some(target) = file_name.strip_prefix(b".wh.") {
            let t = dir.join(OsStr::from_bytes(target));
            if !made.contains(&t) {
                let _ = remove_any(&t);
            }
            continue;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        if kind.is_dir() {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                remove_any(&p)?;
            }
            std::fs::create_dir_all(&p)?;
        } else {
            std::fs::create_dir_all(&dir)?;
            let _ = remove_any(&p);
            if kind.is_symlink() {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.link_name_bytes().unwrap_or_default()), &p)?;
            } else if kind.is_hard_link() {
                std::fs::hard_link(
                    root.join(OsStr::from_bytes(&e.link_name_bytes().unwrap_or_default())),
                    &p,
                )?;
            } else if kind.is_file() {
                let mut data = Vec::new();
                e.read_to_end(&mut data)?;
                size += data.len() as u64;
                std::fs::write(&p, data)?;
            } else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "only files, dirs and links",
                ));
            }
        }
        made.insert(p.clone());
        if !kind.is_symlink() && !kind.is_hard_link() {
            std::os::unix::fs::lchown(&p, Some(h.uid()? as u32), Some(h.gid()? as u32))?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(h.mode()?))?;
            for x in e.pax_extensions()?.into_iter().flatten() {
                let x = x?;
                if let Some(n) = x.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    rustix::fs::lsetxattr(
                        &p,
                        OsStr::from_bytes(n),
                        x.value_bytes(),
                        rustix::fs::XattrFlags::empty(),
                    )?;
                }
            }
        }
    }
    Ok(size)
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(p)?.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// `tar` without its whiteouts and opaque markers.
fn drop_whiteouts(tar: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Archive::new(tar);
    let mut out = tar::Builder::new(Vec::new());
    for e in archive.entries()?.raw(true) {
        let mut e = e?;
        let path = e.path_bytes().into_owned();
        let name = path.rsplit(|b| *b == b'/').find(|c| !c.is_empty()).unwrap_or_default();
        if name.starts_with(b".wh.") {
            continue;
        }
        let header = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        out.append(&header, data.as_slice())?;
    }
    out.into_inner()
}

impl DiffDriver for RefDriver {
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let mut tar = Vec::new();
        layers::diff(self.lower(&req.parent).as_deref(), &self.dir(&req.id), &mut tar)?;
        if self.flaws.diff_ignores_whiteouts {
            tar = drop_whiteouts(&tar).map_err(|e| DriverError::io("filter the diff", &e))?;
        }
        out.write_all(&tar).map_err(|e| DriverError::io("write the diff", &e))
    }

    fn changes(&self, req: ChangesRequest) -> DriverResult<Vec<Change>> {
        let mut all = layers::changes(self.lower(&req.parent).as_deref(), &self.dir(&req.id))?;
        if self.flaws.changes_miss_deletions {
            all.retain(|c| c.kind != ChangeKind::Delete);
        }
        Ok(all)
    }

    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        if self.flaws.naive_untar {
            return naive_untar(&self.dir(&req.id), input).map(ApplyDiffResponse::new).map_err(|e| {
                match e.kind() {
                    std::io::ErrorKind::InvalidInput => DriverError::invalid_argument(e.to_string()),
                    _ => DriverError::io("untar", &e),
                }
            });
        }
        let report = layers::apply(&self.dir(&req.id), input, &ApplyOptions::default())?;
        Ok(ApplyDiffResponse::new(report.size))
    }

    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64> {
        layers::diff_size(self.lower(&req.parent).as_deref(), &self.dir(&req.id))
    }
}
