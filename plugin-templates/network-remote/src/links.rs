//! The driver's one seam to the host: the four link operations it needs.
//!
//! [`IpLinks`] does them with the `ip` command of iproute2 (through
//! berth-plugin-api's command runner: `LC_ALL=C`, found in `PATH` or the
//! sbin directories, killed after a deadline), which keeps each step easy
//! to read and to try by hand. A driver that would rather speak netlink
//! itself implements [`Links`] with a netlink crate instead. Unit tests use
//! an in-memory fake, so they run unprivileged.

use std::fmt;
use std::time::Duration;

use berth_plugin_api::util::command::{Cmd, HostRunner, Output, Runner};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};

use crate::state::Endpoint;

/// Links in the host's network namespace. Every method may be called from
/// many threads at once.
pub trait Links: Send + Sync + fmt::Debug {
    /// Whether link `name` exists.
    fn exists(&self, name: &str) -> DriverResult<bool>;

    /// Creates bridge `name`, up, with `mtu` if given.
    fn add_bridge(&self, name: &str, mtu: Option<u32>) -> DriverResult<()>;

    /// Creates endpoint `ep`'s veth pair in one step (so there is never
    /// half a pair): `ep.host` up and enslaved to `bridge`, `ep.peer` down
    /// with MAC address `ep.mac`; both with `mtu` if given.
    fn add_veth(&self, ep: &Endpoint, bridge: &str, mtu: Option<u32>) -> DriverResult<()>;

    /// Deletes link `name` (for a veth end, the kernel deletes the other
    /// end with it, wherever it is). A link that is not there is deleted
    /// already: that is success.
    fn delete(&self, name: &str) -> DriverResult<()>;
}

/// [`Links`] with the `ip` command.
#[derive(Debug, Default, Clone, Copy)]
pub struct IpLinks;

/// `ip link add` for a bridge.
pub fn bridge_args(name: &str, mtu: Option<u32>) -> Vec<String> {
    let mut args = vec!["link", "add", "name", name];
    let mtu = mtu.map(|m| m.to_string());
    if let Some(m) = &mtu {
        args.extend(["mtu", m]);
    }
    args.extend(["up", "type", "bridge"]);
    args.into_iter().map(String::from).collect()
}

/// `ip link add` for a veth pair: one netlink request makes both ends.
pub fn veth_args(ep: &Endpoint, bridge: &str, mtu: Option<u32>) -> Vec<String> {
    let mtu = mtu.map(|m| m.to_string());
    let mtu: Vec<&str> = mtu.iter().flat_map(|m| ["mtu", m.as_str()]).collect();
    let mut args = vec!["link", "add", "name", &ep.host];
    args.extend(&mtu);
    args.extend(["master", bridge, "up", "type", "veth", "peer", "name", &ep.peer]);
    args.extend(&mtu);
    args.extend(["address", &ep.mac]);
    args.into_iter().map(String::from).collect()
}

impl IpLinks {
    /// Runs `ip args…`; an error only when it could not run at all.
    fn ip(&self, args: &[String]) -> DriverResult<(Cmd, Output)> {
        let mut cmd = Cmd::new(std::iter::once("ip".to_string()).chain(args.iter().cloned()));
        cmd.timeout = Duration::from_secs(30);
        match HostRunner.run(&cmd) {
            Ok(out) => Ok((cmd, out)),
            Err(e) => Err(DriverError::io(format_args!("run `{cmd}`"), &e)),
        }
    }

    /// Runs `ip args…`, which must succeed.
    fn ip_ok(&self, args: &[String]) -> DriverResult<()> {
        let (cmd, out) = self.ip(args)?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(&cmd, &out))
        }
    }
}

/// The error of an `ip` command that ran and failed, with the kind its
/// message (in the C locale) says.
fn failed(cmd: &Cmd, out: &Output) -> DriverError {
    let said = out.stderr.trim();
    let kind = if said.contains("File exists") {
        ErrorKind::AlreadyExists
    } else if said.contains("Operation not permitted") {
        ErrorKind::PermissionDenied
    } else if said.contains("Cannot find device") || said.contains("does not exist") {
        ErrorKind::NotFound
    } else {
        ErrorKind::Internal
    };
    DriverError::new(kind, format!("`{cmd}` failed: {said}"))
}

impl Links for IpLinks {
    fn exists(&self, name: &str) -> DriverResult<bool> {
        let (cmd, out) = self.ip(&["-o".into(), "link".into(), "show".into(), "dev".into(), name.into()])?;
        if out.success() {
            Ok(true)
        } else if out.stderr.contains("does not exist") {
            Ok(false)
        } else {
            Err(failed(&cmd, &out))
        }
    }

    fn add_bridge(&self, name: &str, mtu: Option<u32>) -> DriverResult<()> {
        self.ip_ok(&bridge_args(name, mtu))
    }

    fn add_veth(&self, ep: &Endpoint, bridge: &str, mtu: Option<u32>) -> DriverResult<()> {
        self.ip_ok(&veth_args(ep, bridge, mtu))
    }

    fn delete(&self, name: &str) -> DriverResult<()> {
        let (cmd, out) = self.ip(&["link".into(), "del".into(), "dev".into(), name.into()])?;
        // Failed because it is gone (never made, deleted already, or taken
        // with its peer's namespace): deleted all the same.
        if out.success() || !self.exists(name)? {
            Ok(())
        } else {
            Err(failed(&cmd, &out))
        }
    }
}

/// An in-memory [`Links`] for unit tests: links by name, with the kernel's
/// rules the driver relies on (names are unique, a veth pair goes as one).
#[cfg(test)]
pub mod fake {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// A fake link.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Link {
        /// `bridge` or `veth`.
        pub kind: &'static str,
        /// Its MTU, if one was set.
        pub mtu: Option<u32>,
        /// The bridge it is enslaved to.
        pub master: Option<String>,
        /// The other end of a veth pair.
        pub peer: Option<String>,
        /// Its MAC, if one was set.
        pub mac: Option<String>,
    }

    /// The fake host.
    #[derive(Debug, Default)]
    pub struct FakeLinks {
        /// Every link, by name.
        pub links: Mutex<BTreeMap<String, Link>>,
    }

    impl FakeLinks {
        /// The names of every link.
        pub fn names(&self) -> Vec<String> {
            self.links.lock().unwrap().keys().cloned().collect()
        }

        /// Link `name`, if it exists.
        pub fn get(&self, name: &str) -> Option<Link> {
            self.links.lock().unwrap().get(name).cloned()
        }
    }

    fn exists_error(name: &str) -> DriverError {
        DriverError::already_exists(format!("link {name}: File exists"))
    }

    impl Links for FakeLinks {
        fn exists(&self, name: &str) -> DriverResult<bool> {
            Ok(self.links.lock().unwrap().contains_key(name))
        }

        fn add_bridge(&self, name: &str, mtu: Option<u32>) -> DriverResult<()> {
            let mut links = self.links.lock().unwrap();
            if links.contains_key(name) {
                return Err(exists_error(name));
            }
            links.insert(name.into(), Link { kind: "bridge", mtu, master: None, peer: None, mac: None });
            Ok(())
        }

        fn add_veth(&self, ep: &Endpoint, bridge: &str, mtu: Option<u32>) -> DriverResult<()> {
            let (host, peer) = (ep.host.as_str(), ep.peer.as_str());
            let mut links = self.links.lock().unwrap();
            if let Some(n) = [host, peer].into_iter().find(|n| links.contains_key(*n)) {
                return Err(exists_error(n));
            }
            if !links.contains_key(bridge) {
                return Err(DriverError::not_found(format!("Cannot find device {bridge:?}")));
            }
            let end = |master: Option<&str>, peer: &str, mac: Option<&str>| Link {
                kind: "veth",
                mtu,
                master: master.map(String::from),
                peer: Some(peer.into()),
                mac: mac.map(String::from),
            };
            links.insert(host.into(), end(Some(bridge), peer, None));
            links.insert(peer.into(), end(None, host, Some(&ep.mac)));
            Ok(())
        }

        fn delete(&self, name: &str) -> DriverResult<()> {
            let mut links = self.links.lock().unwrap();
            if let Some(peer) = links.remove(name).and_then(|l| l.peer) {
                links.remove(&peer);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        let (host, peer, mac) = ("vh-1".into(), "vp-1".into(), "02:00:00:00:00:01".into());
        Endpoint { host, peer, mac, sandbox: String::new() }
    }

    #[test]
    fn command_lines_make_each_link_in_one_step() {
        assert_eq!(bridge_args("vb-1", None).join(" "), "link add name vb-1 up type bridge");
        assert_eq!(bridge_args("vb-1", Some(9000)).join(" "), "link add name vb-1 mtu 9000 up type bridge");
        assert_eq!(
            veth_args(&endpoint(), "vb-1", Some(1400)).join(" "),
            "link add name vh-1 mtu 1400 master vb-1 up type veth peer name vp-1 mtu 1400 address 02:00:00:00:00:01"
        );
        assert_eq!(
            veth_args(&endpoint(), "vb-1", None).join(" "),
            "link add name vh-1 master vb-1 up type veth peer name vp-1 address 02:00:00:00:00:01"
        );
    }

    #[test]
    fn failures_keep_the_kind_the_message_says() {
        let cmd = Cmd::new(["ip", "link", "add"]);
        let out = |stderr: &str| Output { code: Some(2), stdout: String::new(), stderr: stderr.into() };
        assert_eq!(failed(&cmd, &out("RTNETLINK answers: File exists")).kind, ErrorKind::AlreadyExists);
        assert_eq!(
            failed(&cmd, &out("RTNETLINK answers: Operation not permitted")).kind,
            ErrorKind::PermissionDenied
        );
        assert_eq!(failed(&cmd, &out("Cannot find device \"x\"")).kind, ErrorKind::NotFound);
        let e = failed(&cmd, &out("Error: something else."));
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("`ip link add` failed: Error: something else."), "{}", e.message);
    }
}
