//! Sandboxes as the API sees them: made by hand until containers exist
//! (`berth sandbox create`), each a namespace under `<exec_root>/netns`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_plugin_api::util::rfc3339;
use berth_plugin_api::{DriverError, DriverResult};

use super::{
    encode, network_key, ports, sandbox_key, valid_name, CreateSandbox, EndpointRecord, NetworkService,
    PublishedPort, SandboxRecord, SandboxView, OP_SANDBOX_CREATE, OP_SANDBOX_REMOVE,
};
use crate::sandbox;
use crate::store::Change;
use crate::volumes::random_hex;

/// The lock held while the shared host key is made or removed.
const HOST_LOCK: &str = "sandbox-host";

impl NetworkService {
    /// Makes a sandbox: a new network namespace at
    /// `<exec_root>/netns/<first 12 digits of its id>`, or with `host`, the
    /// daemon's own namespace (shared by every host sandbox). Its port
    /// bindings and exposed ports are checked before anything is made
    /// (an invalid argument names the port and what is wrong) and kept in
    /// canonical form; a host sandbox publishes none.
    pub fn create_sandbox(&self, req: CreateSandbox) -> DriverResult<SandboxRecord> {
        let (port_bindings, exposed_ports) =
            ports::normalize(&req.port_bindings, &req.exposed_ports, req.host)?;
        let id = random_hex()?;
        let name = if req.name.is_empty() { format!("sandbox-{}", &id[..12]) } else { req.name.clone() };
        if !valid_name(&name) {
            return Err(DriverError::invalid_argument(format!(
                "sandbox name {name:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*"
            )));
        }
        let _name = self.locks.lock(&format!("sandbox-name/{name}"));
        if self.read().sandboxes.values().any(|s| s.name == name) {
            return Err(DriverError::conflict(format!("sandbox name {name:?} is already in use")));
        }
        let _host = req.host.then(|| self.locks.lock(HOST_LOCK));
        let key = if req.host { self.host_key() } else { self.netns_dir().join(&id[..12]) };
        let data = serde_json::json!({ "id": id, "key": key, "host": req.host });
        let op = self.begin(OP_SANDBOX_CREATE, sandbox_key(&id), "", data)?;
        self.crash_point("sandbox.create:after-intent");
        let made = if req.host { sandbox::bind_host(&key) } else { sandbox::create(&key) };
        if let Err(e) = made {
            op.abandon()?;
            return Err(e);
        }
        self.crash_point("sandbox.create:after-netns");
        let record = SandboxRecord {
            id: id.clone(),
            name,
            key: key.display().to_string(),
            host: req.host,
            created: rfc3339(std::time::SystemTime::now()),
            port_bindings,
            exposed_ports,
        };
        op.finish(&[Change::Put(sandbox_key(&id), encode(&record)?)])?;
        self.write().sandboxes.insert(id, record.clone());
        Ok(record)
    }

    /// Removes a sandbox: disconnects its endpoints (the first failure
    /// stops it, the sandbox stays), then deletes its namespace.
    pub fn remove_sandbox(&self, name_or_id: &str) -> DriverResult<()> {
        let sb = self.find_sandbox(name_or_id)?;
        let _sb = self.locks.lock(&sandbox_key(&sb.id));
        let sb = self.find_sandbox(&sb.id)?;
        for ep in self.endpoints_of_sandbox(&sb.id) {
            let _net = self.locks.lock(&network_key(&ep.network_id));
            let Ok(net) = self.find_network(&ep.network_id) else { continue };
            self.disconnect_locked(&net, &sb, false)?;
        }
        let _host = sb.host.then(|| self.locks.lock(HOST_LOCK));
        let data = serde_json::json!({ "id": sb.id, "key": sb.key, "host": sb.host });
        let op = self.begin(OP_SANDBOX_REMOVE, sandbox_key(&sb.id), "", data)?;
        self.crash_point("sandbox.remove:after-intent");
        if let Err(e) = self.drop_namespace(&sb.id, Path::new(&sb.key), sb.host) {
            op.abandon()?;
            return Err(e);
        }
        op.finish(&[Change::Delete(sandbox_key(&sb.id))])?;
        self.write().sandboxes.remove(&sb.id);
        Ok(())
    }

    /// Deletes sandbox `id`'s namespace file at `key`; the shared host key
    /// only when no other host sandbox uses it.
    pub(super) fn drop_namespace(&self, id: &str, key: &Path, host: bool) -> DriverResult<()> {
        if host {
            let others = self.read().sandboxes.values().any(|s| s.host && s.id != id);
            if others {
                return Ok(());
            }
        }
        sandbox::remove(key)
    }

    /// Every sandbox with the networks it is attached to, by name, and its
    /// ports as its endpoints published them.
    pub fn sandboxes(&self) -> Vec<SandboxView> {
        let index = self.read();
        let mut out: Vec<SandboxView> = index
            .sandboxes
            .values()
            .map(|s| {
                let eps: Vec<(&String, &EndpointRecord)> = index
                    .endpoints
                    .iter()
                    .flat_map(|(net, eps)| eps.values().map(move |e| (net, e)))
                    .filter(|(_, e)| e.sandbox_id == s.id)
                    .collect();
                let networks: BTreeMap<String, String> = eps
                    .iter()
                    .map(|(net, e)| {
                        let name = index
                            .networks
                            .get(*net)
                            .map(|n| n.name.clone())
                            .unwrap_or_else(|| (*net).clone());
                        (name, e.id.clone())
                    })
                    .collect();
                let published: Vec<PublishedPort> = eps.iter().flat_map(|(_, e)| e.ports.clone()).collect();
                let ports = ports::ports_view(&s.port_bindings, &s.exposed_ports, &published);
                SandboxView { record: s.clone(), networks, ports }
            })
            .collect();
        out.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        out
    }

    /// The namespace files that exist under `<exec_root>/netns` (for leak
    /// checks).
    pub fn namespace_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.netns_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}
