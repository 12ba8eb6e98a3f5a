//! The only glue between the driver and berth's stable ABI: one macro call.
//! berthd and `berth-conformance --plugin` load the resulting `.so`.

berth_plugin_api::export_plugin! {
    name: "{{driver_name}}",
    version: env!("CARGO_PKG_VERSION"),
    description: "a veth into the sandbox: a bridge per network, a veth pair per endpoint",
    network: crate::VethDriver::new,
}
