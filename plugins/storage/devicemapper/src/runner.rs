//! Running commands: the one seam between the driver and the host, shared
//! with every driver that drives a command-line tool
//! ([`berth_plugin_api::util::command`]).

pub(crate) use berth_plugin_api::util::command::*;
