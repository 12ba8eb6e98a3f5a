//! Compressed layer streams: detected by their magic bytes, not by a name.

use std::io::{BufRead, BufReader, Cursor, Read};

use berth_plugin_api::{DriverError, DriverResult};

/// How a layer stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`), possibly several members back to back.
    Gzip,
    /// zstd (`28 b5 2f fd`), possibly several frames back to back.
    Zstd,
}

impl Compression {
    /// Recognises the compression from the first bytes of a stream. Formats
    /// Docker once accepted but OCI layers do not use (bzip2, xz) are an
    /// unsupported error.
    pub fn detect(head: &[u8]) -> DriverResult<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Ok(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Ok(Compression::Zstd)
        } else if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Err(DriverError::unsupported(
                "layer stream is bzip2 or xz compressed; only plain, gzip and zstd layers are accepted",
            ))
        } else {
            Ok(Compression::None)
        }
    }
}

/// Buffer size for reading layer streams.
pub(crate) const STREAM_BUF: usize = 1 << 20;

/// Wraps `input` so that reading it yields the plain tar, whatever the
/// compression; returns the compression found too.
pub fn decompress<'a>(input: impl Read + 'a) -> DriverResult<(Compression, Box<dyn BufRead + 'a>)> {
    let mut input = input;
    let mut head = Vec::with_capacity(6);
    // Read the magic in a loop: a pipe may hand out fewer bytes at a time.
    while head.len() < 6 {
        let mut b = [0u8; 6];
        let want = 6 - head.len();
        match input.read(&mut b[..want]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DriverError::io("read layer stream", &e)),
        }
    }
    let kind = Compression::detect(&head)?;
    let whole = Cursor::new(head).chain(input);
    let out: Box<dyn BufRead + 'a> = match kind {
        Compression::None => Box::new(BufReader::with_capacity(STREAM_BUF, whole)),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            STREAM_BUF,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(STREAM_BUF, whole)),
        )),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(STREAM_BUF, whole))
                .map_err(|e| DriverError::io("start zstd decoder for layer stream", &e))?;
            Box::new(BufReader::with_capacity(STREAM_BUF, dec))
        }
    };
    Ok((kind, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_compression_detects_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]).unwrap(), Compression::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]).unwrap(), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/").unwrap(), Compression::None);
        assert_eq!(Compression::detect(b"").unwrap(), Compression::None);
        assert!(Compression::detect(b"BZh91AY").is_err());
    }
}
