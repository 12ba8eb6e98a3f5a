//! The unix-socket listener and the hyper service: accept, read the request,
//! route it, run it, answer; on shutdown stop accepting and let in-flight
//! requests finish within a bound.

use std::convert::Infallible;
use std::io::ErrorKind as Io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_plugin_api::ErrorKind;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::UnixListener;

use crate::api::{self, AppState, API_VERSION};
use crate::error::ApiError;
use crate::routes;

/// The largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// Mode of the API socket.
pub const SOCKET_MODE: u32 = 0o660;

/// Makes `path` ready to bind: its directory exists; a stale socket nobody
/// listens on is removed; a live one (another daemon) is an error, and so is
/// a file that is not a socket.
pub fn prepare_socket(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create socket directory {}", dir.display()))?;
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == Io::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket: remove it or choose another --socket", path.display());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another daemon is already listening on {}: stop it first, or give this one another --socket \
             (and --root / --exec-root)",
            path.display()
        ),
        Err(e) if matches!(e.kind(), Io::ConnectionRefused | Io::NotFound) => {
            tracing::info!(socket = %path.display(), "removing stale socket nobody listens on");
            std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probe existing socket {}", path.display())),
    }
}

/// Binds the API socket (after [`prepare_socket`]) and sets its mode.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {:o} {}", SOCKET_MODE, path.display()))?;
    Ok(listener)
}

/// Removes the socket file when dropped (the daemon's socket is gone
/// whichever way `serve` ends).
#[derive(Debug)]
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == Io::NotFound => {}
            Err(e) => tracing::error!(socket = %self.0.display(), "cannot remove socket: {e}"),
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits at most
/// `grace` for in-flight requests.
pub async fn serve(
    listener: UnixListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::error!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let st = Arc::clone(&state);
                let service = service_fn(move |req| handle(Arc::clone(&st), req));
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(open_connections = open, "stopped accepting; letting in-flight requests finish");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within {grace:?}; closing anyway");
    }
}

/// One request, start to finish. Never fails: errors are JSON answers.
async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<api::Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let reply = if routes::streams_body(&method, &path) {
        // The body is a payload of any size (an image archive): the
        // handler streams it, unread and unlimited.
        match routes::parse(&method, &path, query.as_deref(), b"") {
            Ok(cmd) => api::execute(&state, cmd, Some(req.into_body())).await,
            Err(e) => Err(e),
        }
    } else {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                match routes::parse(&method, &path, query.as_deref(), &body) {
                    Ok(cmd) => api::execute(&state, cmd, None).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                Err(ApiError::new(ErrorKind::InvalidArgument, format!("cannot read request body: {e}")))
            }
        }
    };
    let mut resp = reply.unwrap_or_else(|e| api::boxed(e.into_response()));
    let h = resp.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert(SERVER, HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"))));
    h.insert("OSType", HeaderValue::from_static(std::env::consts::OS));
    tracing::debug!(
        %method, %path, status = resp.status().as_u16(), elapsed_us = api::micros(start.elapsed()), "request"
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/berth.sock");
        prepare_socket(&path).unwrap();
        // Live: someone listens.
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = prepare_socket(&path).unwrap_err().to_string();
        assert!(err.contains("already listening"), "{err}");
        // Stale: the file stays, nobody listens.
        drop(live);
        assert!(path.exists());
        prepare_socket(&path).unwrap();
        assert!(!path.exists());
        // Not a socket.
        std::fs::write(&path, "x").unwrap();
        assert!(prepare_socket(&path).unwrap_err().to_string().contains("not a socket"));
    }
}
