//! berth storage driver zfs: layers as ZFS datasets, children as clones.
//!
//! Every layer is a dataset directly below a parent dataset the driver
//! owns: the option `zfs.fsname`, or else the dataset mounted where the
//! driver's root is (read from `/proc/self/mountinfo`), as moby does.
//!
//! | operation             | commands (built in `cmd.rs`)                                         |
//! |-----------------------|----------------------------------------------------------------------|
//! | base layer            | `zfs create -o mountpoint=legacy [-o readonly=on] [-o quota=N] <fs>/<id>` |
//! | child layer           | `zfs snapshot -o berth:child=<id> <fs>/<parent>@<id>`, then `zfs clone` (same `-o`) of it to `<fs>/<id>` |
//! | `get` (first ref)     | `mount -t zfs [-o ro] <fs>/<id> <root>/graph/<id>`                  |
//! | `put` (last ref)      | `umount <root>/graph/<id>`                                           |
//! | `remove`              | `zfs destroy -r <fs>/<id>`, then `zfs destroy <fs>/<parent>@<id>`    |
//! | `status`              | `zpool list -Hp ...`, `zfs get -Hp -o property,value ...`            |
//!
//! * The datasets are the record: at start `zfs list` of the parent gives
//!   every layer, its parent (the dataset's `origin`), whether it is
//!   read-write (`readonly`) and its quota. A clone is made with all its
//!   properties at once, so a layer either exists whole or not at all.
//! * Crash recovery: snapshots marked `berth:child=<id>` whose clone `<id>`
//!   does not exist (a crash between `zfs snapshot` and `zfs clone`, or
//!   between destroying a layer and its origin) are destroyed at start; a
//!   stale snapshot met while creating is destroyed and the snapshot
//!   retried once. Mounts left under `<root>/graph` are unmounted.
//! * `size=` (per layer) sets the dataset's `quota`; other storage options
//!   are invalid. Read-only layers (`create`) are `readonly=on` and mounted
//!   `ro`. No [`berth_plugin_api::DiffDriver`]: the core diffs trees.
//! * Declines ([`Init::Skipped`]) when the kernel has no ZFS (`/dev/zfs`,
//!   `zfs` in `/proc/filesystems`), the `zfs`/`zpool` commands are missing,
//!   it is not root, or its root is on no zfs dataset and no `zfs.fsname`
//!   is given; the reason names what is missing.
//!
//! Every command goes through a `Runner` (`runner.rs`); unit tests answer
//! from recorded outputs. One driver instance per parent dataset.

#![deny(missing_docs)]

mod cmd;
pub mod export;
mod probe;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{combine, name_list};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, StorageDriver};
use serde::Deserialize;

use crate::cmd::Layer;
use crate::runner::{Cmd, HostRunner, Runner};

/// Longest dataset name ZFS takes (`ZFS_MAX_DATASET_NAME_LEN` less the NUL).
const MAX_NAME: usize = 255;

/// The driver's options from the configuration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZfsOptions {
    /// The dataset layers are made under; by default the dataset mounted
    /// where the driver's root is.
    #[serde(rename = "zfs.fsname")]
    fsname: Option<String>,
}

/// The zfs storage driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct ZfsDriver {
    runner: Arc<dyn Runner>,
    /// The parent dataset of every layer.
    fsname: String,
    /// The driver's root (canonical); layers are mounted in `graph/`.
    root: PathBuf,
    state: Mutex<State>,
}

/// What the driver knows, guarded by one lock; every call runs whole
/// under it (a few short commands).
#[derive(Debug, Default)]
struct State {
    /// Every layer, read from the datasets at start.
    layers: BTreeMap<String, Layer>,
    /// References taken by `get` and not yet released by `put`; a layer
    /// is mounted exactly while it has one.
    refs: HashMap<String, usize>,
}

impl ZfsDriver {
    /// Opens the driver on this host: probes for ZFS, finds the parent
    /// dataset, sweeps what a crash left and reads the layers.
    ///
    /// Declines ([`Init::Skipped`]) when the kernel has no ZFS, the tools
    /// are missing, not running as root, or the root is on no zfs dataset
    /// and option `zfs.fsname` is not given; the reason says which.
    pub fn new(req: InitRequest) -> DriverResult<Init<ZfsDriver>> {
        let options: ZfsOptions = req.decode_options()?;
        if let Some(reason) = probe::Host::current().skip_reason() {
            return Ok(Init::Skipped(reason));
        }
        let root = Path::new(&req.root);
        if !root.is_absolute() {
            return Err(DriverError::invalid_argument(format!(
                "zfs root {:?} is not an absolute path",
                req.root
            )));
        }
        let fsname = match options.fsname {
            Some(name) => name,
            None => {
                let table = fs::read_to_string("/proc/self/mountinfo")
                    .map_err(|e| DriverError::io("read /proc/self/mountinfo", &e))?;
                let probe = root.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
                match cmd::mount_of(&table, probe) {
                    Some(m) if m.fstype == "zfs" => m.source,
                    found => {
                        let on = found.map_or("an unknown filesystem".to_string(), |m| m.fstype);
                        return Ok(Init::Skipped(format!(
                            "zfs needs its root {} on a zfs dataset, but it is on {on}; mount a dataset \
                             there or set option zfs.fsname to the dataset to keep layers under",
                            root.display()
                        )));
                    }
                }
            }
        };
        ZfsDriver::open(root, &fsname, Arc::new(HostRunner)).map(Init::Ready)
    }

    /// The driver on `root` for parent dataset `fsname`, running commands
    /// with `runner`: no probing (the tests' entry point).
    fn open(root: &Path, fsname: &str, runner: Arc<dyn Runner>) -> DriverResult<ZfsDriver> {
        validate_fsname(fsname)?;
        let graph = root.join("graph");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&graph)
            .map_err(|e| DriverError::io(format_args!("create {}", graph.display()), &e))?;
        let root =
            root.canonicalize().map_err(|e| DriverError::io(format_args!("open {}", root.display()), &e))?;
        let driver =
            ZfsDriver { runner, fsname: fsname.to_string(), root, state: Mutex::new(State::default()) };
        driver.sweep_mounts()?;
        let list = cmd::list_layers(fsname);
        let out = driver.exec(&list).map_err(|e| match e.kind {
            ErrorKind::NotFound => DriverError::not_found(format!(
                "parent dataset {fsname:?} does not exist: create it (zfs create -o mountpoint=legacy \
                 {fsname}) or set option zfs.fsname ({})",
                e.message
            )),
            _ => e,
        })?;
        let layers = cmd::parse_layers(&out, fsname).map_err(|e| e.into_error(&list))?;
        let snaps = cmd::list_snapshots(fsname);
        let out = driver.exec(&snaps)?;
        for snap in cmd::debris_snapshots(&out, &layers).map_err(|e| e.into_error(&snaps))? {
            // Best effort: a snapshot left now is met again by create.
            let _ = driver.exec(&cmd::destroy(&snap));
        }
        driver.lock().layers = layers;
        Ok(driver)
    }

    /// Unmounts what a previous instance left mounted under `graph/`.
    fn sweep_mounts(&self) -> DriverResult<()> {
        let graph = self.root.join("graph");
        let mut mounts = berth_plugin_api::util::mounts::mounts_under(&graph)
            .map_err(|e| DriverError::io("read /proc/self/mountinfo", &e))?;
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            self.unmount(&m).map_err(|e| e.context("unmount what a previous driver left mounted"))?;
        }
        Ok(())
    }

    /// The state, even if a panicking thread poisoned the lock: every
    /// critical section leaves the state consistent before it can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `cmd`; its standard output, or the typed error.
    fn exec(&self, cmd: &Cmd) -> DriverResult<String> {
        let out = self.runner.run(cmd).map_err(|e| cmd::not_run(cmd, &e))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(cmd::failure(cmd, &out))
        }
    }

    /// The dataset of layer `id`.
    fn dataset(&self, id: &str) -> String {
        format!("{}/{id}", self.fsname)
    }

    /// The mount point of layer `id`.
    fn mount_point(&self, id: &str) -> PathBuf {
        self.root.join("graph").join(id)
    }

    /// Unmounts `target`; nothing mounted there counts as done.
    fn unmount(&self, target: &Path) -> DriverResult<()> {
        let cmd = cmd::umount(target);
        let out = self.runner.run(&cmd).map_err(|e| cmd::not_run(&cmd, &e))?;
        if out.success() || cmd::not_mounted(&out) {
            let _ = fs::remove_dir(target);
            Ok(())
        } else {
            Err(cmd::failure(&cmd, &out))
        }
    }

    /// Checks a layer id: a valid ZFS name component that keeps every
    /// name the driver derives from it within ZFS's limit.
    fn validate_id(&self, what: &str, id: &str) -> DriverResult<()> {
        let problem = if id.is_empty() {
            "is empty"
        } else if id == "." || id == ".." {
            "is not a valid name"
        } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c)) {
            "may hold only letters, digits and _ - : . (ZFS dataset names)"
        } else if self.fsname.len() + 2 * id.len() + 2 > MAX_NAME {
            "is too long for a ZFS dataset name below the parent dataset"
        } else {
            return Ok(());
        };
        Err(DriverError::invalid_argument(format!("{what} {id:?} {problem}")))
    }

    /// The layer `id`, or a not-found error.
    fn layer<'s>(&self, state: &'s State, id: &str) -> DriverResult<&'s Layer> {
        state.layers.get(id).ok_or_else(|| {
            DriverError::not_found(format!("layer {id:?} not found in dataset {}", self.fsname))
        })
    }

    /// `create` and `create_rw`.
    fn create_layer(&self, req: CreateRequest, read_write: bool) -> DriverResult<()> {
        let (id, parent) = (req.id.as_str(), req.parent.as_str());
        self.validate_id("layer id", id)?;
        if !parent.is_empty() {
            self.validate_id("parent layer id", parent)?;
        }
        let quota = storage_opt(&req)?;
        let mut state = self.lock();
        if state.layers.contains_key(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} already exists in {}",
                self.fsname
            )));
        }
        if !parent.is_empty() && !state.layers.contains_key(parent) {
            return Err(DriverError::not_found(format!(
                "parent layer {parent:?} of new layer {id:?} not found in {}",
                self.fsname
            )));
        }
        let dataset = self.dataset(id);
        let ctx = || format!("create layer {id:?}");
        let mut origin = String::new();
        if parent.is_empty() {
            self.exec(&cmd::create(&dataset, read_write, quota)).map_err(|e| e.context(ctx()))?;
        } else {
            origin = format!("{}@{id}", self.dataset(parent));
            self.make_snapshot(&origin, id).map_err(|e| e.context(ctx()))?;
            if let Err(e) = self.exec(&cmd::clone(&origin, &dataset, read_write, quota)) {
                // The snapshot is made for this clone only.
                let _ = self.exec(&cmd::destroy(&origin));
                return Err(e.context(ctx()));
            }
        }
        let layer = Layer { parent: parent.to_string(), read_write, quota: quota.unwrap_or(0), origin };
        state.layers.insert(id.to_string(), layer);
        Ok(())
    }

    /// `zfs snapshot` of `snap` for child `id`. A snapshot already there
    /// was left by a failed create of `id` (the id is unknown and the lock
    /// is held): it is destroyed and the snapshot retried once.
    fn make_snapshot(&self, snap: &str, id: &str) -> DriverResult<()> {
        match self.exec(&cmd::snapshot(snap, id)) {
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.exec(&cmd::destroy(snap)).map_err(|d| d.context("destroy a stale snapshot"))?;
                self.exec(&cmd::snapshot(snap, id))
            }
            other => other,
        }
        .map(drop)
    }
}

impl StorageDriver for ZfsDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut state = self.lock();
        let layer = self.layer(&state, id)?.clone();
        let children: Vec<&str> =
            state.layers.iter().filter(|(_, l)| l.parent == id).map(|(c, _)| c.as_str()).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {}; remove the child layers first",
                name_list(&children)
            )));
        }
        let ctx = || format!("remove layer {id:?}");
        if state.refs.contains_key(id) {
            self.unmount(&self.mount_point(id)).map_err(|e| e.context(ctx()))?;
            state.refs.remove(id);
        }
        match self.exec(&cmd::destroy_recursive(&self.dataset(id))) {
            Ok(_) => {}
            // Gone behind the driver's back: only the record is left.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e.context(ctx())),
        }
        state.layers.remove(id);
        let _ = fs::remove_dir(self.mount_point(id));
        if !layer.parent.is_empty() {
            match self.exec(&cmd::destroy(&layer.origin)) {
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e.context(format_args!(
                        "layer {id:?} is removed, but its origin snapshot {} is left (destroyed when the \
                         driver starts)",
                        layer.origin
                    )))
                }
            }
        }
        Ok(())
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut state = self.lock();
        let read_write = self.layer(&state, id)?.read_write;
        let target = self.mount_point(id);
        let path = target
            .to_str()
            .ok_or_else(|| DriverError::internal(format!("path {} is not UTF-8", target.display())))?
            .to_string();
        if !state.refs.contains_key(id) {
            let made = fs::create_dir_all(&target)
                .and_then(|()| fs::set_permissions(&target, fs::Permissions::from_mode(0o755)));
            made.map_err(|e| DriverError::io(format_args!("create mount point {}", target.display()), &e))?;
            if let Err(e) = self.exec(&cmd::mount(&self.dataset(id), &target, read_write)) {
                let _ = fs::remove_dir(&target);
                return Err(e.context(format_args!("mount layer {id:?}")));
            }
        }
        *state.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        match state.refs.get(id).copied().unwrap_or(0) {
            0 => Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            ))),
            1 => {
                // On failure the reference stays, so a later put retries.
                self.unmount(&self.mount_point(id))
                    .map_err(|e| e.context(format_args!("unmount layer {id:?}")))?;
                state.refs.remove(id);
                Ok(())
            }
            n => {
                state.refs.insert(id.to_string(), n - 1);
                Ok(())
            }
        }
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        // An invalid id names no layer: false, not an error.
        Ok(self.validate_id("layer id", &req.id).is_ok() && self.lock().layers.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let pool_name = self.fsname.split('/').next().unwrap_or_default().to_string();
        let pool_cmd = cmd::pool_list(&pool_name);
        let pool =
            self.exec(&pool_cmd).and_then(|o| cmd::parse_pool(&o).map_err(|e| e.into_error(&pool_cmd)));
        let usage_cmd = cmd::dataset_usage(&self.fsname);
        let usage =
            self.exec(&usage_cmd).and_then(|o| cmd::parse_usage(&o).map_err(|e| e.into_error(&usage_cmd)));
        let unknown = |e: &DriverError| format!("unknown ({e})");
        let health = pool.as_ref().map_or_else(unknown, |p| p.health.clone());
        let figure = |f: fn(&cmd::Usage) -> String| usage.as_ref().map_or_else(unknown, f);
        let used = figure(|u| u.used.to_string());
        let avail = figure(|u| u.available.to_string());
        let quota = figure(|u| if u.quota == 0 { "no".to_string() } else { u.quota.to_string() });
        let compression = figure(|u| u.compression.clone());
        let state = self.lock();
        Ok(StatusResponse::new(vec![
            ("Zpool".into(), pool_name),
            ("Zpool Health".into(), health),
            ("Parent Dataset".into(), self.fsname.clone()),
            ("Space Used By Parent".into(), used),
            ("Space Available".into(), avail),
            ("Parent Quota".into(), quota),
            ("Compression".into(), compression),
            ("Root Dir".into(), self.root.display().to_string()),
            ("Layers".into(), state.layers.len().to_string()),
            ("In Use".into(), state.refs.len().to_string()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let state = self.lock();
        let layer = self.layer(&state, id)?;
        let mut out = BTreeMap::from([
            ("Dataset".to_string(), self.dataset(id)),
            ("Mountpoint".to_string(), self.mount_point(id).display().to_string()),
            ("Parent".to_string(), layer.parent.clone()),
            ("ReadWrite".to_string(), layer.read_write.to_string()),
        ]);
        if !layer.origin.is_empty() {
            out.insert("Origin".into(), layer.origin.clone());
        }
        if layer.quota > 0 {
            out.insert("Quota".into(), layer.quota.to_string());
        }
        Ok(MetadataResponse::new(out))
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut state = self.lock();
        let mut errors = Vec::new();
        let mut ids: Vec<String> = state.refs.keys().cloned().collect();
        ids.sort();
        for id in ids {
            match self.unmount(&self.mount_point(&id)) {
                Ok(()) => {
                    state.refs.remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        match combine(errors) {
            Some(e) => Err(e.context("cleanup")),
            None => Ok(()),
        }
    }
}

/// Checks the parent dataset name: `pool[/child...]`, no snapshot part.
fn validate_fsname(name: &str) -> DriverResult<()> {
    let ok = !name.is_empty()
        && name.len() < MAX_NAME
        && name
            .split('/')
            .all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-:. ".contains(ch)))
        && name.starts_with(|c: char| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(DriverError::invalid_argument(format!(
            "option zfs.fsname {name:?} is not a dataset name (pool/dataset, e.g. tank/berth)"
        )))
    }
}

/// The `size` storage option in bytes, if given; any other is invalid.
fn storage_opt(req: &CreateRequest) -> DriverResult<Option<u64>> {
    let mut size = None;
    for (key, value) in &req.storage_opt {
        if !key.eq_ignore_ascii_case("size") {
            return Err(DriverError::invalid_argument(format!(
                "unknown storage option {key:?} for layer {:?}: zfs takes only \"size\"",
                req.id
            )));
        }
        let bytes = berth_plugin_api::util::parse_size(value).map_err(|e| {
            DriverError::invalid_argument(format!("storage option size of layer {:?}: {e}", req.id))
        })?;
        if bytes == 0 {
            return Err(DriverError::invalid_argument(format!(
                "storage option size of layer {:?} is 0; give a quota of at least one byte",
                req.id
            )));
        }
        size = Some(bytes);
    }
    Ok(size)
}
