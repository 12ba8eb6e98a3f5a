//! The stable ABI: the live file, not a copy, so only the version differs.

#[path = "../../../../../src/ffi/abi.rs"]
pub mod abi;
