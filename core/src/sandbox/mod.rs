//! Sandboxes, libnetwork's model: a **sandbox** is a network namespace the
//! core creates, kept as a bind-mounted file (its *key*,
//! `<exec_root>/netns/<id>`), that endpoints join.
//!
//! * [`create`] makes the namespace on a dedicated thread
//!   (`unshare(CLONE_NEWNET)`), bind-mounts it at the key and brings its
//!   loopback up; [`remove`] detaches the mount and deletes the file
//!   (whatever interface is still inside dies with the namespace; a veth
//!   end takes its peer with it).
//! * [`join`] moves the interface a network driver named
//!   (`InterfaceName.src_name`, in the host namespace) into the sandbox,
//!   renames it `dst_prefix` + the next free index (`eth0`, `eth1`, …), sets
//!   its MAC, MTU and addresses, brings it up, and adds the static routes
//!   and default gateways. [`leave`] takes it down, renames it back and
//!   moves it out for the driver to delete — or deletes it in place when it
//!   cannot be moved — so nothing is left.
//!
//! Everything goes through rtnetlink ([`netlink`]), synchronously, with no
//! external command. `setns` only ever runs on dedicated short-lived
//! threads, so every function here may be called from any thread of a
//! multi-threaded daemon — as long as that thread is in the host namespace,
//! which every thread not made here is.
//!
//! A sandbox on a `host` network has no namespace of its own: its key is
//! [`bind_host`]'s file of the daemon's namespace (moby's `netns/default`),
//! and nothing is moved or configured.

mod join;
pub mod netlink;
mod netns;

pub use join::{
    evict_others, join, leave, links, set_default_routes, unset_default_routes, JoinSpec, Joined, Route,
    DEFAULT_PREFIX,
};
pub use netns::{bind_host, create, is_netns, remove, run_in};

/// The directory of namespace files under the exec root.
pub const NETNS_DIR: &str = "netns";

/// The key of the daemon's own namespace, shared by host sandboxes.
pub const HOST_KEY: &str = "default";
