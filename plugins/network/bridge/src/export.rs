//! The plugin's entry point: the only glue between
//! [`crate::BridgeDriver`] and berth's stable ABI. Tests link it directly
//! through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "bridge",
    version: env!("CARGO_PKG_VERSION"),
    description: "a Linux bridge per network, a veth pair per endpoint, NAT, published ports and isolation in one nftables table",
    network: crate::BridgeDriver::new,
}
