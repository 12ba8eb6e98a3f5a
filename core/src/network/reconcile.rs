//! Start-up reconcile of network operations a crash interrupted: creates
//! and connects are rolled back from their notes, deletes, disconnects and
//! sandbox removals are finished, and namespace files no sandbox owns are
//! removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};

use super::ledger::Step;
use super::{
    EndpointRecord, NetworkService, SandboxRecord, OP_CONNECT, OP_CREATE, OP_DELETE, OP_DISCONNECT,
    OP_REPLAY, OP_SANDBOX_CREATE, OP_SANDBOX_REMOVE, OP_STEP,
};
use crate::store::{Change, Intent};

fn text(data: &serde_json::Value, key: &str) -> String {
    data.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn joined(failed: Vec<String>) -> DriverResult<()> {
    if failed.is_empty() {
        Ok(())
    } else {
        Err(DriverError::internal(failed.join("; ")))
    }
}

impl NetworkService {
    /// Resolves the network service's intents of `pending` (the ledger at
    /// start, oldest first); answers, per operation, what was done or why
    /// it could not be (it is then retried at the next start).
    pub fn reconcile(&self, pending: &[(u64, Intent)]) -> Vec<Result<String, String>> {
        let mut notes: BTreeMap<u64, Vec<(u64, Step)>> = BTreeMap::new();
        let mains: BTreeSet<u64> = pending.iter().filter(|(_, i)| i.op != OP_STEP).map(|(s, _)| *s).collect();
        let mut out = Vec::new();
        for (seq, intent) in pending.iter().filter(|(_, i)| i.op == OP_STEP) {
            let main = intent.data.get("main").and_then(|v| v.as_u64()).unwrap_or(0);
            let step = intent.data.get("step").cloned().and_then(|s| serde_json::from_value::<Step>(s).ok());
            match step {
                Some(step) if mains.contains(&main) => notes.entry(main).or_default().push((*seq, step)),
                // The note of an operation that completed (or an unreadable
                // one): nothing to do.
                _ => {
                    if let Err(e) = self.store.abandon(*seq) {
                        out.push(Err(format!("drop stale network note {seq}: {e}")));
                    }
                }
            }
        }
        for (seq, intent) in pending.iter().filter(|(_, i)| i.op != OP_STEP) {
            let own = notes.remove(seq).unwrap_or_default();
            let steps: Vec<Step> = own.iter().map(|(_, s)| s.clone()).collect();
            match self.resolve(*seq, intent, &steps) {
                Ok(done) => {
                    for (n, _) in &own {
                        if let Err(e) = self.store.abandon(*n) {
                            tracing::warn!(seq = n, "could not drop a ledger note: {e}");
                        }
                    }
                    out.push(Ok(done));
                }
                Err(e) => out
                    .push(Err(format!("{} of {} (driver {:?}): {e}", intent.op, intent.key, intent.driver))),
            }
        }
        match self.sweep_namespaces() {
            Ok(lines) => out.extend(lines.into_iter().map(Ok)),
            Err(e) => out.push(Err(format!("network namespaces: {e}"))),
        }
        out
    }

    fn resolve(&self, seq: u64, intent: &Intent, steps: &[Step]) -> DriverResult<String> {
        let d = &intent.data;
        match intent.op.as_str() {
            OP_CREATE => {
                let (id, name) = (text(d, "id"), text(d, "name"));
                let driver = self.drivers.network(&intent.driver)?;
                joined(self.undo_create(&id, Some(&driver), &text(d, "ipam"), steps, true))?;
                self.store.abandon(seq)?;
                Ok(format!("rolled back interrupted create of network {name:?}"))
            }
            OP_DELETE => {
                let id = text(d, "id");
                let Some(net) = self.read().networks.get(&id).cloned() else {
                    self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                    return Ok(format!("finished interrupted removal of network {id}"));
                };
                let failed = self.teardown_network(&net);
                joined(failed.iter().map(|e| e.to_string()).collect())?;
                self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                let mut index = self.write();
                index.networks.remove(&id);
                index.endpoints.remove(&id);
                Ok(format!("finished interrupted removal of network {:?}", net.name))
            }
            OP_CONNECT => {
                let (net, ep) = (text(d, "network"), text(d, "endpoint"));
                let sb = SandboxRecord {
                    id: text(d, "sandbox"),
                    key: text(d, "key"),
                    host: d.get("host").and_then(|v| v.as_bool()).unwrap_or(false),
                    ..Default::default()
                };
                let driver = self.drivers.network(&intent.driver)?;
                joined(self.undo_connect(&net, &driver, &text(d, "ipam"), &sb, &ep, steps, "", true))?;
                self.store.abandon(seq)?;
                Ok(format!("rolled back interrupted connect of sandbox {} to network {net}", sb.id))
            }
            OP_DISCONNECT => {
                let ep: EndpointRecord = d
                    .get("endpoint")
                    .cloned()
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| DriverError::internal("the ledger entry holds no endpoint"))?;
                let host = d.get("host").and_then(|v| v.as_bool()).unwrap_or(false);
                let mut promoted = None;
                let mut after_leave = |so_far: &[DriverError]| {
                    if ep.gateway && so_far.is_empty() {
                        promoted = self.finish_takeover(&ep.sandbox_id, &ep.id, steps);
                    }
                };
                let failed = self.teardown_endpoint(
                    &intent.driver,
                    &text(d, "ipam"),
                    &ep,
                    &text(d, "key"),
                    host,
                    &mut after_leave,
                );
                joined(failed.iter().map(|e| e.to_string()).collect())?;
                let mut changes = vec![Change::Delete(intent.key.clone())];
                if let Some(p) = &promoted {
                    changes.push(Change::Put(super::endpoint_key(&p.network_id, &p.id), super::encode(p)?));
                }
                self.store.finish(seq, &changes)?;
                let mut index = self.write();
                if let Some(eps) = index.endpoints.get_mut(&ep.network_id) {
                    eps.remove(&ep.id);
                }
                if let Some(p) = promoted {
                    index.endpoints.entry(p.network_id.clone()).or_default().insert(p.id.clone(), p);
                }
                Ok(format!(
                    "finished interrupted disconnect of sandbox {} from network {}",
                    ep.name, ep.network_id
                ))
            }
            OP_SANDBOX_CREATE | OP_SANDBOX_REMOVE => {
                let (id, key) = (text(d, "id"), text(d, "key"));
                let host = d.get("host").and_then(|v| v.as_bool()).unwrap_or(false);
                self.drop_namespace(&id, Path::new(&key), host)?;
                if intent.op == OP_SANDBOX_CREATE {
                    self.store.abandon(seq)?;
                    Ok(format!("rolled back interrupted create of sandbox {id}"))
                } else {
                    self.store.finish(seq, &[Change::Delete(intent.key.clone())])?;
                    self.write().sandboxes.remove(&id);
                    Ok(format!("finished interrupted removal of sandbox {id}"))
                }
            }
            OP_REPLAY => {
                // New pool ids not recorded: the replay at this start
                // answers them again.
                self.store.abandon(seq)?;
                Ok(format!("dropped the interrupted pool id update of {}", intent.key))
            }
            other => Err(DriverError::internal(format!("unknown network operation {other:?} in the ledger"))),
        }
    }

    /// Removes namespace files under `<exec_root>/netns` that no recorded
    /// sandbox owns (what a crash between making one and recording its
    /// intent could leave; the host key when no host sandbox is left).
    fn sweep_namespaces(&self) -> DriverResult<Vec<String>> {
        let owned: BTreeSet<String> = self.read().sandboxes.values().map(|s| s.key.clone()).collect();
        let mut done = Vec::new();
        for path in self.namespace_files() {
            if owned.contains(&path.display().to_string()) {
                continue;
            }
            crate::sandbox::remove(&path)?;
            done.push(format!("removed namespace file {} that no sandbox owns", path.display()));
        }
        Ok(done)
    }
}
