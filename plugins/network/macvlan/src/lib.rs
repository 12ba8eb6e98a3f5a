//! berth network driver `macvlan`: one macvlan link per endpoint on a
//! parent link, so containers appear on the parent's segment with MAC
//! addresses of their own.
//!
//! # What it programs
//!
//! * Per endpoint a macvlan link `mvb…` (a hash of the network and
//!   endpoint ids) on the network's parent, in the network's mode
//!   (`macvlan_mode`: `bridge` by default, `private`, `vepa`, `passthru`),
//!   with the requested MAC or a generated one (`02:42:` + the IPv4
//!   address; none in passthru mode, where the link takes the parent's) and
//!   the network's MTU if given (at most the parent's). The core moves it
//!   into the sandbox ([`InterfaceName::src_name`](berth_plugin_api::network::InterfaceName), prefix `eth`).
//! * A parent written `<link>.<vlan>` (`veth0.10`) that does not exist is
//!   created as an 802.1Q sub-interface, shared by every network that
//!   names it, and removed with the last of them; a parent the operator
//!   made is never deleted (NW-11).
//! * No parent (or `--internal`, as in Docker) means a dummy link
//!   `dm-<first 12 of the id>` stands in; on a kernel without dummy links
//!   that is refused as invalid-argument, saying so.
//!
//! Nothing is programmed in the firewall: macvlan endpoints sit on the
//! parent's segment, and there are no published ports. Networks on one
//! parent may not overlap; a passthru network needs its parent alone and
//! takes one endpoint.
//!
//! State lives in `<root>/macvlan-state.json`; at start the driver
//! recreates parent links it made that are gone (after a reboot).

#![deny(missing_docs)]

mod driver;
pub mod export;
#[path = "../../bridge/src/netutil.rs"]
pub mod netutil;
pub mod options;
#[allow(dead_code)]
#[path = "../../bridge/src/rtnl.rs"]
mod rtnl;
pub mod state;

pub use driver::{MacvlanDriver, Opts, LINK_PREFIX};
pub use state::STATE_FILE;
