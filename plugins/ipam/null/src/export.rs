//! The plugin's entry point: the only glue between
//! [`crate::NullIpamDriver`] and berth's stable ABI. Tests link it directly
//! through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "null",
    version: env!("CARGO_PKG_VERSION"),
    description: "IPAM that hands out nothing: pools 0.0.0.0/0 and ::/0, no addresses, no gateway",
    ipam: crate::NullIpamDriver::new,
}
