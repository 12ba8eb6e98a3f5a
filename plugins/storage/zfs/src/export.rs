//! The plugin's entry point: the only glue between [`crate::ZfsDriver`]
//! and berth's stable ABI. Tests link it directly through
//! [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "zfs",
    version: env!("CARGO_PKG_VERSION"),
    description: "ZFS datasets: each layer a dataset, a child a clone of a snapshot of its parent; quota through the quota property",
    storage: crate::ZfsDriver::new,
}
