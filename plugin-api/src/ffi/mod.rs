//! The shared-object transport: the stable ABI ([`abi`]), the plugin side
//! that wraps any driver ([`export`], used by [`crate::export_plugin!`]) and
//! the host side that turns a loaded module back into trait objects
//! ([`host`]).

pub mod abi;
pub mod export;
pub mod host;

pub use abi::{FfiError, FfiKind, FfiManifest, PluginMod, PluginModRef};
pub use host::PluginModule;

#[doc(hidden)]
pub mod reexports {
    pub use abi_stable;
    pub use serde_json;
}

use abi_stable::std_types::RString;

use crate::{DriverError, ErrorKind, Kind};

impl From<DriverError> for FfiError {
    fn from(e: DriverError) -> Self {
        FfiError { kind: e.kind, message: RString::from(e.message) }
    }
}

impl From<FfiError> for DriverError {
    fn from(e: FfiError) -> Self {
        DriverError { kind: e.kind, message: e.message.into_string() }
    }
}

impl From<Kind> for FfiKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Storage => FfiKind::Storage,
            Kind::Network => FfiKind::Network,
            Kind::Ipam => FfiKind::Ipam,
            Kind::Volume => FfiKind::Volume,
        }
    }
}

impl From<FfiKind> for Kind {
    fn from(k: FfiKind) -> Self {
        match k {
            FfiKind::Storage => Kind::Storage,
            FfiKind::Network => Kind::Network,
            FfiKind::Ipam => Kind::Ipam,
            FfiKind::Volume => Kind::Volume,
        }
    }
}

/// An error of `kind`, as it crosses the ABI.
pub(crate) fn ffi_err(kind: ErrorKind, message: impl Into<String>) -> FfiError {
    FfiError { kind, message: RString::from(message.into()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exported_header_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }
}
