//! `GET /networks`, `POST /networks/create`, `GET|DELETE /networks/{id}`,
//! `POST /networks/{id}/connect|disconnect`, `POST /networks/prune`, in
//! Docker's shapes; and berth's own sandbox routes
//! (`POST /sandboxes/create`, `GET /sandboxes`, `GET|DELETE /sandboxes/{id}`),
//! which stand in for containers until they exist.

use std::sync::Arc;

use berth_core::{ConnectRequest, CreateNetwork, CreateSandbox, DisconnectRequest, Filters};
use hyper::StatusCode;

use super::{blocking, empty, json, AppState, Reply};
use crate::error::ApiError;

/// The networks, as a JSON array.
pub async fn list(state: &Arc<AppState>, filters: Filters) -> Result<Reply, ApiError> {
    let list = blocking(state, move |e| e.networks().list(&filters)).await?;
    Ok(json(StatusCode::OK, &list))
}

/// Creates a network: 201 with `{"Id", "Warning"}`.
pub async fn create(state: &Arc<AppState>, req: CreateNetwork) -> Result<Reply, ApiError> {
    let (name, driver) = (req.name.clone(), req.driver.clone());
    let made = blocking(state, move |e| e.networks().create(req)).await.inspect_err(|e| {
        tracing::warn!(network = %name, driver = %driver, kind = %e.kind, "network create failed: {}", e.message)
    })?;
    tracing::info!(network = %name, id = %made.id, "network created");
    Ok(json(StatusCode::CREATED, &made))
}

/// One network.
pub async fn inspect(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let view = blocking(state, move |e| e.networks().inspect(&name)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// Removes a network: 204.
pub async fn remove(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let n = name.clone();
    blocking(state, move |e| e.networks().delete(&n)).await?;
    tracing::info!(network = %name, "network removed");
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Attaches a sandbox: 200.
pub async fn connect(state: &Arc<AppState>, network: String, req: ConnectRequest) -> Result<Reply, ApiError> {
    let n = network.clone();
    let ep = blocking(state, move |e| e.networks().connect(&n, req)).await?;
    tracing::info!(network = %network, sandbox = %ep.name, endpoint = %ep.id, "sandbox connected");
    Ok(empty(StatusCode::OK))
}

/// Detaches a sandbox: 200.
pub async fn disconnect(
    state: &Arc<AppState>,
    network: String,
    req: DisconnectRequest,
) -> Result<Reply, ApiError> {
    let (n, sandbox) = (network.clone(), req.container.clone());
    blocking(state, move |e| e.networks().disconnect(&n, req)).await?;
    tracing::info!(network = %network, sandbox = %sandbox, "sandbox disconnected");
    Ok(empty(StatusCode::OK))
}

/// `{"NetworksDeleted": [...]}`.
pub async fn prune(state: &Arc<AppState>, filters: Filters) -> Result<Reply, ApiError> {
    let report = blocking(state, move |e| e.networks().prune(&filters)).await?;
    tracing::info!(removed = report.networks_deleted.len(), "networks pruned");
    Ok(json(StatusCode::OK, &report))
}

/// Makes a sandbox: 201 with `{"Id", "Key"}` (the namespace file). Its
/// `PortBindings` and `ExposedPorts` (Docker's shapes) are checked first:
/// a bad one is a 400 and nothing is made.
pub async fn sandbox_create(state: &Arc<AppState>, req: CreateSandbox) -> Result<Reply, ApiError> {
    let sb = blocking(state, move |e| e.networks().create_sandbox(req)).await?;
    tracing::info!(sandbox = %sb.name, id = %sb.id, key = %sb.key, "sandbox created");
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "Id": sb.id, "Key": sb.key })))
}

/// The sandboxes, as a JSON array (each as [`sandbox_inspect`] shows it).
pub async fn sandbox_list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let list = blocking(state, |e| Ok(e.networks().sandboxes())).await?;
    Ok(json(StatusCode::OK, &list))
}

/// One sandbox: its record (`Id`, `Name`, `Key`, `Host`, `Created`,
/// `PortBindings`, `ExposedPorts`), `Networks` by name, and `Ports` in
/// Docker's `NetworkSettings.Ports` shape, as its drivers published them.
pub async fn sandbox_inspect(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let view = blocking(state, move |e| {
        let id = e.networks().find_sandbox(&name)?.id;
        e.networks()
            .sandboxes()
            .into_iter()
            .find(|s| s.record.id == id)
            .ok_or_else(|| berth_core::DriverError::not_found(format!("sandbox {name} not found")))
    })
    .await?;
    Ok(json(StatusCode::OK, &view))
}

/// Removes a sandbox (disconnecting it first): 204.
pub async fn sandbox_remove(state: &Arc<AppState>, name: String) -> Result<Reply, ApiError> {
    let n = name.clone();
    blocking(state, move |e| e.networks().remove_sandbox(&n)).await?;
    tracing::info!(sandbox = %name, "sandbox removed");
    Ok(empty(StatusCode::NO_CONTENT))
}
