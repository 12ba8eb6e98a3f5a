//! The plugin's entry point: the only glue between
//! [`crate::MacvlanDriver`] and berth's stable ABI. Tests link it directly
//! through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "macvlan",
    version: env!("CARGO_PKG_VERSION"),
    description: "one macvlan link per endpoint on a parent link or a VLAN sub-interface of it",
    network: crate::MacvlanDriver::new,
}
