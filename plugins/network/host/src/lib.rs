//! berth network driver `host`: the sandbox shares the host's network
//! namespace.
//!
//! A container on the `host` network sees the host's interfaces, addresses
//! and routes; the core runs it in the host namespace instead of a sandbox
//! of its own. The driver creates no interface, takes no addresses and
//! programs nothing (published ports mean nothing here: every port the
//! container opens is a host port). It only keeps the books so the core
//! sees the same lifecycle as with any other driver.
//!
//! # Rules
//!
//! * Scope `local`. One network at a time, as in Docker ("only one instance
//!   of host network is allowed"): creating a second one with another id is
//!   a conflict, the same id again is already-exists. Deleting is
//!   idempotent and takes the network's endpoints with it.
//! * A network given IPAM pools is refused (invalid-argument): the only pool
//!   accepted is the null IPAM driver's placeholder (`0.0.0.0/0` or `::/0`,
//!   no gateway, no auxiliary addresses). Driver options
//!   (`com.docker.network.generic`) are refused too: there are none.
//! * An endpoint on an unknown network is not-found; one that asks for an
//!   address or a MAC is invalid-argument; creating an existing one is
//!   already-exists. The driver fills in nothing (`interface: None`).
//! * `join` names no interface and no gateway (the core uses the host
//!   namespace); it needs a known endpoint. `leave`, `delete_endpoint` and
//!   `revoke_external_connectivity` are idempotent;
//!   `program_external_connectivity` has nothing to do. `endpoint_info` is
//!   `{}` for a known endpoint.
//!
//! The network and its endpoints are kept in memory and in
//! `<root>/network-state.json`, so a restarted daemon finds them again.

#![deny(missing_docs)]

pub mod export;
#[path = "../../none/src/single.rs"]
mod single;
#[path = "../../none/src/state.rs"]
mod state;

/// The driver's name in messages.
const DRIVER: &str = "host";

pub use single::Opts;
pub use state::STATE_FILE;

/// The `host` network driver. See the [crate documentation](crate).
pub type HostNetworkDriver = single::SingleNetworkDriver;
