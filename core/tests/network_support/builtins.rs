//! The built-in `none` and `host` network drivers, linked into the test
//! binaries (not into the benchmark: see `World::service_with`).

use std::sync::Arc;

use berth_core::network::NetworkService;
use berth_core::store::Store;
use berth_core::Kind;
use berth_plugin_api::{InitRequest, NetworkDriver};

use super::network_support::{ready, wrap, World};

/// [`World::service_with`] the `none` and `host` drivers.
pub trait ServiceExt {
    /// The service over none, host, veth and the default IPAM.
    fn service(&self, crash_at: Option<String>) -> (NetworkService, Arc<Store>);
}

impl ServiceExt for World {
    fn service(&self, crash_at: Option<String>) -> (NetworkService, Arc<Store>) {
        let init = |name: &str| InitRequest::new(name, self.dir.join(name).display().to_string(), "");
        let none = ready(berth_network_none::NoneNetworkDriver::new(init("none")));
        let host = ready(berth_network_host::HostNetworkDriver::new(init("host")));
        let networks = vec![
            wrap(Arc::new(none) as Arc<dyn NetworkDriver>, "none", Kind::Network),
            wrap(Arc::new(host) as Arc<dyn NetworkDriver>, "host", Kind::Network),
        ];
        self.service_with(crash_at, networks)
    }
}
