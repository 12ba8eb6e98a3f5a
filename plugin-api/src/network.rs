//! The network driver contract (libnetwork's remote driver model).
//!
//! # Vocabulary
//!
//! * A **network** is identified by a `network_id` chosen by the core. Its
//!   addresses come from IPAM *before* the driver hears of it: the core asks
//!   the [`crate::IpamDriver`] for pools and a gateway and hands them over in
//!   [`CreateNetworkRequest::ipv4_data`] / [`CreateNetworkRequest::ipv6_data`].
//! * An **endpoint** is one attachment of one sandbox to one network,
//!   identified by `endpoint_id`. IPAM usually fills its address already; the
//!   driver may fill only what the request left empty (e.g. the MAC).
//! * A **sandbox** is a network namespace owned by the core, named by
//!   `sandbox_key` (its path). On [`NetworkDriver::join`] the driver names an
//!   interface it created in the host namespace ([`InterfaceName::src_name`]);
//!   the core moves it into the sandbox, renames it `dst_prefix` + index,
//!   and sets addresses, MAC, gateway and static routes itself.
//!
//! # Call order
//!
//! ```text
//! network create:  [gw_alloc_check] → IPAM pools/gateway → create_network
//! attach:          IPAM address → create_endpoint → join → program_external_connectivity
//! detach:          revoke_external_connectivity → leave → delete_endpoint → IPAM release
//! network rm:      IPAM release gateway/aux/pool → delete_network
//! ```
//!
//! Deleting an endpoint or a network that is already gone succeeds (the calls
//! are idempotent), and `leave` of an endpoint that is not joined succeeds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DriverResult;

/// Free-form options (`map<str, any>` on the wire).
pub type Options = BTreeMap<String, serde_json::Value>;

/// A published port as dockerd sends it in the `com.docker.network.portmap`
/// option (its `types.PortBinding`), and as a driver reports it from
/// `endpoint_info` once it chose the host port. Not part of the ABI: it
/// travels as JSON inside [`Options`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortBinding {
    /// IP protocol number: 6 tcp, 17 udp, 132 sctp.
    #[serde(rename = "Proto")]
    pub proto: u8,
    /// The container's address.
    #[serde(rename = "IP")]
    pub ip: String,
    /// The container's port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// The host address; empty means the network's default binding.
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    /// The host port; 0 means any free one.
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    /// The end of a host port range to choose from; 0 means just `host_port`.
    #[serde(rename = "HostPortEnd")]
    pub host_port_end: u16,
}

impl PortBinding {
    /// `tcp`, `udp` or `sctp`.
    pub fn proto_name(&self) -> &'static str {
        match self.proto {
            17 => "udp",
            132 => "sctp",
            _ => "tcp",
        }
    }
}

/// An option berth's core sets (to `true`) in `CreateEndpoint` and `Join`:
/// it can configure an interface the driver made directly inside the
/// sandbox (the `SandboxKey` of `Join`), so a driver may defer making it
/// to `Join` and create it there, saving the kernel a namespace move (an
/// RCU grace period, ~17 ms). Drivers that ignore it work as with dockerd,
/// which never sets it: the interface is made in the host namespace and
/// the core moves it.
pub const JOIN_IN_PLACE: &str = "com.berth.network.join_in_place";

/// A network driver. Every method may be called from many threads at once.
pub trait NetworkDriver: Send + Sync {
    /// Scope and behaviour; asked once, right after construction.
    fn capabilities(&self, req: CapabilitiesRequest) -> DriverResult<Capabilities>;

    /// Creates network `req.network_id` with the IPAM data given.
    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()>;

    /// Deletes a network; idempotent.
    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()>;

    /// Creates an endpoint; answers the interface fields it filled in.
    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse>;

    /// Operational facts about an endpoint, shown on inspect.
    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options>;

    /// Deletes an endpoint; idempotent, also for one never created.
    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()>;

    /// Joins an endpoint to a sandbox: names the interface to move in.
    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse>;

    /// Undoes [`NetworkDriver::join`]; idempotent.
    fn leave(&self, req: LeaveRequest) -> DriverResult<()>;

    /// Sets up external connectivity (port publishing, NAT) for the
    /// endpoint that gives the sandbox its default gateway.
    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()>;

    /// Undoes [`NetworkDriver::program_external_connectivity`]; idempotent.
    fn revoke_external_connectivity(&self, req: RevokeExternalConnectivityRequest) -> DriverResult<()>;

    /// Asked before gateway allocation when [`Capabilities::gw_alloc_checker`]
    /// is set: may the core skip reserving a gateway? (Added in 1.1.)
    fn gw_alloc_check(&self, req: GwAllocCheckRequest) -> DriverResult<GwAllocCheckResponse> {
        let _ = req;
        Err(crate::DriverError::unsupported("gw_alloc_check is not implemented by this driver"))
    }
}

/// `local` (one host) or `global` (many hosts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The object exists on one host.
    #[default]
    Local,
    /// The object exists once across hosts.
    Global,
}

/// [`NetworkDriver::capabilities`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CapabilitiesRequest {}

/// The answer of [`NetworkDriver::capabilities`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Capabilities {
    /// Where networks of this driver exist.
    #[serde(rename = "Scope")]
    pub scope: Scope,
    /// Where their connectivity reaches; defaults to `scope`.
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: Option<Scope>,
    /// Whether to call [`NetworkDriver::gw_alloc_check`].
    #[serde(rename = "GwAllocChecker")]
    pub gw_alloc_checker: bool,
}

impl Capabilities {
    /// Capabilities of the given scope.
    pub fn new(scope: Scope) -> Self {
        Capabilities { scope, ..Default::default() }
    }
}

/// A pool handed to the driver (`IPAMData` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct IpamData {
    /// The IPAM address space of the pool.
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    /// The pool, as CIDR (`172.18.0.0/16`).
    #[serde(rename = "Pool")]
    pub pool: String,
    /// The gateway with the pool's prefix length (`172.18.0.1/16`), if any.
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Reserved auxiliary addresses by name, each as CIDR.
    #[serde(rename = "AuxAddresses", skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// [`NetworkDriver::create_network`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CreateNetworkRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Options: `com.docker.network.generic` holds the user's `--opt` map;
    /// `com.docker.network.enable_ipv6`, `com.docker.network.internal`, ...
    #[serde(rename = "Options")]
    pub options: Options,
    /// IPv4 pools.
    #[serde(rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    /// IPv6 pools.
    #[serde(rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// [`NetworkDriver::delete_network`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DeleteNetworkRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// An endpoint's interface (`EpIface` on the wire); empty strings mean unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct EndpointInterface {
    /// IPv4 address as CIDR.
    #[serde(rename = "Address")]
    pub address: String,
    /// IPv6 address as CIDR.
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}

/// [`NetworkDriver::create_endpoint`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CreateEndpointRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// What IPAM and the user already chose.
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
    /// Endpoint options (port map, requested MAC, ...).
    #[serde(rename = "Options")]
    pub options: Options,
}

/// The answer of [`NetworkDriver::create_endpoint`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CreateEndpointResponse {
    /// Only the fields the driver filled in; `None` if it filled none.
    #[serde(rename = "Interface")]
    pub interface: Option<EndpointInterface>,
}

/// [`NetworkDriver::endpoint_info`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct EndpointInfoRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// [`NetworkDriver::delete_endpoint`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DeleteEndpointRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// [`NetworkDriver::join`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JoinRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// Path of the sandbox's network namespace.
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
    /// Sandbox options (port map, exposed ports).
    #[serde(rename = "Options")]
    pub options: Options,
}

/// The interface the core moves into the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct InterfaceName {
    /// Its name in the host namespace; empty means "no interface".
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// The name prefix inside the sandbox, e.g. `eth` → `eth0`.
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

impl InterfaceName {
    /// Interface `src_name`, to be named `dst_prefix` + index.
    pub fn new(src_name: impl Into<String>, dst_prefix: impl Into<String>) -> Self {
        InterfaceName { src_name: src_name.into(), dst_prefix: dst_prefix.into() }
    }
}

/// A static route set in the sandbox after the interface moved in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StaticRoute {
    /// Destination as CIDR.
    #[serde(rename = "Destination")]
    pub destination: String,
    /// `0`: via `next_hop`; `1`: connected.
    #[serde(rename = "RouteType")]
    pub route_type: u8,
    /// Next hop address, for route type 0.
    #[serde(rename = "NextHop")]
    pub next_hop: String,
}

/// The answer of [`NetworkDriver::join`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JoinResponse {
    /// The interface to move into the sandbox; `None` for none (host, none).
    #[serde(rename = "InterfaceName")]
    pub interface_name: Option<InterfaceName>,
    /// Default IPv4 gateway (bare IP), if any.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    /// Default IPv6 gateway (bare IP), if any.
    #[serde(rename = "GatewayIPv6")]
    pub gateway_ipv6: String,
    /// Routes to add after the move.
    #[serde(rename = "StaticRoutes")]
    pub static_routes: Vec<StaticRoute>,
    /// Do not give this sandbox a fallback gateway network.
    #[serde(rename = "DisableGatewayService")]
    pub disable_gateway_service: bool,
}

/// [`NetworkDriver::leave`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LeaveRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// [`NetworkDriver::program_external_connectivity`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ProgramExternalConnectivityRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The join options (port map, exposed ports).
    #[serde(rename = "Options")]
    pub options: Options,
}

/// [`NetworkDriver::revoke_external_connectivity`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RevokeExternalConnectivityRequest {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// [`NetworkDriver::gw_alloc_check`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GwAllocCheckRequest {
    /// The options the later `create_network` will get.
    #[serde(rename = "Options")]
    pub options: Options,
}

/// The answer of [`NetworkDriver::gw_alloc_check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GwAllocCheckResponse {
    /// Do not reserve an IPv4 gateway.
    #[serde(rename = "SkipIPv4")]
    pub skip_ipv4: bool,
    /// Do not reserve an IPv6 gateway.
    #[serde(rename = "SkipIPv6")]
    pub skip_ipv6: bool,
}

impl DeleteNetworkRequest {
    /// A request for network `network_id`.
    pub fn new(network_id: impl Into<String>) -> Self {
        DeleteNetworkRequest { network_id: network_id.into() }
    }
}

macro_rules! ep_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            /// A request for endpoint `endpoint_id` of network `network_id`.
            pub fn new(network_id: impl Into<String>, endpoint_id: impl Into<String>) -> Self {
                $t { network_id: network_id.into(), endpoint_id: endpoint_id.into(), ..Default::default() }
            }
        }
    )*};
}
ep_ctor!(
    CreateEndpointRequest,
    EndpointInfoRequest,
    DeleteEndpointRequest,
    JoinRequest,
    LeaveRequest,
    ProgramExternalConnectivityRequest,
    RevokeExternalConnectivityRequest
);

impl CreateNetworkRequest {
    /// A request for network `network_id` with no options or pools.
    pub fn new(network_id: impl Into<String>) -> Self {
        CreateNetworkRequest { network_id: network_id.into(), ..Default::default() }
    }
}
