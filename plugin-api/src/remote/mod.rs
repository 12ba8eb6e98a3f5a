//! Docker's v1 plugin protocol (feature `remote`): the wire shapes both ends
//! share, Go-tolerant JSON decoding, and a server that serves any driver
//! trait impl over HTTP on a unix socket or TCP, so one trait impl can ship
//! as a shared object or as a remote driver.
//!
//! The reference is `shared/reference/docker-plugin-protocol.md`.

mod http;
pub mod server;
pub mod tolerant;
pub mod wire;

pub use server::{Handlers, Listen, Server, ServerHandle};
