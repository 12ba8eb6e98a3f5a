//! One connection's life: read a request, answer it, repeat while the
//! client keeps the connection alive and the server is not stopping.
//!
//! Every driver call runs under `catch_unwind`: a panicking driver costs
//! one `500 internal` answer, never the server.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::routes::{self, Reply};
use super::{graph, Shared};
use crate::remote::http::{self, Conn, Framing, Head, HeadError, Stream, StreamWriter};
use crate::remote::wire;
use crate::storage::DiffRequest;
use crate::{DriverError, StorageDriver};

/// The media type of `GraphDriver.Diff` answers.
const TAR: &str = "application/x-tar";
/// The path whose body is streamed into the driver.
const APPLY_DIFF: &str = "/GraphDriver.ApplyDiff";
/// How much of an unread request body is read and dropped to keep the
/// connection usable after an early answer; past it the connection closes.
const DRAIN_MAX: u64 = 1 << 20;

/// What happens to the connection after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read the next request.
    KeepAlive,
    /// Close now.
    Close,
    /// Input may still be arriving: close gracefully ([`Conn::linger_close`]).
    Linger,
}

impl Next {
    fn after(close: bool) -> Next {
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }
}

/// Serves connection `id` until it closes or the server stops.
pub(super) fn serve(shared: &Shared, id: u64, stream: Stream) {
    let _ = stream.set_timeouts(Some(shared.idle_timeout));
    let mut conn = Conn::new(stream);
    let mut out = Vec::with_capacity(1024);
    let mut body = Vec::new();
    loop {
        let head = match conn.read_head() {
            Ok(head) => head,
            Err(HeadError::Closed | HeadError::Io) => return,
            Err(HeadError::TooLarge) => {
                let e = DriverError::invalid_argument(format!(
                    "the request head is larger than {} bytes or has too many headers",
                    http::MAX_HEAD
                ));
                let _ = answer(conn.stream(), &mut out, 431, &wire::error_body(&e), true);
                return conn.linger_close();
            }
            Err(HeadError::Bad(reason)) => {
                let e = DriverError::invalid_argument(format!("bad request: {reason}"));
                let _ = answer(conn.stream(), &mut out, 400, &wire::error_body(&e), true);
                return conn.linger_close();
            }
        };
        if !shared.set_idle(id, false) {
            return;
        }
        match exchange(shared, &mut conn, &head, &mut out, &mut body) {
            Next::KeepAlive => {}
            Next::Close => return,
            Next::Linger => return conn.linger_close(),
        }
        if !shared.set_idle(id, true) {
            return;
        }
    }
}

fn answer(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let extra = if status == 405 { "Allow: POST\r\n" } else { "" };
    http::write_response(stream, out, status, wire::CONTENT_TYPE, extra, body, close)
}

/// Answers with `reply`'s status and body, then goes on as `next` says
/// (closing instead when the write fails).
fn send(conn: &mut Conn, out: &mut Vec<u8>, status: u16, body: &[u8], next: Next) -> Next {
    match answer(conn.stream(), out, status, body, next != Next::KeepAlive) {
        Ok(()) => next,
        Err(_) => Next::Close,
    }
}

/// Handles one request whose head was read.
fn exchange(shared: &Shared, conn: &mut Conn, head: &Head, out: &mut Vec<u8>, body: &mut Vec<u8>) -> Next {
    let close = !head.keep_alive || shared.is_stopping();
    if head.method == "POST" && head.path == APPLY_DIFF {
        if let Some(storage) = &shared.handlers.storage {
            return apply_diff(conn, head, out, storage, close);
        }
    }
    body.clear();
    let too_large = || {
        wire::error_body(&DriverError::invalid_argument(format!(
            "the request body is larger than {} bytes",
            shared.body_limit
        )))
    };
    if let Framing::Length(n) = head.framing {
        if n > shared.body_limit as u64 {
            return send(conn, out, 413, &too_large(), Next::Linger);
        }
    }
    if head.expect_continue && head.framing != Framing::Empty && http::write_continue(conn.stream()).is_err()
    {
        return Next::Close;
    }
    match conn.body(head.framing).read_to_limit(body, shared.body_limit) {
        Ok(true) => {}
        Ok(false) => return send(conn, out, 413, &too_large(), Next::Linger),
        Err(e) => {
            let e = DriverError::invalid_argument(format!("cannot read the request body: {e}"));
            return send(conn, out, 400, &wire::error_body(&e), Next::Linger);
        }
    }
    if head.method != "POST" {
        let e = DriverError::invalid_argument(format!(
            "method {} is not allowed: the plugin protocol uses POST",
            head.method
        ));
        return send(conn, out, 405, &wire::error_body(&e), Next::after(close));
    }
    let name = head.path.trim_start_matches('/');
    let reply = catch_unwind(AssertUnwindSafe(|| {
        routes::dispatch(&shared.handlers, &shared.activate, &head.path, &head.query, body)
    }))
    .unwrap_or_else(|payload| Reply::panicked(name, payload.as_ref()));
    match reply {
        Reply::Json { status, body } => send(conn, out, status, &body, Next::after(close)),
        Reply::Diff { driver, req } => stream_diff(conn, head, out, &driver, req, close),
    }
}

/// `GraphDriver.Diff`: streams the driver's tar as the answer body. An
/// error before the first byte is an ordinary error answer; after it the
/// connection is cut, so the client sees a truncated (failed) body.
fn stream_diff(
    conn: &mut Conn,
    head: &Head,
    out: &mut Vec<u8>,
    driver: &Arc<dyn StorageDriver>,
    req: DiffRequest,
    close: bool,
) -> Next {
    const NAME: &str = "GraphDriver.Diff";
    let Some(diff) = driver.as_diff() else {
        return send(
            conn,
            out,
            wire::ERROR_STATUS,
            &wire::error_body(&graph::no_diff(NAME)),
            Next::after(close),
        );
    };
    let mut writer = StreamWriter::new(conn.stream(), TAR, head.http10);
    let result = catch_unwind(AssertUnwindSafe(|| diff.diff(req, &mut writer)));
    let error = match result {
        Ok(Ok(())) => {
            return match writer.finish() {
                Ok(()) if !close && !head.http10 => Next::KeepAlive,
                _ => Next::Close,
            }
        }
        Ok(Err(e)) => e,
        Err(payload) => routes::panic_error(NAME, payload.as_ref()),
    };
    if writer.started() {
        return Next::Close;
    }
    send(conn, out, wire::ERROR_STATUS, &wire::error_body(&error), Next::after(close))
}

/// `GraphDriver.ApplyDiff`: the request body (sized or chunked) is read by
/// the driver as it arrives; what it leaves unread is drained (up to
/// [`DRAIN_MAX`]) so the connection stays usable.
fn apply_diff(
    conn: &mut Conn,
    head: &Head,
    out: &mut Vec<u8>,
    storage: &Arc<dyn StorageDriver>,
    close: bool,
) -> Next {
    const NAME: &str = "GraphDriver.ApplyDiff";
    if storage.as_diff().is_none() {
        // Do not ask for a body that will not be read.
        let next = if head.framing == Framing::Empty {
            Next::after(close)
        } else if head.expect_continue || !conn.body(head.framing).drain(DRAIN_MAX) {
            Next::Linger
        } else {
            Next::after(close)
        };
        return send(conn, out, wire::ERROR_STATUS, &wire::error_body(&graph::no_diff(NAME)), next);
    }
    if head.expect_continue && head.framing != Framing::Empty && http::write_continue(conn.stream()).is_err()
    {
        return Next::Close;
    }
    let mut body = conn.body(head.framing);
    let reply =
        catch_unwind(AssertUnwindSafe(|| graph::apply_diff(storage.as_ref(), NAME, &head.query, &mut body)))
            .unwrap_or_else(|payload| Reply::panicked(NAME, payload.as_ref()));
    let drained = body.drain(DRAIN_MAX);
    let next = if drained { Next::after(close) } else { Next::Linger };
    match reply {
        Reply::Json { status, body } => send(conn, out, status, &body, next),
        Reply::Diff { .. } => unreachable!("apply_diff answers JSON"),
    }
}
