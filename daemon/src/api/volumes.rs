//! `GET /volumes`, `POST /volumes/create`, `GET /volumes/{name}`,
//! `DELETE /volumes/{name}`, `POST /volumes/prune`, in Docker's shapes;
//! and berth's own `POST /volumes/{name}/mount|unmount`.

use std::sync::Arc;

use berth_core::{CreateVolume, Filters, MountVolume};
use hyper::StatusCode;

use super::{blocking, empty, json, AppState, Reply};
use crate::error::ApiError;

/// `{"Volumes": [...], "Warnings": [...]}`.
pub async fn list(state: &Arc<AppState>, filters: Filters) -> Result<Reply, ApiError> {
    let list = blocking(state, move |e| e.volumes().list(&filters)).await?;
    Ok(json(StatusCode::OK, &list))
}

/// `{"VolumesDeleted": [...], "SpaceReclaimed": N}`.
pub async fn prune(state: &Arc<AppState>, filters: Filters, anonymous_only: bool) -> Result<Reply, ApiError> {
    let report = blocking(state, move |e| e.volumes().prune(&filters, anonymous_only)).await?;
    tracing::info!(removed = report.volumes_deleted.len(), bytes = report.space_reclaimed, "volumes pruned");
    Ok(json(StatusCode::OK, &report))
}

/// Takes one mount reference: 201 with `{Name, ID, Mountpoint, User, CreatedAt}`.
pub async fn mount(state: &Arc<AppState>, req: MountVolume) -> Result<Reply, ApiError> {
    let r = blocking(state, move |e| e.volumes().mount(req)).await?;
    tracing::info!(volume = %r.name, id = %r.id, "volume mounted");
    Ok(json(StatusCode::CREATED, &r))
}

/// Releases one mount reference: 204.
pub async fn unmount(state: &Arc<AppState>, name: String, id: String) -> Result<Reply, ApiError> {
    let (n, i) = (name.clone(), id.clone());
    blocking(state, move |e| e.volumes().unmount(&n, &i)).await?;
    tracing::info!(volume = %name, id = %id, "volume unmounted");
    Ok(empty(StatusCode::NO_CONTENT))
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
