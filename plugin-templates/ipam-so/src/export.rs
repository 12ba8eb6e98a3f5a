//! The only glue between the driver and berth's stable ABI: one macro call.
//! berthd and `berth-conformance --plugin` load the resulting `.so`.

berth_plugin_api::export_plugin! {
    name: "{{driver_name}}",
    version: env!("CARGO_PKG_VERSION"),
    description: "IP address management: pools from a subnet or a default list, first-free or serial addresses, kept in one state file",
    ipam: crate::SimpleIpam::new,
}
