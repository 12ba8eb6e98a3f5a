//! A small linked network driver that accepts any option and acts on none
//! (no bridge, no parent): every endpoint is a veth pair of its own, whose
//! peer the join hands to the sandbox. The network suite must not take it
//! for a bridge-like or macvlan-like driver because it accepted
//! `com.docker.network.bridge.name` or `parent`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use berth_plugin_api::network::*;
use berth_plugin_api::{DriverError, DriverResult, NetworkDriver};

/// The driver.
#[derive(Debug, Default)]
pub struct LaxNet {
    networks: Mutex<BTreeSet<String>>,
    /// (network, endpoint) → the veth end left in the host namespace.
    endpoints: Mutex<BTreeMap<(String, String), String>>,
    seq: AtomicU32,
}

fn ip(args: &[&str]) -> DriverResult<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| DriverError::io("run ip", &e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DriverError::internal(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl LaxNet {
    /// The veth end named for endpoint number `n` (`lx<pid><n>`; the peer
    /// adds `p`).
    fn link(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        format!("lx{}{n}", std::process::id() % 100_000)
    }
}

impl NetworkDriver for LaxNet {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Local))
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        // Whatever the options say.
        self.networks.lock().unwrap().insert(req.network_id);
        Ok(())
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        self.networks.lock().unwrap().remove(&req.network_id);
        Ok(())
    }

    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        if !self.networks.lock().unwrap().contains(&req.network_id) {
            return Err(DriverError::not_found(format!("network {:?} not found", req.network_id)));
        }
        let end = self.link();
        ip(&["link", "add", &end, "type", "veth", "peer", "name", &format!("{end}p")])?;
        ip(&["link", "set", &end, "up"])?;
        self.endpoints.lock().unwrap().insert((req.network_id, req.endpoint_id), end);
        Ok(CreateEndpointResponse::default())
    }

    fn endpoint_info(&self, _req: EndpointInfoRequest) -> DriverResult<Options> {
        Ok(Options::new())
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        let end = self.endpoints.lock().unwrap().remove(&(req.network_id, req.endpoint_id));
        if let Some(end) = end {
            if std::path::Path::new("/sys/class/net").join(&end).exists() {
                ip(&["link", "del", &end])?;
            }
        }
        Ok(())
    }

    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        let endpoints = self.endpoints.lock().unwrap();
        let end = endpoints
            .get(&(req.network_id.clone(), req.endpoint_id.clone()))
            .ok_or_else(|| DriverError::not_found(format!("endpoint {:?} not found", req.endpoint_id)))?;
        let mut resp = JoinResponse::default();
        resp.interface_name = Some(InterfaceName::new(format!("{end}p"), "eth"));
        Ok(resp)
    }

    fn leave(&self, _req: LeaveRequest) -> DriverResult<()> {
        Ok(())
    }

    fn program_external_connectivity(&self, _req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        Ok(())
    }

    fn revoke_external_connectivity(&self, _req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        Ok(())
    }
}
