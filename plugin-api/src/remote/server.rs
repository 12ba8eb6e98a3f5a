//! Serves driver trait impls over Docker's v1 plugin protocol: a small
//! blocking HTTP/1.1 server on a unix socket or TCP, one thread per
//! connection, no async runtime.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use berth_plugin_api::remote::server::{Handlers, Listen, Server};
//! # fn volume_driver() -> Arc<dyn berth_plugin_api::VolumeDriver> { unimplemented!() }
//! let handlers = Handlers { volume: Some(volume_driver()), ..Handlers::default() };
//! let listen: Listen = "unix:///run/docker/plugins/mine.sock".parse()?;
//! let server = Server::bind(&listen, handlers)?.spawn()?;
//! println!("serving on {}", server.address());
//! // ... later:
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What it answers
//!
//! * `POST /Plugin.Activate`: `{"Implements": [...]}`, the subsystems that
//!   have a handler, in the order GraphDriver, NetworkDriver, IpamDriver,
//!   VolumeDriver.
//! * `POST /<Subsystem>.<Method>` for every method of sections 4–7 of the
//!   protocol reference: the body is decoded with Go's rules
//!   ([`crate::remote::tolerant`]), the trait method is called, and its
//!   answer goes back as `200` JSON (newline-terminated,
//!   [`crate::remote::wire::CONTENT_TYPE`]).
//! * A driver error: `500` with `{"Err": msg, "Kind": kind}`; a panic in a
//!   driver: `500` with kind `internal` (the server keeps serving).
//! * A body that does not decode: `400` with kind `invalid_argument`
//!   naming the method. A body over the limit: `413`. A head over 64 KiB
//!   or 64 headers: `431`.
//! * An unknown path, or a subsystem without handler: `404` with
//!   `{"Err": "... not implemented"}` (dockerd reads 404 as "optional
//!   method not implemented"). Any method but `POST`: `405`.
//!
//! # HTTP
//!
//! HTTP/1.1 keep-alive (HTTP/1.0 only with `Connection: keep-alive`);
//! `Connection: close` honoured; request bodies sized or chunked;
//! `Expect: 100-continue` answered; no `Content-Type` required; any `Host`
//! accepted. `GraphDriver.Diff` answers a chunked tar stream and
//! `GraphDriver.ApplyDiff` streams the request body into the driver, both
//! without size limit. Idle connections close after the idle timeout
//! (default 5 minutes).

mod conn;
mod graph;
mod ipam;
mod network;
mod routes;
mod volume;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::remote::http::Stream;
use crate::remote::wire::Subsystem;
use crate::{IpamDriver, NetworkDriver, StorageDriver, VolumeDriver};

/// The default limit of a JSON request body: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

/// The default time an idle connection stays open: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long [`ServerHandle::shutdown`] waits for calls in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The drivers a server serves: one optional handler per subsystem.
#[derive(Clone, Default)]
pub struct Handlers {
    /// `VolumeDriver`.
    pub volume: Option<Arc<dyn VolumeDriver>>,
    /// `NetworkDriver`.
    pub network: Option<Arc<dyn NetworkDriver>>,
    /// `IpamDriver`.
    pub ipam: Option<Arc<dyn IpamDriver>>,
    /// `GraphDriver`.
    pub storage: Option<Arc<dyn StorageDriver>>,
}

impl Handlers {
    /// The subsystems that have a handler, in handshake order (GraphDriver,
    /// NetworkDriver, IpamDriver, VolumeDriver).
    pub fn subsystems(&self) -> Vec<Subsystem> {
        Subsystem::ALL
            .into_iter()
            .filter(|s| match s {
                Subsystem::Graph => self.storage.is_some(),
                Subsystem::Network => self.network.is_some(),
                Subsystem::Ipam => self.ipam.is_some(),
                Subsystem::Volume => self.volume.is_some(),
            })
            .collect()
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handlers")
            .field("volume", &self.volume.is_some())
            .field("network", &self.network.is_some())
            .field("ipam", &self.ipam.is_some())
            .field("storage", &self.storage.is_some())
            .finish()
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A unix socket at this path.
    Unix(PathBuf),
    /// A TCP address (port 0 picks a free port).
    Tcp(SocketAddr),
}

/// Why a listen address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address {input:?}: {reason}")]
pub struct ParseListenError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Listen {
    type Err = ParseListenError;

    /// Parses `unix:///path`, an absolute path, or `tcp://host:port`.
    fn from_str(text: &str) -> Result<Listen, ParseListenError> {
        let fail = |reason: &str| ParseListenError { input: text.to_string(), reason: reason.to_string() };
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(fail("the unix socket path is empty"));
            }
            Ok(Listen::Unix(PathBuf::from(path)))
        } else if let Some(addr) = text.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            if let Ok(a) = addr.parse() {
                return Ok(Listen::Tcp(a));
            }
            let mut found = addr.to_socket_addrs().map_err(|e| fail(&format!("cannot resolve it: {e}")))?;
            found.next().map(Listen::Tcp).ok_or_else(|| fail("it resolves to no address"))
        } else if text.starts_with('/') {
            Ok(Listen::Unix(PathBuf::from(text)))
        } else {
            Err(fail("expected unix:///path, /path or tcp://host:port"))
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix://{}", path.display()),
            Listen::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// A bound, not yet serving server.
#[derive(Debug)]
pub struct Server {
    listener: Listener,
    local: Listen,
    socket: Option<SocketFile>,
    handlers: Handlers,
    body_limit: usize,
    idle_timeout: Duration,
}

impl Server {
    /// Binds `listen`. For a unix socket the parent directory is created, a
    /// stale socket file is removed (a live one, where a server answers, is
    /// `AddrInUse`; a file that is not a socket is left alone and is
    /// `AlreadyExists`), and the socket gets mode `0660`.
    pub fn bind(listen: &Listen, handlers: Handlers) -> io::Result<Server> {
        let (listener, local, socket) = match listen {
            Listen::Unix(path) => {
                let path = std::path::absolute(path)?;
                let listener = bind_unix(&path)?;
                let socket = SocketFile::new(&path)?;
                (Listener::Unix(listener), Listen::Unix(path), Some(socket))
            }
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr)?;
                let local = listener.local_addr()?;
                (Listener::Tcp(listener), Listen::Tcp(local), None)
            }
        };
        Ok(Server {
            listener,
            local,
            socket,
            handlers,
            body_limit: DEFAULT_BODY_LIMIT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// Sets the limit of a JSON request body (default
    /// [`DEFAULT_BODY_LIMIT`]); larger ones are answered `413`.
    /// `GraphDriver.ApplyDiff` bodies are streamed and have no limit.
    pub fn with_body_limit(mut self, bytes: usize) -> Server {
        self.body_limit = bytes;
        self
    }

    /// Sets how long a connection may stay idle, and how long one read or
    /// write may block (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Server {
        self.idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Where it listens: `unix:///abs/path` or `tcp://ip:port` (the real
    /// port when bound to port 0). This is also the text of a `.spec` file.
    pub fn address(&self) -> String {
        self.local.to_string()
    }

    /// Serves on this thread. Returns only when accepting fails for good;
    /// the socket file is removed then.
    pub fn run(self) -> io::Result<()> {
        let (listener, shared, _socket) = self.start();
        accept_loop(&listener, &shared)
    }

    /// Serves on a background thread; the handle stops it.
    pub fn spawn(self) -> io::Result<ServerHandle> {
        let local = self.local.clone();
        let (listener, shared, socket) = self.start();
        let (l, s) = (Arc::clone(&listener), Arc::clone(&shared));
        let thread =
            thread::Builder::new().name("berth-plugin-accept".into()).spawn(move || accept_loop(&l, &s))?;
        Ok(ServerHandle { local, shared, listener, thread: Some(thread), socket })
    }

    fn start(self) -> (Arc<Listener>, Arc<Shared>, Option<SocketFile>) {
        let shared = Shared {
            activate: routes::activate_body(&self.handlers),
            handlers: self.handlers,
            body_limit: self.body_limit,
            idle_timeout: self.idle_timeout,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
            closed: Condvar::new(),
        };
        (Arc::new(self.listener), Arc::new(shared), self.socket)
    }
}

/// A server running in the background. Dropping it stops it too.
#[derive(Debug)]
pub struct ServerHandle {
    local: Listen,
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    thread: Option<JoinHandle<io::Result<()>>>,
    socket: Option<SocketFile>,
}

impl ServerHandle {
    /// Where it listens (see [`Server::address`]).
    pub fn address(&self) -> String {
        self.local.to_string()
    }

    /// Stops the server: no new connections are accepted, idle ones are
    /// closed, calls in progress get up to 5 seconds to finish (their
    /// connections close after the answer), and the unix socket file is
    /// removed.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        {
            let conns = self.shared.lock();
            self.shared.stopping.store(true, Ordering::SeqCst);
            for slot in conns.slots.values().filter(|s| s.idle) {
                let _ = slot.stream.shutdown(Shutdown::Both);
            }
        }
        self.wake_acceptor();
        let _ = thread.join();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut conns = self.shared.lock();
        while !conns.slots.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            conns = self.shared.closed.wait_timeout(conns, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(conns);
        self.socket.take();
    }

    /// Unblocks the accept loop: a connection to ourselves, and
    /// `shutdown(2)` of the listening socket in case that cannot connect.
    fn wake_acceptor(&self) {
        let connected = match &self.local {
            Listen::Unix(path) => UnixStream::connect(path).is_ok(),
            Listen::Tcp(addr) => {
                let mut target = *addr;
                if target.ip().is_unspecified() {
                    target.set_ip(if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
            }
        };
        if !connected {
            // SAFETY: the fd belongs to `self.listener`, which is alive (we
            // hold an Arc); shutdown(2) neither closes nor invalidates it.
            unsafe {
                libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// State every connection thread shares.
struct Shared {
    handlers: Handlers,
    activate: Vec<u8>,
    body_limit: usize,
    idle_timeout: Duration,
    stopping: AtomicBool,
    conns: Mutex<Conns>,
    closed: Condvar,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("handlers", &self.handlers)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

/// The open connections, so that a shutdown can close the idle ones.
#[derive(Debug, Default)]
struct Conns {
    next: u64,
    slots: HashMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// A second handle on the connection's socket.
    stream: Stream,
    /// Waiting for a request (as opposed to handling one).
    idle: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Marks connection `id` idle or busy; `false` when the server is
    /// stopping and the connection should close.
    fn set_idle(&self, id: u64, idle: bool) -> bool {
        let mut conns = self.lock();
        if self.is_stopping() {
            return false;
        }
        if let Some(slot) = conns.slots.get_mut(&id) {
            slot.idle = idle;
        }
        true
    }

    /// Registers a connection; `None` when stopping.
    fn register(&self, stream: &Stream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let mut conns = self.lock();
        if self.is_stopping() {
            return None;
        }
        let id = conns.next;
        conns.next += 1;
        conns.slots.insert(id, Slot { stream: clone, idle: true });
        Some(id)
    }

    fn unregister(&self, id: u64) {
        let mut conns = self.lock();
        conns.slots.remove(&id);
        if conns.slots.is_empty() {
            self.closed.notify_all();
        }
    }
}

/// Unregisters a connection when its thread ends, however it ends.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.unregister(self.id);
    }
}

#[derive(Debug)]
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        Ok(match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // Answers go out in one write; do not wait to coalesce.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        })
    }

    fn as_raw_fd(&self) -> i32 {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }
}

fn accept_loop(listener: &Listener, shared: &Arc<Shared>) -> io::Result<()> {
    loop {
        let accepted = listener.accept();
        if shared.is_stopping() {
            return Ok(());
        }
        match accepted {
            Ok(stream) => spawn_connection(shared, stream),
            Err(e) => match e.raw_os_error() {
                // Transient: the peer gave up, or we are out of fds or
                // memory for a moment.
                Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM) => {}
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    thread::sleep(Duration::from_millis(20))
                }
                _ if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            },
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: Stream) {
    let Some(id) = shared.register(&stream) else {
        return;
    };
    let guard = Registered { shared: Arc::clone(shared), id };
    let spawned = thread::Builder::new().name("berth-plugin-conn".into()).spawn(move || {
        let guard = guard;
        conn::serve(&guard.shared, guard.id, stream);
    });
    // On failure the closure (and so the guard and the stream) is dropped:
    // the connection closes and is unregistered.
    drop(spawned);
}

/// Binds a unix socket at `path` after clearing a stale one.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: a server already listens on this socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket; not removing it", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// The socket file a server made; removed when dropped, unless another
/// server has replaced it meanwhile.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn new(path: &Path) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile { path: path.to_path_buf(), id: (meta.dev(), meta.ino()) })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn listen_addresses_parse_and_print() {
        assert_eq!("unix:///run/x.sock".parse::<Listen>().unwrap(), Listen::Unix("/run/x.sock".into()));
        assert_eq!("/run/x.sock".parse::<Listen>().unwrap(), Listen::Unix("/run/x.sock".into()));
        assert_eq!(
            "tcp://127.0.0.1:0".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!("tcp://[::1]:80/".parse::<Listen>().unwrap(), Listen::Tcp("[::1]:80".parse().unwrap()));
        assert!(matches!("tcp://localhost:1".parse::<Listen>().unwrap(), Listen::Tcp(a) if a.port() == 1));
        for bad in ["", "unix://", "x.sock", "http://1.2.3.4:5", "tcp://1.2.3.4"] {
            let e = bad.parse::<Listen>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().starts_with("invalid listen address"), "{e}");
        }
        assert_eq!(Listen::Unix("/a/b.sock".into()).to_string(), "unix:///a/b.sock");
        assert_eq!(Listen::Tcp("127.0.0.1:9".parse().unwrap()).to_string(), "tcp://127.0.0.1:9");
    }

    #[test]
    fn handlers_list_their_subsystems_in_handshake_order() {
        let h = Handlers::default();
        assert!(h.subsystems().is_empty());
        assert_eq!(
            format!("{h:?}"),
            "Handlers { volume: false, network: false, ipam: false, storage: false }"
        );
    }

    fn activate(stream: &mut impl ReadWrite) -> String {
        stream.write_all(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    #[test]
    fn a_unix_server_replaces_a_stale_socket_and_removes_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/p.sock");
        // A stale socket: bound, then its listener gone.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        let server = Server::bind(&Listen::Unix(path.clone()), Handlers::default()).unwrap();
        assert_eq!(server.address(), format!("unix://{}", path.display()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let handle = server.spawn().unwrap();
        // A live one is not taken over.
        let e = Server::bind(&Listen::Unix(path.clone()), Handlers::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);

        let mut idle = UnixStream::connect(&path).unwrap();
        let text = activate(&mut idle);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"Implements\":[]}\n"), "{text}");
        let started = Instant::now();
        handle.shutdown();
        assert!(started.elapsed() < Duration::from_secs(3), "an idle connection held up the shutdown");
        assert!(!path.exists(), "the socket file is removed");
        // The idle connection was closed.
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        std::fs::write(&path, "precious").unwrap();
        let e = Server::bind(&Listen::Unix(path.clone()), Handlers::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
    }

    #[test]
    fn a_tcp_server_reports_its_real_port_and_stops_when_dropped() {
        let server = Server::bind(&"tcp://127.0.0.1:0".parse().unwrap(), Handlers::default()).unwrap();
        let address = server.address();
        let Some(Listen::Tcp(addr)) = address.parse::<Listen>().ok() else { panic!("{address}") };
        assert_ne!(addr.port(), 0);
        let handle = server.spawn().unwrap();
        assert_eq!(handle.address(), address);
        let mut s = TcpStream::connect(addr).unwrap();
        assert!(activate(&mut s).contains("200 OK"));
        drop(handle);
        assert!(TcpStream::connect(addr).is_err(), "nothing listens after the drop");
    }

    #[test]
    fn run_serves_on_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sock");
        let server = Server::bind(&Listen::Unix(path.clone()), Handlers::default()).unwrap();
        thread::spawn(move || server.run());
        let mut s = UnixStream::connect(&path).unwrap();
        assert!(activate(&mut s).contains("200 OK"));
    }
}
