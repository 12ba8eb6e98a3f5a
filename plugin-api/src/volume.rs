//! The volume driver contract.
//!
//! # Vocabulary
//!
//! * A **volume** is a named piece of storage that outlives containers.
//!   Names are unique across all volume drivers (the core enforces that),
//!   never begin with `/`, and match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
//! * A **mount** makes a volume's data reachable at a host path for one user,
//!   identified by a caller-chosen mount **id** (64 hex digits per container
//!   mount). The core counts references itself and calls [`VolumeDriver::mount`]
//!   once per user with a distinct id, and [`VolumeDriver::unmount`] once per
//!   release with the same id; a failed mount is never followed by an unmount.
//!   A driver that provisions something on mount keeps its own count by id and
//!   releases the backing resource with the last unmount.
//!
//! # Rules
//!
//! * `get` of an unknown name is [`crate::ErrorKind::NotFound`].
//! * `create` of a name that exists with the same driver succeeds
//!   (idempotent); `remove` of a volume mounted by anyone is
//!   [`crate::ErrorKind::Conflict`].
//! * `path` may answer an empty path for a volume not mounted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::network::Scope;
use crate::DriverResult;

/// A volume driver. Every method may be called from many threads at once.
pub trait VolumeDriver: Send + Sync {
    /// Creates volume `req.name` with driver options `req.options`.
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()>;

    /// Removes a volume and its data.
    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()>;

    /// Makes the volume available for mount `req.id`; answers the host path.
    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse>;

    /// Releases mount `req.id`. Idempotent: an id that is not active
    /// (already released, or never mounted) succeeds.
    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()>;

    /// The host path of the volume's data (may be empty when not mounted).
    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse>;

    /// One volume.
    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo>;

    /// Every volume the driver knows.
    fn list(&self, req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>>;

    /// The driver's scope.
    fn capabilities(&self, req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities>;
}

/// [`VolumeDriver::create`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeCreateRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Driver options (`--opt`), e.g. `type`, `o`, `device` for `local`.
    #[serde(rename = "Opts")]
    pub options: BTreeMap<String, String>,
}

impl VolumeCreateRequest {
    /// A request for volume `name` with no options.
    pub fn new(name: impl Into<String>) -> Self {
        VolumeCreateRequest { name: name.into(), options: BTreeMap::new() }
    }
}

/// [`VolumeDriver::remove`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeRemoveRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// [`VolumeDriver::mount`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeMountRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The mount's id, unique per user.
    #[serde(rename = "ID")]
    pub id: String,
}

/// The answer of [`VolumeDriver::mount`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeMountResponse {
    /// Host path of the mounted data.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
}

impl VolumeMountResponse {
    /// An answer with `mountpoint`.
    pub fn new(mountpoint: impl Into<String>) -> Self {
        VolumeMountResponse { mountpoint: mountpoint.into() }
    }
}

/// [`VolumeDriver::unmount`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeUnmountRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The id given to the matching mount.
    #[serde(rename = "ID")]
    pub id: String,
}

/// [`VolumeDriver::path`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumePathRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// The answer of [`VolumeDriver::path`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumePathResponse {
    /// Host path of the data; empty when not mounted.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
}

impl VolumePathResponse {
    /// An answer with `mountpoint`.
    pub fn new(mountpoint: impl Into<String>) -> Self {
        VolumePathResponse { mountpoint: mountpoint.into() }
    }
}

/// [`VolumeDriver::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeGetRequest {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// [`VolumeDriver::list`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeListRequest {}

/// A volume as a driver describes it (`Volume` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeInfo {
    /// The volume's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Host path of the data, if known.
    #[serde(rename = "Mountpoint", skip_serializing_if = "String::is_empty")]
    pub mountpoint: String,
    /// Creation time, RFC 3339; omitted when unknown.
    #[serde(rename = "CreatedAt", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Driver-specific status shown by inspect.
    #[serde(rename = "Status", skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, serde_json::Value>,
}

impl VolumeInfo {
    /// A volume named `name` with data at `mountpoint`.
    pub fn new(name: impl Into<String>, mountpoint: impl Into<String>) -> Self {
        VolumeInfo { name: name.into(), mountpoint: mountpoint.into(), ..Default::default() }
    }
}

/// [`VolumeDriver::capabilities`]; no fields yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeCapabilitiesRequest {}

/// The answer of [`VolumeDriver::capabilities`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct VolumeCapabilities {
    /// `local` or `global`.
    #[serde(rename = "Scope")]
    pub scope: Scope,
}

impl VolumeCapabilities {
    /// Capabilities with `scope`.
    pub fn new(scope: Scope) -> Self {
        VolumeCapabilities { scope }
    }
}

macro_rules! name_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            /// A request for volume `name`.
            pub fn new(name: impl Into<String>) -> Self {
                $t { name: name.into() }
            }
        }
    )*};
}
name_ctor!(VolumeRemoveRequest, VolumePathRequest, VolumeGetRequest);

macro_rules! mount_ctor {
    ($($t:ident),*) => {$(
        impl $t {
            /// A request for mount `id` of volume `name`.
            pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
                $t { name: name.into(), id: id.into() }
            }
        }
    )*};
}
mount_ctor!(VolumeMountRequest, VolumeUnmountRequest);
