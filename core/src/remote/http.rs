//! A small blocking HTTP/1.1 client for one connection: writes a `POST`,
//! reads the answer with `httparse`, bounded, under a deadline enforced on
//! the socket.
//!
//! Answers may be framed by `Content-Length`, chunked, or run to the end
//! of the connection (HTTP/1.0 and `Connection: close` servers such as
//! Python's `http.server`). A connection is kept for the next call only
//! when its answer was read whole, had its own framing and did not ask to
//! close.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use berth_plugin_api::remote::wire;

use super::transport::{FileId, Stream};

/// The largest answer head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The part of an error answer's body that is read (the message is cut to
/// 512 bytes anyway).
const ERROR_BODY_MAX: usize = 64 << 10;
/// The read buffer of a connection.
const BUF: usize = 16 << 10;
/// The size of the chunks of a streamed request body.
const CHUNK: usize = 64 << 10;
/// How far past its deadline a blocked read or write may end: re-arming a
/// socket timeout costs a system call, so it is re-armed only when the
/// one in force could overrun the deadline by more than this.
const SLACK: Duration = Duration::from_millis(5);

/// When an exchange times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// At this instant, whatever happens.
    Until(Instant),
    /// When a single read or write makes no progress for this long
    /// (streams of unknown length).
    Idle(Duration),
}

/// The body of a request.
pub(crate) enum Body<'a> {
    /// No body (`Content-Length: 0`).
    Empty,
    /// JSON (already newline-terminated).
    Json(&'a [u8]),
    /// A stream sent with chunked transfer encoding.
    Stream(&'a mut (dyn Read + Send)),
}

impl Body<'_> {
    /// The same body, borrowed again (for a retry).
    pub(crate) fn reborrow(&mut self) -> Body<'_> {
        match self {
            Body::Empty => Body::Empty,
            Body::Json(json) => Body::Json(json),
            Body::Stream(source) => Body::Stream(&mut **source),
        }
    }
}

/// Where a 200 answer's body goes.
pub(crate) enum Sink<'a> {
    /// Into memory, up to the given limit.
    Buffer(usize),
    /// Into a writer, however long it is.
    Writer(&'a mut (dyn Write + Send)),
}

impl Sink<'_> {
    /// The same sink, borrowed again (for a retry).
    pub(crate) fn reborrow(&mut self) -> Sink<'_> {
        match self {
            Sink::Buffer(max) => Sink::Buffer(*max),
            Sink::Writer(out) => Sink::Writer(&mut **out),
        }
    }
}

/// An answer: its status and (unless streamed) its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body (empty when streamed into a writer; cut for errors).
    pub(crate) body: Vec<u8>,
}

/// How an exchange failed.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The connection broke before any byte of the answer arrived.
    NoAnswer(io::Error),
    /// The connection broke while the answer was arriving.
    Broken(io::Error),
    /// The deadline passed.
    Timeout,
    /// A 200 answer's body is larger than the limit.
    TooLarge(usize),
    /// The answer is not HTTP.
    Malformed(String),
    /// Reading the request's stream failed.
    Source(io::Error),
    /// Writing the answer's stream failed.
    Sink(io::Error),
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// A socket with a deadline: every read and write ends by the deadline.
#[derive(Debug)]
struct Timed {
    stream: Stream,
    limit: Limit,
    rcv: Option<Duration>,
    snd: Option<Duration>,
}

impl Timed {
    /// How long the next blocking operation may take, re-arming the socket
    /// timeout `current` when needed.
    fn arm(
        limit: Limit,
        current: &mut Option<Duration>,
        set: impl Fn(Duration) -> io::Result<()>,
    ) -> io::Result<()> {
        match limit {
            Limit::Idle(d) => {
                if *current != Some(d) {
                    set(d)?;
                    *current = Some(d);
                }
            }
            Limit::Until(deadline) => {
                let now = Instant::now();
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                if current.map_or(true, |c| now + c > deadline + SLACK) {
                    set(left)?;
                    *current = Some(left);
                }
            }
        }
        Ok(())
    }

    fn expired(&self) -> bool {
        match self.limit {
            Limit::Until(deadline) => Instant::now() >= deadline,
            Limit::Idle(_) => true,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let stream = &self.stream;
            Self::arm(self.limit, &mut self.rcv, |t| stream.set_read_timeout(t))?;
            match self.stream.read(buf) {
                Err(e) if timed_out(&e) => {
                    if self.expired() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    // A socket timeout armed for an earlier, shorter wait.
                    self.rcv = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A TLS peer that closes without close_notify: plain EOF.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.stream.is_tls() => return Ok(0),
                r => return r,
            }
        }
    }

    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let stream = &self.stream;
            Self::arm(self.limit, &mut self.snd, |t| stream.set_write_timeout(t))?;
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if timed_out(&e) => {
                    if self.expired() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.snd = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.stream.is_tls() {
            self.stream.flush()?;
        }
        Ok(())
    }
}

/// One connection to a plugin with its read buffer.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Timed,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    wbuf: Vec<u8>,
    /// The identity of the unix socket file connected to.
    pub(crate) inode: Option<FileId>,
    /// Whether this connection sat idle in the pool since its last
    /// exchange: a failure before any answer byte may then be the plugin
    /// having closed it meanwhile, and is retried once on a fresh one.
    /// Cleared by each exchange, so a request that already went out on
    /// this connection in the same call is never sent twice.
    pub(crate) reused: bool,
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Eof,
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

impl Conn {
    /// A fresh connection over `stream`.
    pub(crate) fn new(stream: Stream, inode: Option<FileId>) -> Conn {
        Conn {
            io: Timed { stream, limit: Limit::Idle(Duration::from_secs(30)), rcv: None, snd: None },
            buf: vec![0; BUF],
            pos: 0,
            end: 0,
            wbuf: Vec::with_capacity(512),
            inode,
            reused: false,
        }
    }

    /// The socket.
    pub(crate) fn stream(&self) -> &Stream {
        &self.io.stream
    }

    /// Sends `POST path` with `body` and reads the answer. Returns the
    /// answer and whether the connection can serve another call.
    pub(crate) fn exchange(
        &mut self,
        host: &str,
        path: &str,
        body: Body<'_>,
        sink: Sink<'_>,
        limit: Limit,
    ) -> Result<(Answer, bool), HttpError> {
        self.io.limit = limit;
        self.pos = 0;
        self.end = 0;
        let head_error =
            |e: io::Error| if timed_out(&e) { HttpError::Timeout } else { HttpError::NoAnswer(e) };
        self.wbuf.clear();
        let _ = write!(
            self.wbuf_text(),
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth\r\nAccept: {}\r\n",
            wire::ACCEPT
        );
        let mut write_failed = None;
        match body {
            Body::Empty => {
                self.wbuf.extend_from_slice(b"Content-Length: 0\r\n\r\n");
                self.io.write_all(&self.wbuf).map_err(head_error)?;
            }
            Body::Json(json) => {
                let _ = write!(
                    self.wbuf_text(),
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    json.len()
                );
                self.wbuf.extend_from_slice(json);
                self.io.write_all(&self.wbuf).map_err(head_error)?;
            }
            Body::Stream(source) => {
                self.wbuf.extend_from_slice(
                    b"Content-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                self.io.write_all(&self.wbuf).map_err(head_error)?;
                // A plugin may answer (an error) before it read everything:
                // a failed write ends the upload and the answer is read.
                write_failed = self.upload(source)?;
            }
        }
        let head = match self.read_head() {
            Ok(head) => head,
            Err(HttpError::NoAnswer(e)) => return Err(HttpError::NoAnswer(write_failed.unwrap_or(e))),
            Err(e) => return Err(e),
        };
        let mut body = Vec::new();
        let complete = match sink {
            Sink::Writer(out) if head.status == 200 => {
                self.read_body(head.framing, &mut |data| out.write_all(data).map_err(HttpError::Sink))?
            }
            Sink::Buffer(max) if head.status == 200 => {
                if matches!(head.framing, Framing::Length(n) if n > max as u64) {
                    return Err(HttpError::TooLarge(max));
                }
                self.read_body(head.framing, &mut |data| {
                    if body.len() + data.len() > max {
                        return Err(HttpError::TooLarge(max));
                    }
                    body.extend_from_slice(data);
                    Ok(())
                })?
            }
            _ => {
                // An error answer: its first 64 KiB are plenty.
                let mut full = true;
                let result = self.read_body(head.framing, &mut |data| {
                    let room = ERROR_BODY_MAX - body.len();
                    body.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() > room {
                        full = false;
                        return Err(HttpError::TooLarge(ERROR_BODY_MAX));
                    }
                    Ok(())
                });
                match result {
                    Ok(c) => c && full,
                    Err(HttpError::TooLarge(_)) => false,
                    Err(e) => return Err(e),
                }
            }
        };
        let reusable = complete
            && head.keep_alive
            && head.framing != Framing::Eof
            && self.pos == self.end
            && write_failed.is_none();
        Ok((Answer { status: head.status, body }, reusable))
    }

    fn wbuf_text(&mut self) -> WbufText<'_> {
        WbufText(&mut self.wbuf)
    }

    /// Sends `source` as chunks; a failed write ends the upload (its error
    /// is returned) so that an early answer can still be read.
    fn upload(&mut self, source: &mut (dyn Read + Send)) -> Result<Option<io::Error>, HttpError> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match source.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HttpError::Source(e)),
            };
            self.wbuf.clear();
            let _ = write!(self.wbuf_text(), "{n:x}\r\n");
            self.wbuf.extend_from_slice(&chunk[..n]);
            self.wbuf.extend_from_slice(b"\r\n");
            match self.io.write_all(&self.wbuf) {
                Ok(()) if n == 0 => return Ok(None),
                Ok(()) => {}
                Err(e) if timed_out(&e) => return Err(HttpError::Timeout),
                Err(e) => return Ok(Some(e)),
            }
        }
    }

    /// Reads more bytes into the buffer after `end`, compacting or growing
    /// it (up to `max`) when it is full. `Ok(0)` is the end of the stream.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            } else if self.buf.len() < max {
                self.buf.resize((self.buf.len() * 2).min(max), 0);
            } else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
        let n = self.io.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    fn read_head(&mut self) -> Result<Head, HttpError> {
        let mut got_any = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf[self.pos..self.end]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let http11 = resp.version == Some(1);
                    let (mut length, mut chunked, mut close, mut keep) = (None, false, false, false);
                    for h in resp.headers.iter() {
                        let value = String::from_utf8_lossy(h.value);
                        let value = value.trim();
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = Some(value.parse::<u64>().map_err(|_| {
                                HttpError::Malformed(format!("bad Content-Length {value:?}"))
                            })?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.to_ascii_lowercase().contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = value.to_ascii_lowercase();
                            close |= v.contains("close");
                            keep |= v.contains("keep-alive");
                        }
                    }
                    self.pos += n;
                    if (100..200).contains(&status) && status != 101 {
                        continue; // 100 Continue and friends precede the answer
                    }
                    let framing = if status == 204 || status == 304 {
                        Framing::Length(0)
                    } else if chunked {
                        Framing::Chunked
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        Framing::Eof
                    };
                    let keep_alive = if http11 { !close } else { keep && !close };
                    return Ok(Head { status, framing, keep_alive });
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    let excerpt = String::from_utf8_lossy(&self.buf[self.pos..self.end.min(self.pos + 40)])
                        .into_owned();
                    return Err(HttpError::Malformed(format!("not an HTTP answer ({e}): {excerpt:?}")));
                }
            }
            match self.fill(MAX_HEAD) {
                Ok(0) if got_any => {
                    return Err(HttpError::Broken(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of the answer's head",
                    )))
                }
                Ok(0) => {
                    return Err(HttpError::NoAnswer(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before an answer",
                    )))
                }
                Ok(_) => got_any = true,
                Err(e) if timed_out(&e) => return Err(HttpError::Timeout),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(HttpError::Malformed(format!("answer head larger than {MAX_HEAD} bytes")))
                }
                Err(e) if got_any => return Err(HttpError::Broken(e)),
                Err(e) => return Err(HttpError::NoAnswer(e)),
            }
        }
    }

    /// Hands the body to `out` piece by piece; `Ok(true)` when it was read
    /// to its end.
    fn read_body(
        &mut self,
        framing: Framing,
        out: &mut dyn FnMut(&[u8]) -> Result<(), HttpError>,
    ) -> Result<bool, HttpError> {
        match framing {
            Framing::Length(n) => self.copy_exact(n, out).map(|()| true),
            Framing::Eof => loop {
                if self.pos == self.end && self.more()? == 0 {
                    return Ok(true);
                }
                out(&self.buf[self.pos..self.end])?;
                self.pos = self.end;
            },
            Framing::Chunked => loop {
                let line = self.line()?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| HttpError::Malformed(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    while !self.line()?.is_empty() {} // trailers
                    return Ok(true);
                }
                self.copy_exact(size, out)?;
                if !self.line()?.is_empty() {
                    return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
                }
            },
        }
    }

    fn more(&mut self) -> Result<usize, HttpError> {
        self.fill(BUF.max(self.buf.len())).map_err(|e| match e {
            e if timed_out(&e) => HttpError::Timeout,
            e => HttpError::Broken(e),
        })
    }

    fn copy_exact(
        &mut self,
        mut n: u64,
        out: &mut dyn FnMut(&[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        while n > 0 {
            if self.pos == self.end && self.more()? == 0 {
                return Err(HttpError::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of the answer's body",
                )));
            }
            let take = (self.end - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            out(&self.buf[self.pos..self.pos + take])?;
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// One CRLF-terminated line of a chunked body, without its end.
    fn line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(i) = self.buf[self.pos..self.end].iter().position(|b| *b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).trim_end().to_string();
                self.pos += i + 1;
                return Ok(line);
            }
            if self.end - self.pos > 4096 {
                return Err(HttpError::Malformed("chunk line longer than 4096 bytes".into()));
            }
            if self.more()? == 0 {
                return Err(HttpError::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a chunked answer",
                )));
            }
        }
    }
}

/// `fmt::Write` into a byte buffer, for the request head.
struct WbufText<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for WbufText<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    /// A connection whose peer answers `reply` after reading the request
    /// head; returns the request it saw.
    fn against(
        reply: &'static [u8],
        body: Body<'_>,
        sink: Sink<'_>,
    ) -> (Result<(Answer, bool), HttpError>, Vec<u8>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = b.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            b.write_all(reply).unwrap();
            let _ = b.shutdown(std::net::Shutdown::Write);
            seen
        });
        let mut conn = Conn::new(Stream::Unix(a), None);
        let limit = Limit::Until(Instant::now() + Duration::from_secs(5));
        let out = conn.exchange("plugin.moby.localhost", "/VolumeDriver.Get", body, sink, limit);
        (out, peer.join().unwrap())
    }

    #[test]
    fn requests_carry_the_headers_and_framing_of_the_protocol() {
        let (out, seen) = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            Body::Json(b"{}\n"),
            Sink::Buffer(100),
        );
        let (answer, reusable) = out.unwrap();
        assert_eq!((answer.status, answer.body.as_slice(), reusable), (200, &b"{}"[..], true));
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.starts_with("POST /VolumeDriver.Get HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("\r\nHost: plugin.moby.localhost\r\n"));
        assert!(seen.contains("\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n"));
        assert!(seen.contains("\r\nContent-Length: 3\r\n"));
        let (_, seen) =
            against(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", Body::Empty, Sink::Buffer(100));
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.contains("Content-Length: 0\r\n") && !seen.contains("Content-Type"), "{seen}");
    }

    #[test]
    fn chunked_eof_and_continue_answers_are_read() {
        let (out, _) = against(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\n",
            Body::Empty,
            Sink::Buffer(100),
        );
        let (answer, reusable) = out.unwrap();
        assert_eq!((answer.body.as_slice(), reusable), (&b"{\"a\":1}"[..], true));
        let (out, _) = against(b"HTTP/1.0 200 OK\r\n\r\n{\"b\":2}\n", Body::Empty, Sink::Buffer(100));
        let (answer, reusable) = out.unwrap();
        assert_eq!((answer.body.as_slice(), reusable), (&b"{\"b\":2}\n"[..], false));
    }

    #[test]
    fn oversize_answers_and_garbage_are_typed_errors() {
        let (out, _) =
            against(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", Body::Empty, Sink::Buffer(10));
        assert!(matches!(out, Err(HttpError::TooLarge(10))));
        let (out, _) = against(b"HTTP/1.1 200 OK\r\n\r\n0123456789abc", Body::Empty, Sink::Buffer(10));
        assert!(matches!(out, Err(HttpError::TooLarge(10))));
        let (out, _) = against(b"SSH-2.0-OpenSSH\r\n\r\n", Body::Empty, Sink::Buffer(10));
        assert!(matches!(out, Err(HttpError::Malformed(_))), "{out:?}");
        let (out, _) = against(b"", Body::Empty, Sink::Buffer(10));
        assert!(matches!(out, Err(HttpError::NoAnswer(_))), "{out:?}");
        let (out, _) =
            against(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", Body::Empty, Sink::Buffer(10));
        assert!(matches!(out, Err(HttpError::Broken(_))), "{out:?}");
        // Error answers are cut, never refused.
        let (out, _) =
            against(b"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nbad", Body::Empty, Sink::Buffer(1));
        assert_eq!(out.unwrap().0.body, b"bad");
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(Stream::Unix(a), None);
        let start = Instant::now();
        let limit = Limit::Until(start + Duration::from_millis(200));
        let out = conn.exchange("h", "/X", Body::Empty, Sink::Buffer(10), limit);
        assert!(matches!(out, Err(HttpError::Timeout)), "{out:?}");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(190) && took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn streams_go_out_chunked_and_come_back_into_a_writer() {
        let mut tar: &[u8] = b"tar bytes";
        let mut out = Vec::new();
        let (res, seen) = against(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Body::Stream(&mut tar),
            Sink::Writer(&mut out),
        );
        res.unwrap();
        assert_eq!(out, b"hello");
        let seen = String::from_utf8(seen).unwrap();
        assert!(seen.contains("Transfer-Encoding: chunked\r\n"), "{seen}");
    }
}
