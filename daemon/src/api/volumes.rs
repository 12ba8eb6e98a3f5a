//! `GET /volumes`, `POST /volumes/create`, `GET /volumes/{name}`,
//! `DELETE /volumes/{name}`, in Docker's shapes.

use std::sync::Arc;

use berth_core::CreateVolume;
use hyper::StatusCode;

use super::{blocking, empty, json, AppState, Reply};
use crate::error::ApiError;

/// `{"Volumes": [...], "Warnings": [...]}`.
pub async fn list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let list = blocking(state, |e| e.volumes().list()).await?;
    Ok(json(StatusCode::OK, &list))
}

/// Creates a volume: 201 with the volume.
pub async fn create(state: &Arc<AppState>, req: CreateVolume) -> Result<Reply, ApiError> {
    let name = req.name.clone();
    let driver = req.driver.clone();
    let vol = blocking(state, move |e| e.volumes().create(req)).await.inspect_err(|e| {
        tracing::warn!(volume = %name, driver = %driver, kind = %e.kind, "volume create failed: {}", e.message)
    })?;
    tracing::info!(volume = %vol.record.name, driver = %vol.record.driver, "volume created");
    Ok(json(StatusCode::CREATED, &vol))
}

/// One volume.
pub async fn inspect(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let vol = blocking(state, move |e| e.volumes().inspect(&name)).await?;
    Ok(json(StatusCode::OK, &vol))
}

/// Removes a volume: 204.
pub async fn remove(state: &Arc<AppState>, name: String, force: bool) -> Result<Reply, ApiError> {
    let n = name.clone();
    blocking(state, move |e| e.volumes().remove(&n, force)).await?;
    tracing::info!(volume = %name, force, "volume removed");
    Ok(empty(StatusCode::NO_CONTENT))
}
