//! A scripted plugin for tests: raw HTTP over std sockets, one thread per
//! connection, every request recorded. (Also used by
//! `core/tests/remote_client.rs` through `#[path]`.)

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the plugin saw it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `POST`.
    pub method: String,
    /// `/VolumeDriver.Get`, with any query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (chunks joined).
    pub body: Vec<u8>,
    /// Whether it came chunked.
    pub chunked: bool,
}

impl Request {
    /// Header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the plugin does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status and body, with `Content-Length`.
    Full(u16, Vec<u8>),
    /// Status and body pieces, chunked.
    Chunked(u16, Vec<Vec<u8>>),
    /// HTTP/1.0, no length: the body runs to the close.
    Http10(u16, Vec<u8>),
    /// These bytes as they are, then close.
    Raw(Vec<u8>),
    /// A 200 of this many bytes, streamed until the client leaves; with
    /// `Content-Length` when the flag is set, else up to the close.
    Huge(u64, bool),
    /// Never answer (until the server stops).
    Hang,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// `status` with a JSON (or any text) body.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Full(status, body.as_bytes().to_vec())
    }

    /// 200 with `body`.
    pub fn ok(body: &str) -> Reply {
        Reply::json(200, body)
    }
}

type Handler = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

/// What the server shares with its threads.
pub struct State {
    handler: Handler,
    requests: Mutex<Vec<Request>>,
    accepts: AtomicUsize,
    stop: AtomicBool,
    conns: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// A running plugin server.
pub struct Server {
    /// `unix:///…` or `tcp://127.0.0.1:…`.
    pub address: String,
    state: Arc<State>,
    socket: Option<PathBuf>,
    tcp: Option<std::net::SocketAddr>,
}

/// The usual answer to `/Plugin.Activate`.
pub fn activate(implements: &[&str]) -> Reply {
    Reply::ok(&serde_json::json!({ "Implements": implements }).to_string())
}

impl Server {
    /// Serves on a unix socket at `path`.
    pub fn unix(path: &Path, handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = UnixListener::bind(path).expect("bind the test socket");
        let state = State::new(Box::new(handler));
        let st = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                st.accepts.fetch_add(1, Ordering::SeqCst);
                let closer = Arc::new(stream.try_clone().unwrap());
                let tracked = Arc::clone(&closer);
                st.track(Box::new(move || {
                    let _ = tracked.shutdown(Shutdown::Both);
                }));
                let st = Arc::clone(&st);
                thread::spawn(move || {
                    serve_conn(stream, &st);
                    let _ = closer.shutdown(Shutdown::Both);
                });
            }
        });
        Server {
            address: format!("unix://{}", path.display()),
            state,
            socket: Some(path.to_path_buf()),
            tcp: None,
        }
    }

    /// Serves on `127.0.0.1` at a free port.
    pub fn tcp(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::tcp_on(listener, handler, serve_conn)
    }

    /// Serves on `listener`, each accepted connection handed to `serve`
    /// (e.g. after a TLS handshake).
    pub fn tcp_on(
        listener: TcpListener,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
        serve: impl Fn(TcpStream, &State) + Send + Sync + 'static,
    ) -> Server {
        let addr = listener.local_addr().unwrap();
        let state = State::new(Box::new(handler));
        let st = Arc::clone(&state);
        let serve = Arc::new(serve);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                st.accepts.fetch_add(1, Ordering::SeqCst);
                let closer = Arc::new(stream.try_clone().unwrap());
                let tracked = Arc::clone(&closer);
                st.track(Box::new(move || {
                    let _ = tracked.shutdown(Shutdown::Both);
                }));
                let (st, serve) = (Arc::clone(&st), Arc::clone(&serve));
                thread::spawn(move || {
                    serve(stream, &st);
                    let _ = closer.shutdown(Shutdown::Both);
                });
            }
        });
        Server { address: format!("tcp://{addr}"), state, socket: None, tcp: Some(addr) }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The paths requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// How many requests went to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests().iter().filter(|r| r.path == path).count()
    }

    /// The last request to `path`.
    pub fn last(&self, path: &str) -> Request {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request to {path}"))
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.state.accepts.load(Ordering::SeqCst)
    }

    /// Stops: closes every connection and the listener (the socket file
    /// is removed).
    pub fn stop(&self) {
        if self.state.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        for close in self.state.conns.lock().unwrap().drain(..) {
            close();
        }
        // Wake the accept loop so that it sees the flag.
        if let Some(path) = &self.socket {
            let _ = UnixStream::connect(path);
            let _ = std::fs::remove_file(path);
        }
        if let Some(addr) = self.tcp {
            let _ = TcpStream::connect(addr);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl State {
    fn new(handler: Handler) -> Arc<State> {
        Arc::new(State {
            handler,
            requests: Mutex::default(),
            accepts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            conns: Mutex::default(),
        })
    }

    fn track(&self, close: Box<dyn Fn() + Send + Sync>) {
        self.conns.lock().unwrap().push(close);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let mut req =
        Request { method: parts.next()?.to_string(), path: parts.next()?.to_string(), ..Default::default() };
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        req.headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    if req.header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        req.chunked = true;
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let n: usize = req.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        req.body = vec![0; n];
        r.read_exact(&mut req.body).ok()?;
    }
    Some(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Whatever",
    }
}

/// Serves one connection until it closes.
pub fn serve_conn<S: Read + Write>(stream: S, state: &State) {
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        state.requests.lock().unwrap().push(req.clone());
        let reply = (state.handler)(&req);
        let w = r.get_mut();
        let keep = match reply {
            Reply::Full(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\nContent-Length: {}\r\n\r\n",
                    reason(status),
                    body.len()
                );
                w.write_all(head.as_bytes()).and_then(|()| w.write_all(&body)).is_ok()
            }
            Reply::Chunked(status, pieces) => {
                let mut out =
                    format!("HTTP/1.1 {status} {}\r\nTransfer-Encoding: chunked\r\n\r\n", reason(status))
                        .into_bytes();
                for p in pieces {
                    out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                    out.extend_from_slice(&p);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                w.write_all(&out).is_ok()
            }
            Reply::Http10(status, body) => {
                let head =
                    format!("HTTP/1.0 {status} {}\r\nServer: BaseHTTP/0.6 Python/3\r\n\r\n", reason(status));
                let _ = w.write_all(head.as_bytes()).and_then(|()| w.write_all(&body));
                false
            }
            Reply::Raw(bytes) => {
                let _ = w.write_all(&bytes);
                false
            }
            Reply::Huge(len, framed) => {
                let head = match framed {
                    true => format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n"),
                    false => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string(),
                };
                let chunk = vec![b'x'; 64 << 10];
                let mut left = len;
                let mut ok = w.write_all(head.as_bytes()).is_ok();
                while ok && left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    ok = w.write_all(&chunk[..n]).is_ok();
                    left -= n as u64;
                }
                false
            }
            Reply::Hang => {
                while !state.stopped() {
                    thread::sleep(Duration::from_millis(10));
                }
                false
            }
            Reply::Close => false,
        };
        let _ = w.flush();
        if !keep || state.stopped() {
            return;
        }
    }
}
