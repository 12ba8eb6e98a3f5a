//! Scripted fixture plugins: a small blocking HTTP/1.1 server on a unix
//! socket, one thread per connection, that answers each request with what
//! the case's script says and records every request and every accepted
//! connection, so a case can see exactly what berth's client sent.
//!
//! A script may also hang (read the request, never answer) or drop the
//! connection without answering. Dropping the fixture stops it: the accept
//! thread and every connection thread end (a hung answer ends too), and
//! the socket file is removed.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often a waiting thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// The largest request head or body a fixture reads.
const MAX_REQUEST: usize = 1 << 20;

/// One request a fixture received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `POST`, normally.
    pub method: String,
    /// The path, e.g. `/VolumeDriver.Mount`.
    pub path: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A string field of the JSON body (empty when absent).
    pub fn field(&self, key: &str) -> String {
        self.json().get(key).and_then(|v| v.as_str()).unwrap_or_default().to_string()
    }

    /// The value of header `name` (any letter case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What a script answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP answer.
    Answer {
        /// The status code.
        status: u16,
        /// The `Content-Type` header.
        content_type: &'static str,
        /// The body.
        body: Vec<u8>,
    },
    /// Never answer; keep the connection open until the fixture stops.
    Hang,
    /// Close the connection without answering.
    Close,
}

impl Reply {
    /// `200` with a JSON body.
    pub fn ok(json: &str) -> Reply {
        Reply::json(200, json)
    }

    /// `status` with a JSON body.
    pub fn json(status: u16, json: &str) -> Reply {
        Reply::Answer {
            status,
            content_type: "application/vnd.docker.plugins.v1.1+json",
            body: format!("{json}\n").into_bytes(),
        }
    }

    /// `status` with a plain-text body.
    pub fn text(status: u16, text: &str) -> Reply {
        Reply::Answer { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec() }
    }
}

/// The answer to `/Plugin.Activate` naming `implements`.
pub fn activate(implements: &[&str]) -> Reply {
    Reply::ok(&serde_json::json!({ "Implements": implements }).to_string())
}

type Script = Box<dyn Fn(&Request) -> Reply + Send + Sync>;

struct Shared {
    stop: AtomicBool,
    accepts: AtomicUsize,
    requests: Mutex<Vec<Request>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    script: Script,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running fixture plugin.
pub struct Fixture {
    path: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Fixture {
    /// Serves `script` on a unix socket at `path` (a stale socket file
    /// there is replaced). Every request, `/Plugin.Activate` included,
    /// goes to the script.
    pub fn start(
        path: &Path,
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> io::Result<Fixture> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(e.kind(), format!("bind a fixture plugin on {}: {e}", path.display()))
        })?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            accepts: AtomicUsize::new(0),
            requests: Mutex::default(),
            conns: Mutex::default(),
            script: Box::new(script),
        });
        let s = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("berth-conformance-fixture".into())
            .spawn(move || accept_loop(&listener, &s))?;
        Ok(Fixture { path: path.to_path_buf(), shared, accept: Some(accept) })
    }

    /// A plugin at `path` whose `/Plugin.Activate` answers `implements`;
    /// every other request goes to `script`.
    pub fn plugin(
        path: &Path,
        implements: &'static [&'static str],
        script: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> io::Result<Fixture> {
        Fixture::start(
            path,
            move |r| if r.path == "/Plugin.Activate" { activate(implements) } else { script(r) },
        )
    }

    /// `unix://<path>`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.shared.accepts.load(Ordering::SeqCst)
    }

    /// Every request so far, in order.
    pub fn all(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    /// The requests to `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Request> {
        lock(&self.shared.requests).iter().filter(|r| r.path == path).cloned().collect()
    }

    /// How many requests went to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.requests(path).len()
    }

    /// The paths requested so far, in order, for messages.
    pub fn paths(&self) -> String {
        let all = lock(&self.shared.requests);
        if all.is_empty() {
            return "no request".into();
        }
        all.iter().map(|r| r.path.trim_start_matches('/')).collect::<Vec<_>>().join(", ")
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for c in conns {
            let _ = c.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.accepts.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("berth-conformance-fixture-conn".into())
                    .spawn(move || serve(stream, &s));
                if let Ok(handle) = spawned {
                    lock(&shared.conns).push(handle);
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Serves one connection until the client closes it, the script says to,
/// or the fixture stops.
fn serve(mut stream: UnixStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(req) = read_request(&mut stream, &mut buf, shared) else { return };
        let close = req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        lock(&shared.requests).push(req.clone());
        match (shared.script)(&req) {
            Reply::Answer { status, content_type, body } => {
                let mut answer = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    reason(status),
                    body.len()
                )
                .into_bytes();
                answer.extend_from_slice(&body);
                if stream.write_all(&answer).is_err() || close {
                    return;
                }
            }
            Reply::Hang => {
                while !shared.stop.load(Ordering::SeqCst) {
                    thread::sleep(TICK);
                }
                return;
            }
            Reply::Close => return,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one request (head and a `Content-Length` body) from `stream`,
/// keeping what follows it in `buf`. `None` at end of stream, on an error,
/// or when the fixture stops.
fn read_request(stream: &mut UnixStream, buf: &mut Vec<u8>, shared: &Shared) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST || !fill(stream, buf, shared)? {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    if length > MAX_REQUEST {
        return None;
    }
    let start = head_end + 4;
    while buf.len() < start + length {
        if !fill(stream, buf, shared)? {
            return None;
        }
    }
    let body = buf[start..start + length].to_vec();
    buf.drain(..start + length);
    Some(Request { method, path, headers, body })
}

/// Reads more into `buf`: `Some(true)` when bytes came, `Some(false)` at
/// end of stream, `None` on an error or when the fixture stops.
fn fill(stream: &mut UnixStream, buf: &mut Vec<u8>, shared: &Shared) -> Option<bool> {
    let mut chunk = [0u8; 8192];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Some(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(true);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// A socket file nobody listens on: connecting to it is refused.
pub fn dead_socket(path: &Path) -> io::Result<()> {
    let listener = UnixListener::bind(path)?;
    drop(listener);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(path: &Path, raw: &[u8]) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(raw).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn answers_records_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.sock");
        let f =
            Fixture::plugin(&path, &["VolumeDriver"], |r| Reply::ok(&format!("{{\"Seen\":{:?}}}", r.text())))
                .unwrap();
        let a = exchange(
            &path,
            b"POST /Plugin.Activate HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(
            a.starts_with("HTTP/1.1 200 OK\r\n") && a.contains("{\"Implements\":[\"VolumeDriver\"]}"),
            "{a}"
        );
        let b = exchange(
            &path,
            b"POST /VolumeDriver.Get HTTP/1.1\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}",
        );
        assert!(b.ends_with("{\"Seen\":\"{}\"}\n"), "{b}");
        assert_eq!(f.accepts(), 2);
        assert_eq!(f.count("/VolumeDriver.Get"), 1);
        assert_eq!(f.requests("/VolumeDriver.Get")[0].header("Content-Length"), Some("2"));
        assert_eq!(f.paths(), "Plugin.Activate, VolumeDriver.Get");
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn a_hung_answer_ends_when_the_fixture_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let f = Fixture::start(&path, |_| Reply::Hang).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"POST /X HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        while f.count("/X") == 0 {
            thread::sleep(TICK);
        }
        drop(f);
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
