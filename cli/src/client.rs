//! The one HTTP client of the CLI: HTTP/1.1 over berthd's unix socket,
//! on a current-thread runtime, one connection per request. Archives go
//! both ways as streams ([`Client::post_stream`], [`Client::get_stream`]),
//! never whole in memory.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::CliError;

/// The Docker Engine API version the CLI speaks (sent as a path prefix).
pub const API_VERSION: &str = "1.47";

/// A client of one berthd.
#[derive(Debug)]
pub struct Client {
    host: String,
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// What berthd answers on error: `{"message": "...", "kind": "not_found"}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The socket path of a `unix:///path` host.
pub fn parse_host(host: &str) -> Result<PathBuf, CliError> {
    match host.strip_prefix("unix://") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(CliError::Usage(format!(
            "unsupported host {host:?}: berthd listens on a unix socket, use unix:///path/to/berth.sock"
        ))),
    }
}

impl Client {
    /// A client of the daemon at `host` (`unix:///path`).
    pub fn new(host: &str) -> Result<Client, CliError> {
        let socket = parse_host(host)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Other(format!("cannot start the client runtime: {e}")))?;
        Ok(Client { host: host.to_string(), socket, rt })
    }

    /// `GET path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let body = self.call(Method::GET, path, None)?;
        decode(&body)
    }

    /// `POST path` with a JSON body, decoded.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, CliError> {
        let body = self.call(Method::POST, path, Some(body))?;
        decode(&body)
    }

    /// `DELETE path`; the body is ignored.
    pub fn delete(&self, path: &str) -> Result<(), CliError> {
        self.call(Method::DELETE, path, None).map(drop)
    }

    /// One request; a non-2xx answer becomes [`CliError::Api`].
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, CliError> {
        let uri = format!("/v{API_VERSION}{path}");
        let mut req = Request::builder().method(method).uri(&uri);
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(v).map_err(|e| CliError::Other(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = with_common_headers(req)
            .body(Full::new(payload))
            .map_err(|e| CliError::Other(format!("build request {uri}: {e}")))?;
        let (status, body) = self.rt.block_on(self.send(req))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status, &body))
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), CliError> {
        let (response, conn) = self.open(req).await?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| self.lost(e))?.to_bytes();
        conn.finish().await;
        Ok((status, body))
    }

    /// Sends `req` on a new connection and answers once the response head
    /// is in; the request body keeps going meanwhile.
    async fn open<B>(&self, req: Request<B>) -> Result<(Response<Incoming>, Open<B>), CliError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| CliError::Unreachable {
            message: format!(
                "cannot connect to berthd at {}: {e}. Is berthd running? Start it (e.g. `berthd --socket {}`) \
                 or point --host / BERTH_HOST at its socket",
                self.host,
                self.socket.display()
            ),
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.lost(e))?;
        let conn = tokio::spawn(conn);
        let response = sender.send_request(req).await.map_err(|e| self.lost(e))?;
        Ok((response, Open { sender, conn }))
    }

    fn lost(&self, e: hyper::Error) -> CliError {
        CliError::Unreachable { message: format!("lost the connection to berthd at {}: {e}", self.host) }
    }

    /// `POST path` with `source` as the body (sent as it is read, never
    /// whole in memory; `size` when known), calling `sent` with each
    /// chunk's length; then reads the answer, a stream of JSON messages
    /// (Docker's), and calls `message` with each.
    pub fn post_stream(
        &self,
        path: &str,
        content_type: &'static str,
        source: Box<dyn Read + Send>,
        size: Option<u64>,
        sent: Box<dyn FnMut(u64) + Send>,
        message: &mut dyn FnMut(serde_json::Value) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let uri = format!("/v{API_VERSION}{path}");
        let (tx, rx) = mpsc::channel(UPLOAD_CHUNKS);
        let read_error = Arc::new(Mutex::new(None::<String>));
        let reader = std::thread::spawn({
            let read_error = Arc::clone(&read_error);
            move || feed(source, tx, sent, &read_error)
        });
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(size) = size {
            req = req.header(CONTENT_LENGTH, size);
        }
        let req = with_common_headers(req)
            .body(ChannelBody { rx, size })
            .map_err(|e| CliError::Other(format!("build request {uri}: {e}")))?;
        let result = self.rt.block_on(async {
            let (response, conn) = self.open(req).await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.into_body().collect().await.map_err(|e| self.lost(e))?.to_bytes();
                return Err(api_error(status, &body));
            }
            let mut body = response.into_body();
            let mut pending: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.lost(e))?;
                let Ok(data) = frame.into_data() else { continue };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    json_line(&line, message)?;
                }
            }
            json_line(&pending, message)?;
            conn.finish().await;
            Ok(())
        });
        // The reader ends once its chunks are sent or the body is dropped.
        let _ = reader.join();
        if let Some(e) = read_error.lock().map(|mut g| g.take()).unwrap_or(None) {
            return Err(CliError::Other(e));
        }
        result
    }

    /// `GET path`, writing the answer's body to `out` as it arrives and
    /// calling `received` with each chunk's length. An answer cut short is
    /// an error, never a short success.
    pub fn get_stream(
        &self,
        path: &str,
        out: &mut dyn Write,
        received: &mut dyn FnMut(u64),
    ) -> Result<(), CliError> {
        let uri = format!("/v{API_VERSION}{path}");
        let req = with_common_headers(Request::builder().method(Method::GET).uri(&uri))
            .body(Full::new(Bytes::new()))
            .map_err(|e| CliError::Other(format!("build request {uri}: {e}")))?;
        self.rt.block_on(async {
            let (response, conn) = self.open(req).await?;
            let status = response.status();
            if !status.is_success() {
                let body = response.into_body().collect().await.map_err(|e| self.lost(e))?.to_bytes();
                return Err(api_error(status, &body));
            }
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    CliError::Other(format!("berthd cut the answer short (its log says why): {e}"))
                })?;
                let Ok(data) = frame.into_data() else { continue };
                out.write_all(&data).map_err(|e| CliError::Other(format!("write the answer: {e}")))?;
                received(data.len() as u64);
            }
            conn.finish().await;
            Ok(())
        })
    }
}

/// Request chunks in flight between the reading thread and the socket.
const UPLOAD_CHUNKS: usize = 8;
/// Bytes per request chunk.
const UPLOAD_CHUNK: usize = 256 << 10;

/// The connection of an open request, to wind down once its answer is read.
struct Open<B> {
    sender: hyper::client::conn::http1::SendRequest<B>,
    conn: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl<B> Open<B> {
    /// Closes the connection once the answer is read.
    async fn finish(self) {
        drop(self.sender);
        let _ = self.conn.await;
    }
}

fn with_common_headers(req: hyper::http::request::Builder) -> hyper::http::request::Builder {
    req.header(HOST, HeaderValue::from_static("berth"))
        .header("User-Agent", concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
}

/// The error of a non-2xx answer.
fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => CliError::Api { status: status.as_u16(), kind: e.kind, message: e.message },
        Err(_) => CliError::Api {
            status: status.as_u16(),
            kind: None,
            message: if body.is_empty() {
                format!("berthd answered {status}")
            } else {
                String::from_utf8_lossy(body).trim().to_string()
            },
        },
    }
}

/// One line of a JSON message stream (blank lines are skipped).
fn json_line(
    line: &[u8],
    message: &mut dyn FnMut(serde_json::Value) -> Result<(), CliError>,
) -> Result<(), CliError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value = serde_json::from_slice(line).map_err(|e| {
        CliError::Other(format!("cannot decode berthd's message {:?}: {e}", String::from_utf8_lossy(line)))
    })?;
    message(value)
}

/// Reads `source` in chunks into `tx` until its end, a read error (kept in
/// `error`, and sent on so the request fails) or the request is dropped.
fn feed(
    mut source: Box<dyn Read + Send>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    mut sent: Box<dyn FnMut(u64) + Send>,
    error: &Mutex<Option<String>>,
) {
    loop {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let n = match source.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if let Ok(mut g) = error.lock() {
                    *g = Some(format!("cannot read the archive: {e}"));
                }
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        buf.truncate(n);
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return;
        }
        sent(n as u64);
    }
}

/// A request body fed by [`feed`].
struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    size: Option<u64>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.size.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// `s` percent-encoded for use as one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, CliError> {
    serde_json::from_slice(body).map_err(|e| CliError::Other(format!("cannot decode berthd's answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("data_1.x-y"), "data_1.x-y");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
    }

    #[test]
    fn hosts_must_be_unix_sockets() {
        assert_eq!(
            parse_host("unix:///run/berth/berth.sock").unwrap(),
            PathBuf::from("/run/berth/berth.sock")
        );
        assert!(matches!(parse_host("tcp://1.2.3.4:2375"), Err(CliError::Usage(_))));
        assert!(matches!(parse_host("unix://"), Err(CliError::Usage(_))));
        assert!(matches!(parse_host("/run/berth.sock"), Err(CliError::Usage(_))));
    }

    #[test]
    fn an_absent_socket_is_unreachable_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let host = format!("unix://{}/none.sock", dir.path().display());
        let client = Client::new(&host).unwrap();
        match client.get::<serde_json::Value>("/version") {
            Err(CliError::Unreachable { message }) => {
                assert!(message.contains("none.sock") && message.contains("berthd"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
