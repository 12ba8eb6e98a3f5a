//! The plugin's entry point: the only glue between
//! [`crate::NoneNetworkDriver`] and berth's stable ABI. Tests link it
//! directly through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "none",
    version: env!("CARGO_PKG_VERSION"),
    description: "containers get their own network namespace with loopback only",
    network: crate::NoneNetworkDriver::new,
}
