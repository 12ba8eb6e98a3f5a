//! {{driver_name}}: a small but complete berth network driver — a veth
//! into the sandbox.
//!
//! What it makes, and the rules it keeps, are in `driver.rs`.
//!
//! # Layout
//!
//! * `driver.rs` — the `NetworkDriver` trait of `berth-plugin-api`;
//! * `config.rs` — options, pools, link names and MAC addresses;
//! * `links.rs` — the seam to the host (the `ip` command), and a fake for
//!   the unit tests;
//! * `state.rs` — the state file;
//! * `export.rs` — the only glue: `export_plugin!` names the driver and its
//!   constructor.

mod config;
mod driver;
mod export;
mod links;
mod state;

pub use config::{BRIDGE_PREFIX, HOST_PREFIX, MTU, PEER_PREFIX};
pub use driver::VethDriver;
pub use export::berth_plugin_root;
pub use links::{IpLinks, Links};
pub use state::STATE_FILE;
