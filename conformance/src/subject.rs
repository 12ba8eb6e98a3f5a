//! The plugin under test: who it is, and how to make a fresh driver of each
//! kind it provides — from a shared object, a linked constructor, or a
//! remote plugin (Docker's v1 plugin protocol, see [`crate::remote`]).

use std::path::Path;
use std::sync::Arc;

use berth_core::remote::RemoteOptions;
use berth_core::{load_library, Compat, LoadError};
use berth_plugin_api::{
    DriverResult, Init, InitRequest, IpamDriver, Kind, NetworkDriver, StorageDriver, VolumeDriver,
};
use serde::Serialize;

use crate::remote::RemoteTarget;
use crate::sys;

/// Builds a fresh storage driver for one case from its init request.
pub type StorageFactory =
    Arc<dyn Fn(&InitRequest) -> DriverResult<Init<Arc<dyn StorageDriver>>> + Send + Sync>;

/// Builds a fresh volume driver for one case from its init request (and
/// again, on the same root, when a case restarts the driver).
pub type VolumeFactory = Arc<dyn Fn(&InitRequest) -> DriverResult<Init<Arc<dyn VolumeDriver>>> + Send + Sync>;

/// Builds a fresh IPAM driver for one case from its init request (and
/// again, on the same root, when a case restarts the driver).
pub type IpamFactory = Arc<dyn Fn(&InitRequest) -> DriverResult<Init<Arc<dyn IpamDriver>>> + Send + Sync>;

/// Builds a fresh network driver for one case from its init request.
pub type NetworkFactory =
    Arc<dyn Fn(&InitRequest) -> DriverResult<Init<Arc<dyn NetworkDriver>>> + Send + Sync>;

/// Who the plugin under test is, recorded in every report so a result can
/// be cited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The manifest's name, e.g. `vfs` (for a remote plugin: the name the
    /// suite calls it by).
    pub name: String,
    /// The plugin's own version (unknown, so empty, for a remote plugin).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The plugin-api version it was built against (empty for a remote
    /// plugin).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The driver kinds its manifest declares (remote: its `Implements`).
    pub kinds: Vec<Kind>,
    /// `shared-object`, `linked` or `remote`.
    pub transport: String,
    /// A remote plugin's address, e.g. `unix:///run/docker/plugins/x.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A remote plugin's answer to `/Plugin.Activate`: `Implements`, as
    /// answered (unknown entries included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activate: Option<Vec<String>>,
    /// The shared object, when loaded from one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SHA-256 of the shared object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// How its interface relates to this build's (shared objects only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compat: Option<Compat>,
}

/// The plugin under test.
#[derive(Clone)]
pub struct Subject {
    identity: Identity,
    storage: Option<StorageFactory>,
    volume: Option<VolumeFactory>,
    ipam: Option<IpamFactory>,
    network: Option<NetworkFactory>,
    remote: Option<RemoteTarget>,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Subject {
    /// Loads a shared object with the daemon's own loader and compatibility
    /// policy (`berth_core::load_library`).
    pub fn load(path: &Path) -> Result<Subject, LoadError> {
        let lib = load_library(path)?;
        let kinds = &lib.manifest.kinds;
        let module = lib.module;
        let storage: Option<StorageFactory> = kinds
            .contains(&Kind::Storage)
            .then(|| Arc::new(move |init: &InitRequest| module.new_storage(init)) as StorageFactory);
        let volume: Option<VolumeFactory> = kinds
            .contains(&Kind::Volume)
            .then(|| Arc::new(move |init: &InitRequest| module.new_volume(init)) as VolumeFactory);
        let ipam: Option<IpamFactory> = kinds
            .contains(&Kind::Ipam)
            .then(|| Arc::new(move |init: &InitRequest| module.new_ipam(init)) as IpamFactory);
        let network: Option<NetworkFactory> = kinds
            .contains(&Kind::Network)
            .then(|| Arc::new(move |init: &InitRequest| module.new_network(init)) as NetworkFactory);
        let identity = Identity {
            name: lib.manifest.name.clone(),
            version: lib.manifest.version.clone(),
            api_version: lib.manifest.api_version.clone(),
            kinds: lib.manifest.kinds.clone(),
            transport: "shared-object".into(),
            path: Some(
                std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string(),
            ),
            sha256: sys::sha256_file(path).ok(),
            compat: Some(lib.compat),
            address: None,
            activate: None,
        };
        Ok(Subject { identity, storage, volume, ipam, network, remote: None })
    }

    /// A remote plugin at `address` (`unix:///path.sock`, a bare absolute
    /// socket path, `tcp://host:port`, `http://host:port`,
    /// `https://host:port`), activated now: its kinds are those its
    /// `/Plugin.Activate` answer implements. `name` is what the suite calls
    /// it (default: the socket's file stem, else `remote`). An unreachable
    /// plugin, or one whose handshake fails, is the error.
    ///
    /// Its factories ignore the init request's roots (the plugin owns its
    /// storage) and give a fresh client for every construction, so a
    /// case's restart is a daemon restart against the same plugin process.
    pub fn remote(address: &str, name: Option<&str>, options: RemoteOptions) -> DriverResult<Subject> {
        let target = RemoteTarget::connect(address, name, options)?;
        let kinds = target.kinds();
        let t = target.clone();
        let storage: Option<StorageFactory> = kinds.contains(&Kind::Storage).then(|| {
            Arc::new(move |init: &InitRequest| Ok(Init::Ready(t.storage(&init.root)?))) as StorageFactory
        });
        let t = target.clone();
        let volume: Option<VolumeFactory> = kinds
            .contains(&Kind::Volume)
            .then(|| Arc::new(move |_: &InitRequest| Ok(Init::Ready(t.volume()?))) as VolumeFactory);
        let t = target.clone();
        let ipam: Option<IpamFactory> = kinds
            .contains(&Kind::Ipam)
            .then(|| Arc::new(move |_: &InitRequest| Ok(Init::Ready(t.client()?.ipam()))) as IpamFactory);
        let t = target.clone();
        let network: Option<NetworkFactory> = kinds.contains(&Kind::Network).then(|| {
            Arc::new(move |_: &InitRequest| Ok(Init::Ready(t.client()?.network()))) as NetworkFactory
        });
        let identity = Identity {
            name: target.name.clone(),
            version: String::new(),
            api_version: String::new(),
            kinds,
            transport: "remote".into(),
            path: None,
            sha256: None,
            compat: None,
            address: Some(target.address.clone()),
            activate: Some(target.implements.clone()),
        };
        Ok(Subject { identity, storage, volume, ipam, network, remote: Some(target) })
    }

    /// A linked storage driver (the library use: a driver crate runs the
    /// suite in its own tests). `factory` has the shape `export_plugin!`
    /// takes, e.g. `VfsDriver::new`, and is called once per case.
    pub fn linked_storage<F, D>(name: &str, version: &str, factory: F) -> Subject
    where
        F: Fn(InitRequest) -> DriverResult<Init<D>> + Send + Sync + 'static,
        D: StorageDriver + 'static,
    {
        let factory: StorageFactory =
            Arc::new(move |init| Ok(factory(init.clone())?.map(|d| Arc::new(d) as Arc<dyn StorageDriver>)));
        Subject {
            identity: linked(name, version, Kind::Storage),
            storage: Some(factory),
            volume: None,
            ipam: None,
            network: None,
            remote: None,
        }
    }

    /// A linked volume driver, like [`Subject::linked_storage`]: `factory`
    /// (e.g. `LocalVolumeDriver::new`) is called once per case, and again
    /// on the same root when a case restarts the driver (VL-08).
    pub fn linked_volume<F, D>(name: &str, version: &str, factory: F) -> Subject
    where
        F: Fn(InitRequest) -> DriverResult<Init<D>> + Send + Sync + 'static,
        D: VolumeDriver + 'static,
    {
        let factory: VolumeFactory =
            Arc::new(move |init| Ok(factory(init.clone())?.map(|d| Arc::new(d) as Arc<dyn VolumeDriver>)));
        Subject {
            identity: linked(name, version, Kind::Volume),
            storage: None,
            volume: Some(factory),
            ipam: None,
            network: None,
            remote: None,
        }
    }

    /// A linked IPAM driver, like [`Subject::linked_volume`]: `factory`
    /// (e.g. `DefaultIpamDriver::new`) is called once per case, and again
    /// on the same root when a case restarts the driver (IP-09).
    pub fn linked_ipam<F, D>(name: &str, version: &str, factory: F) -> Subject
    where
        F: Fn(InitRequest) -> DriverResult<Init<D>> + Send + Sync + 'static,
        D: IpamDriver + 'static,
    {
        let factory: IpamFactory =
            Arc::new(move |init| Ok(factory(init.clone())?.map(|d| Arc::new(d) as Arc<dyn IpamDriver>)));
        Subject {
            identity: linked(name, version, Kind::Ipam),
            storage: None,
            volume: None,
            ipam: Some(factory),
            network: None,
            remote: None,
        }
    }

    /// A linked network driver, like [`Subject::linked_ipam`]: `factory`
    /// (e.g. `BridgeDriver::new`) is called once per case, on a fresh root.
    pub fn linked_network<F, D>(name: &str, version: &str, factory: F) -> Subject
    where
        F: Fn(InitRequest) -> DriverResult<Init<D>> + Send + Sync + 'static,
        D: NetworkDriver + 'static,
    {
        let factory: NetworkFactory =
            Arc::new(move |init| Ok(factory(init.clone())?.map(|d| Arc::new(d) as Arc<dyn NetworkDriver>)));
        Subject {
            identity: linked(name, version, Kind::Network),
            storage: None,
            volume: None,
            ipam: None,
            network: Some(factory),
            remote: None,
        }
    }

    /// Who it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The storage factory, when the plugin declares a storage driver.
    pub fn storage(&self) -> Option<&StorageFactory> {
        self.storage.as_ref()
    }

    /// The volume factory, when the plugin declares a volume driver.
    pub fn volume(&self) -> Option<&VolumeFactory> {
        self.volume.as_ref()
    }

    /// The IPAM factory, when the plugin declares an IPAM driver.
    pub fn ipam(&self) -> Option<&IpamFactory> {
        self.ipam.as_ref()
    }

    /// The network factory, when the plugin declares a network driver.
    pub fn network(&self) -> Option<&NetworkFactory> {
        self.network.as_ref()
    }

    /// The remote plugin, when the subject is one.
    pub fn remote_target(&self) -> Option<&RemoteTarget> {
        self.remote.as_ref()
    }

    /// Whether the plugin declares a driver of `kind`.
    pub fn provides(&self, kind: Kind) -> bool {
        self.identity.kinds.contains(&kind)
    }
}

/// The identity of a linked driver of one kind.
fn linked(name: &str, version: &str, kind: Kind) -> Identity {
    Identity {
        name: name.into(),
        version: version.into(),
        api_version: berth_plugin_api::API_VERSION.into(),
        kinds: vec![kind],
        transport: "linked".into(),
        path: None,
        sha256: None,
        compat: None,
        address: None,
        activate: None,
    }
}
