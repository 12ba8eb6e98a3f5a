//! The native [`DiffDriver`]: a layer's changes are exactly its `diff` dir,
//! so a diff is that dir as a tar (`export.rs`), an apply writes a tar into
//! it (`apply.rs`), and changes and sizes come from walking it.
//!
//! Only a layer against its own parent: any other pair is a typed
//! unsupported error (the core then compares mounted trees itself). The
//! driver offers this capability only when the probe at start found the
//! upper dir a faithful diff (see [`crate::probe`]).

mod apply;
mod export;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, DriverError, DriverResult};

use crate::layout::validate_id;
use crate::Overlay2Driver;
use export::{is_opaque, is_whiteout, sorted_names};

impl Overlay2Driver {
    /// The `diff` dir of `id` and its parents' (nearest first), after
    /// checking that `parent` is its parent.
    fn diff_pair(&self, id: &str, parent: &str, what: &str) -> DriverResult<(PathBuf, Vec<PathBuf>)> {
        validate_id("layer id", id)?;
        let state = self.lock();
        let meta = self.layer(&state, id)?;
        if meta.parent != parent {
            return Err(DriverError::unsupported(format!(
                "overlay2 computes the {what} of layer {id:?} only against its parent {:?}, not {parent:?}",
                meta.parent
            )));
        }
        let mut lowers = Vec::new();
        let mut cur = meta.parent.as_str();
        while let Some(p) = state.layers.get(cur) {
            lowers.push(self.layout.diff(cur));
            cur = p.parent.as_str();
        }
        Ok((self.layout.diff(id), lowers))
    }
}

impl DiffDriver for Overlay2Driver {
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let (dir, _) = self.diff_pair(&req.id, &req.parent, "diff")?;
        export::write_tar(&dir, out).map_err(|e| DriverError::io(format_args!("diff layer {:?}", req.id), &e))
    }

    fn changes(&self, req: ChangesRequest) -> DriverResult<Vec<Change>> {
        let (dir, lowers) = self.diff_pair(&req.id, &req.parent, "changes")?;
        let mut out = Vec::new();
        changes_in(&dir, Path::new(""), &lowers, &mut out)
            .map_err(|e| DriverError::io(format_args!("list the changes of layer {:?}", req.id), &e))?;
        out.sort();
        Ok(out)
    }

    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let id = req.id.as_str();
        let (dir, lowers) = self.diff_pair(id, &req.parent, "apply")?;
        {
            let mut state = self.lock();
            if state.refs.get(id).copied().unwrap_or(0) > 0 || state.mounted.contains(id) {
                return Err(DriverError::conflict(format!(
                    "layer {id:?} is mounted; apply a diff only to a layer nobody uses (put it first)"
                )));
            }
            if !state.applying.insert(id.to_string()) {
                return Err(DriverError::conflict(format!(
                    "a diff is already being applied to layer {id:?}"
                )));
            }
        }
        let applied = apply::apply_tar(&dir, &lowers, input, id);
        self.lock().applying.remove(id);
        applied.map(ApplyDiffResponse::new)
    }

    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64> {
        let (dir, _) = self.diff_pair(&req.id, &req.parent, "diff size")?;
        let mut seen = HashSet::new();
        tree_size(&dir, &mut seen)
            .map_err(|e| DriverError::io(format_args!("size the diff of layer {:?}", req.id), &e))
    }
}

/// Bytes of regular file content under `dir`, each inode once.
fn tree_size(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let m = fs::symlink_metadata(entry.path())?;
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() && seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// The changes recorded under `rel` of the upper dir `upper`, against
/// the view of `lowers` (nearest first).
fn changes_in(upper: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<Change>) -> io::Result<()> {
    let dir = upper.join(rel);
    let names = sorted_names(&dir)?;
    for name in &names {
        let child = rel.join(name);
        let m = fs::symlink_metadata(upper.join(&child))?;
        if is_whiteout(&m) {
            out.push(Change::new(slash(&child), ChangeKind::Delete));
            continue;
        }
        let below = visible_below(lowers, &child);
        out.push(Change::new(slash(&child), if below { ChangeKind::Modify } else { ChangeKind::Add }));
        if m.is_dir() {
            if below && is_opaque(&upper.join(&child)) {
                // What the lower layers held here is hidden: deleted.
                let kept: BTreeSet<_> = sorted_names(&upper.join(&child))?.into_iter().collect();
                for gone in names_below(lowers, &child)?.difference(&kept) {
                    out.push(Change::new(slash(&child.join(gone)), ChangeKind::Delete));
                }
            }
            changes_in(upper, &child, lowers, out)?;
        }
    }
    Ok(())
}

/// `/` + `rel`.
fn slash(rel: &Path) -> String {
    format!("/{}", rel.to_string_lossy())
}

/// Whether `rel` shows in the overlay of `lowers` (nearest first): found
/// in a lower dir before a whiteout, a file in its way or an opaque
/// directory above it hides it.
fn visible_below(lowers: &[PathBuf], rel: &Path) -> bool {
    let comps: Vec<_> = rel.components().collect();
    for lower in lowers {
        let mut cur = lower.clone();
        let mut opaque_above = false;
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Err(_) => break,
                Ok(m) if is_whiteout(&m) => return false,
                Ok(_) if i + 1 == comps.len() => return true,
                Ok(m) if !m.is_dir() => return false,
                Ok(_) => opaque_above |= is_opaque(&cur),
            }
        }
        if opaque_above {
            return false;
        }
    }
    false
}

/// The names visible in directory `rel` of the overlay of `lowers`.
fn names_below(lowers: &[PathBuf], rel: &Path) -> io::Result<BTreeSet<std::ffi::OsString>> {
    let mut all = BTreeSet::new();
    for lower in lowers {
        if let Ok(names) = sorted_names(&lower.join(rel)) {
            all.extend(names);
        }
    }
    Ok(all.into_iter().filter(|n| visible_below(lowers, &rel.join(n))).collect())
}
