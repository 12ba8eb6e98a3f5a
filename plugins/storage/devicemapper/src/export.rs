//! The plugin's entry point: the only glue between
//! [`crate::DevmapperDriver`] and berth's stable ABI. Tests link it
//! directly through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "devicemapper",
    version: env!("CARGO_PKG_VERSION"),
    description: "device-mapper thin pool: each layer a thin device, a child a thin snapshot of its parent",
    storage: crate::DevmapperDriver::new,
}
