//! The shared body of the `none` and `host` network drivers, compiled into
//! both crates with `#[path]` so it exists once.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::network::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, NetworkDriver};
use serde::{Deserialize, Serialize};

use crate::state::{Network, STATE_FILE};

use crate::DRIVER;

/// The `create_network` option holding the user's driver options.
const GENERIC: &str = "com.docker.network.generic";

/// The driver's options from the configuration: none, and an unknown key
/// is refused rather than ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {}

/// A network driver that holds at most one network and moves no
/// interface: the shared body of `none` and `host` (this file is compiled
/// into both crates; `crate::DRIVER` names which).
#[derive(Debug)]
pub struct SingleNetworkDriver {
    path: PathBuf,
    network: Mutex<Option<Network>>,
}

impl SingleNetworkDriver {
    /// Builds the driver: checks the options and loads
    /// `<root>/network-state.json`.
    pub fn new(req: InitRequest) -> DriverResult<Init<SingleNetworkDriver>> {
        let _opts: Opts = req.decode_options()?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument(format!(
                "the {DRIVER} network driver needs a root directory for its state, and none was given"
            )));
        }
        let root = Path::new(&req.root);
        fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create network root {}", root.display()), &e))?;
        let path = root.join(STATE_FILE);
        let network = crate::state::load(&path)?;
        Ok(Init::Ready(SingleNetworkDriver { path, network: Mutex::new(network) }))
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, Option<Network>>> {
        self.network.lock().map_err(|_| {
            DriverError::internal("network state is unusable after an earlier panic; restart the daemon")
        })
    }

    /// Saves `next` and makes it the state; on failure nothing changes.
    fn commit(&self, current: &mut Option<Network>, next: Option<Network>) -> DriverResult<()> {
        crate::state::save(&self.path, next.as_ref())?;
        *current = next;
        Ok(())
    }
}

/// The null IPAM driver's placeholder pool, the only one accepted.
fn is_null_pool(data: &IpamData) -> bool {
    matches!(data.pool.as_str(), "" | "0.0.0.0/0" | "::/0")
        && data.gateway.is_empty()
        && data.aux_addresses.is_empty()
}

fn check_no_addresses(req: &CreateNetworkRequest) -> DriverResult<()> {
    if let Some(data) = req.ipv4_data.iter().chain(&req.ipv6_data).find(|d| !is_null_pool(d)) {
        return Err(DriverError::invalid_argument(format!(
            "the {DRIVER} driver takes no addresses; network {} was given pool {:?}{}",
            req.network_id,
            data.pool,
            if data.gateway.is_empty() { String::new() } else { format!(" with gateway {}", data.gateway) }
        )));
    }
    let given = |v: &&serde_json::Value| !v.is_null() && !matches!(v.as_object(), Some(m) if m.is_empty());
    if let Some(opts) = req.options.get(GENERIC).filter(given) {
        return Err(DriverError::invalid_argument(format!(
            "the {DRIVER} driver takes no driver options; network {} was given {opts}",
            req.network_id
        )));
    }
    Ok(())
}

fn network_not_found(id: &str) -> DriverError {
    DriverError::not_found(format!("{DRIVER} network {id:?} not found"))
}

/// The network `id`, if it is the driver's network.
fn known<'a>(network: &'a Option<Network>, id: &str) -> DriverResult<&'a Network> {
    network.as_ref().filter(|n| n.id == id).ok_or_else(|| network_not_found(id))
}

fn known_endpoint(network: &Option<Network>, network_id: &str, endpoint_id: &str) -> DriverResult<()> {
    if known(network, network_id)?.endpoints.contains(endpoint_id) {
        Ok(())
    } else {
        Err(DriverError::not_found(format!(
            "endpoint {endpoint_id:?} not found on {DRIVER} network {network_id:?}"
        )))
    }
}

impl NetworkDriver for SingleNetworkDriver {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Local))
    }

    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        if req.network_id.is_empty() {
            return Err(DriverError::invalid_argument("create_network without a network id"));
        }
        check_no_addresses(&req)?;
        let mut network = self.lock()?;
        match network.as_ref() {
            Some(n) if n.id == req.network_id => {
                Err(DriverError::already_exists(format!("{DRIVER} network {:?} already exists", n.id)))
            }
            Some(n) => Err(DriverError::conflict(format!(
                "only one instance of the {DRIVER} network is allowed; network {:?} exists",
                n.id
            ))),
            None => self.commit(&mut network, Some(Network::new(req.network_id))),
        }
    }

    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        let mut network = self.lock()?;
        if network.as_ref().is_some_and(|n| n.id == req.network_id) {
            self.commit(&mut network, None)?;
        }
        Ok(())
    }

    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        let mut network = self.lock()?;
        let current = known(&network, &req.network_id)?;
        if req.endpoint_id.is_empty() {
            return Err(DriverError::invalid_argument("create_endpoint without an endpoint id"));
        }
        if let Some(iface) = &req.interface {
            let asked: Vec<&str> = [&iface.address, &iface.address_ipv6]
                .into_iter()
                .map(String::as_str)
                .filter(|a| !a.is_empty())
                .collect();
            if !asked.is_empty() {
                return Err(DriverError::invalid_argument(format!(
                    "the {DRIVER} driver takes no addresses; endpoint {:?} asked for {}",
                    req.endpoint_id,
                    asked.join(" and ")
                )));
            }
            if !iface.mac_address.is_empty() {
                return Err(DriverError::invalid_argument(format!(
                    "the {DRIVER} driver creates no interface to give MAC address {} (endpoint {:?})",
                    iface.mac_address, req.endpoint_id
                )));
            }
        }
        if current.endpoints.contains(&req.endpoint_id) {
            return Err(DriverError::already_exists(format!(
                "endpoint {:?} already exists on {DRIVER} network {:?}",
                req.endpoint_id, req.network_id
            )));
        }
        let mut next = current.clone();
        next.endpoints.insert(req.endpoint_id);
        self.commit(&mut network, Some(next))?;
        Ok(CreateEndpointResponse::default())
    }

    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        known_endpoint(&*self.lock()?, &req.network_id, &req.endpoint_id)?;
        Ok(Options::new())
    }

    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        let mut network = self.lock()?;
        let Some(current) = network.as_ref().filter(|n| n.id == req.network_id) else {
            return Ok(());
        };
        if current.endpoints.contains(&req.endpoint_id) {
            let mut next = current.clone();
            next.endpoints.remove(&req.endpoint_id);
            self.commit(&mut network, Some(next))?;
        }
        Ok(())
    }

    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        known_endpoint(&*self.lock()?, &req.network_id, &req.endpoint_id)?;
        // No interface: the sandbox keeps only its loopback.
        Ok(JoinResponse::default())
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ffi::PluginModule;
    use berth_plugin_api::ErrorKind;

    #[test]
    fn the_abi_path_keeps_answers_and_error_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let init = InitRequest::new(DRIVER, dir.path().to_str().unwrap(), "");
        let Init::Ready(d) =
            PluginModule::linked(crate::export::berth_plugin_root()).new_network(&init).unwrap()
        else {
            panic!("declined")
        };
        assert_eq!(d.capabilities(CapabilitiesRequest::default()).unwrap().scope, Scope::Local);
        let mut create = CreateNetworkRequest::default();
        create.network_id = "n1".into();
        d.create_network(create.clone()).unwrap();
        assert_eq!(d.create_network(create).unwrap_err().kind, ErrorKind::AlreadyExists);
        let mut other = CreateNetworkRequest::default();
        other.network_id = "n2".into();
        assert_eq!(d.create_network(other).unwrap_err().kind, ErrorKind::Conflict);
        let mut ep = CreateEndpointRequest::default();
        ep.network_id = "n1".into();
        ep.endpoint_id = "e1".into();
        assert_eq!(d.create_endpoint(ep).unwrap().interface, None);
        let mut join = JoinRequest::default();
        join.network_id = "n1".into();
        join.endpoint_id = "e1".into();
        assert_eq!(d.join(join).unwrap().interface_name, None);
        let mut missing = EndpointInfoRequest::default();
        missing.network_id = "n1".into();
        missing.endpoint_id = "e2".into();
        assert_eq!(d.endpoint_info(missing).unwrap_err().kind, ErrorKind::NotFound);
        assert!(dir.path().join(STATE_FILE).is_file());
    }
}
