//! The client side of Docker's v1 plugin protocol: berthd using a driver
//! that runs in another process and answers HTTP on a unix socket or TCP.
//!
//! The protocol is described in `shared/reference/docker-plugin-protocol.md`;
//! this module follows it (and moby's client) except where noted.
//!
//! # Pieces
//!
//! * [`Discovery`] finds a plugin by name the way dockerd does: sockets in
//!   `/run/berth/plugins` and `/run/docker/plugins`, then `.spec` and
//!   `.json` files in `/etc/berth/plugins`, `/etc/docker/plugins` and
//!   `/usr/lib/docker/plugins`.
//! * [`RemotePlugin`] is one plugin process: its address, a pool of
//!   keep-alive connections (≤ 6 idle, dropped after 30 s idle), a circuit
//!   breaker and the cached answer of `/Plugin.Activate`. It is shared
//!   through an `Arc`; every method may be called from many threads.
//! * [`RemoteVolume`], [`RemoteNetwork`], [`RemoteIpam`] and
//!   [`RemoteStorage`] implement the driver traits of `berth-plugin-api`
//!   over one plugin, one method per endpoint.
//!
//! # Calls
//!
//! A call is a `POST` of a JSON body (empty for the no-argument calls, `{}`
//! for the empty-struct ones) and answers are decoded as leniently as Go
//! does ([`berth_plugin_api::remote::tolerant`]). Every call has a
//! deadline (its per-method timeout, see [`RemoteOptions`]) enforced on the
//! socket, so a hung plugin frees the calling thread with
//! [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). The deadline covers
//! activation, connection retries and the exchange.
//!
//! Only errors that prove the request never reached the plugin (socket
//! missing, connection refused, connect timeout) are retried, with back-off
//! 250 ms, 500 ms, 1 s, 2 s, … within [`RemoteOptions::retry_window`], so
//! a plugin that starts a few seconds late is still used. (moby also
//! retries a connection that breaks after the request was sent; berth does
//! not, so a `Mount` is never sent twice.) A keep-alive connection that
//! the plugin closed while it sat in the pool is retried once on a fresh
//! connection.
//!
//! After [`RemoteOptions::breaker_threshold`] consecutive calls failed for
//! transport reasons or timed out, the breaker opens: calls fail fast with
//! [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) without
//! touching the network while a background thread probes
//! `/Plugin.Activate` (250 ms doubling to 5 s); its first success closes
//! the breaker.
//!
//! Activation happens on first use and is cached; unlike dockerd, berth
//! activates again after the plugin was seen unreachable, or when the
//! socket file behind a new connection is not the one activation used
//! (the plugin restarted on the same path).

#![deny(missing_docs)]

mod breaker;
mod discovery;
mod http;
mod ipam;
mod network;
mod plugin;
mod storage;
mod tls;
mod transport;
mod util;
mod volume;

#[cfg(test)]
pub(crate) mod test_server;

/// Unit-test plumbing: a scripted plugin on a temporary unix socket.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    pub(crate) use super::test_server::{activate, Reply, Request, Server};
    use super::{RemoteOptions, RemotePlugin};

    /// A plugin named `p` implementing `implements`, answering every other
    /// request with `handler`.
    pub(crate) fn plugin(
        implements: &'static [&'static str],
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> (tempfile::TempDir, Server, Arc<RemotePlugin>) {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::unix(&dir.path().join("p.sock"), move |r| {
            if r.path == "/Plugin.Activate" {
                activate(implements)
            } else {
                handler(r)
            }
        });
        let plugin = RemotePlugin::new("p", &server.address, RemoteOptions::default()).unwrap();
        (dir, server, plugin)
    }
}

use std::collections::BTreeMap;
use std::time::Duration;

pub use discovery::{Discovery, Found};
pub use ipam::RemoteIpam;
pub use network::RemoteNetwork;
pub use plugin::{RemotePlugin, RemoteStatus};
pub use storage::{GraphCapabilities, RemoteStorage};
pub use tls::TlsConfig;
pub use volume::RemoteVolume;

/// The default deadline of a call when [`RemoteOptions::timeout`] is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest JSON answer read by default (16 MiB).
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// How a [`RemotePlugin`] is called.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The deadline of every call. `None` (the default) gives 30 s, except
    /// for volume calls, which get moby's deadlines: `VolumeDriver.Create`
    /// and `VolumeDriver.Mount` 2 min, every other `VolumeDriver.*` 1 min.
    /// `Some(t)` gives `t` to every call.
    pub timeout: Option<Duration>,
    /// Per-method deadlines overriding `timeout`. Keys are a method
    /// (`"Mount"`, any subsystem) or a qualified method
    /// (`"VolumeDriver.Mount"`, which wins; `"Plugin.Activate"` for the
    /// handshake). For `GraphDriver.Diff` and `GraphDriver.ApplyDiff`,
    /// which stream layer tars, the deadline bounds each read and write
    /// (no progress for that long is a timeout), not the whole transfer.
    pub method_timeouts: BTreeMap<String, Duration>,
    /// How long calls keep retrying a plugin that cannot be reached
    /// (default 15 s, moby's effective window). Never past a call's own
    /// deadline.
    pub retry_window: Duration,
    /// Consecutive calls failing for transport reasons or timing out after
    /// which the breaker opens (default 3; 0 disables the breaker).
    pub breaker_threshold: u32,
    /// TLS settings for `https://` addresses; `None` verifies the server
    /// against the system roots (`/etc/ssl/certs/ca-certificates.crt`).
    pub tls: Option<TlsConfig>,
    /// The largest JSON answer accepted, in bytes (default 16 MiB); a
    /// larger one ends the call with
    /// [`ErrorKind::ResourceExhausted`](crate::ErrorKind::ResourceExhausted).
    pub max_body: usize,
    /// The longest wait for one connection to be made (default 10 s,
    /// moby's dial timeout), within the call's deadline.
    pub connect_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            timeout: None,
            method_timeouts: BTreeMap::new(),
            retry_window: Duration::from_secs(15),
            breaker_threshold: 3,
            tls: None,
            max_body: DEFAULT_MAX_BODY,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl RemoteOptions {
    /// The deadline of `method` of `subsystem` (`"VolumeDriver"`,
    /// `"Plugin"` for the handshake): the qualified override, then the
    /// plain one, then `timeout`, then the built-in defaults.
    pub fn timeout_for(&self, subsystem: &str, method: &str) -> Duration {
        if let Some(t) = self.method_timeouts.get(&format!("{subsystem}.{method}")) {
            return *t;
        }
        if let Some(t) = self.method_timeouts.get(method) {
            return *t;
        }
        if let Some(t) = self.timeout {
            return t;
        }
        match (subsystem, method) {
            ("VolumeDriver", "Create" | "Mount") => Duration::from_secs(120),
            ("VolumeDriver", _) => Duration::from_secs(60),
            _ => DEFAULT_TIMEOUT,
        }
    }

    /// The longest deadline any call can get: what a caller's own deadline
    /// around these calls should be at least.
    pub fn max_timeout(&self) -> Duration {
        let base = match self.timeout {
            Some(t) => t,
            None => Duration::from_secs(120),
        };
        self.method_timeouts.values().copied().fold(base, Duration::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_resolve_qualified_then_plain_then_default_then_builtin() {
        let mut o = RemoteOptions::default();
        assert_eq!(o.timeout_for("VolumeDriver", "Mount"), Duration::from_secs(120));
        assert_eq!(o.timeout_for("VolumeDriver", "Get"), Duration::from_secs(60));
        assert_eq!(o.timeout_for("NetworkDriver", "Join"), DEFAULT_TIMEOUT);
        assert_eq!(o.max_timeout(), Duration::from_secs(120));
        o.timeout = Some(Duration::from_secs(5));
        assert_eq!(o.timeout_for("VolumeDriver", "Mount"), Duration::from_secs(5));
        o.method_timeouts.insert("Mount".into(), Duration::from_secs(7));
        o.method_timeouts.insert("VolumeDriver.Mount".into(), Duration::from_secs(9));
        assert_eq!(o.timeout_for("VolumeDriver", "Mount"), Duration::from_secs(9));
        assert_eq!(o.timeout_for("GraphDriver", "Mount"), Duration::from_secs(7));
        assert_eq!(o.max_timeout(), Duration::from_secs(9));
    }
}
