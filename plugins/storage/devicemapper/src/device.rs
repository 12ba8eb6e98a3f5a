//! Thin devices: making and deleting them inside pool transactions,
//! putting filesystems on them, activating and mounting them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult, ErrorKind};

use crate::dmsetup::{self, Fs, PoolMode, PoolStatus};
use crate::meta::{Device, Meta};
use crate::{DevmapperDriver, State};

impl DevmapperDriver {
    /// The device-mapper name of layer `id`'s device.
    pub(crate) fn device_name(&self, id: &str) -> String {
        format!("{}-{id}", self.prefix)
    }

    /// The block device of layer `id` while it is active.
    fn dev_path(&self, id: &str) -> String {
        format!("/dev/mapper/{}", self.device_name(id))
    }

    /// Where layer `id`'s device is mounted.
    pub(crate) fn mount_point(&self, id: &str) -> PathBuf {
        self.root.join("mnt").join(id)
    }

    /// Saves the record.
    pub(crate) fn save(&self, meta: &Meta) -> DriverResult<()> {
        meta.save(&self.root.join("metadata.json"))
    }

    /// The pool's status; a missing pool says how to make one.
    pub(crate) fn pool_status(&self) -> DriverResult<PoolStatus> {
        let pool = &self.config.pool;
        let cmd = dmsetup::status(pool);
        let out = self.exec(&cmd).map_err(|e| match e.kind {
            ErrorKind::NotFound => DriverError::not_found(format!(
                "thin pool {pool:?} does not exist ({}): create it (lvconvert --thinpool) and set \
                 dm.thinpooldev, or set dm.directlvm_device",
                e.message
            )),
            _ => e,
        })?;
        dmsetup::parse_pool_status(&out).map_err(|e| e.into_error(&cmd))
    }

    /// Refuses a create while the pool is read-only, needs a check, or has
    /// less free data or metadata space than `dm.min_free_space`.
    pub(crate) fn check_pool(&self) -> DriverResult<()> {
        let pool = &self.config.pool;
        let s = self.pool_status()?;
        if s.needs_check {
            return Err(DriverError::unavailable(format!(
                "thin pool {pool:?} needs a metadata check: deactivate it and run thin_check (lvconvert \
                 --repair for an lvm pool)"
            )));
        }
        match s.mode {
            PoolMode::ReadWrite => {}
            PoolMode::ReadOnly => {
                return Err(DriverError::unavailable(format!(
                "thin pool {pool:?} is read-only (metadata full or damaged): extend or repair its metadata"
            )))
            }
            PoolMode::OutOfDataSpace => {
                return Err(DriverError::resource_exhausted(format!(
                    "thin pool {pool:?} is out of data space: extend the pool or remove layers"
                )))
            }
        }
        let pct = self.config.min_free_percent;
        if pct == 0 {
            return Ok(());
        }
        for (what, (used, total)) in [("data", s.data), ("metadata", s.metadata)] {
            let min = (total * pct / 100).max(1);
            let free = total.saturating_sub(used);
            if free < min {
                return Err(DriverError::resource_exhausted(format!(
                    "thin pool {pool:?} has {free} free {what} blocks, less than the {min} \
                     dm.min_free_space = {pct}% asks for: extend the pool or lower dm.min_free_space"
                )));
            }
        }
        Ok(())
    }

    /// Makes layer `id`'s thin device in one pool transaction: an empty one
    /// (`origin` none) or a snapshot of device `origin`; `dev` is its
    /// record (its id and transaction are filled in here).
    pub(crate) fn new_device(
        &self,
        st: &mut State,
        id: &str,
        origin: Option<u32>,
        mut dev: Device,
    ) -> DriverResult<()> {
        let pool = &self.config.pool;
        let exhausted =
            || DriverError::resource_exhausted(format!("every thin device id of pool {pool:?} is in use"));
        let mut device_id = st.meta.allocate_id(&st.taken).ok_or_else(exhausted)?;
        let transaction = st.meta.open(id, device_id);
        if let Err(e) = self.save(&st.meta) {
            st.meta.abandon();
            return Err(e);
        }
        loop {
            let msg = match origin {
                None => dmsetup::create_thin(device_id),
                Some(o) => dmsetup::create_snap(device_id, o),
            };
            match self.exec(&dmsetup::message(pool, &msg)) {
                Ok(_) => break,
                Err(e) if e.kind == ErrorKind::AlreadyExists => {
                    // The pool has this id though no layer does: skip it.
                    st.taken.insert(device_id);
                    let next = st.meta.allocate_id(&st.taken).ok_or_else(exhausted);
                    let saved = next.and_then(|id| {
                        st.meta.refresh(id);
                        self.save(&st.meta).map(|()| id)
                    });
                    match saved {
                        Ok(id) => device_id = id,
                        Err(e) => {
                            st.meta.abandon();
                            let _ = self.save(&st.meta);
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    st.meta.abandon();
                    let _ = self.save(&st.meta);
                    return Err(e);
                }
            }
        }
        dev.device_id = device_id;
        dev.transaction_id = transaction;
        st.meta.devices.insert(id.to_string(), dev);
        let closed = self.save(&st.meta).and_then(|()| self.close_transaction(&mut st.meta));
        if let Err(e) = closed {
            // Undo in the pool; the open transaction stays recorded, so a
            // start after a crash here rolls it back too.
            st.meta.devices.remove(id);
            let _ = self.exec(&dmsetup::message(pool, &dmsetup::delete(device_id)));
            let _ = self.save(&st.meta);
            return Err(e);
        }
        Ok(())
    }

    /// Makes layer `id`'s device as a snapshot of `parent`'s (`p`), the
    /// parent suspended meanwhile when it is active (mounted).
    pub(crate) fn snapshot_device(
        &self,
        st: &mut State,
        id: &str,
        parent: &str,
        p: &Device,
        dev: Device,
    ) -> DriverResult<()> {
        let active = st.refs.contains_key(parent);
        let pname = self.device_name(parent);
        if active {
            self.exec(&dmsetup::suspend(&pname))?;
        }
        let made = self.new_device(st, id, Some(p.device_id), dev);
        let resumed = if active { self.exec(&dmsetup::resume(&pname)).map(drop) } else { Ok(()) };
        made.and(
            resumed
                .map_err(|e| e.context(format_args!("layer {id:?} is made, but its parent stays suspended"))),
        )
    }

    /// Deletes layer `id`'s device from the pool in one transaction, and
    /// its record. The device must not be active.
    pub(crate) fn delete_device(&self, st: &mut State, id: &str) -> DriverResult<()> {
        let Some(dev) = st.meta.devices.get(id).cloned() else { return Ok(()) };
        let pool = &self.config.pool;
        st.meta.open(id, dev.device_id);
        if let Err(e) = self.save(&st.meta) {
            st.meta.abandon();
            return Err(e);
        }
        match self.exec(&dmsetup::message(pool, &dmsetup::delete(dev.device_id))) {
            Ok(_) => {}
            // ENODATA: the pool has no such device any more.
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => {
                st.meta.abandon();
                let _ = self.save(&st.meta);
                return Err(e);
            }
        }
        st.meta.devices.remove(id);
        self.save(&st.meta)?;
        self.close_transaction(&mut st.meta)
    }

    /// Moves the pool's transaction id to the open transaction's, then
    /// records it closed.
    fn close_transaction(&self, meta: &mut Meta) -> DriverResult<()> {
        let Some((current, new)) = meta.closing() else { return Ok(()) };
        self.exec(&dmsetup::message(&self.config.pool, &dmsetup::set_transaction_id(current, new)))?;
        meta.close();
        self.save(meta)
    }

    /// Puts the filesystem on new base layer `id` and makes its `rootfs/`
    /// (mode 0755, root:root). The device is left inactive.
    pub(crate) fn make_filesystem(&self, st: &State, id: &str) -> DriverResult<()> {
        let dev = self.device(st, id)?.clone();
        self.activate(id, &dev, false)?;
        let made = (|| {
            let path = self.dev_path(id);
            self.exec(&dmsetup::mkfs(self.fs, &path, &self.config.mkfs_args))?;
            if self.fs == Fs::Ext4 {
                self.exec(&dmsetup::tune2fs(&path))?;
            }
            let mnt = self.mount_device(id, false)?;
            let rootfs = mnt.join("rootfs");
            let dir = fs::create_dir(&rootfs)
                .and_then(|()| fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)))
                .and_then(|()| std::os::unix::fs::chown(&rootfs, Some(0), Some(0)))
                .map_err(|e| DriverError::io(format_args!("create {}", rootfs.display()), &e));
            let unmounted = self.unmount(&mnt);
            dir.and(unmounted)
        })();
        let deactivated = self.deactivate(id);
        made.and(deactivated)
    }

    /// Grows the filesystem of new child layer `id` to its device's size
    /// (mounted, as `resize2fs` and `xfs_growfs` grow online). The device
    /// is left inactive.
    pub(crate) fn grow_filesystem(&self, st: &State, id: &str) -> DriverResult<()> {
        let dev = self.device(st, id)?.clone();
        self.activate(id, &dev, false)?;
        let grown = self.mount_device(id, false).and_then(|mnt| {
            let grown = self.exec(&dmsetup::grow(self.fs, &self.dev_path(id), &mnt)).map(drop);
            grown.and(self.unmount(&mnt))
        });
        let deactivated = self.deactivate(id);
        grown.and(deactivated)
    }

    /// Activates layer `id`'s device; one already active counts.
    pub(crate) fn activate(&self, id: &str, dev: &Device, read_only: bool) -> DriverResult<()> {
        let cmd =
            dmsetup::activate(&self.device_name(id), &self.config.pool, dev.device_id, dev.size, read_only);
        match self.exec(&cmd) {
            Err(e) if e.kind != ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// Deactivates layer `id`'s device; one not active counts.
    pub(crate) fn deactivate(&self, id: &str) -> DriverResult<()> {
        match self.exec(&dmsetup::deactivate(&self.device_name(id))) {
            Err(e) if e.kind != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Mounts layer `id`'s active device at its mount point.
    pub(crate) fn mount_device(&self, id: &str, read_only: bool) -> DriverResult<PathBuf> {
        let mnt = self.mount_point(id);
        fs::create_dir_all(&mnt)
            .and_then(|()| fs::set_permissions(&mnt, fs::Permissions::from_mode(0o755)))
            .map_err(|e| DriverError::io(format_args!("create mount point {}", mnt.display()), &e))?;
        let cmd = dmsetup::mount(self.fs, &self.dev_path(id), &mnt, read_only, &self.config.mount_opts);
        if let Err(e) = self.exec(&cmd) {
            let _ = fs::remove_dir(&mnt);
            return Err(e);
        }
        Ok(mnt)
    }

    /// Unmounts `target` and removes the mount point; nothing mounted
    /// there counts as done.
    pub(crate) fn unmount(&self, target: &Path) -> DriverResult<()> {
        let cmd = dmsetup::umount(target);
        let out = self.runner.run(&cmd).map_err(|e| dmsetup::not_run(&cmd, &e))?;
        if out.success() || dmsetup::not_mounted(&out) {
            let _ = fs::remove_dir(target);
            Ok(())
        } else {
            Err(dmsetup::failure(&cmd, &out))
        }
    }
}
