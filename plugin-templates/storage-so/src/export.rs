//! The only glue between the driver and berth's stable ABI: one macro call.
//! berthd and `berth-conformance --plugin` load the resulting `.so`.

berth_plugin_api::export_plugin! {
    name: "{{driver_name}}",
    version: env!("CARGO_PKG_VERSION"),
    description: "copy-based layers: each layer a full copy of its parent",
    storage: crate::CopyDriver::new,
}
