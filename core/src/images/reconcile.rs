//! Start-up recovery of image and layer operations a crash interrupted,
//! and the sweep that removes what no record needs.

use std::collections::HashMap;

use berth_plugin_api::{DriverError, DriverResult};

use super::layer_store::remove;
use super::records::{hex_of, layer_key, Batch};
use super::service::{
    ImageService, OP_IMAGE_LOAD, OP_IMAGE_REMOVE, OP_IMAGE_SWEEP, OP_LAYER_CREATE, OP_LAYER_REMOVE,
};
use crate::store::{Change, Intent};

impl ImageService {
    /// Finishes or rolls back one interrupted image or layer operation
    /// (`image.*`, `layer.*` in the ledger) and answers what was done:
    ///
    /// * a layer create is rolled back: the driver's half-made layer is
    ///   removed (one the driver does not have is fine);
    /// * a layer remove is finished: removed from the driver (again), its
    ///   record deleted;
    /// * an image load, remove or sweep changed records only in the
    ///   transaction that finishes it, so an unfinished one changed
    ///   nothing: it is dropped, and [`ImageService::sweep`] removes the
    ///   layers and blobs it leaves unused.
    pub fn reconcile(&self, seq: u64, intent: &Intent) -> DriverResult<String> {
        let chain = intent
            .data
            .get("chain_id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| intent.key.strip_prefix("layer/").unwrap_or(&intent.key).to_string());
        match intent.op.as_str() {
            OP_LAYER_CREATE => {
                if self.read().layers.contains_key(&chain) {
                    self.store().abandon(seq)?;
                    return Ok(format!("kept layer {chain}: it was recorded before the interruption"));
                }
                let driver = self.drivers().storage(&intent.driver)?;
                remove(&driver, hex_of(&chain))?;
                self.store().abandon(seq)?;
                Ok(format!("rolled back interrupted create of layer {chain}"))
            }
            OP_LAYER_REMOVE => {
                let driver = self.drivers().storage(&intent.driver)?;
                remove(&driver, hex_of(&chain))?;
                self.store().finish(seq, &[Change::Delete(layer_key(&chain))])?;
                self.write().layers.remove(&chain);
                Ok(format!("finished interrupted removal of layer {chain}"))
            }
            OP_IMAGE_LOAD | OP_IMAGE_REMOVE | OP_IMAGE_SWEEP => {
                self.store().abandon(seq)?;
                Ok(format!("dropped interrupted {} of {}: no record had changed", intent.op, intent.key))
            }
            other => Err(DriverError::internal(format!("unknown image operation {other:?} in the ledger"))),
        }
    }

    /// Removes what no record needs, after [`ImageService::reconcile`]:
    /// corrects layer reference counts from the image records, removes
    /// every layer no image uses (children first) from its driver, and
    /// every blob no image names. Answers a line per thing done. Meant for
    /// start-up; safe at any time (it holds the operations lock).
    pub fn sweep(&self) -> DriverResult<Vec<String>> {
        let _ops = self.lock_ops();
        let mut done = Vec::new();
        // Reference counts, from the images.
        let fixes = {
            let index = self.read();
            let mut wanted: HashMap<&str, u64> = HashMap::new();
            for img in index.images.values() {
                for c in &img.chain_ids {
                    *wanted.entry(c.as_str()).or_default() += 1;
                }
            }
            let mut fixes = Vec::new();
            for l in index.layers.values() {
                let want = wanted.get(l.chain_id.as_str()).copied().unwrap_or(0);
                if l.refs != want {
                    let mut fixed = l.clone();
                    fixed.refs = want;
                    fixes.push(fixed);
                }
            }
            fixes
        };
        if !fixes.is_empty() {
            for f in &fixes {
                done.push(format!("corrected the reference count of layer {} to {}", f.chain_id, f.refs));
            }
            let batch = Batch { layers_put: fixes, ..Batch::default() };
            self.commit(OP_IMAGE_SWEEP, "layer/".into(), batch, "image.sweep:after-intent")?;
        }
        // Unused layers, deepest first.
        let mut unused: Vec<(usize, String)> = {
            let index = self.read();
            index
                .layers
                .values()
                .filter(|l| l.refs == 0)
                .map(|l| (index.depth(&l.chain_id), l.chain_id.clone()))
                .collect()
        };
        unused.sort_by(|a, b| b.cmp(a));
        let chains: Vec<String> = unused.into_iter().map(|(_, c)| c).collect();
        let (removed, failed) = self.release(&chains);
        done.extend(removed.iter().map(|c| format!("removed layer {c}, which no image uses")));
        // Unused blobs.
        let used = self.used_blobs();
        for h in self.content().list()? {
            if !used.contains(&h) {
                self.content().remove(&h)?;
                done.push(format!("removed blob sha256:{h}, which no image uses"));
            }
        }
        match failed {
            Some(e) => Err(e.context("sweep unused layers")),
            None => Ok(done),
        }
    }
}
