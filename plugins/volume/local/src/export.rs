//! The plugin's entry point: the only glue between
//! [`crate::LocalVolumeDriver`] and berth's stable ABI. Tests link it
//! directly through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "local",
    version: env!("CARGO_PKG_VERSION"),
    description: "named volumes: directories under the daemon root, or tmpfs, bind and device mounts",
    volume: crate::LocalVolumeDriver::new,
}
