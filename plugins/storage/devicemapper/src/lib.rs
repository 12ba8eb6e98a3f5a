//! berth storage driver devicemapper: layers as thin devices of a
//! device-mapper thin pool.
//!
//! Every layer is a thin device of one pool; a child layer is a thin
//! snapshot of its parent's device, sharing every block until either side
//! writes. The pool is an existing thin pool (`dm.thinpooldev`) or one
//! made once from a spare block device with lvm2 (`dm.directlvm_device`,
//! see `options.rs`); there is no loopback mode.
//!
//! | operation          | commands (built in `dmsetup.rs`)                                          |
//! |--------------------|---------------------------------------------------------------------------|
//! | base layer         | `dmsetup message <pool> 0 "create_thin <id>"`, activate, `mkfs.ext4`/`mkfs.xfs`, `rootfs/` made, deactivate |
//! | child layer        | `dmsetup message <pool> 0 "create_snap <id> <parent id>"` (parent suspended while mounted) |
//! | every pool change  | bracketed by the transaction record and `set_transaction_id <n> <n+1>` (see `meta.rs`) |
//! | `get` (first ref)  | `dmsetup create <name> [--readonly] --table "0 <sectors> thin /dev/mapper/<pool> <id>"`, `mount` |
//! | `put` (last ref)   | `umount`, `dmsetup remove <name>`                                         |
//! | `remove`           | `dmsetup remove <name>`, `dmsetup message <pool> 0 "delete <id>"`         |
//! | `status`           | `dmsetup status <pool>` and `dmsetup table <pool>`                        |
//!
//! * Device ids (24 bits) are handed out in turn and recorded with each
//!   layer in `<root>/metadata.json` (atomic writes); an id the pool says
//!   exists (`File exists`) is skipped. Devices are named
//!   `berth-<major>:<minor>-<inode of root>-<layer id>`, as moby names them.
//! * `get` answers `<root>/mnt/<id>/rootfs`: the device's filesystem holds
//!   the layer in `rootfs/`. Read-only layers (`create`) are activated
//!   `--readonly` and mounted `ro`.
//! * `size=` (per layer) sets the device size: for a base layer at `mkfs`,
//!   for a child by growing its filesystem (`resize2fs`, `xfs_growfs`); it
//!   cannot be below the parent's. Other storage options are invalid.
//!   Creates are refused while the pool has less free space than
//!   `dm.min_free_space` (10%), is read-only or needs a check.
//! * Crash recovery at start: mounts under `<root>/mnt` and active devices
//!   of this root are taken down, an open transaction is completed or
//!   rolled back against the pool's transaction id, and layers whose
//!   filesystem was never finished are deleted.
//! * Declines ([`Init::Skipped`]) when the kernel has no device-mapper
//!   (`/dev/mapper/control`, `/proc/misc`, `/proc/devices`) or no thin-pool
//!   target, `dmsetup` is missing, or it is not root; the reason says which.
//!
//! Every command goes through a `Runner` (`runner.rs`); unit tests answer
//! from recorded outputs. One driver instance per root, one root per pool.

#![deny(missing_docs)]

mod device;
mod dmsetup;
pub mod export;
mod meta;
mod options;
mod probe;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{combine, name_list};
use berth_plugin_api::{DriverError, DriverResult, ErrorKind, Init, InitRequest, StorageDriver};

use crate::dmsetup::Fs;
use crate::meta::{Device, Meta, Recovery};
use crate::options::{Config, DmOptions};
use crate::runner::{Cmd, HostRunner, Runner};

/// Longest device-mapper name (`DM_NAME_LEN` less the NUL).
const MAX_DM_NAME: usize = 127;

/// The devicemapper storage driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct DevmapperDriver {
    runner: Arc<dyn Runner>,
    config: Config,
    /// The filesystem of every device (the record's, once one is made).
    fs: Fs,
    /// The driver's root (canonical).
    root: PathBuf,
    /// `berth-<major>:<minor>-<inode>` of the root: the start of the name
    /// of every device this root activates.
    prefix: String,
    state: Mutex<State>,
}

/// What the driver knows, guarded by one lock; every call runs whole
/// under it.
#[derive(Debug)]
struct State {
    /// The record, as last saved (or about to be).
    meta: Meta,
    /// References taken by `get`; a layer is active and mounted exactly
    /// while it has one.
    refs: HashMap<String, usize>,
    /// Device ids the pool said exist though no layer has them.
    taken: BTreeSet<u32>,
}

impl DevmapperDriver {
    /// Opens the driver on this host: probes for device-mapper, checks the
    /// options, makes the direct-lvm pool if asked, recovers from a crash
    /// and reads the layers.
    ///
    /// Declines ([`Init::Skipped`]) when the kernel has no device-mapper
    /// or no thin-pool target, `dmsetup` is missing, or not running as
    /// root; the reason names what is missing.
    pub fn new(req: InitRequest) -> DriverResult<Init<DevmapperDriver>> {
        let options: DmOptions = req.decode_options()?;
        if let Some(reason) = probe::Host::current().skip_reason() {
            return Ok(Init::Skipped(reason));
        }
        let config = Config::from_options(&options)?;
        let root = Path::new(&req.root);
        if !root.is_absolute() {
            return Err(DriverError::invalid_argument(format!(
                "devicemapper root {:?} is not an absolute path",
                req.root
            )));
        }
        let xfs = fs::read_to_string("/proc/filesystems")
            .is_ok_and(|t| t.lines().any(|l| l.ends_with("\txfs")))
            && runner::find_program("mkfs.xfs").is_some();
        let default_fs = if xfs { Fs::Xfs } else { Fs::Ext4 };
        DevmapperDriver::start(root, config, default_fs, Arc::new(HostRunner), Path::new("/etc/lvm/profile"))
    }

    /// Checks for the thin targets, makes the direct-lvm pool if asked,
    /// then opens: everything after the host probe.
    fn start(
        root: &Path,
        config: Config,
        default_fs: Fs,
        runner: Arc<dyn Runner>,
        profile_dir: &Path,
    ) -> DriverResult<Init<DevmapperDriver>> {
        let cmd = dmsetup::targets();
        let out = runner.run(&cmd).map_err(|e| dmsetup::not_run(&cmd, &e))?;
        if !out.success() {
            return Err(dmsetup::failure(&cmd, &out));
        }
        if !dmsetup::has_target(&out.stdout, "thin-pool") || !dmsetup::has_target(&out.stdout, "thin") {
            return Ok(Init::Skipped(
                "the kernel's device-mapper has no thin-pool target: load dm_thin_pool (modprobe \
                 dm_thin_pool) or choose another storage driver (overlay2, btrfs, vfs)"
                    .into(),
            ));
        }
        fs::create_dir_all(root)
            .map_err(|e| DriverError::io(format_args!("create {}", root.display()), &e))?;
        if let Some(lvm) = &config.lvm {
            options::setup_direct_lvm(&*runner, root, lvm, profile_dir)?;
        }
        DevmapperDriver::open(root, config, default_fs, runner).map(Init::Ready)
    }

    /// Opens the record under `root` and settles it with the pool.
    fn open(
        root: &Path,
        config: Config,
        default_fs: Fs,
        runner: Arc<dyn Runner>,
    ) -> DriverResult<DevmapperDriver> {
        let mnt = root.join("mnt");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mnt)
            .map_err(|e| DriverError::io(format_args!("create {}", mnt.display()), &e))?;
        let root =
            root.canonicalize().map_err(|e| DriverError::io(format_args!("open {}", root.display()), &e))?;
        let st = root.metadata().map_err(|e| DriverError::io(format_args!("stat {}", root.display()), &e))?;
        let (major, minor) = split_dev(st.dev());
        let prefix = format!("berth-{major}:{minor}-{}", st.ino());
        let path = root.join("metadata.json");
        let mut meta = Meta::load(&path)?.unwrap_or_else(|| Meta::new(&config.pool));
        if meta.pool != config.pool && !meta.devices.is_empty() {
            return Err(DriverError::failed_precondition(format!(
                "{} records the layers of thin pool {:?}, not {:?}: use that pool, or another root",
                path.display(),
                meta.pool,
                config.pool
            )));
        }
        meta.pool = config.pool.clone();
        let fs = Fs::parse(&meta.filesystem).or(config.fs).unwrap_or(default_fs);
        meta.filesystem = fs.name().to_string();
        let state = State { meta, refs: HashMap::new(), taken: BTreeSet::new() };
        let driver = DevmapperDriver { runner, config, fs, root, prefix, state: Mutex::new(state) };
        let pool = driver.pool_status()?;
        driver.sweep()?;
        let mut st = driver.lock();
        match st.meta.recover(pool.transaction_id).map_err(DriverError::failed_precondition)? {
            Recovery::Clean | Recovery::Completed => {}
            Recovery::RollBack(t) => {
                match driver.exec(&dmsetup::message(&driver.config.pool, &dmsetup::delete(t.device_id))) {
                    Ok(_) => {}
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    Err(e) => return Err(e.context("roll back the transaction a crash left open")),
                }
                st.meta.rolled_back(&t);
            }
        }
        driver.save(&st.meta)?;
        let half_made: Vec<String> =
            st.meta.devices.iter().filter(|(_, d)| !d.initialized).map(|(id, _)| id.clone()).collect();
        for id in half_made {
            // Best effort: a device left now is deleted at the next start.
            let _ = driver.delete_device(&mut st, &id);
        }
        drop(st);
        Ok(driver)
    }

    /// Takes down what a previous instance left: mounts under `mnt/`, then
    /// the active devices named for this root.
    fn sweep(&self) -> DriverResult<()> {
        let mnt = self.root.join("mnt");
        let mut mounts = berth_plugin_api::util::mounts::mounts_under(&mnt)
            .map_err(|e| DriverError::io("read /proc/self/mountinfo", &e))?;
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            self.unmount(&m).map_err(|e| e.context("unmount what a previous driver left mounted"))?;
        }
        let cmd = dmsetup::info_all();
        let out = self.exec(&cmd)?;
        let ours = format!("{}-", self.prefix);
        for dev in dmsetup::parse_info(&out).map_err(|e| e.into_error(&cmd))? {
            if dev.name.starts_with(&ours) {
                let _ = self.exec(&dmsetup::deactivate(&dev.name));
            }
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
        let out = self.runner.run(cmd).map_err(|e| dmsetup::not_run(cmd, &e))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(dmsetup::failure(cmd, &out))
        }
    }

    /// Checks a layer id: a device-mapper name part (no `/`), short enough
    /// for the device name.
    fn validate_id(&self, what: &str, id: &str) -> DriverResult<()> {
        let problem = if id.is_empty() {
            "is empty"
        } else if id == "." || id == ".." {
            "is not a valid name"
        } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:+".contains(c)) {
            "may hold only letters, digits and _ - . : +"
        } else if self.prefix.len() + 1 + id.len() > MAX_DM_NAME {
            "is too long for a device-mapper name"
        } else {
            return Ok(());
        };
        Err(DriverError::invalid_argument(format!("{what} {id:?} {problem}")))
    }

    /// The layer's device, or a not-found error.
    fn device<'s>(&self, st: &'s State, id: &str) -> DriverResult<&'s Device> {
        st.meta.devices.get(id).ok_or_else(|| {
            DriverError::not_found(format!("layer {id:?} not found in thin pool {}", self.config.pool))
        })
    }

    /// `create` and `create_rw`.
    fn create_layer(&self, req: CreateRequest, read_write: bool) -> DriverResult<()> {
        let (id, parent) = (req.id.as_str(), req.parent.as_str());
        self.validate_id("layer id", id)?;
        if !parent.is_empty() {
            self.validate_id("parent layer id", parent)?;
        }
        let size = storage_opt(&req)?;
        let mut st = self.lock();
        if st.meta.devices.contains_key(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} already exists in {}",
                self.config.pool
            )));
        }
        let origin = if parent.is_empty() {
            None
        } else {
            let p = st.meta.devices.get(parent).cloned().ok_or_else(|| {
                DriverError::not_found(format!("parent layer {parent:?} of new layer {id:?} not found"))
            })?;
            Some(p)
        };
        let ctx = || format!("create layer {id:?}");
        let child = match origin {
            None => None,
            Some(p) => {
                let size = size.unwrap_or(p.size);
                if size < p.size {
                    return Err(DriverError::invalid_argument(format!(
                        "layer {id:?} cannot be {size} bytes: its parent {parent:?} is {} and a layer cannot \
                         shrink",
                        p.size
                    )));
                }
                Some((p, size))
            }
        };
        self.check_pool().map_err(|e| e.context(ctx()))?;
        match child {
            None => {
                let size = size.unwrap_or(self.config.base_size);
                let dev = Device { size, read_write, ..Device::default() };
                self.new_device(&mut st, id, None, dev).map_err(|e| e.context(ctx()))?;
                if let Err(e) = self.make_filesystem(&st, id) {
                    let _ = self.delete_device(&mut st, id);
                    return Err(e.context(ctx()));
                }
            }
            Some((p, size)) => {
                let grow = size > p.size;
                let dev = Device {
                    size,
                    parent: parent.to_string(),
                    read_write,
                    initialized: !grow,
                    ..Device::default()
                };
                self.snapshot_device(&mut st, id, parent, &p, dev).map_err(|e| e.context(ctx()))?;
                if grow {
                    if let Err(e) = self.grow_filesystem(&st, id) {
                        let _ = self.delete_device(&mut st, id);
                        return Err(e.context(ctx()));
                    }
                }
            }
        }
        if let Some(dev) = st.meta.devices.get_mut(id) {
            if !dev.initialized {
                dev.initialized = true;
                if let Err(e) = self.save(&st.meta) {
                    let _ = self.delete_device(&mut st, id);
                    return Err(e.context(ctx()));
                }
            }
        }
        Ok(())
    }
}

impl StorageDriver for DevmapperDriver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut st = self.lock();
        self.device(&st, id)?;
        let children: Vec<&str> =
            st.meta.devices.iter().filter(|(_, d)| d.parent == id).map(|(c, _)| c.as_str()).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {}; remove the child layers first",
                name_list(&children)
            )));
        }
        let ctx = || format!("remove layer {id:?}");
        if st.refs.contains_key(id) {
            self.unmount(&self.mount_point(id)).map_err(|e| e.context(ctx()))?;
            st.refs.remove(id);
        }
        // Active or not (a leftover may be): the pool deletes no open device.
        self.deactivate(id).map_err(|e| e.context(ctx()))?;
        self.delete_device(&mut st, id).map_err(|e| e.context(ctx()))?;
        let _ = fs::remove_dir(self.mount_point(id));
        Ok(())
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut st = self.lock();
        let dev = self.device(&st, id)?.clone();
        let rootfs = self.mount_point(id).join("rootfs");
        let path = rootfs
            .to_str()
            .ok_or_else(|| DriverError::internal(format!("path {} is not UTF-8", rootfs.display())))?
            .to_string();
        if !st.refs.contains_key(id) {
            let ctx = || format!("mount layer {id:?}");
            self.activate(id, &dev, !dev.read_write).map_err(|e| e.context(ctx()))?;
            if let Err(e) = self.mount_device(id, !dev.read_write) {
                let _ = self.deactivate(id);
                return Err(e.context(ctx()));
            }
        }
        *st.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let mut st = self.lock();
        self.device(&st, id)?;
        match st.refs.get(id).copied().unwrap_or(0) {
            0 => Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            ))),
            1 => {
                // A failed unmount keeps the reference, so a later put retries.
                self.unmount(&self.mount_point(id))
                    .map_err(|e| e.context(format_args!("unmount layer {id:?}")))?;
                st.refs.remove(id);
                self.deactivate(id).map_err(|e| {
                    e.context(format_args!("layer {id:?} is unmounted, but its device is still active"))
                })
            }
            n => {
                st.refs.insert(id.to_string(), n - 1);
                Ok(())
            }
        }
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        // An invalid id names no layer: false, not an error.
        Ok(self.validate_id("layer id", &req.id).is_ok() && self.lock().meta.devices.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let pool = self.pool_status();
        let tcmd = dmsetup::table(&self.config.pool);
        let table =
            self.exec(&tcmd).and_then(|o| dmsetup::parse_pool_table(&o).map_err(|e| e.into_error(&tcmd)));
        let unknown = |e: &DriverError| format!("unknown ({e})");
        let block = table.map(|t| t.block_sectors * 512);
        let data = |f: fn(u64, u64) -> u64| match (&pool, &block) {
            (Ok(p), Ok(b)) => (f(p.data.0, p.data.1) * b).to_string(),
            (Err(e), _) | (_, Err(e)) => unknown(e),
        };
        let metadata = |f: fn(u64, u64) -> u64| {
            pool.as_ref().map_or_else(unknown, |p| {
                (f(p.metadata.0, p.metadata.1) * dmsetup::METADATA_BLOCK_BYTES).to_string()
            })
        };
        let pct = self.config.min_free_percent;
        let min_free = match (&pool, &block) {
            (Ok(p), Ok(b)) => (p.data.1 * b * pct / 100).to_string(),
            (Err(e), _) | (_, Err(e)) => unknown(e),
        };
        let mode = pool.as_ref().map_or_else(unknown, |p| {
            let m = match p.mode {
                dmsetup::PoolMode::ReadWrite => "rw",
                dmsetup::PoolMode::ReadOnly => "ro",
                dmsetup::PoolMode::OutOfDataSpace => "out_of_data_space",
            };
            if p.needs_check {
                format!("{m}, needs_check")
            } else {
                m.to_string()
            }
        });
        let st = self.lock();
        Ok(StatusResponse::new(vec![
            ("Pool Name".into(), self.config.pool.clone()),
            ("Pool Blocksize".into(), block.as_ref().map_or_else(unknown, u64::to_string)),
            ("Base Device Size".into(), self.config.base_size.to_string()),
            ("Backing Filesystem".into(), self.fs.name().into()),
            ("Data Space Used".into(), data(|used, _| used)),
            ("Data Space Total".into(), data(|_, total| total)),
            ("Data Space Available".into(), data(|used, total| total.saturating_sub(used))),
            ("Metadata Space Used".into(), metadata(|used, _| used)),
            ("Metadata Space Total".into(), metadata(|_, total| total)),
            ("Metadata Space Available".into(), metadata(|used, total| total.saturating_sub(used))),
            ("Thin Pool Minimum Free Space".into(), min_free),
            ("Pool Mode".into(), mode),
            ("Transaction Id".into(), st.meta.transaction_id.to_string()),
            ("Root Dir".into(), self.root.display().to_string()),
            ("Layers".into(), st.meta.devices.len().to_string()),
            ("In Use".into(), st.refs.len().to_string()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let id = req.id.as_str();
        self.validate_id("layer id", id)?;
        let st = self.lock();
        let dev = self.device(&st, id)?;
        Ok(MetadataResponse::new(BTreeMap::from([
            ("DeviceId".to_string(), dev.device_id.to_string()),
            ("DeviceSize".to_string(), dev.size.to_string()),
            ("DeviceName".to_string(), self.device_name(id)),
            ("Parent".to_string(), dev.parent.clone()),
            ("ReadWrite".to_string(), dev.read_write.to_string()),
            ("TransactionId".to_string(), dev.transaction_id.to_string()),
        ])))
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut st = self.lock();
        let mut errors = Vec::new();
        let mut ids: Vec<String> = st.refs.keys().cloned().collect();
        ids.sort();
        for id in ids {
            match self.unmount(&self.mount_point(&id)).and_then(|()| self.deactivate(&id)) {
                Ok(()) => {
                    st.refs.remove(&id);
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

/// The major and minor numbers of a `dev_t` (glibc's encoding).
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The `size` storage option in bytes, if given; any other is invalid.
fn storage_opt(req: &CreateRequest) -> DriverResult<Option<u64>> {
    let mut size = None;
    for (key, value) in &req.storage_opt {
        if !key.eq_ignore_ascii_case("size") {
            return Err(DriverError::invalid_argument(format!(
                "unknown storage option {key:?} for layer {:?}: devicemapper takes only \"size\"",
                req.id
            )));
        }
        let bytes = berth_plugin_api::util::parse_size(value).map_err(|e| {
            DriverError::invalid_argument(format!("storage option size of layer {:?}: {e}", req.id))
        })?;
        if bytes < 1 << 20 || bytes % 512 != 0 {
            return Err(DriverError::invalid_argument(format!(
                "storage option size of layer {:?} is {bytes}: give at least 1M, in whole 512-byte sectors",
                req.id
            )));
        }
        size = Some(bytes);
    }
    Ok(size)
}
