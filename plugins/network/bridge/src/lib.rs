//! berth network driver `bridge`: a Linux bridge per network, a veth pair
//! per endpoint, and NAT, published ports and isolation in one nftables
//! table berth owns.
//!
//! # What it programs
//!
//! * **Links** (rtnetlink, [`rtnl`]): a bridge per network, named by
//!   `com.docker.network.bridge.name` or `br-<first 12 of the id>`, up,
//!   with the network's MTU and its gateway addresses. A bridge that exists
//!   already is **adopted**: it keeps its addresses and survives the
//!   network (NW-02); only addresses the driver added are taken off again.
//!   Each endpoint is a veth pair `vbr…` (on the bridge) / `vbc…` (reported
//!   to the core as [`InterfaceName::src_name`](berth_plugin_api::network::InterfaceName),
//!   prefix `eth`), both with the network's MTU; the sandbox end gets the
//!   requested MAC or a generated one (`02:42:` + the IPv4 address).
//!   ICC off (`com.docker.network.bridge.enable_icc=false`) sets the
//!   bridge-port flag `isolated` on the host end, so containers reach the
//!   gateway but not each other.
//! * **Firewall** ([`nft`]): one table `inet berth`, programmed as JSON
//!   through libnftables in process ([`libnft`]; the `nft` command where
//!   the library is missing). A new network or published port only adds
//!   its own rules (and set member); a delete takes exactly its rules by
//!   handle; the last network takes the table (NW-09); the table is
//!   regenerated whole at start and when found missing or changed:
//!   isolation between berth bridges (set `bridges`), internal networks
//!   cut off, containers protected from routed traffic that was not
//!   published, masquerade (or SNAT to `com.docker.network.host_ipv4`),
//!   published ports as DNAT from the host (prerouting and output), hairpin
//!   and `127.0.0.1` published ports masqueraded.
//! * **firewalld** ([`firewalld`]), where it runs on the D-Bus system bus:
//!   the bridges go into zone `berth` (target ACCEPT) with policy
//!   `berth-forwarding`, as dockerd does with its `docker` zone.
//! * **Sysctls**: `net.ipv4.ip_forward=1` for a non-internal network (and
//!   `net.ipv6.conf.all.forwarding=1` with IPv6), as dockerd does;
//!   `route_localnet=1` on bridges it creates.
//!
//! # Rules
//!
//! * Scope `local`. A network needs an IPv4 pool; pools and gateways are
//!   checked (NW-06). The same id again is already-exists; a bridge name or
//!   subnet used by another network is conflict.
//! * Endpoints need an IPv4 address in the network's subnet; the driver
//!   answers the MAC it generated. `com.docker.network.portmap` in the
//!   endpoint, join or external-connectivity options is published by
//!   `program_external_connectivity` (host port 0 or a range takes a free
//!   one) and withdrawn by `revoke_external_connectivity` and `leave`;
//!   `endpoint_info` reports the bindings.
//! * Every delete is idempotent; teardown tries every step and reports all
//!   failures together.
//!
//! State lives in `<root>/bridge-state.json` so a restarted daemon finds
//! its networks; at start the driver recreates missing bridges it owns and
//! reprograms the table.

#![deny(missing_docs)]

mod driver;
pub mod export;
pub mod firewalld;
pub mod libnft;
pub mod netutil;
pub mod nft;
pub mod options;
pub mod rtnl;
pub mod state;

pub use driver::{BridgeDriver, Opts, EPHEMERAL_PORTS, HOST_VETH_PREFIX, PEER_VETH_PREFIX};
pub use state::STATE_FILE;
