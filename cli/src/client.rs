//! The one HTTP client of the CLI: HTTP/1.1 over berthd's unix socket,
//! on a current-thread runtime, one connection per request.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::UnixStream;

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
        let req = req
            .header(HOST, HeaderValue::from_static("berth"))
            .header("User-Agent", concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(payload))
            .map_err(|e| CliError::Other(format!("build request {uri}: {e}")))?;
        let (status, body) = self.rt.block_on(self.send(req))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => CliError::Api { status: status.as_u16(), kind: e.kind, message: e.message },
            Err(_) => CliError::Api {
                status: status.as_u16(),
                kind: None,
                message: if body.is_empty() {
                    format!("berthd answered {status}")
                } else {
                    String::from_utf8_lossy(&body).trim().to_string()
                },
            },
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), CliError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| CliError::Unreachable {
            message: format!(
                "cannot connect to berthd at {}: {e}. Is berthd running? Start it (e.g. `berthd --socket {}`) \
                 or point --host / BERTH_HOST at its socket",
                self.host,
                self.socket.display()
            ),
        })?;
        let lost = |e: hyper::Error| CliError::Unreachable {
            message: format!("lost the connection to berthd at {}: {e}", self.host),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(lost)?;
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(lost)?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(lost)?.to_bytes();
        drop(sender);
        let _ = conn.await;
        Ok((status, body))
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
