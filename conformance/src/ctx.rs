//! What a case body works with: its own root, its driver, the repeat count,
//! and helpers that record what the case made so teardown can undo it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin_api::storage::{
    CleanupRequest, CreateRequest, ExistsRequest, GetRequest, PutRequest, RemoveRequest, StatusRequest,
};
use berth_plugin_api::{ErrorKind, InitRequest, Kind, StorageDriver};

use crate::case::{check, ok, Stop};
use crate::subject::StorageFactory;

/// A case's world. Made fresh for every case by the runner.
pub struct Ctx {
    id: &'static str,
    dir: PathBuf,
    repeat: usize,
    fixtures: Option<PathBuf>,
    storage: Option<Arc<dyn StorageDriver>>,
    /// How the storage driver was made, to make it again on the same root.
    storage_factory: Option<(StorageFactory, InitRequest)>,
    /// Layers made through the helpers, in creation order.
    layers: Vec<String>,
    /// References taken with [`Ctx::get`] and not yet released.
    refs: BTreeMap<String, usize>,
    /// Every path `get` answered during the case.
    mounted: BTreeSet<PathBuf>,
    /// The volume driver under test, for volume cases.
    pub(crate) volume: Option<crate::volume::VolumeSlot>,
    /// The IPAM driver under test, for IPAM cases.
    pub(crate) ipam: Option<crate::ipam::IpamSlot>,
    /// The network driver under test, for network cases.
    pub(crate) network: Option<crate::network::NetworkSlot>,
    /// The remote plugin under test, when the subject is one (every case).
    pub(crate) remote: Option<crate::remote::RemoteTarget>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("layers", &self.layers)
            .field("refs", &self.refs)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    pub(crate) fn new(id: &'static str, dir: PathBuf, repeat: usize, fixtures: Option<PathBuf>) -> Self {
        Ctx {
            id,
            dir,
            repeat,
            fixtures,
            storage: None,
            storage_factory: None,
            layers: Vec::new(),
            refs: BTreeMap::new(),
            mounted: BTreeSet::new(),
            volume: None,
            ipam: None,
            network: None,
            remote: None,
        }
    }

    pub(crate) fn set_storage(
        &mut self,
        d: Arc<dyn StorageDriver>,
        factory: StorageFactory,
        init: InitRequest,
    ) {
        self.storage = Some(d);
        self.storage_factory = Some((factory, init));
    }

    /// Drops the drivers the case was given.
    pub(crate) fn drop_drivers(&mut self) {
        drop(self.storage.take());
        drop(self.volume.take());
        drop(self.ipam.take());
        drop(self.network.take());
    }

    /// The case's ID.
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// The case root: a fresh directory removed after the case. The driver's
    /// `root` and `run_root` are `root/` and `run/` inside it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many times idempotent calls are repeated (`--repeat`, default 10).
    pub fn repeat(&self) -> usize {
        self.repeat
    }

    /// The remote plugin under test, when the subject is one.
    pub fn remote(&self) -> Option<&crate::remote::RemoteTarget> {
        self.remote.as_ref()
    }

    /// Whether the driver's state outlives the case (a remote plugin owns
    /// its storage): then the driver may hold things other cases or runs
    /// made, and lists are checked for this case's own names only.
    pub fn shared_driver(&self) -> bool {
        self.remote.is_some()
    }

    /// Mount points left at or below the case root or any path `get`
    /// answered during the case (a remote driver's layers live outside
    /// the case root), deepest first.
    pub fn mounts_left(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut found = crate::sys::mounts_under(&self.dir)?;
        for p in self.mounted.iter().filter(|p| !p.starts_with(&self.dir)) {
            found.extend(crate::sys::mounts_under(p)?);
        }
        found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        found.dedup();
        Ok(found)
    }

    /// The directory holding the fixture plugins, when given.
    pub fn fixtures(&self) -> Option<&Path> {
        self.fixtures.as_deref()
    }

    /// The storage driver under test.
    ///
    /// # Panics
    /// When the case is not a storage case (a bug in the suite).
    pub fn storage(&self) -> &dyn StorageDriver {
        self.storage.as_deref().expect("a storage case is always given a storage driver")
    }

    /// Calls the driver's `cleanup` (daemon shutdown): it unmounts
    /// everything and drops every reference, so the case forgets the
    /// references it held.
    pub fn cleanup_storage(&mut self, when: &str) -> Result<(), Stop> {
        ok(format!("cleanup {when}"), self.storage().cleanup(CleanupRequest::default()))?;
        self.refs.clear();
        Ok(())
    }

    /// Reopens the storage driver: drops this case's instance and
    /// constructs a fresh one from the same factory and init request, on
    /// the same root (a daemon restart). Call [`Ctx::cleanup_storage`]
    /// first, as the daemon does.
    pub fn reopen_storage(&mut self) -> Result<(), Stop> {
        let (factory, init) = self.storage_factory.clone().expect("a storage case has a storage factory");
        drop(self.storage.take());
        self.refs.clear();
        let driver = crate::runner::construct(Kind::Storage, || factory(&init))?;
        self.storage = Some(driver);
        Ok(())
    }

    /// Creates read-only layer `id` on `parent` (empty: none); fails the case
    /// on error and remembers the layer for teardown.
    pub fn create(&mut self, id: &str, parent: &str) -> Result<(), Stop> {
        let step = format!("create read-only layer {id:?} on {}", parent_name(parent));
        ok(step, self.storage().create(CreateRequest::new(id, parent)))?;
        self.layers.push(id.to_string());
        Ok(())
    }

    /// Creates read-write layer `id` on `parent`, like [`Ctx::create`].
    pub fn create_rw(&mut self, id: &str, parent: &str) -> Result<(), Stop> {
        let step = format!("create read-write layer {id:?} on {}", parent_name(parent));
        ok(step, self.storage().create_rw(CreateRequest::new(id, parent)))?;
        self.layers.push(id.to_string());
        Ok(())
    }

    /// Records layer `id`, made by a direct driver call, for teardown.
    pub fn adopt_layer(&mut self, id: &str) {
        if !self.layers.iter().any(|l| l == id) {
            self.layers.push(id.to_string());
        }
    }

    /// Mounts layer `id` and checks the answer is an absolute path to a
    /// directory; teardown releases references the case did not.
    pub fn get(&mut self, id: &str) -> Result<PathBuf, Stop> {
        let resp = ok(format!("get layer {id:?}"), self.storage().get(GetRequest::new_id(id)))?;
        *self.refs.entry(id.to_string()).or_default() += 1;
        let path = PathBuf::from(&resp.path);
        if path.is_absolute() {
            self.mounted.insert(path.clone());
        }
        let step = format!("get layer {id:?}");
        check(path.is_absolute(), &step, "an absolute path", format!("{:?}", resp.path))?;
        check(
            path.is_dir(),
            &step,
            "a path to a directory",
            format!("{:?}, which is not a directory", resp.path),
        )?;
        Ok(path)
    }

    /// Releases one reference to layer `id`.
    pub fn put(&mut self, id: &str) -> Result<(), Stop> {
        ok(format!("put layer {id:?}"), self.storage().put(PutRequest::new_id(id)))?;
        if let Some(n) = self.refs.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(id);
            }
        }
        Ok(())
    }

    /// Removes layer `id`.
    pub fn remove(&mut self, id: &str) -> Result<(), Stop> {
        ok(format!("remove layer {id:?}"), self.storage().remove(RemoveRequest::new_id(id)))?;
        self.layers.retain(|l| l != id);
        self.refs.remove(id);
        Ok(())
    }

    /// Whether layer `id` exists; an error fails the case (`exists` never
    /// fails for an unknown id).
    pub fn exists(&self, id: &str) -> Result<bool, Stop> {
        ok(format!("exists {id:?}"), self.storage().exists(ExistsRequest::new_id(id)))
    }

    /// Fails unless `exists(id)` answers `want`.
    pub fn expect_exists(&self, id: &str, want: bool, when: &str) -> Result<(), Stop> {
        let got = self.exists(id)?;
        check(got == want, format!("exists {id:?} {when}"), want, got)
    }

    /// The driver's status pairs.
    pub fn status(&self, when: &str) -> Result<Vec<(String, String)>, Stop> {
        Ok(ok(format!("status {when}"), self.storage().status(StatusRequest::default()))?.status)
    }

    /// Undoes what the case left: for storage, releases its references,
    /// removes its layers newest first, and calls the driver's `cleanup`;
    /// for volumes, see [`crate::volume`]; for IPAM, see [`crate::ipam`]; for networks,
    /// see [`crate::network`].
    /// Every step runs; every failure is reported (an already removed layer
    /// is not a failure).
    pub(crate) fn teardown(&mut self) -> Vec<String> {
        let mut errors = self.storage_teardown();
        errors.extend(self.volume_teardown());
        errors.extend(self.ipam_teardown());
        errors.extend(self.network_teardown());
        errors
    }

    fn storage_teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.storage.is_none() && !self.layers.is_empty() {
            // A reopen failed half-way: a fresh instance removes the layers.
            if let Some((factory, init)) = self.storage_factory.clone() {
                match crate::runner::construct(Kind::Storage, || factory(&init)) {
                    Ok(d) => self.storage = Some(d),
                    Err(_) => errors.push("construct the storage driver again to clean up: it failed".into()),
                }
            }
        }
        let Some(d) = self.storage.clone() else { return errors };
        for (id, n) in std::mem::take(&mut self.refs) {
            for _ in 0..n {
                if let Err(e) = d.put(PutRequest::new_id(&id)) {
                    errors.push(format!("put layer {id:?}: {}: {}", e.kind, e.message));
                    break;
                }
            }
        }
        for id in std::mem::take(&mut self.layers).into_iter().rev() {
            match d.remove(RemoveRequest::new_id(&id)) {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("remove layer {id:?}: {}: {}", e.kind, e.message)),
            }
        }
        if let Err(e) = d.cleanup(CleanupRequest::default()) {
            errors.push(format!("cleanup: {}: {}", e.kind, e.message));
        }
        errors
    }
}

fn parent_name(parent: &str) -> String {
    if parent.is_empty() {
        "no parent".into()
    } else {
        format!("parent {parent:?}")
    }
}

/// Request constructors by id (the request structs are `#[non_exhaustive]`).
pub(crate) trait ById: Default {
    fn set_id(&mut self, id: &str);
    fn new_id(id: &str) -> Self {
        let mut r = Self::default();
        r.set_id(id);
        r
    }
}

macro_rules! by_id {
    ($($t:ty),*) => {$(
        impl ById for $t {
            fn set_id(&mut self, id: &str) {
                self.id = id.to_string();
            }
        }
    )*};
}
by_id!(GetRequest, PutRequest, RemoveRequest, ExistsRequest);
