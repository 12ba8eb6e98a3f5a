//! The plugin's entry point: the only glue between
//! [`crate::HostNetworkDriver`] and berth's stable ABI. Tests link it
//! directly through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "host",
    version: env!("CARGO_PKG_VERSION"),
    description: "containers share the host's network namespace",
    network: crate::HostNetworkDriver::new,
}
