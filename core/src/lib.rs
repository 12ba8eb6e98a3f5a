//! # berth-core
//!
//! The daemon's engine, with no driver code and no HTTP: the configuration,
//! the shared-object loader, the registry of drivers (a value built from the
//! config), the one call wrapper every driver call goes through, and the
//! state store holding the resource ledger, and the services built on
//! them (volumes, images and their layers, networks and their sandboxes).

pub mod call;
pub mod config;
pub mod engine;
pub mod filters;
pub mod images;
pub mod layers;
pub mod loader;
pub mod locks;
pub mod mountspec;
pub mod network;
pub mod registry;
pub mod remote;
pub mod sandbox;
pub mod store;
pub mod volumes;

pub use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Kind};
pub use call::{Driver, Metrics, MetricsSnapshot};
pub use config::{Config, ConfigError};
pub use engine::{Engine, Info, ReconcileReport};
pub use filters::Filters;
pub use images::{
    DeleteItem, ImageInspect, ImageService, ImageSummary, LayerState, LoadProgress, LoadedImage,
};
pub use loader::{load_library, Compat, LoadError, LoadedLibrary};
pub use network::{
    ConnectRequest, CreateNetwork, CreateSandbox, DisconnectRequest, NetworkService, NetworkView,
    SandboxRecord,
};
pub use registry::{Registry, RegistryError, State, Transport};
pub use volumes::{CreateVolume, MountRef, MountVolume, PruneReport, Volume, VolumeList, VolumeService};
