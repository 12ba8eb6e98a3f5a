//! What the network API takes and answers, in Docker's shapes, and what
//! the daemon keeps of networks, endpoints and sandboxes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::ports::{ExposedPorts, HostBinding, PortBindings, PublishedPort};

pub(super) fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `POST /networks/create`. Unknown fields are refused; the swarm-only
/// ones (`Ingress`, `ConfigOnly`, `ConfigFrom`) are accepted when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateNetwork {
    /// The name; unique.
    pub name: String,
    /// The network driver; empty for `[network] default`.
    #[serde(deserialize_with = "null_is_default")]
    pub driver: String,
    /// Must be empty or the driver's own scope.
    #[serde(deserialize_with = "null_is_default")]
    pub scope: String,
    /// No external connectivity.
    pub internal: bool,
    /// Accepted and shown (berth attaches any sandbox to any network).
    pub attachable: bool,
    /// Swarm's routing mesh: must be false.
    pub ingress: bool,
    /// Swarm's config-only networks: must be false.
    pub config_only: bool,
    /// Swarm's config-from: must be absent.
    pub config_from: Option<serde_json::Value>,
    /// Pools and the IPAM driver.
    #[serde(rename = "IPAM", deserialize_with = "null_is_default")]
    pub ipam: IpamSpec,
    /// IPv4 on (the default) or off.
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: Option<bool>,
    /// IPv6 on or off (the default).
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    /// Driver options (`-o`), handed over as `com.docker.network.generic`.
    #[serde(deserialize_with = "null_is_default")]
    pub options: BTreeMap<String, String>,
    /// User labels.
    #[serde(deserialize_with = "null_is_default")]
    pub labels: BTreeMap<String, String>,
    /// Deprecated by Docker (names are always checked); accepted.
    pub check_duplicate: Option<bool>,
}

/// `IPAM` of a network create, and of its inspect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpamSpec {
    /// The IPAM driver; empty for `[network] ipam`.
    #[serde(deserialize_with = "null_is_default")]
    pub driver: String,
    /// One entry per pool.
    #[serde(deserialize_with = "null_is_default")]
    pub config: Vec<PoolSpec>,
    /// `--ipam-opt`, handed to the IPAM driver's pool requests.
    #[serde(deserialize_with = "null_is_default")]
    pub options: BTreeMap<String, String>,
}

/// One pool of a network: what the user asked for, and in inspect what it
/// got (the subnet and gateway IPAM chose).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct PoolSpec {
    /// The subnet (CIDR).
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub subnet: String,
    /// Where endpoint addresses come from (CIDR inside the subnet).
    #[serde(
        rename = "IPRange",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_is_default"
    )]
    pub ip_range: String,
    /// The gateway (bare IP).
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub gateway: String,
    /// Reserved addresses by name (bare IPs).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_is_default")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// A pool the daemon holds for a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolRecord {
    /// As inspect shows it.
    pub spec: PoolSpec,
    /// The IPAM driver's id of the pool.
    pub pool_id: String,
    /// The IPAM address space.
    pub address_space: String,
    /// IPv6?
    pub v6: bool,
    /// The gateway as CIDR (with the pool's prefix length), if any.
    pub gateway_cidr: String,
    /// Whether the gateway address was requested from IPAM (and so must be
    /// released), rather than given by the pool's data.
    pub gateway_requested: bool,
    /// Auxiliary addresses by name, as CIDR.
    pub aux_cidr: BTreeMap<String, String>,
}

/// What the daemon keeps of a network (`network/<id>` in the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Seconds since the epoch of `created`.
    pub created_unix: u64,
    /// `local` or `global`, from the driver's capabilities.
    pub scope: String,
    /// The network driver.
    pub driver: String,
    /// The IPAM driver (recorded even when no pool was taken).
    pub ipam_driver: String,
    /// `--ipam-opt`.
    pub ipam_options: BTreeMap<String, String>,
    /// The pools, IPv4 first.
    pub pools: Vec<PoolRecord>,
    /// IPv4 on.
    pub enable_ipv4: bool,
    /// IPv6 on.
    pub enable_ipv6: bool,
    /// No external connectivity.
    pub internal: bool,
    /// Attachable flag, as given.
    pub attachable: bool,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

/// What the daemon keeps of an endpoint (`endpoint/<net>/<ep>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointRecord {
    /// 64 hex digits.
    pub id: String,
    /// Its network.
    pub network_id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// The sandbox's name (Docker shows the container's).
    pub name: String,
    /// IPv4 address as CIDR, or empty.
    pub ipv4: String,
    /// The pool it came from.
    pub pool_v4: String,
    /// IPv6 address as CIDR, or empty.
    pub ipv6: String,
    /// The pool it came from.
    pub pool_v6: String,
    /// MAC address, or empty.
    pub mac: String,
    /// The interface's name in the host namespace (empty: none moved).
    pub src_name: String,
    /// Its name in the sandbox.
    pub dst_name: String,
    /// The driver made the interface in the sandbox (nothing was moved;
    /// leave leaves it there for the driver to delete).
    pub in_place: bool,
    /// Whether this endpoint gives the sandbox its default gateway (and so
    /// had its external connectivity programmed).
    pub gateway: bool,
    /// The IPv4 gateway the driver's join answered (bare IP), empty when
    /// none: kept so that this endpoint can take the gateway role over
    /// later (see `network::gateway`). Records older than this field have
    /// none, and so never take the role over.
    pub join_gateway: String,
    /// The IPv6 gateway the driver's join answered, as `join_gateway`.
    pub join_gateway6: String,
    /// The sandbox's published ports as the driver reported them after
    /// programming (host ports chosen); empty when none or the driver
    /// reports none.
    pub ports: Vec<PublishedPort>,
}

/// What the daemon keeps of a sandbox (`sandbox/<id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct SandboxRecord {
    /// 64 hex digits.
    #[serde(rename = "Id")]
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The namespace file.
    pub key: String,
    /// Shares the host's namespace.
    pub host: bool,
    /// RFC 3339 creation time.
    pub created: String,
    /// Ports to publish, checked and canonical (`80/tcp`); published
    /// through the endpoint that gives the sandbox its default gateway.
    pub port_bindings: PortBindings,
    /// Exposed ports, canonical; handed to drivers, shown in `Ports`.
    pub exposed_ports: ExposedPorts,
}

/// `POST /sandboxes/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateSandbox {
    /// The name; generated when empty.
    pub name: String,
    /// Share the host's network namespace (for `host` networks) instead of
    /// having one of its own.
    pub host: bool,
    /// Docker's `HostConfig.PortBindings`: `{"80/tcp": [{"HostIp": "",
    /// "HostPort": "8080"}]}`; `HostPort` empty for any free port or a
    /// range `"8000-8010"`. Checked at create time (see
    /// [`super::ports`]).
    #[serde(deserialize_with = "super::ports::bindings_or_null")]
    pub port_bindings: PortBindings,
    /// Docker's `ExposedPorts`: `{"80/tcp": {}}`.
    #[serde(deserialize_with = "super::ports::exposed_or_null")]
    pub exposed_ports: ExposedPorts,
}

/// Docker's `EndpointSettings` as `POST /networks/{id}/connect` sends it.
/// berth uses the IPAM config, the MAC and the driver options; the other
/// fields Docker's clients send are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct EndpointConfig {
    /// Requested addresses.
    #[serde(rename = "IPAMConfig", deserialize_with = "null_is_default")]
    pub ipam_config: EndpointIpam,
    /// Requested MAC address.
    #[serde(deserialize_with = "null_is_default")]
    pub mac_address: String,
    /// Per-endpoint driver options.
    #[serde(deserialize_with = "null_is_default")]
    pub driver_opts: BTreeMap<String, String>,
    /// Ignored (container links).
    pub links: Option<serde_json::Value>,
    /// Ignored (DNS aliases).
    pub aliases: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "DNSNames")]
    pub dns_names: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "NetworkID")]
    pub network_id: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: Option<serde_json::Value>,
    /// Ignored.
    pub gateway: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "IPAddress")]
    pub ip_address: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "IPv6Gateway")]
    pub ipv6_gateway: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: Option<serde_json::Value>,
    /// Ignored.
    #[serde(rename = "GlobalIPv6PrefixLen")]
    pub global_ipv6_prefix_len: Option<serde_json::Value>,
    /// Ignored.
    pub gw_priority: Option<serde_json::Value>,
}

/// `EndpointSettings.IPAMConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct EndpointIpam {
    /// A specific IPv4 address.
    #[serde(rename = "IPv4Address", deserialize_with = "null_is_default")]
    pub ipv4_address: String,
    /// A specific IPv6 address.
    #[serde(rename = "IPv6Address", deserialize_with = "null_is_default")]
    pub ipv6_address: String,
    /// Ignored.
    #[serde(rename = "LinkLocalIPs")]
    pub link_local_ips: Option<serde_json::Value>,
}

/// `POST /networks/{id}/connect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// The sandbox: id, name or unique id prefix.
    pub container: String,
    /// How to attach it.
    #[serde(deserialize_with = "null_is_default")]
    pub endpoint_config: EndpointConfig,
}

/// `POST /networks/{id}/disconnect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct DisconnectRequest {
    /// The sandbox: id, name or unique id prefix.
    pub container: String,
    /// Drop the endpoint even when its driver fails.
    pub force: bool,
}

/// One attached sandbox in a network's inspect (`Containers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointView {
    /// The sandbox's name.
    pub name: String,
    /// The endpoint.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// MAC address.
    pub mac_address: String,
    /// CIDR or empty.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// CIDR or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `ConfigFrom` of Docker's inspect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigFrom {
    /// Always empty.
    #[serde(rename = "Network")]
    pub network: String,
}

/// A network as Docker's API shows it (list and inspect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkView {
    /// Name.
    pub name: String,
    /// ID.
    pub id: String,
    /// Creation time.
    pub created: String,
    /// `local` or `global`.
    pub scope: String,
    /// Driver.
    pub driver: String,
    /// IPv4 on.
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    /// IPv6 on.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Pools.
    #[serde(rename = "IPAM")]
    pub ipam: IpamSpec,
    /// No external connectivity.
    pub internal: bool,
    /// As given.
    pub attachable: bool,
    /// Always false.
    pub ingress: bool,
    /// Always empty.
    pub config_from: ConfigFrom,
    /// Always false.
    pub config_only: bool,
    /// Attached sandboxes by id.
    pub containers: BTreeMap<String, EndpointView>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The answer of `POST /networks/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreated {
    /// The new network's id.
    pub id: String,
    /// A warning, or empty.
    pub warning: String,
}

/// The answer of `POST /networks/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkPruneReport {
    /// Names of the removed networks.
    pub networks_deleted: Vec<String>,
}

/// A sandbox as `GET /sandboxes` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxView {
    /// The record.
    #[serde(flatten)]
    pub record: SandboxRecord,
    /// Networks it is attached to, by network name: endpoint id.
    pub networks: BTreeMap<String, String>,
    /// Docker's `NetworkSettings.Ports`: each published port with the
    /// host bindings its driver chose (`{"80/tcp": [{"HostIp": "0.0.0.0",
    /// "HostPort": "8080"}]}`), each exposed port not published with `null`.
    pub ports: BTreeMap<String, Option<Vec<HostBinding>>>,
}
