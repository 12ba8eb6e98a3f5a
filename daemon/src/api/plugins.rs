//! `GET /plugins`, `GET /plugins/{name}[/json]`.

use std::sync::Arc;

use hyper::StatusCode;

use super::{blocking, json, AppState, Reply};
use crate::error::ApiError;

/// Every configured plugin, in configuration order.
pub async fn list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let views = blocking(state, |e| Ok(e.plugins())).await?;
    Ok(json(StatusCode::OK, &views))
}

/// One plugin; 404 when no plugin has that name.
pub async fn inspect(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let view = blocking(state, move |e| e.plugin(&name)).await?;
    Ok(json(StatusCode::OK, &view))
}
