//! berth volume driver `local`: volumes are directories under a data
//! directory, optionally backed by a mount (Docker's `local` driver).
//!
//! # Layout
//!
//! Volume `<name>` keeps its data in `<data_dir>/<name>/_data` (the path
//! `mount` and `path` answer), its metadata — options and creation time —
//! in `<data_dir>/<name>/opts.json`, and the ids of its active mounts in
//! `<data_dir>/<name>/mounts.json`, so a reopened driver still knows who
//! uses it. Project quota ids live in `<data_dir>/.berth-quota.json`.
//! `data_dir` is an option; it defaults to the driver's root. See
//! `src/layout.rs` for how creates and removes stay atomic.
//!
//! # Options
//!
//! `create` takes Docker's options (see `src/options.rs`), checked before
//! anything is made; an unknown key, a missing partner (`type` and `device`
//! need each other, `o` needs both) or an impossible combination is
//! invalid-argument naming the volume and the option.
//!
//! * No options: a plain directory.
//! * `type`, `device`, `o`: a **mount-backed** volume. `o` is split into
//!   `MS_*` flags (`ro`, `nosuid`, `bind`, `rbind`, `rprivate`, ...) and
//!   mount data (`size=64m,mode=1777`, `addr=10.0.0.1`, passed through). The
//!   filesystem is mounted with mount(2) on the data directory by the first
//!   active mount id and unmounted by the last: `type=tmpfs device=tmpfs
//!   o=size=64m`, `type=none o=bind device=/srv/x` (its source must exist at
//!   create, else not-found; `o=bind,ro` is made read-only by a remount),
//!   `type=ext4 device=/dev/sdb1`, `type=nfs o=addr=10.0.0.1 device=:/x`
//!   (`o` goes to the kernel as is: unlike Docker, a host name in `addr=` is
//!   not resolved, so give an address).
//! * `size=10M` (`512k`, `1g`, bytes; 0 is no limit) on a plain volume: a
//!   project quota on its data directory (`util::quota`). Where the data
//!   directory's filesystem has none enforced it is unsupported, naming the
//!   filesystem and what it needs. Not combinable with `type`.
//!
//! # Mounts and reference counts
//!
//! * `mount(name, id)` records `id` among the volume's active mounts
//!   (persisted before it answers) and answers the data path; for a
//!   mount-backed volume it first mounts the filesystem unless the mount
//!   table shows it there already, so it is never mounted twice. A failed
//!   mount(2) fails the call, records nothing and leaves nothing mounted.
//!   An id already active answers the same path (re-mounting if the backing
//!   mount vanished meanwhile).
//! * `unmount(name, id)` forgets `id`; the last one unmounts the backing
//!   filesystem (detaching it lazily if it is busy). An id that is not
//!   active succeeds: unmount is idempotent.
//! * After a restart (even `kill -9`) the reopened driver has the ids from
//!   `mounts.json` and asks the mount table whether the backing mount is
//!   there: ids and a mount are kept as they are, a mount with no ids left
//!   is unmounted, ids without their mount get it back on the next `mount`.
//! * `remove` of a volume with active mounts is a conflict; otherwise the
//!   backing mount (if any) goes, and the volume's whole directory — never
//!   through a mount: something still mounted inside is
//!   failed-precondition.
//!
//! # Rules
//!
//! * Names match `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (at most 255 bytes); anything
//!   else is invalid-argument.
//! * `create` of an existing name succeeds and changes nothing.
//! * Unknown volumes are not-found everywhere, `unmount` included.
//! * `get` and `list` (sorted by name) answer the data path, the creation
//!   time (RFC 3339, UTC) and a status: `refs` (active mount ids),
//!   `options` (passwords masked), and for a mount-backed volume `type`,
//!   `device` and `mounted`, for a sized one `size` (bytes) and
//!   `project_id`. Scope is `local`.
//!
//! One driver instance per data directory: opening one sweeps what an
//! interrupted create or remove left behind. Each volume has its own lock,
//! so a slow mount (nfs) holds up only calls on that volume.

#![deny(missing_docs)]

pub mod export;
mod layout;
mod mounting;
mod options;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use berth_plugin_api::network::Scope;
use berth_plugin_api::util::quota::ProjectQuota;
use berth_plugin_api::volume::*;
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, VolumeDriver};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::layout::{validate_name, Layout, Meta, RemoveOutcome};
use crate::mounting::{is_mounted_in, table_path, Host, Kernel};
use crate::options::{mask_password, Backing, VolumeOptions};
pub use berth_plugin_api::util::rfc3339;

/// The project quota allocation file, in the data directory (not a valid
/// volume name, so never mistaken for one).
const QUOTA_FILE: &str = ".berth-quota.json";

/// The driver's options from the configuration. An unknown key is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opts {
    /// Where volumes live (an absolute path); defaults to the driver's root.
    #[serde(default)]
    pub data_dir: Option<String>,
}

/// A volume in memory.
#[derive(Debug)]
struct Vol {
    created_at: Option<String>,
    /// As given at create, for `get`.
    options: BTreeMap<String, String>,
    spec: VolumeOptions,
    /// Active mount ids.
    mounts: BTreeSet<String>,
    /// Set by a remove that got the volume's lock first.
    removed: bool,
}

type Shared = Arc<Mutex<Vol>>;

/// The local volume driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct LocalVolumeDriver {
    layout: Layout,
    host: Arc<dyn Host>,
    /// Opened on first use: only sized volumes need it.
    quota: Mutex<Option<Arc<ProjectQuota>>>,
    volumes: Mutex<BTreeMap<String, Shared>>,
}

fn lock<T>(m: &Mutex<T>) -> DriverResult<MutexGuard<'_, T>> {
    m.lock().map_err(|_| {
        DriverError::internal("volume state is unusable after an earlier panic; restart the daemon")
    })
}

fn unknown(name: &str) -> DriverError {
    DriverError::not_found(format!("volume {name:?} not found"))
}

fn mount_count(n: usize) -> String {
    if n == 1 {
        "1 mount".into()
    } else {
        format!("{n} mounts")
    }
}

fn table_error(e: &io::Error) -> DriverError {
    DriverError::io("read the mount table /proc/self/mountinfo", e)
}

/// A failed mount(2), with its kind and a hint.
fn mount_error(name: &str, b: &Backing, target: &Path, e: &io::Error) -> DriverError {
    let (kind, hint) = match e.raw_os_error() {
        Some(libc::ENOENT) if b.is_bind() => {
            (ErrorKind::NotFound, format!("; the bind source {} does not exist", b.device))
        }
        Some(libc::ENOENT | libc::ENXIO) => {
            (ErrorKind::NotFound, format!("; is {} there and ready to mount?", b.device))
        }
        Some(libc::ENODEV) => {
            (ErrorKind::InvalidArgument, format!("; the kernel does not know filesystem type {}", b.fs_type))
        }
        Some(libc::ENOTBLK) => (ErrorKind::InvalidArgument, format!("; {} is not a block device", b.device)),
        Some(libc::EINVAL) => {
            (ErrorKind::InvalidArgument, "; check the options in o and what is on the device".to_owned())
        }
        Some(libc::EPERM | libc::EACCES) => (ErrorKind::PermissionDenied, String::new()),
        Some(libc::EBUSY) => (ErrorKind::Conflict, String::new()),
        _ => (ErrorKind::Internal, String::new()),
    };
    DriverError::new(
        kind,
        format!("mount volume {name} ({}) on {}: {e}{hint}", b.describe(), target.display()),
    )
}

/// One error out of several: the first one's kind, every message.
fn joined(mut errors: Vec<DriverError>) -> DriverResult<()> {
    if errors.is_empty() {
        return Ok(());
    }
    let first = errors.remove(0);
    let rest: String = errors.iter().map(|e| format!("; {}", e.message)).collect();
    Err(DriverError::new(first.kind, format!("{}{rest}", first.message)))
}

impl LocalVolumeDriver {
    /// Builds the driver: decodes the options, creates the data directory
    /// if needed, loads the volumes in it and reconciles their backing
    /// mounts with the mount table.
    pub fn new(req: InitRequest) -> DriverResult<Init<LocalVolumeDriver>> {
        let opts: Opts = req.decode_options()?;
        let data_dir =
            match (&opts.data_dir, req.root.as_str()) {
                (Some(dir), _) if !Path::new(dir).is_absolute() => {
                    return Err(DriverError::invalid_argument(format!(
                        "options of driver {:?}: data_dir {dir:?} is not an absolute path",
                        req.name
                    )))
                }
                (Some(dir), _) => PathBuf::from(dir),
                (None, "") => return Err(DriverError::invalid_argument(
                    "the local volume driver needs a root directory or a data_dir option, and got neither",
                )),
                (None, root) => PathBuf::from(root),
            };
        Ok(Init::Ready(LocalVolumeDriver::open(data_dir, Arc::new(Kernel))?))
    }

    fn open(data_dir: PathBuf, host: Arc<dyn Host>) -> DriverResult<LocalVolumeDriver> {
        let layout = Layout::open(data_dir)?;
        let mut volumes = BTreeMap::new();
        let mut table: Option<Vec<PathBuf>> = None;
        let mut sized = false;
        for (name, v) in layout.load()? {
            let spec = options::parse(&name, &v.options).map_err(|e| {
                DriverError::internal(format!(
                    "corrupt volume metadata {}: {}; repair or delete the file",
                    layout.volume_dir(&name).join("opts.json").display(),
                    e.message
                ))
            })?;
            sized |= spec.size.is_some();
            if spec.backing.is_some() && v.mounts.is_empty() {
                // Mounted, but nobody is recorded: a crash between mount(2)
                // and recording the id. Nobody uses it; take it down. A
                // failure here is retried by remove and the next open.
                let t = match &mut table {
                    Some(t) => t,
                    None => table.insert(host.mount_points().map_err(|e| table_error(&e))?),
                };
                let data = layout.data(&name);
                if is_mounted_in(t, &data) {
                    let _ = host.unmount(&data);
                }
            }
            let vol =
                Vol { created_at: v.created_at, options: v.options, spec, mounts: v.mounts, removed: false };
            volumes.insert(name, Arc::new(Mutex::new(vol)));
        }
        let driver =
            LocalVolumeDriver { layout, host, quota: Mutex::new(None), volumes: Mutex::new(volumes) };
        if sized {
            // For `project_id` in the status; a host that lost its quotas
            // still serves the volumes.
            let _ = driver.quota();
        }
        Ok(driver)
    }

    /// The project quotas of the data directory, opened on first use.
    fn quota(&self) -> DriverResult<Arc<ProjectQuota>> {
        let mut q = lock(&self.quota)?;
        if let Some(q) = &*q {
            return Ok(q.clone());
        }
        let opened = Arc::new(ProjectQuota::open(self.layout.data_dir(), self.layout.file(QUOTA_FILE))?);
        *q = Some(opened.clone());
        Ok(opened)
    }

    /// Volume `name` (which a remove may have taken meanwhile: check
    /// `removed` under its lock).
    fn volume(&self, name: &str) -> DriverResult<Shared> {
        lock(&self.volumes)?.get(name).cloned().ok_or_else(|| unknown(name))
    }

    fn data_path(&self, name: &str) -> String {
        self.layout.data(name).to_string_lossy().into_owned()
    }

    fn info(&self, name: &str, v: &Vol, table: Option<&[PathBuf]>) -> VolumeInfo {
        let mut info = VolumeInfo::new(name, self.data_path(name));
        info.created_at = v.created_at.clone();
        let s = &mut info.status;
        s.insert("refs".into(), json!(v.mounts.len()));
        if !v.options.is_empty() {
            let shown: BTreeMap<&str, String> = v
                .options
                .iter()
                .map(|(k, val)| (k.as_str(), if k == "o" { mask_password(val) } else { val.clone() }))
                .collect();
            s.insert("options".into(), json!(shown));
        }
        if let Some(b) = &v.spec.backing {
            s.insert("type".into(), json!(b.fs_type));
            s.insert("device".into(), json!(b.device));
            if let Some(t) = table {
                s.insert("mounted".into(), json!(is_mounted_in(t, &self.layout.data(name))));
            }
        }
        if let Some(bytes) = v.spec.size {
            s.insert("size".into(), json!(bytes));
            let project = lock(&self.quota).ok().and_then(|q| q.as_ref().and_then(|q| q.project(name)));
            if let Some(id) = project {
                s.insert("project_id".into(), json!(id));
            }
        }
        info
    }

    fn unmount_backing(&self, name: &str, data: &Path) -> DriverResult<()> {
        self.host
            .unmount(data)
            .map_err(|e| DriverError::io(format_args!("volume {name}: unmount {}", data.display()), &e))
    }
}

impl LocalVolumeDriver {
    /// Makes volume `name` on disk (directory, metadata, quota); answers
    /// its creation time. Leaves nothing behind when it fails.
    fn make(
        &self,
        name: &str,
        spec: &options::VolumeOptions,
        opts: &BTreeMap<String, String>,
    ) -> DriverResult<String> {
        options::check_host(name, spec)?;
        let size_ctx = || format!("volume {name}: option size={}", opts.get("size").map_or("", |s| s));
        let quota = match spec.size {
            Some(_) => Some(self.quota().map_err(|e| e.context(size_ctx()))?),
            None => None,
        };
        let created_at = rfc3339(SystemTime::now());
        let meta = Meta { options: opts.clone(), created_at: Some(created_at.clone()) };
        self.layout.create(name, &meta)?;
        if let (Some(q), Some(bytes)) = (quota, spec.size) {
            if let Err(e) = q.limit(name, &self.layout.data(name), bytes) {
                let _ = self.layout.remove(name);
                return Err(e.context(size_ctx()));
            }
        }
        Ok(created_at)
    }
}

impl VolumeDriver for LocalVolumeDriver {
    fn create(&self, req: VolumeCreateRequest) -> DriverResult<()> {
        let name = req.name;
        validate_name(&name)?;
        let spec = options::parse(&name, &req.options)?;
        // Reserve the name with an entry that is not there yet (`removed`)
        // and hold its lock; the map's lock is released before any disk
        // I/O, so creates of different names run (and fsync) in parallel,
        // while calls on this name wait for the outcome.
        let shared = {
            let mut volumes = lock(&self.volumes)?;
            if let Some(v) = volumes.get(&name) {
                if !lock(v)?.removed {
                    return Ok(());
                }
            }
            let placeholder = Vol {
                created_at: None,
                options: BTreeMap::new(),
                spec: spec.clone(),
                mounts: BTreeSet::new(),
                removed: true,
            };
            let shared = Arc::new(Mutex::new(placeholder));
            volumes.insert(name.clone(), Arc::clone(&shared));
            shared
        };
        let mut slot = lock(&shared)?;
        let made = self.make(&name, &spec, &req.options);
        match made {
            Ok(created_at) => {
                *slot = Vol {
                    created_at: Some(created_at),
                    options: req.options,
                    spec,
                    mounts: BTreeSet::new(),
                    removed: false,
                };
                Ok(())
            }
            Err(e) => {
                drop(slot);
                let mut volumes = lock(&self.volumes)?;
                if volumes.get(&name).is_some_and(|v| Arc::ptr_eq(v, &shared)) {
                    volumes.remove(&name);
                }
                Err(e)
            }
        }
    }

    fn remove(&self, req: VolumeRemoveRequest) -> DriverResult<()> {
        let (shared, name) = (self.volume(&req.name)?, req.name.as_str());
        let mut v = lock(&shared)?;
        if v.removed {
            return Err(unknown(name));
        }
        if !v.mounts.is_empty() {
            return Err(DriverError::conflict(format!(
                "volume {name} is in use by {}; unmount it first",
                mount_count(v.mounts.len())
            )));
        }
        let data = self.layout.data(name);
        if v.spec.backing.is_some() {
            self.unmount_backing(name, &data)?;
        }
        // Never delete through a mount (a bind of a host path would lose
        // the host's files).
        let dir = table_path(&self.layout.volume_dir(name));
        let table = self.host.mount_points().map_err(|e| table_error(&e))?;
        if let Some(m) = table.iter().find(|m| m.starts_with(&dir)) {
            return Err(DriverError::failed_precondition(format!(
                "volume {name}: {} is still mounted inside it; unmount it before removing the volume",
                m.display()
            )));
        }
        let mut errors = Vec::new();
        if let RemoveOutcome::Leftover(e) = self.layout.remove(name)? {
            errors.push(e);
        }
        v.removed = true;
        if v.spec.size.is_some() {
            // A host that lost its quotas keeps the id recorded: harmless.
            if let Ok(q) = self.quota() {
                if let Err(e) = q.release(name) {
                    errors
                        .push(e.context(format!("volume {name} is removed, but releasing its quota failed")));
                }
            }
        }
        drop(v);
        let mut volumes = lock(&self.volumes)?;
        if volumes.get(name).is_some_and(|s| Arc::ptr_eq(s, &shared)) {
            volumes.remove(name);
        }
        joined(errors)
    }

    fn mount(&self, req: VolumeMountRequest) -> DriverResult<VolumeMountResponse> {
        let (shared, name) = (self.volume(&req.name)?, req.name.as_str());
        let mut v = lock(&shared)?;
        if v.removed {
            return Err(unknown(name));
        }
        if req.id.is_empty() {
            return Err(DriverError::invalid_argument(format!("mount of volume {name} without a mount id")));
        }
        let data = self.layout.data(name);
        if !data.is_dir() {
            return Err(DriverError::failed_precondition(format!(
                "the data directory {} of volume {name} is missing; remove and re-create the volume",
                data.display()
            )));
        }
        let mut mounted_now = false;
        if let Some(b) = &v.spec.backing {
            let table = self.host.mount_points().map_err(|e| table_error(&e))?;
            if !is_mounted_in(&table, &data) {
                self.host.mount(b, &data).map_err(|e| mount_error(name, b, &data, &e))?;
                mounted_now = true;
            }
        }
        if v.mounts.insert(req.id.clone()) {
            if let Err(e) = self.layout.save_mounts(name, &v.mounts) {
                v.mounts.remove(&req.id);
                if mounted_now && v.mounts.is_empty() {
                    let _ = self.host.unmount(&data);
                }
                return Err(e);
            }
        }
        Ok(VolumeMountResponse::new(data.to_string_lossy()))
    }

    fn unmount(&self, req: VolumeUnmountRequest) -> DriverResult<()> {
        let (shared, name) = (self.volume(&req.name)?, req.name.as_str());
        let mut v = lock(&shared)?;
        if v.removed {
            return Err(unknown(name));
        }
        if !v.mounts.remove(&req.id) {
            // Unmount is idempotent: an id that is not active (already
            // released, or never mounted) has nothing left to release.
            return Ok(());
        }
        if let Err(e) = self.layout.save_mounts(name, &v.mounts) {
            v.mounts.insert(req.id);
            return Err(e);
        }
        if v.mounts.is_empty() && v.spec.backing.is_some() {
            let data = self.layout.data(name);
            // The id is released either way; a mount that stays is taken
            // down by remove or the next open.
            self.host.unmount(&data).map_err(|e| {
                DriverError::io(
                    format_args!(
                        "mount {} of volume {name} is released, but unmounting {} failed \
                         (retried by remove and when the driver restarts)",
                        req.id,
                        data.display()
                    ),
                    &e,
                )
            })?;
        }
        Ok(())
    }

    fn path(&self, req: VolumePathRequest) -> DriverResult<VolumePathResponse> {
        let (shared, name) = (self.volume(&req.name)?, req.name.as_str());
        if lock(&shared)?.removed {
            return Err(unknown(name));
        }
        Ok(VolumePathResponse::new(self.data_path(name)))
    }

    fn get(&self, req: VolumeGetRequest) -> DriverResult<VolumeInfo> {
        let (shared, name) = (self.volume(&req.name)?, req.name.as_str());
        let v = lock(&shared)?;
        if v.removed {
            return Err(unknown(name));
        }
        let table = match v.spec.backing {
            Some(_) => Some(self.host.mount_points().map_err(|e| table_error(&e))?),
            None => None,
        };
        Ok(self.info(name, &v, table.as_deref()))
    }

    fn list(&self, _req: VolumeListRequest) -> DriverResult<Vec<VolumeInfo>> {
        let all: Vec<(String, Shared)> =
            lock(&self.volumes)?.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        let mut table: Option<Vec<PathBuf>> = None;
        let mut out = Vec::with_capacity(all.len());
        for (name, shared) in all {
            let v = lock(&shared)?;
            if v.removed {
                continue;
            }
            if v.spec.backing.is_some() && table.is_none() {
                table = Some(self.host.mount_points().map_err(|e| table_error(&e))?);
            }
            out.push(self.info(&name, &v, table.as_deref()));
        }
        Ok(out)
    }

    fn capabilities(&self, _req: VolumeCapabilitiesRequest) -> DriverResult<VolumeCapabilities> {
        Ok(VolumeCapabilities::new(Scope::Local))
    }
}

#[cfg(test)]
mod tests;
