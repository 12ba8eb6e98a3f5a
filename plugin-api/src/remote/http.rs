//! Just enough blocking HTTP/1.1 for the plugin protocol, server side:
//! request heads parsed with `httparse`, request bodies framed by
//! `Content-Length` or chunked transfer encoding (read through [`Body`]),
//! sized answers written with one `write` call, and streamed answers
//! ([`StreamWriter`]) sent chunked (or close-delimited to HTTP/1.0 clients).
//!
//! Everything works on one [`Conn`]: a socket plus a read buffer that may
//! hold the start of the next request (pipelining is allowed).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The most a request head (request line and headers) may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most headers a request may carry.
const MAX_HEADERS: usize = 64;
/// The most a chunk-size line or a trailer line may take.
const MAX_LINE: usize = 4096;
/// The read buffer's initial size.
const BUF_SIZE: usize = 8 * 1024;
/// Streamed answers are sent in chunks of about this size.
const CHUNK_SIZE: usize = 64 * 1024;

/// A connected socket of either family.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A unix-domain stream.
    Unix(UnixStream),
    /// A TCP stream.
    Tcp(TcpStream),
}

impl Stream {
    /// A second handle on the same socket (to shut it down from elsewhere).
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Shuts the socket down in `how` direction(s).
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    /// Sets the read and write timeouts.
    pub(crate) fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the server needs of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// `POST`, ...
    pub(crate) method: String,
    /// The path without the query, e.g. `/VolumeDriver.Create`.
    pub(crate) path: String,
    /// The query without `?` (empty when none).
    pub(crate) query: String,
    /// An HTTP/1.0 request (no chunked answers).
    pub(crate) http10: bool,
    /// Whether the client wants the connection kept open.
    pub(crate) keep_alive: bool,
    /// How the body is delimited.
    pub(crate) framing: Framing,
    /// `Expect: 100-continue` was sent.
    pub(crate) expect_continue: bool,
}

/// Why no request head could be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed the connection between requests (the normal end).
    Closed,
    /// The socket failed (or the idle timeout expired).
    Io,
    /// The head is larger than [`MAX_HEAD`] or has too many headers: `431`.
    TooLarge,
    /// The head is not valid HTTP/1.x: `400` with this reason.
    Bad(String),
}

impl Head {
    fn from_request(req: &httparse::Request<'_, '_>) -> Result<Head, HeadError> {
        let method = req.method.unwrap_or_default().to_string();
        let target = req.path.unwrap_or_default();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        let http10 = req.version == Some(0);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut transfer_encoding = false;
        let (mut close, mut keep) = (false, false);
        let mut expect_continue = false;
        for h in req.headers.iter() {
            let value = std::str::from_utf8(h.value).map_err(|_| bad("a header value is not UTF-8"))?;
            if h.name.eq_ignore_ascii_case("content-length") {
                let n: u64 = value.trim().parse().map_err(|_| bad("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("conflicting Content-Length headers"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                transfer_encoding = true;
                // Only the last coding decides the framing.
                chunked = value
                    .rsplit(',')
                    .map(str::trim)
                    .find(|c| !c.is_empty())
                    .is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep |= token.eq_ignore_ascii_case("keep-alive");
                }
            } else if h.name.eq_ignore_ascii_case("expect") {
                expect_continue = value.trim().eq_ignore_ascii_case("100-continue");
            }
        }
        if transfer_encoding && !chunked {
            return Err(bad("a Transfer-Encoding other than chunked cannot be framed"));
        }
        let framing = if chunked {
            Framing::Chunked
        } else {
            match length {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        };
        // A request with both framings may be a smuggling attempt: answer,
        // then close (RFC 9112 §6.1).
        let keep_alive = !(close || (http10 && !keep) || (chunked && length.is_some()));
        Ok(Head {
            method,
            path: path.to_string(),
            query: query.to_string(),
            http10,
            keep_alive,
            framing,
            expect_continue,
        })
    }
}

fn bad(reason: &str) -> HeadError {
    HeadError::Bad(reason.to_string())
}

/// One connection: the socket and what was read ahead of the parser.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Conn {
    /// Wraps a connected socket.
    pub(crate) fn new(stream: Stream) -> Conn {
        Conn { stream, buf: vec![0; BUF_SIZE], pos: 0, end: 0 }
    }

    /// The socket, for writing answers.
    pub(crate) fn stream(&mut self) -> &mut Stream {
        &mut self.stream
    }

    /// Reads the next request head. [`HeadError::Closed`] when the peer
    /// closed the connection before sending a byte of it.
    pub(crate) fn read_head(&mut self) -> Result<Head, HeadError> {
        loop {
            if self.end > self.pos {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf[self.pos..self.end]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let head = Head::from_request(&req)?;
                        self.pos += n;
                        return Ok(head);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
                    Err(e) => return Err(HeadError::Bad(format!("malformed request head: {e}"))),
                }
                if self.end - self.pos >= MAX_HEAD {
                    return Err(HeadError::TooLarge);
                }
            }
            let started = self.end > self.pos;
            match self.fill(MAX_HEAD) {
                Ok(0) if started => return Err(bad("the connection closed in the middle of a request head")),
                Ok(0) => return Err(HeadError::Closed),
                Ok(_) => {}
                Err(_) => return Err(HeadError::Io),
            }
        }
    }

    /// A reader of the body of the request whose head was just read.
    pub(crate) fn body(&mut self, framing: Framing) -> Body<'_> {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Sized(n),
            Framing::Chunked => BodyState::ChunkStart,
        };
        Body { conn: self, state }
    }

    /// Reads more input into the buffer (growing it up to `max` bytes of
    /// pending input); answers how many bytes arrived, 0 at end of stream.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.pos == self.end {
            (self.pos, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                (self.pos, self.end) = (0, self.end - self.pos);
            } else if self.buf.len() < max {
                let size = (self.buf.len() * 2).min(max);
                self.buf.resize(size, 0);
            } else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
        }
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to `out.len()` bytes: buffered ones first, else straight
    /// from the socket.
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.end {
            let n = out.len().min(self.end - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        loop {
            match self.stream.read(out) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Reads one CRLF- (or LF-) terminated line, without its terminator.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.pos..self.end].iter().position(|b| *b == b'\n') {
                let mut line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.end - self.pos >= MAX_LINE {
                return Err(invalid("a chunk-size or trailer line is too long"));
            }
            if self.fill(MAX_LINE.max(BUF_SIZE))? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the request body was cut short"));
            }
        }
    }

    /// Closes gracefully after an answer while input may still be
    /// arriving: stops writing, then reads and discards for a short while,
    /// so the kernel does not reset the connection before the client has
    /// read the answer.
    pub(crate) fn linger_close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 8192];
        let mut left: usize = 4 << 20;
        while left > 0 {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes left.
    Sized(u64),
    /// A chunk-size line comes next.
    ChunkStart,
    /// This many bytes of the current chunk left.
    InChunk(u64),
    /// The CRLF after a chunk's data comes next.
    ChunkEnd,
    /// Everything was read.
    Done,
}

/// A request body as a [`Read`]: ends where the framing says.
#[derive(Debug)]
pub(crate) struct Body<'a> {
    conn: &'a mut Conn,
    state: BodyState,
}

impl Body<'_> {
    /// Whether the whole body was read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Reads the whole body into `out`; `Ok(false)` (with the body left
    /// half read) once it would exceed `limit` bytes.
    pub(crate) fn read_to_limit(&mut self, out: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.read(&mut chunk)?;
            if n == 0 {
                return Ok(true);
            }
            if out.len() + n > limit {
                return Ok(false);
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads and drops what is left of the body, up to `max` bytes;
    /// whether the body ended.
    pub(crate) fn drain(&mut self, max: u64) -> bool {
        let mut sink = [0u8; 16 * 1024];
        let mut left = max;
        while !self.is_done() {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(n) if (n as u64) <= left => left -= n as u64,
                Ok(_) | Err(_) => return false,
            }
        }
        self.is_done()
    }
}

impl Read for Body<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::Sized(left) => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.conn.read_some(&mut out[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the request body is shorter than its Content-Length",
                        ));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 { BodyState::Done } else { BodyState::Sized(left) };
                    return Ok(n);
                }
                BodyState::ChunkStart => {
                    let line = self.conn.read_line()?;
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        while !self.conn.read_line()?.is_empty() {}
                        self.state = BodyState::Done;
                        return Ok(0);
                    }
                    self.state = BodyState::InChunk(size);
                }
                BodyState::InChunk(left) => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.conn.read_some(&mut out[..want])?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "a body chunk was cut short",
                        ));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 { BodyState::ChunkEnd } else { BodyState::InChunk(left) };
                    return Ok(n);
                }
                BodyState::ChunkEnd => {
                    if !self.conn.read_line()?.is_empty() {
                        return Err(invalid("a body chunk is longer than its size"));
                    }
                    self.state = BodyState::ChunkStart;
                }
            }
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let text = std::str::from_utf8(line).map_err(|_| invalid("a chunk-size line is not text"))?;
    let digits = text.split(';').next().unwrap_or("").trim();
    if digits.is_empty() || digits.len() > 15 {
        return Err(invalid("invalid chunk size"));
    }
    u64::from_str_radix(digits, 16).map_err(|_| invalid("invalid chunk size"))
}

/// The reason phrase of the statuses this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Writes a complete answer with a sized body in one `write`, reusing
/// `out` as the buffer. `extra` is more header text, each line ending in
/// CRLF.
pub(crate) fn write_response(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &str,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    out.clear();
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}{}\r\n",
        reason(status),
        body.len(),
        if close { "Connection: close\r\n" } else { "" },
    )?;
    out.extend_from_slice(body);
    stream.write_all(out)
}

/// Sends `100 Continue`.
pub(crate) fn write_continue(stream: &mut Stream) -> io::Result<()> {
    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
}

/// A streamed answer body. The status line and headers go out with the
/// first data (so an error before any data can still become an error
/// answer); data is sent chunked, or close-delimited to HTTP/1.0 clients.
#[derive(Debug)]
pub(crate) struct StreamWriter<'a> {
    stream: &'a mut Stream,
    head: Vec<u8>,
    buf: Vec<u8>,
    chunked: bool,
    started: bool,
}

impl<'a> StreamWriter<'a> {
    /// A `200` answer of `content_type`; `http10` selects close-delimited.
    pub(crate) fn new(stream: &'a mut Stream, content_type: &str, http10: bool) -> StreamWriter<'a> {
        let framing = if http10 { "Connection: close\r\n" } else { "Transfer-Encoding: chunked\r\n" };
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{framing}\r\n").into_bytes();
        StreamWriter { stream, head, buf: Vec::with_capacity(CHUNK_SIZE), chunked: !http10, started: false }
    }

    /// Whether anything was sent yet (after which no error answer is
    /// possible: the connection must be dropped instead).
    pub(crate) fn started(&self) -> bool {
        self.started
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let mut frame = Vec::new();
        if !self.started {
            frame.append(&mut self.head);
            self.started = true;
        }
        if self.chunked {
            if !self.buf.is_empty() {
                write!(frame, "{:x}\r\n", self.buf.len())?;
                frame.extend_from_slice(&self.buf);
                frame.extend_from_slice(b"\r\n");
            }
            if last {
                frame.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            frame.extend_from_slice(&self.buf);
        }
        self.buf.clear();
        if frame.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&frame)
    }

    /// Sends what is buffered and ends the body.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send(true)
    }
}

impl Write for StreamWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_SIZE {
            self.send(false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send(false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(Stream::Unix(a)), b)
    }

    fn head_of(text: &str) -> Result<Head, HeadError> {
        let (mut conn, mut peer) = pair();
        peer.write_all(text.as_bytes()).unwrap();
        drop(peer);
        conn.read_head()
    }

    #[test]
    fn heads_give_path_query_framing_and_keep_alive() {
        let h = head_of(
            "POST /GraphDriver.ApplyDiff?id=a&parent=b HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.query.as_str()),
            ("POST", "/GraphDriver.ApplyDiff", "id=a&parent=b")
        );
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);

        let h =
            head_of("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\nExpect: 100-continue\r\n\r\n")
                .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.expect_continue && h.keep_alive);

        let h = head_of("POST /x HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        assert_eq!(h.framing, Framing::Empty);
        let h = head_of("POST /x HTTP/1.0\r\n\r\n").unwrap();
        assert!(h.http10 && !h.keep_alive);
        let h = head_of("POST /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(h.http10 && h.keep_alive);
        let h =
            head_of("POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(h.framing == Framing::Chunked && !h.keep_alive);
    }

    #[test]
    fn bad_heads_are_refused_with_a_reason() {
        assert!(matches!(head_of(""), Err(HeadError::Closed)));
        assert!(matches!(head_of("POST /x HTTP/1.1\r\n"), Err(HeadError::Bad(_))));
        assert!(matches!(head_of("POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(HeadError::Bad(_))));
        assert!(matches!(
            head_of("POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(
            head_of("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(HeadError::Bad(_))
        ));
        assert!(matches!(head_of("\x01\x02 garbage\r\n\r\n"), Err(HeadError::Bad(_))));
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(head_of(&format!("POST /x HTTP/1.1\r\n{many}\r\n")), Err(HeadError::TooLarge)));
        let huge = "a".repeat(MAX_HEAD + 10);
        assert!(matches!(
            head_of(&format!("POST /x HTTP/1.1\r\nX: {huge}\r\n\r\n")),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn sized_and_chunked_bodies_read_back_and_leave_the_next_request() {
        let (mut conn, mut peer) = pair();
        let text = "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
                    POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n\
                    POST /c HTTP/1.1\r\n\r\n";
        peer.write_all(text.as_bytes()).unwrap();
        drop(peer);
        let mut out = Vec::new();
        let h = conn.read_head().unwrap();
        assert!(conn.body(h.framing).read_to_limit(&mut out, 100).unwrap());
        assert_eq!(out, b"hello");
        let h = conn.read_head().unwrap();
        out.clear();
        let mut body = conn.body(h.framing);
        assert!(body.read_to_limit(&mut out, 100).unwrap());
        assert!(body.is_done());
        assert_eq!(out, b"abc0123456789");
        assert_eq!(conn.read_head().unwrap().path, "/c");
        assert!(matches!(conn.read_head(), Err(HeadError::Closed)));
    }

    #[test]
    fn bodies_over_the_limit_stop_and_short_bodies_fail() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789").unwrap();
        let h = conn.read_head().unwrap();
        let mut out = Vec::new();
        assert!(!conn.body(h.framing).read_to_limit(&mut out, 4).unwrap());

        let (mut conn, mut peer) = pair();
        peer.write_all(b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234").unwrap();
        drop(peer);
        let h = conn.read_head().unwrap();
        let err = conn.body(h.framing).read_to_limit(&mut Vec::new(), 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let (mut conn, mut peer) = pair();
        peer.write_all(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap();
        drop(peer);
        let h = conn.read_head().unwrap();
        let err = conn.body(h.framing).read_to_limit(&mut Vec::new(), 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_body_split_across_many_writes_reads_whole() {
        let (mut conn, peer) = pair();
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            let mut msg = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for i in 0..50u8 {
                let data = vec![i; 1000];
                msg.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                msg.extend_from_slice(&data);
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"0\r\n\r\n");
            for piece in msg.chunks(7) {
                peer.write_all(piece).unwrap();
            }
        });
        let h = conn.read_head().unwrap();
        let mut out = Vec::new();
        assert!(conn.body(h.framing).read_to_limit(&mut out, 1 << 20).unwrap());
        writer.join().unwrap();
        assert_eq!(out.len(), 50_000);
        assert!(out.chunks(1000).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
    }

    #[test]
    fn answers_are_sized_or_chunked() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = Stream::Unix(a);
        write_response(&mut s, &mut Vec::new(), 404, "application/json", "Allow: POST\r\n", b"{}\n", true)
            .unwrap();
        let mut w = StreamWriter::new(&mut s, "application/x-tar", false);
        assert!(!w.started());
        w.write_all(&vec![b'x'; CHUNK_SIZE + 1]).unwrap();
        assert!(w.started());
        w.write_all(b"yz").unwrap();
        w.finish().unwrap();
        drop(s);
        let mut text = Vec::new();
        b.read_to_end(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 3\r\nAllow: POST\r\nConnection: close\r\n\r\n{}\n"
        ));
        let chunked =
            format!("{:x}\r\n{}\r\n2\r\nyz\r\n0\r\n\r\n", CHUNK_SIZE + 1, "x".repeat(CHUNK_SIZE + 1));
        assert!(text.ends_with(&format!("Transfer-Encoding: chunked\r\n\r\n{chunked}")), "{}", &text[..200]);
    }
}
