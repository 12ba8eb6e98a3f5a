//! Addresses, sockets and the pool of keep-alive connections of a plugin.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_plugin_api::{DriverError, DriverResult};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SocketAddrUnix, SocketFlags, SocketType};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::http::Conn;
use super::tls::{self, TlsConfig};

/// The `Host` header sent over unix sockets (moby's since 2023).
pub(crate) const UNIX_HOST: &str = "plugin.moby.localhost";

/// Idle connections kept per plugin (moby's `MaxIdleConns`).
pub(crate) const MAX_IDLE: usize = 6;

/// How long a connection may sit idle in the pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The identity of a socket file: device, inode and change time. A
/// plugin that restarts on the same path binds a new file.
pub(crate) type FileId = (u64, u64, i64, i64);

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// `unix:///path/to.sock`.
    Unix(PathBuf),
    /// `tcp://`, `http://` (plain) or `https://` (TLS) `host:port`.
    Tcp {
        /// The host as written (brackets kept for IPv6).
        host: String,
        /// The port.
        port: u16,
        /// Whether the scheme is `https`.
        tls: bool,
    },
}

impl Address {
    /// Parses `unix:///path`, `tcp://host:port`, `http://host:port` or
    /// `https://host[:port]`. A path after the host is ignored, as moby
    /// does: requests always go to `/<Subsystem>.<Method>`.
    pub(crate) fn parse(url: &str) -> DriverResult<Address> {
        let bad = |why: &str| {
            DriverError::invalid_argument(format!(
                "plugin address {url:?} {why}: use unix:///path, tcp://host:port or https://host:port"
            ))
        };
        let (scheme, rest) = url.trim().split_once("://").ok_or_else(|| bad("has no protocol"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "unix" {
            if rest.is_empty() {
                return Err(bad("names no socket"));
            }
            return Ok(Address::Unix(PathBuf::from(rest)));
        }
        let tls = match scheme.as_str() {
            "tcp" | "http" => false,
            "https" => true,
            _ => return Err(bad("has an unknown protocol")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(|| bad("has an unclosed '['"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("names no host"));
        }
        let port = match (port, scheme.as_str()) {
            (Some(p), _) => p.parse::<u16>().map_err(|_| bad("has an invalid port"))?,
            (None, "http") => 80,
            (None, "https") => 443,
            (None, _) => return Err(bad("names no port")),
        };
        Ok(Address::Tcp { host, port, tls })
    }

    /// `unix`, `tcp` or `https`.
    pub(crate) fn transport(&self) -> &'static str {
        match self {
            Address::Unix(_) => "unix",
            Address::Tcp { tls: false, .. } => "tcp",
            Address::Tcp { tls: true, .. } => "https",
        }
    }

    /// The `Host` header.
    pub(crate) fn host_header(&self) -> String {
        match self {
            Address::Unix(_) => UNIX_HOST.to_string(),
            Address::Tcp { host, port, .. } => format!("{host}:{port}"),
        }
    }
}

/// A connected socket, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
            Stream::Tls(s) => s.sock.as_fd(),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(Some(t)),
            Stream::Tcp(s) => s.set_read_timeout(Some(t)),
            Stream::Tls(s) => s.sock.set_read_timeout(Some(t)),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(Some(t)),
            Stream::Tcp(s) => s.set_write_timeout(Some(t)),
            Stream::Tls(s) => s.sock.set_write_timeout(Some(t)),
        }
    }

    /// Whether an idle connection can no longer be used: the plugin
    /// closed it (or sent something unasked). One non-blocking peek.
    pub(crate) fn is_stale(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(
            rustix::net::recv(self.fd(), &mut byte[..], RecvFlags::PEEK | RecvFlags::DONTWAIT),
            Err(Errno::AGAIN)
        )
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) struct ConnectError {
    /// What failed.
    pub(crate) error: io::Error,
    /// Whether trying again may help (not for a refused TLS handshake).
    pub(crate) retryable: bool,
}

impl From<io::Error> for ConnectError {
    fn from(error: io::Error) -> Self {
        ConnectError { error, retryable: true }
    }
}

/// Makes connections to one address.
#[derive(Debug)]
pub(crate) struct Connector {
    address: Address,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Connector {
    /// A connector for `address`; builds the TLS client for `https`.
    pub(crate) fn new(address: Address, tls: Option<&TlsConfig>) -> DriverResult<Connector> {
        let tls = match &address {
            Address::Tcp { host, tls: true, .. } => Some((tls::client_config(tls)?, tls::server_name(host)?)),
            _ => None,
        };
        Ok(Connector { address, tls })
    }

    /// The address.
    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// Connects within `timeout` (TLS handshake included). For a unix
    /// socket the connection also records the socket file's identity.
    pub(crate) fn connect(&self, timeout: Duration) -> Result<Conn, ConnectError> {
        match &self.address {
            Address::Unix(path) => {
                let stream = connect_unix(path, timeout)?;
                let inode =
                    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()));
                Ok(Conn::new(Stream::Unix(stream), inode))
            }
            Address::Tcp { host, port, .. } => {
                let start = Instant::now();
                let sock = connect_tcp(host, *port, timeout)?;
                let Some((config, name)) = &self.tls else {
                    return Ok(Conn::new(Stream::Tcp(sock), None));
                };
                let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_millis(1));
                sock.set_read_timeout(Some(left))?;
                sock.set_write_timeout(Some(left))?;
                let conn = ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(|e| ConnectError { error: io::Error::other(e), retryable: false })?;
                let mut tls = StreamOwned::new(conn, sock);
                while tls.conn.is_handshaking() {
                    if let Err(error) = tls.conn.complete_io(&mut tls.sock) {
                        // A refused certificate will be refused again.
                        let retryable = !matches!(error.kind(), io::ErrorKind::InvalidData);
                        let error = io::Error::new(error.kind(), format!("tls handshake: {error}"));
                        return Err(ConnectError { error, retryable });
                    }
                }
                Ok(Conn::new(Stream::Tls(Box::new(tls)), None))
            }
        }
    }
}

/// Connects to a unix socket without ever blocking past `timeout`: a
/// plugin that stopped accepting fills its listen queue, and a blocking
/// `connect` would then wait forever.
fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let addr = SocketAddrUnix::new(path)?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let start = Instant::now();
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            // The listen queue is full (the plugin does not accept).
            Err(Errno::AGAIN) | Err(Errno::INTR) => {
                if start.elapsed() >= timeout {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect: the socket's listen queue stayed full for {timeout:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let start = Instant::now();
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
    for addr in (bare, port).to_socket_addrs()? {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect: no answer in {timeout:?}"),
            ));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The idle keep-alive connections of one plugin. The lock is held only
/// to push or pop, never across I/O.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl Pool {
    /// The most recently used idle connection younger than
    /// [`IDLE_TIMEOUT`], if any (older ones are closed).
    pub(crate) fn take(&self) -> Option<Conn> {
        let mut expired = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match idle.pop() {
                    Some((mut conn, since)) if since.elapsed() < IDLE_TIMEOUT => {
                        conn.reused = true;
                        break Some(conn);
                    }
                    Some((conn, _)) => expired.push(conn),
                    None => break None,
                }
            }
        };
        drop(expired);
        found
    }

    /// Keeps `conn` for the next call, unless [`MAX_IDLE`] are idle already.
    pub(crate) fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Closes every idle connection (after the plugin was seen gone).
    pub(crate) fn clear(&self) {
        let drained: Vec<_> = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        drop(drained);
    }

    /// How many connections are idle.
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_moby() {
        assert_eq!(Address::parse("unix:///run/x.sock").unwrap(), Address::Unix("/run/x.sock".into()));
        assert_eq!(
            Address::parse("tcp://127.0.0.1:8080/ignored/path").unwrap(),
            Address::Tcp { host: "127.0.0.1".into(), port: 8080, tls: false }
        );
        assert_eq!(
            Address::parse("https://plugins.example").unwrap(),
            Address::Tcp { host: "plugins.example".into(), port: 443, tls: true }
        );
        assert_eq!(
            Address::parse("http://[::1]:9000").unwrap(),
            Address::Tcp { host: "[::1]".into(), port: 9000, tls: false }
        );
        assert_eq!(Address::parse("HTTPS://h:1").unwrap().transport(), "https");
        for bad in [
            "/run/x.sock",
            "localhost:8080",
            "npipe:////./pipe/x",
            "tcp://host",
            "tcp://:80",
            "unix://",
            "tcp://h:99999",
        ] {
            let e = Address::parse(bad).unwrap_err();
            assert_eq!(e.kind, berth_plugin_api::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(bad), "{}", e.message);
        }
        assert_eq!(Address::parse("unix:///x").unwrap().host_header(), UNIX_HOST);
        assert_eq!(Address::parse("tcp://h:1").unwrap().host_header(), "h:1");
    }

    #[test]
    fn a_missing_socket_and_a_refused_port_fail_fast() {
        let dir = tempfile::tempdir().unwrap();
        let e = connect_unix(&dir.path().join("none.sock"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = connect_tcp("127.0.0.1", port, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_full_listen_queue_times_out_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        // A listener that never accepts: its queue fills up.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut held = Vec::new();
        let start = Instant::now();
        let err = loop {
            match connect_unix(&path, Duration::from_millis(50)) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 100_000, "the queue never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_pool_keeps_at_most_six_and_detects_closed_peers() {
        let (a, b) = UnixStream::pair().unwrap();
        let pool = Pool::default();
        pool.put(Conn::new(Stream::Unix(a), None));
        let conn = pool.take().unwrap();
        assert!(!conn.stream().is_stale());
        drop(b);
        assert!(conn.stream().is_stale());
        for _ in 0..10 {
            let (a, _b) = UnixStream::pair().unwrap();
            pool.put(Conn::new(Stream::Unix(a), None));
        }
        assert_eq!(pool.idle(), MAX_IDLE);
        pool.clear();
        assert!(pool.take().is_none());
    }
}
