//! berth network driver `none`: a sandbox with loopback only.
//!
//! A container on the `none` network gets its own network namespace and
//! nothing in it but `lo`. The driver creates no interface, takes no
//! addresses and programs nothing; it only keeps the books so the core sees
//! the same lifecycle as with any other driver.
//!
//! # Rules
//!
//! * Scope `local`. One network at a time, as in Docker: creating a second
//!   one with another id is a conflict, the same id again is already-exists.
//!   Deleting is idempotent and takes the network's endpoints with it.
//! * A network given IPAM pools is refused (invalid-argument): the only pool
//!   accepted is the null IPAM driver's placeholder (`0.0.0.0/0` or `::/0`,
//!   no gateway, no auxiliary addresses). Driver options
//!   (`com.docker.network.generic`) are refused too: there are none.
//! * An endpoint on an unknown network is not-found; one that asks for an
//!   address or a MAC is invalid-argument; creating an existing one is
//!   already-exists. The driver fills in nothing (`interface: None`).
//! * `join` names no interface (the sandbox keeps only loopback) and no
//!   gateway; it needs a known endpoint. `leave`, `delete_endpoint` and
//!   `revoke_external_connectivity` are idempotent;
//!   `program_external_connectivity` has nothing to do. `endpoint_info` is
//!   `{}` for a known endpoint.
//!
//! The network and its endpoints are kept in memory and in
//! `<root>/network-state.json`, so a restarted daemon finds them again.

#![deny(missing_docs)]

pub mod export;
mod single;
mod state;

/// The driver's name in messages.
const DRIVER: &str = "none";

pub use single::Opts;
pub use state::STATE_FILE;

/// The `none` network driver. See the [crate documentation](crate).
pub type NoneNetworkDriver = single::SingleNetworkDriver;
