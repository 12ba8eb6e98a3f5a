//! `POST /images/load`, `GET /images/json`, `GET /images/{name}/json`,
//! `GET /images/{name}/get`, `GET /images/get?names=`, `DELETE
//! /images/{name}`, in Docker's shapes.
//!
//! Load and save move archives of any size, so neither is held in memory:
//! the request body of a load is pumped through a bounded channel into a
//! blocking [`Read`] that the engine consumes on the blocking pool, and a
//! save's tar goes the other way, from a blocking [`Write`] through a channel
//! into the response body. Both answer a normal error status when the engine
//! fails before the first byte of the answer (a missing image, an archive
//! refused while it is read); after that a load reports the error in the
//! stream as dockerd does (`{"errorDetail":{"message":…},"error":…}`) and a
//! save cuts the connection, so a client never takes a truncated tar for a
//! whole one.

use std::io::{self, Read, Write};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_core::images::{LayerState, LoadProgress, LoadedImage};
use berth_core::Filters;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::{blocking, json, AppState, Body, Reply};
use crate::error::ApiError;

/// Request-body chunks in flight between the socket and the engine.
const UPLOAD_CHUNKS: usize = 16;
/// Bytes per chunk of a save's tar.
const SAVE_CHUNK: usize = 256 << 10;
/// Tar chunks in flight between the engine and the socket.
const SAVE_CHUNKS: usize = 8;
/// Progress messages waiting for a slow client; more are dropped (the
/// final messages are never dropped).
const PROGRESS_BACKLOG: usize = 64;
/// At most one `Loading layer` message per layer in this interval.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One piece of a streamed answer, from the engine's thread.
#[derive(Debug)]
enum Piece {
    /// Bytes of the answer.
    Data(Bytes),
    /// The engine failed; nothing follows.
    Fail(ApiError),
}

/// `[ImageSummary, ...]`.
pub async fn list(state: &Arc<AppState>, filters: Filters, all: bool) -> Result<Reply, ApiError> {
    let list = blocking(state, move |e| e.images().list(&filters, all)).await?;
    Ok(json(StatusCode::OK, &list))
}

/// One image, as `docker image inspect` reads it.
pub async fn inspect(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let image = blocking(state, move |e| e.images().inspect(&name)).await?;
    Ok(json(StatusCode::OK, &image))
}

/// Untags or deletes an image: `[{"Untagged": …}, {"Deleted": …}]`.
pub async fn remove(
    state: &Arc<AppState>,
    name: String,
    force: bool,
    noprune: bool,
) -> Result<Reply, ApiError> {
    let n = name.clone();
    let items = blocking(state, move |e| e.images().remove(&n, force)).await?;
    tracing::info!(image = %name, force, noprune, "image removed");
    Ok(json(StatusCode::OK, &items))
}

/// Loads the archive that is the request body; answers a stream of JSON
/// messages (progress unless `quiet`, then one `Loaded image` per tag).
pub async fn load(state: &Arc<AppState>, quiet: bool, body: Incoming) -> Result<Response<Body>, ApiError> {
    let (data_tx, data_rx) = mpsc::channel(UPLOAD_CHUNKS);
    tokio::spawn(pump(body, data_tx));
    let (tx, rx) = mpsc::channel(PROGRESS_BACKLOG);
    let engine = Arc::clone(&state.engine);
    tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader { rx: data_rx, current: Bytes::new() };
        let mut throttle = Throttle::default();
        let mut progress = |p: &LoadProgress| {
            if !quiet {
                if let Some(line) = throttle.message(p) {
                    // A client that does not read its progress loses some
                    // of it rather than stalling the load.
                    let _ = tx.try_send(Piece::Data(line));
                }
            }
        };
        let started = Instant::now();
        let outcome = guarded(|| engine.images().load(&mut reader, &mut progress));
        // Read the body to its end (the tar's trailing padding, or the rest
        // of a refused archive) before answering the end: a socket closed
        // with unread data resets the connection, and the client could
        // lose the answer.
        if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
            tracing::debug!("draining the rest of the archive: {e}");
        }
        match outcome {
            Ok(images) => {
                for image in &images {
                    tracing::info!(id = %image.id, tags = ?image.tags, elapsed_ms = started.elapsed().as_millis() as u64, "image loaded");
                }
                for line in loaded_messages(&images) {
                    if tx.blocking_send(Piece::Data(line)).is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(kind = %e.kind, "image load failed: {}", e.message);
                let _ = tx.blocking_send(Piece::Fail(e.into()));
            }
        }
    });
    let resp = stream_after_first(rx, "application/json", |e| {
        let message = e.message;
        let line = json!({ "errorDetail": { "message": message }, "error": message });
        Ok(Bytes::from(format!("{line}\r\n")))
    })
    .await?;
    Ok(resp)
}

/// Writes the `docker save` tar of `names` as the answer.
pub async fn save(state: &Arc<AppState>, names: Vec<String>) -> Result<Response<Body>, ApiError> {
    let (tx, rx) = mpsc::channel(SAVE_CHUNKS);
    let engine = Arc::clone(&state.engine);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(SAVE_CHUNK) };
        let outcome = guarded(|| {
            engine.images().save(&names, &mut out)?;
            out.flush().map_err(|e| DriverError::unavailable(format!("send the image archive: {e}")))
        });
        match outcome {
            Ok(()) => tracing::info!(images = ?names, "images saved"),
            Err(e) => {
                tracing::warn!(images = ?names, kind = %e.kind, "image save failed: {}", e.message);
                let _ = tx.blocking_send(Piece::Fail(e.into()));
            }
        }
    });
    // After the first byte an error can only cut the stream: the client
    // then sees a broken transfer, not a short tar.
    stream_after_first(rx, "application/x-tar", |e| Err(io::Error::other(e.message))).await
}

/// Runs an engine call, turning a panic into an internal error so the
/// stream always ends with an answer.
fn guarded<T>(f: impl FnOnce() -> DriverResult<T>) -> DriverResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("engine call panicked");
        Err(DriverError::internal("the engine panicked serving this request (see berthd's log)"))
    })
}

/// Waits for the first piece: a failure is a normal error answer; data
/// starts a `200` streaming the rest, with `on_fail` turning a later
/// failure into a last chunk (load) or a broken body (save).
async fn stream_after_first(
    mut rx: mpsc::Receiver<Piece>,
    content_type: &'static str,
    on_fail: fn(ApiError) -> Result<Bytes, io::Error>,
) -> Result<Response<Body>, ApiError> {
    let first = match rx.recv().await {
        Some(Piece::Data(bytes)) => bytes,
        Some(Piece::Fail(e)) => return Err(e),
        None => return Err(ApiError::new(ErrorKind::Internal, "the engine ended without an answer")),
    };
    let body = StreamBody { first: Some(first), rx, on_fail, done: false };
    let mut resp = Response::new(body.boxed_unsync());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(resp)
}

/// Copies the request body into `tx`, chunk by chunk, until the body ends,
/// fails, or the reader goes away.
async fn pump(mut body: Incoming, tx: mpsc::Sender<io::Result<Bytes>>) {
    loop {
        match body.frame().await {
            None => return,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() && tx.send(Ok(data)).await.is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let e =
                    io::Error::new(io::ErrorKind::UnexpectedEof, format!("reading the request body: {e}"));
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// The request body as a blocking [`Read`] (for the blocking pool only).
#[derive(Debug)]
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// The response body as a blocking [`Write`] (for the blocking pool only):
/// buffers [`SAVE_CHUNK`] bytes, then hands them over.
#[derive(Debug)]
struct ChannelWriter {
    tx: mpsc::Sender<Piece>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(SAVE_CHUNK)));
        self.tx
            .blocking_send(Piece::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client closed the connection"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SAVE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= SAVE_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A response body fed by a channel of [`Piece`]s.
struct StreamBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Piece>,
    on_fail: fn(ApiError) -> Result<Bytes, io::Error>,
    done: bool,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Piece::Data(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Piece::Fail(e))) => {
                self.done = true;
                Poll::Ready(Some((self.on_fail)(e).map(Frame::data)))
            }
        }
    }
}

/// Which progress reports become messages: every change of layer or state,
/// the end of a layer, and otherwise one per [`PROGRESS_EVERY`].
#[derive(Debug, Default)]
struct Throttle {
    last: Option<(usize, usize, LayerState, Instant)>,
}

impl Throttle {
    fn message(&mut self, p: &LoadProgress) -> Option<Bytes> {
        let now = Instant::now();
        let key = (p.image, p.layer, p.state);
        let due = match self.last {
            Some((image, layer, state, at)) if (image, layer, state) == key => {
                p.state == LayerState::Loading
                    && (now.duration_since(at) >= PROGRESS_EVERY || p.bytes >= p.total_bytes)
            }
            _ => true,
        };
        if !due {
            return None;
        }
        self.last = Some((p.image, p.layer, p.state, now));
        Some(progress_message(p))
    }
}

/// One progress message, as dockerd writes them.
fn progress_message(p: &LoadProgress) -> Bytes {
    let id = short_id(&p.diff_id);
    let line = match p.state {
        LayerState::Exists => json!({ "status": "Already exists", "progressDetail": {}, "id": id }),
        LayerState::Loading | LayerState::Applied => {
            let current = if p.state == LayerState::Applied { p.total_bytes.max(p.bytes) } else { p.bytes };
            json!({
                "status": "Loading layer",
                "progressDetail": { "current": current, "total": p.total_bytes },
                "progress": progress_bar(current, p.total_bytes),
                "id": id,
            })
        }
    };
    Bytes::from(format!("{line}\r\n"))
}

/// The `Loaded image` messages that close a load.
fn loaded_messages(images: &[LoadedImage]) -> Vec<Bytes> {
    let mut out = Vec::new();
    for image in images {
        if image.tags.is_empty() {
            let id = if image.id.contains(':') { image.id.clone() } else { format!("sha256:{}", image.id) };
            out.push(json!({ "stream": format!("Loaded image ID: {id}\n") }));
        }
        for tag in &image.tags {
            out.push(json!({ "stream": format!("Loaded image: {tag}\n") }));
        }
    }
    out.into_iter().map(|line| Bytes::from(format!("{line}\r\n"))).collect()
}

/// The first 12 hex digits of a digest (`sha256:<hex>`).
fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Docker's progress text: a 50-wide bar, then `current/total`.
fn progress_bar(current: u64, total: u64) -> String {
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let half_percent = ((current.min(total) as f64 / total as f64 * 100.0) as usize / 2).min(50);
    format!(
        "[{}>{}] {:>8}/{}",
        "=".repeat(half_percent),
        " ".repeat(50 - half_percent),
        human_size(current),
        human_size(total)
    )
}

/// Sizes in powers of 1000 with four significant digits (Docker's
/// `units.HumanSize`).
fn human_size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let decimals = match v {
        v if v < 10.0 => 3,
        v if v < 100.0 => 2,
        v if v < 1000.0 => 1,
        _ => 0,
    };
    let mut text = format!("{v:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(layer: usize, bytes: u64, state: LayerState) -> LoadProgress {
        LoadProgress {
            image: 0,
            images: 1,
            layer,
            layers: 2,
            diff_id: format!("sha256:{}", "ab".repeat(32)),
            bytes,
            total_bytes: 50_000_000,
            state,
        }
    }

    #[test]
    fn progress_messages_look_like_dockerds() {
        let line = progress_message(&progress(0, 12_000_000, LayerState::Loading));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.ends_with("\r\n"));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["status"], "Loading layer");
        assert_eq!(v["id"], "abababababab");
        assert_eq!(v["progressDetail"], json!({"current": 12_000_000, "total": 50_000_000}));
        assert_eq!(v["progress"], format!("[{}>{}]     12MB/50MB", "=".repeat(12), " ".repeat(38)));
        let done = progress_message(&progress(0, 0, LayerState::Applied));
        let v: serde_json::Value = serde_json::from_slice(&done).unwrap();
        assert_eq!(v["progressDetail"]["current"], 50_000_000);
        let exists = progress_message(&progress(1, 0, LayerState::Exists));
        let v: serde_json::Value = serde_json::from_slice(&exists).unwrap();
        assert_eq!(v["status"], "Already exists");
    }

    #[test]
    fn the_throttle_keeps_changes_and_drops_bursts() {
        let mut t = Throttle::default();
        assert!(t.message(&progress(0, 0, LayerState::Loading)).is_some());
        assert!(t.message(&progress(0, 10, LayerState::Loading)).is_none());
        assert!(t.message(&progress(0, 50_000_000, LayerState::Loading)).is_some(), "the end of a layer");
        assert!(t.message(&progress(0, 50_000_000, LayerState::Applied)).is_some());
        assert!(t.message(&progress(1, 0, LayerState::Loading)).is_some());
    }

    #[test]
    fn loaded_messages_name_tags_or_the_id() {
        let images = vec![
            LoadedImage { id: "sha256:abc".into(), tags: vec!["a:1".into(), "b/c:2".into()] },
            LoadedImage { id: "def".into(), tags: vec![] },
        ];
        let lines: Vec<String> =
            loaded_messages(&images).iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect();
        assert_eq!(
            lines,
            [
                "{\"stream\":\"Loaded image: a:1\\n\"}\r\n",
                "{\"stream\":\"Loaded image: b/c:2\\n\"}\r\n",
                "{\"stream\":\"Loaded image ID: sha256:def\\n\"}\r\n",
            ]
        );
    }

    #[test]
    fn sizes_and_bars() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(progress_bar(5, 0), "      5B");
        assert!(progress_bar(100, 100).starts_with(&format!("[{}>]", "=".repeat(50))));
    }

    #[test]
    fn the_reader_reassembles_chunks_and_reports_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hello "))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"world"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let mut r = ChannelReader { rx, current: Bytes::new() };
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("end before the error"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e.to_string(), "cut");
                    break;
                }
            }
        }
        assert_eq!(got, b"hello world");
    }

    #[test]
    fn the_writer_sends_whole_chunks_and_the_rest_on_flush() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut w = ChannelWriter { tx, buf: Vec::new() };
        w.write_all(&vec![1u8; SAVE_CHUNK + 10]).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Some(Piece::Data(b)) = rx.blocking_recv() {
            sizes.push(b.len());
        }
        assert_eq!(sizes, [SAVE_CHUNK, 10]);
    }
}
