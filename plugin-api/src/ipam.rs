//! The IPAM (IP address management) driver contract.
//!
//! # Vocabulary
//!
//! * An **address space** is a namespace for pools: the same prefix may live
//!   in two spaces. Every driver has a default `local` and `global` space.
//! * A **pool** is a prefix (`10.1.0.0/16`) reserved for one network, named
//!   by an opaque `pool_id` the driver chooses; the caller echoes it back. A
//!   request may ask for a specific pool, a sub-pool of it (addresses are
//!   handed out from the sub-pool only), or let the driver pick one.
//! * An **address** is one IP handed out of a pool. The gateway is requested
//!   like any other address, with the option
//!   `RequestAddressType = com.docker.network.gateway`.
//!
//! # Rules
//!
//! * Live pools in one address space never overlap.
//! * An address is never live twice; releasing one makes exactly that one
//!   available again. Running out is [`crate::ErrorKind::ResourceExhausted`].
//! * A specific address in use is [`crate::ErrorKind::Conflict`]; one outside
//!   the pool is [`crate::ErrorKind::InvalidArgument`].
//! * Releasing a pool that is not live is [`crate::ErrorKind::NotFound`];
//!   releasing an address that is not allocated succeeds (idempotent).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DriverResult;

/// The `RequestAddressType` option value that marks a gateway request.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
/// The option key that carries [`GATEWAY_REQUEST`].
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";

/// An IPAM driver. Every method may be called from many threads at once.
pub trait IpamDriver: Send + Sync {
    /// What the driver needs from the core.
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities>;

    /// The driver's default `local` and `global` address space names.
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces>;

    /// Reserves a pool.
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse>;

    /// Releases a pool and every address in it.
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()>;

    /// Hands out one address of a pool.
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse>;

    /// Returns one address to its pool.
    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()>;
}

/// [`IpamDriver::capabilities`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IpamCapabilitiesRequest {}

/// The answer of [`IpamDriver::capabilities`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IpamCapabilities {
    /// The core passes the endpoint's MAC in `request_address` options.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    /// The driver keeps no state: replay pool requests after a restart.
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

/// [`IpamDriver::default_address_spaces`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AddressSpacesRequest {}

/// The answer of [`IpamDriver::default_address_spaces`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AddressSpaces {
    /// Default space for local-scope networks.
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: String,
    /// Default space for global-scope networks.
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: String,
}

impl AddressSpaces {
    /// Spaces named `local` and `global`.
    pub fn new(local: impl Into<String>, global: impl Into<String>) -> Self {
        AddressSpaces { local: local.into(), global: global.into() }
    }
}

/// [`IpamDriver::request_pool`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RequestPoolRequest {
    /// The address space; empty means the driver's local default.
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    /// The prefix wanted as CIDR; empty lets the driver pick one.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// A prefix inside `pool` to hand addresses out of; needs `pool`.
    #[serde(rename = "SubPool")]
    pub sub_pool: String,
    /// The user's `--ipam-opt` map.
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Whether the pool is IPv6 (when the driver picks it).
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// The answer of [`IpamDriver::request_pool`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RequestPoolResponse {
    /// Opaque id the caller echoes back.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool as CIDR.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// Extra facts; `com.docker.network.gateway` (CIDR) names a gateway.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

impl RequestPoolResponse {
    /// An answer for pool `pool` named `pool_id`.
    pub fn new(pool_id: impl Into<String>, pool: impl Into<String>) -> Self {
        RequestPoolResponse { pool_id: pool_id.into(), pool: pool.into(), data: BTreeMap::new() }
    }
}

/// [`IpamDriver::release_pool`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ReleasePoolRequest {
    /// The pool's id.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// [`IpamDriver::request_address`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RequestAddressRequest {
    /// The pool's id.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A specific address wanted (bare IP); empty for any.
    #[serde(rename = "Address")]
    pub address: String,
    /// Options, e.g. [`REQUEST_ADDRESS_TYPE`] = [`GATEWAY_REQUEST`].
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
}

impl RequestAddressRequest {
    /// Whether this request asks for the pool's gateway.
    pub fn is_gateway(&self) -> bool {
        self.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_REQUEST)
    }
}

/// The answer of [`IpamDriver::request_address`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RequestAddressResponse {
    /// The address with the pool's prefix length, e.g. `10.1.0.2/16`.
    #[serde(rename = "Address")]
    pub address: String,
    /// Extra facts.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

impl RequestAddressResponse {
    /// An answer with `address` (CIDR).
    pub fn new(address: impl Into<String>) -> Self {
        RequestAddressResponse { address: address.into(), data: BTreeMap::new() }
    }
}

/// [`IpamDriver::release_address`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ReleaseAddressRequest {
    /// The pool's id.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address (bare IP).
    #[serde(rename = "Address")]
    pub address: String,
}

impl ReleasePoolRequest {
    /// A request to release pool `pool_id`.
    pub fn new(pool_id: impl Into<String>) -> Self {
        ReleasePoolRequest { pool_id: pool_id.into() }
    }
}

impl ReleaseAddressRequest {
    /// A request to release `address` of pool `pool_id`.
    pub fn new(pool_id: impl Into<String>, address: impl Into<String>) -> Self {
        ReleaseAddressRequest { pool_id: pool_id.into(), address: address.into() }
    }
}

impl RequestAddressRequest {
    /// A request for any address of pool `pool_id`.
    pub fn new(pool_id: impl Into<String>) -> Self {
        RequestAddressRequest { pool_id: pool_id.into(), ..Default::default() }
    }
}

impl RequestPoolRequest {
    /// A request for `pool` (CIDR, or empty to let the driver pick) in
    /// `address_space`.
    pub fn new(address_space: impl Into<String>, pool: impl Into<String>) -> Self {
        RequestPoolRequest { address_space: address_space.into(), pool: pool.into(), ..Default::default() }
    }
}
