//! The plugin's entry point: the only glue between
//! [`crate::Overlay2Driver`] and berth's stable ABI. Tests link it directly
//! through [`berth_plugin_root`].

berth_plugin_api::export_plugin! {
    name: "overlay2",
    version: env!("CARGO_PKG_VERSION"),
    description: "overlayfs layers: each layer its own diff dir, mounted over its parents' with short links",
    storage: crate::Overlay2Driver::new,
}
