//! Handlers: a [`Command`] in, an HTTP answer out. Engine calls are blocking
//! (a driver may take up to its deadline), so every one runs on tokio's
//! blocking pool and the runtime keeps serving other requests meanwhile.

pub mod images;
pub mod networks;
pub mod plugins;
pub mod system;
pub mod volumes;

use std::sync::Arc;
use std::time::Duration;

use berth_core::Engine;
use berth_plugin_api::{DriverResult, ErrorKind};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::error::ApiError;
use crate::host::HostFacts;
use crate::routes::Command;

/// The Docker Engine API version berthd serves.
pub const API_VERSION: &str = "1.47";
/// The oldest Docker Engine API version berthd accepts.
pub const MIN_API_VERSION: &str = "1.24";

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Host facts read at start.
    pub host: HostFacts,
    /// The engine's ID.
    pub engine_id: String,
    /// Process start to listening, in microseconds (set once listening).
    pub listen_us: std::sync::OnceLock<u64>,
}

/// An HTTP answer whose body is whole in memory (most of them).
pub type Reply = Response<Full<Bytes>>;

/// The body of any answer: whole ([`Reply`], through [`boxed`]) or
/// streamed (an image archive, load progress).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole answer as an answer of any kind.
pub fn boxed(reply: Reply) -> Response<Body> {
    reply.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// Runs `cmd` and answers. `payload` is the unread request body of a
/// command whose route [streams its body](crate::routes::streams_body).
pub async fn execute(
    state: &Arc<AppState>,
    cmd: Command,
    payload: Option<Incoming>,
) -> Result<Response<Body>, ApiError> {
    match cmd {
        Command::ImageLoad { quiet } => match payload {
            Some(body) => images::load(state, quiet, body).await,
            None => Err(ApiError::new(ErrorKind::Internal, "image load routed without its request body")),
        },
        Command::ImageSave(names) => images::save(state, names).await,
        other => whole(state, other).await.map(boxed),
    }
}

/// The commands answered with a whole body.
async fn whole(state: &Arc<AppState>, cmd: Command) -> Result<Reply, ApiError> {
    match cmd {
        Command::Ping { head } => Ok(system::ping(head)),
        Command::Version => Ok(json(StatusCode::OK, &system::version(&state.host))),
        Command::Info => {
            let st = Arc::clone(state);
            let info = blocking(state, |e| Ok(e.info())).await?;
            Ok(json(StatusCode::OK, &system::info(&st, info)))
        }
        Command::PluginList => plugins::list(state).await,
        Command::PluginInspect(name) => plugins::inspect(state, name).await,
        Command::VolumeList(filters) => volumes::list(state, filters).await,
        Command::VolumePrune { filters, anonymous_only } => {
            volumes::prune(state, filters, anonymous_only).await
        }
        Command::VolumeMount(req) => volumes::mount(state, req).await,
        Command::VolumeUnmount { name, id } => volumes::unmount(state, name, id).await,
        Command::VolumeCreate(req) => volumes::create(state, req).await,
        Command::VolumeInspect(name) => volumes::inspect(state, name).await,
        Command::VolumeRemove { name, force } => volumes::remove(state, name, force).await,
        Command::NetworkList(filters) => networks::list(state, filters).await,
        Command::NetworkCreate(req) => networks::create(state, *req).await,
        Command::NetworkInspect(name) => networks::inspect(state, name).await,
        Command::NetworkRemove(name) => networks::remove(state, name).await,
        Command::NetworkConnect { network, req } => networks::connect(state, network, *req).await,
        Command::NetworkDisconnect { network, req } => networks::disconnect(state, network, req).await,
        Command::NetworkPrune(filters) => networks::prune(state, filters).await,
        Command::SandboxCreate(req) => networks::sandbox_create(state, req).await,
        Command::SandboxList => networks::sandbox_list(state).await,
        Command::SandboxInspect(name) => networks::sandbox_inspect(state, name).await,
        Command::SandboxRemove(name) => networks::sandbox_remove(state, name).await,
        Command::ImageList { filters, all } => images::list(state, filters, all).await,
        Command::ImageInspect(name) => images::inspect(state, name).await,
        Command::ImageRemove { name, force, noprune } => images::remove(state, name, force, noprune).await,
        Command::ImageLoad { .. } | Command::ImageSave(_) => {
            Err(ApiError::new(ErrorKind::Internal, "a streamed command reached the whole-body path"))
        }
    }
}

/// Runs `f` on the engine on tokio's blocking pool.
pub async fn blocking<T, F>(state: &Arc<AppState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Engine) -> DriverResult<T> + Send + 'static,
{
    let engine = Arc::clone(&state.engine);
    match tokio::task::spawn_blocking(move || f(&engine)).await {
        Ok(out) => out.map_err(ApiError::from),
        Err(e) if e.is_panic() => {
            tracing::error!("engine call panicked: {e}");
            Err(ApiError::new(
                ErrorKind::Internal,
                "the engine panicked serving this request (see berthd's log)",
            ))
        }
        Err(e) => Err(ApiError::new(ErrorKind::Unavailable, format!("berthd is shutting down: {e}"))),
    }
}

/// A JSON answer.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => ApiError::new(ErrorKind::Internal, format!("encode answer: {e}")).into_response(),
    }
}

/// An empty answer with `status`.
pub fn empty(status: StatusCode) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Microseconds of a duration, saturating.
pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}
