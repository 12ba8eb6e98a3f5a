//! # berth-plugin-api: the driver contracts
//!
//! berth loads every driver at run time: as a shared object checked by
//! `abi_stable` before any of its code runs, or as an out-of-process driver
//! speaking Docker's plugin protocol. Both are the same four small traits to
//! the daemon:
//!
//! | kind | trait | Docker counterpart |
//! |---|---|---|
//! | storage | [`StorageDriver`] (+ optional [`DiffDriver`]) | graph driver |
//! | network | [`NetworkDriver`] | libnetwork remote driver |
//! | IPAM | [`IpamDriver`] | libnetwork remote IPAM |
//! | volume | [`VolumeDriver`] | volume plugin |
//!
//! Every method takes one request struct (`#[non_exhaustive]` + `Default`, so
//! fields can be added without breaking anyone) and returns
//! `Result<_, DriverError>` whose [`ErrorKind`] survives every hop.
//!
//! A plugin crate is a plain library implementing a trait, plus a thin
//! `export.rs` calling [`export_plugin!`]. A driver decides at construction
//! whether it runs here: [`Init::Ready`] or [`Init::Skipped`] with a reason.

#![deny(missing_docs)]

pub mod error;
pub mod ffi;
pub mod init;
pub mod ipam;
pub mod network;
#[cfg(feature = "remote")]
pub mod remote;
pub mod storage;
pub mod util;
pub mod volume;

pub use error::{DriverError, DriverResult, ErrorKind};
pub use init::{Init, InitRequest, Kind, Manifest};
pub use ipam::IpamDriver;
pub use network::NetworkDriver;
pub use storage::{DiffDriver, StorageDriver};
pub use volume::VolumeDriver;

/// The version of this interface crate; plugins record it in their header.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
