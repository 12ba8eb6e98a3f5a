//! The driver through the ABI, linked in-process: one network at a time,
//! no addresses, bookkeeping-only endpoints, state across a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::network::*;
use berth_plugin_api::{DriverResult, ErrorKind, Init, InitRequest, Kind, NetworkDriver};
use serde_json::json;

const NAME: &str = "host";

type Net = Arc<dyn NetworkDriver>;

fn module() -> PluginModule {
    PluginModule::linked(berth_network_host::export::berth_plugin_root())
}

include!("../../none/tests/common/cases.rs");
