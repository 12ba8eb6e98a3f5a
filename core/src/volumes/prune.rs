//! `prune`: remove every volume nobody uses, within the filters.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_plugin_api::DriverResult;
use serde::Serialize;

use super::{VolumeService, ANONYMOUS_LABEL};
use crate::filters::Filters;

/// The answer of `POST /volumes/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    /// Names of the removed volumes.
    pub volumes_deleted: Vec<String>,
    /// Bytes their data held on this host (what could be measured).
    pub space_reclaimed: u64,
}

impl VolumeService {
    /// Removes every volume with no mount reference that `filters` (names
    /// from [`super::PRUNE_FILTERS`]) select. Without the `all` filter,
    /// `anonymous_only` decides whether named volumes are spared (Docker
    /// API 1.42 and later: only anonymous volumes go by default). A volume
    /// whose driver refuses is skipped and logged, as in Docker.
    pub fn prune(&self, filters: &Filters, anonymous_only: bool) -> DriverResult<PruneReport> {
        let all = filters.bool("all")?.unwrap_or(!anonymous_only);
        let candidates: Vec<(String, String)> = {
            let index = self.read();
            let mut c: Vec<(String, String)> = index
                .values()
                .filter(|e| e.refs.is_empty())
                .filter(|e| all || e.record.labels.contains_key(ANONYMOUS_LABEL))
                .filter(|e| filters.labels_match("label", &e.record.labels))
                .filter(|e| filters.labels_exclude("label!", &e.record.labels))
                .map(|e| (e.record.name.clone(), e.record.mountpoint.clone()))
                .collect();
            c.sort();
            c
        };
        let mut report = PruneReport::default();
        for (name, mountpoint) in candidates {
            let size = if mountpoint.is_empty() { 0 } else { tree_size(Path::new(&mountpoint)) };
            match self.remove(&name, false) {
                Ok(()) => {
                    report.volumes_deleted.push(name);
                    report.space_reclaimed += size;
                }
                Err(e) => tracing::warn!(volume = %name, "prune: not removed: {e}"),
            }
        }
        Ok(report)
    }
}

/// Bytes allocated under `root`, on its filesystem only, without following
/// symlinks; unreadable parts count as zero.
pub(crate) fn tree_size(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else { return 0 };
    let dev = meta.dev();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(entry.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}
