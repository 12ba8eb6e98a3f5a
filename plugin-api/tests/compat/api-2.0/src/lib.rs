//! Test fixture: the 1.1 interface republished as a new major (see `../README.md`).
//! Only the ABI module, at the same module path as in the real crate.

pub mod ffi;

pub use ffi::abi::ErrorKind;

/// The version of this interface crate.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
