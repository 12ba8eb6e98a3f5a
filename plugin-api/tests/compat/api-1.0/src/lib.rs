//! Test fixture: frozen copy of the 1.0.0 interface (see `../README.md`).
//! Only the ABI module, at the same module path as in the real crate.

pub mod ffi {
    //! The stable ABI.
    pub mod abi;
}

pub use ffi::abi::ErrorKind;

/// The version of this interface crate.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
