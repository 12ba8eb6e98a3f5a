//! The plugin's entry point: the only glue between [`crate::VfsDriver`] and
//! berth's stable ABI. Tests link it directly through
//! [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "vfs",
    version: env!("CARGO_PKG_VERSION"),
    description: "copy-based layers: each layer a full copy of its parent; works on any file system",
    storage: crate::VfsDriver::new,
}
