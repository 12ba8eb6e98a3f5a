//! The plugin's entry point: the only glue between [`crate::BtrfsDriver`]
//! and berth's stable ABI. Tests link it directly through
//! [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "btrfs",
    version: env!("CARGO_PKG_VERSION"),
    description: "btrfs subvolumes: each layer a subvolume, a child a snapshot of its parent; quota through qgroups",
    storage: crate::BtrfsDriver::new,
}
