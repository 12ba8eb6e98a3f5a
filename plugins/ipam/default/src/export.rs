//! The plugin's entry point: the only glue between
//! [`crate::DefaultIpamDriver`] and berth's stable ABI. Tests link it
//! directly through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "default",
    version: env!("CARGO_PKG_VERSION"),
    description: "IPAM with local and global address spaces, default address pools, state on disk or replayed",
    ipam: crate::DefaultIpamDriver::new,
}
