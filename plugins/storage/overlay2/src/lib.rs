//! berth storage driver overlay2: layers as overlayfs directories.
//!
//! Each layer keeps only its own changes, in `<root>/<id>/diff`. A layer
//! with parents is mounted by `get` as an overlay of their `diff` dirs, in
//! `<root>/<id>/merged` (see `layout.rs` for the files, and moby's overlay2
//! driver, whose on-disk scheme this follows):
//!
//! | layer                   | `get` answers                                        |
//! |-------------------------|------------------------------------------------------|
//! | read-write, no parent   | its `diff` dir itself (nothing is mounted)           |
//! | read-write, parents     | overlay: `upperdir` = its `diff`, `lowerdir` = parents' |
//! | read-only, parents      | overlay without upper dir: `lowerdir` = its `diff` and the parents' |
//! | read-only, no parent    | overlay without upper dir of its `diff` over an empty dir |
//!
//! Read-only mounts are also read-only, `nosuid` and `nodev` mounts. Mounts
//! are reference counted: the first `get` mounts, the last `put` unmounts.
//! Lower dirs are named by 26-character short links (`<root>/l/<short>`) so
//! that a chain of 128 layers fits in one page of `mount(2)` options; the
//! new mount API (`fsconfig`, Linux 6.8+), used when the kernel has it,
//! has no such limit at all. At most 128 parents per layer.
//!
//! * The driver declines ([`Init::Skipped`]) when not root, or when a probe
//!   overlay mounted under the root at start fails (the reason names the
//!   backing file system and what the kernel said), or when the backing
//!   file system lacks `d_type`.
//! * `size=` (per layer storage option) needs project quotas on the backing
//!   file system (ext4 or xfs mounted with `prjquota`); elsewhere it is a
//!   typed unsupported error naming what is missing.
//! * Mounts use `index=off`, `redirect_dir=off` and `metacopy=off` where the
//!   kernel knows them, so a layer's `diff` always holds whole files and
//!   renaming a directory of a lower layer is refused (`EXDEV`; `mv` then
//!   copies). The SELinux mount label is ignored.
//! * A native [`berth_plugin_api::DiffDriver`] (a layer against its own
//!   parent): the `diff` dir is the diff, overlay whiteouts (character
//!   devices 0/0) and opaque dirs (`trusted.overlay.opaque`) translated to
//!   and from OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`), every path of an
//!   applied tar resolved beneath the layer with `openat2`. Offered only
//!   when the probe found the upper dir a faithful diff.
//! * One driver instance per root: a new one unmounts what a previous one
//!   left mounted under the root and sweeps half-made layers.
//!
//! Driver options (the `[storage] options` table): `mount_api` = `"auto"`
//! (default: fsconfig when it works, else `mount(2)`), `"fsconfig"` or
//! `"mount"`.

#![deny(missing_docs)]

mod diff;
pub mod export;
mod layout;
mod mount;
mod probe;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use berth_plugin_api::storage::*;
use berth_plugin_api::util::driver::{combine, name_list, path_string};
use berth_plugin_api::util::quota::ProjectQuota;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, StorageDriver};

use crate::layout::{remove_any, validate_id, LayerMeta, Layout, MAX_DEPTH};
use crate::mount::Overlay;
use crate::probe::{ApiChoice, Host};

/// The overlay2 storage driver. See the [crate documentation](crate).
#[derive(Debug)]
pub struct Overlay2Driver {
    layout: Layout,
    host: Host,
    /// Project quotas, or why `size=` is unsupported.
    quota: Result<ProjectQuota, DriverError>,
    state: Mutex<State>,
}

/// What the driver knows, guarded by one lock. Every call is short (a few
/// directories, one mount), so it runs whole under the lock.
#[derive(Debug, Default)]
struct State {
    /// Every layer, loaded from disk at start.
    layers: BTreeMap<String, LayerMeta>,
    /// References taken by `get` and not yet released by `put`.
    refs: HashMap<String, usize>,
    /// Layers whose `merged` dir is mounted.
    mounted: BTreeSet<String>,
    /// Layers a diff is being applied to: not to be mounted or removed
    /// meanwhile.
    applying: HashSet<String>,
}

/// Decodes the driver options: only `mount_api`, and an unknown key is
/// refused rather than ignored.
fn decode_options(req: &InitRequest) -> DriverResult<ApiChoice> {
    let bad = |why: String| DriverError::invalid_argument(format!("options of driver {:?}: {why}", req.name));
    if req.options.is_null() {
        return Ok(ApiChoice::Auto);
    }
    let Some(table) = req.options.as_object() else {
        return Err(bad("expected a table of options".into()));
    };
    let mut choice = ApiChoice::Auto;
    for (key, value) in table {
        match (key.as_str(), value.as_str()) {
            ("mount_api", Some("auto")) => choice = ApiChoice::Auto,
            ("mount_api", Some("fsconfig")) => choice = ApiChoice::Fsconfig,
            ("mount_api", Some("mount")) => choice = ApiChoice::Classic,
            ("mount_api", _) => {
                return Err(bad(format!("mount_api is {value}; use \"auto\", \"fsconfig\" or \"mount\"")))
            }
            _ => return Err(bad(format!("unknown option {key:?}; overlay2 takes only \"mount_api\""))),
        }
    }
    Ok(choice)
}

impl Overlay2Driver {
    /// Opens (or sets up) the driver's state under `req.root`: unmounts what
    /// a crashed previous instance left mounted, removes half-made layers,
    /// loads the layers and probes the host by mounting a test overlay.
    ///
    /// Declines ([`Init::Skipped`]) when not running as root or when overlay
    /// cannot work on the root's file system, saying why.
    pub fn new(req: InitRequest) -> DriverResult<Init<Overlay2Driver>> {
        let choice = decode_options(&req)?;
        if !rustix::process::geteuid().is_root() {
            return Ok(Init::Skipped(
                "overlay2 must run as root to mount overlays and keep file ownership".into(),
            ));
        }
        let layout = Layout::open(&req.root)?;
        sweep_mounts(&layout.root)?;
        let layers = layout.reconcile()?;
        let host = match probe::probe(&layout, choice) {
            Ok(host) => host,
            Err(why) => return Ok(Init::Skipped(why)),
        };
        let quota = ProjectQuota::open(&layout.root, layout.quota_file());
        Ok(Init::Ready(Overlay2Driver {
            layout,
            host,
            quota,
            state: Mutex::new(State { layers, ..State::default() }),
        }))
    }

    /// The state, even if a panicking thread poisoned the lock: every
    /// critical section leaves the state consistent before anything that
    /// can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `create` and `create_rw`.
    fn create_layer(&self, req: CreateRequest, read_write: bool) -> DriverResult<()> {
        let (id, parent) = (req.id.as_str(), req.parent.as_str());
        validate_id("layer id", id)?;
        if !parent.is_empty() {
            validate_id("parent layer id", parent)?;
        }
        let size = self.storage_opt(&req)?;
        let mut state = self.lock();
        if state.layers.contains_key(id) {
            return Err(DriverError::already_exists(format!(
                "layer {id:?} already exists in {}",
                self.layout.root.display()
            )));
        }
        let lowers = if parent.is_empty() {
            Vec::new()
        } else {
            let p = state.layers.get(parent).ok_or_else(|| {
                DriverError::not_found(format!(
                    "parent layer {parent:?} of new layer {id:?} not found in {}",
                    self.layout.root.display()
                ))
            })?;
            std::iter::once(p.link.clone()).chain(p.lowers.iter().cloned()).collect::<Vec<_>>()
        };
        if lowers.len() > MAX_DEPTH {
            return Err(DriverError::failed_precondition(format!(
                "layer {id:?} would have {} layers below it; overlay2 stacks at most {MAX_DEPTH}",
                lowers.len()
            )));
        }
        let meta =
            LayerMeta { parent: parent.to_string(), read_write, link: self.layout.new_short_name()?, lowers };
        let mut limited = false;
        let made = self.layout.make_layer(id, &meta, |dir| match (size, &self.quota) {
            (Some(bytes), Ok(quota)) => {
                quota.limit(id, dir, bytes).map_err(|e| e.context(format_args!("limit layer {id:?}")))?;
                limited = true;
                Ok(())
            }
            _ => Ok(()),
        });
        if let Err(e) = made {
            if let (true, Ok(quota)) = (limited, &self.quota) {
                let _ = quota.release(id);
            }
            return Err(e);
        }
        state.layers.insert(id.to_string(), meta);
        Ok(())
    }

    /// The `size` storage option in bytes, if given. Any other option is
    /// invalid; `size` without project quotas is unsupported.
    fn storage_opt(&self, req: &CreateRequest) -> DriverResult<Option<u64>> {
        let mut size = None;
        for (key, value) in &req.storage_opt {
            if !key.eq_ignore_ascii_case("size") {
                return Err(DriverError::invalid_argument(format!(
                    "unknown storage option {key:?} for layer {:?}: overlay2 takes only \"size\"",
                    req.id
                )));
            }
            let bytes = berth_plugin_api::util::parse_size(value).map_err(|e| {
                DriverError::invalid_argument(format!("storage option size of layer {:?}: {e}", req.id))
            })?;
            if let Err(why) = &self.quota {
                return Err(DriverError::new(
                    why.kind,
                    format!("overlay2 cannot limit the size of layer {:?}: {}", req.id, why.message),
                ));
            }
            size = Some(bytes);
        }
        Ok(size)
    }

    /// The overlay that shows layer `meta` (`id`), or `None` for a
    /// read-write base layer, which is its `diff` dir.
    fn overlay_of(&self, id: &str, meta: &LayerMeta) -> Option<Overlay> {
        let parents = meta.lowers.iter().map(|l| format!("l/{l}"));
        let own = format!("l/{}", meta.link);
        let (lowers, upper) = match (meta.read_write, meta.lowers.is_empty()) {
            (true, true) => return None,
            (true, false) => (parents.collect(), Some((own, format!("{id}/work")))),
            // Overlay needs two lower dirs when there is no upper dir.
            (false, true) => (vec![own, ".berth/empty".to_string()], None),
            (false, false) => (std::iter::once(own).chain(parents).collect(), None),
        };
        Some(Overlay { lowers, upper, options: self.host.options.clone() })
    }

    /// Unmounts the `merged` dir of layer `id` and removes the mount point.
    fn unmount_layer(&self, id: &str) -> DriverResult<()> {
        let mp = self.layout.merged(id);
        mount::unmount_path(&mp)
            .map_err(|e| DriverError::io(format_args!("unmount layer {id:?} at {}", mp.display()), &e))?;
        // Cosmetic: a directory left here is swept at the next start.
        let _ = fs::remove_dir(&mp);
        Ok(())
    }

    /// A conflict error when a diff is being applied to layer `id`.
    fn check_not_applying(&self, state: &State, id: &str, what: &str) -> DriverResult<()> {
        if state.applying.contains(id) {
            return Err(DriverError::conflict(format!(
                "cannot {what} layer {id:?} while a diff is applied to it; retry when that has finished"
            )));
        }
        Ok(())
    }

    /// The known layer `id`, or a not-found error naming where it was
    /// looked for.
    fn layer<'s>(&self, state: &'s State, id: &str) -> DriverResult<&'s LayerMeta> {
        state.layers.get(id).ok_or_else(|| {
            DriverError::not_found(format!("layer {id:?} not found in {}", self.layout.root.display()))
        })
    }

    /// What status says about quotas.
    fn quota_status(&self) -> String {
        match &self.quota {
            Ok(q) => format!("project quotas ({})", q.filesystem()),
            Err(e) => format!("unsupported: {}", e.message),
        }
    }
}

impl StorageDriver for Overlay2Driver {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, false)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.create_layer(req, true)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        let link = self.layer(&state, id)?.link.clone();
        self.check_not_applying(&state, id, "remove")?;
        let children: Vec<&str> =
            state.layers.iter().filter(|(_, m)| m.parent == id).map(|(c, _)| c.as_str()).collect();
        if !children.is_empty() {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is the parent of {}; remove the child layers first",
                name_list(&children)
            )));
        }
        let dir = self.layout.dir(id);
        let merged = self.layout.merged(id);
        let inner = mount::mounts_under(&dir)
            .map_err(|e| DriverError::io(format_args!("read mount table to remove layer {id:?}"), &e))?;
        if let Some(m) = inner.iter().find(|m| !(state.mounted.contains(id) && **m == merged)) {
            return Err(DriverError::conflict(format!(
                "layer {id:?} is in use: {} is mounted inside it; unmount it first",
                m.display()
            )));
        }
        if state.mounted.contains(id) {
            self.unmount_layer(id)?;
            state.mounted.remove(id);
        }
        state.refs.remove(id);

        let trash = self.layout.temp_path("remove");
        fs::rename(&dir, &trash)
            .map_err(|e| DriverError::io(format_args!("remove layer {id:?} at {}", dir.display()), &e))?;
        state.layers.remove(id);
        let mut errors = Vec::new();
        let link_path = self.layout.links().join(&link);
        if let Err(e) = remove_any(&link_path) {
            errors.push(DriverError::io(format_args!("remove link {}", link_path.display()), &e));
        }
        if let Ok(quota) = &self.quota {
            if let Err(e) = quota.release(id) {
                errors.push(e);
            }
        }
        drop(state);
        if let Err(e) = remove_any(&trash) {
            errors.push(DriverError::io(format_args!("delete old tree {}", trash.display()), &e));
        }
        match combine(errors) {
            Some(e) => {
                Err(e.context(format_args!("layer {id:?} is removed, but (retried when the driver starts)")))
            }
            None => Ok(()),
        }
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        let overlay = self.overlay_of(id, self.layer(&state, id)?);
        self.check_not_applying(&state, id, "mount")?;
        let path = match overlay {
            None => self.layout.diff(id),
            Some(ov) => {
                let mp = self.layout.merged(id);
                if !state.mounted.contains(id) {
                    let ctx = || format!("mount layer {id:?} at {}", mp.display());
                    match fs::DirBuilder::new().mode(0o700).create(&mp) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                            return Err(DriverError::io(ctx(), &e))
                        }
                        _ => {}
                    }
                    if let Err(e) = mount::mount_overlay(&self.layout.root, &ov, &mp, self.host.api) {
                        let _ = fs::remove_dir(&mp);
                        return Err(e.into_driver(ctx()));
                    }
                    state.mounted.insert(id.to_string());
                }
                mp
            }
        };
        let path = path_string(&path)?;
        *state.refs.entry(id.to_string()).or_default() += 1;
        Ok(GetResponse::new(path))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let mut state = self.lock();
        self.layer(&state, id)?;
        let refs = state.refs.get(id).copied().unwrap_or(0);
        if refs == 0 {
            return Err(DriverError::failed_precondition(format!(
                "layer {id:?} has no reference to release: put without a matching get"
            )));
        }
        if refs == 1 && state.mounted.contains(id) {
            // On failure the reference stays, so the put can be retried.
            self.unmount_layer(id)?;
            state.mounted.remove(id);
        }
        if refs == 1 {
            state.refs.remove(id);
        } else {
            state.refs.insert(id.to_string(), refs - 1);
        }
        Ok(())
    }

    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        // An invalid id names no layer: false, not an error.
        Ok(validate_id("layer id", &req.id).is_ok() && self.lock().layers.contains_key(&req.id))
    }

    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        let state = self.lock();
        let native = match &self.host.native_diff {
            Ok(()) => "true".to_string(),
            Err(why) => format!("false ({why})"),
        };
        Ok(StatusResponse::new(vec![
            ("Backing Filesystem".into(), self.host.backing_fs.clone()),
            ("Supports d_type".into(), "true".into()),
            ("Native Overlay Diff".into(), native),
            ("Using metacopy".into(), "false".into()),
            ("Mount API".into(), self.host.api.name().into()),
            ("Quota".into(), self.quota_status()),
            ("Root Dir".into(), self.layout.root.display().to_string()),
            ("Layers".into(), state.layers.len().to_string()),
            ("Mounted".into(), state.mounted.len().to_string()),
        ]))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        let id = req.id.as_str();
        validate_id("layer id", id)?;
        let state = self.lock();
        let meta = self.layer(&state, id)?;
        let mut out = BTreeMap::from([
            ("Parent".to_string(), meta.parent.clone()),
            ("ReadWrite".to_string(), meta.read_write.to_string()),
            ("Link".to_string(), meta.link.clone()),
            ("UpperDir".to_string(), path_string(&self.layout.diff(id))?),
        ]);
        if self.overlay_of(id, meta).is_some() {
            out.insert("MergedDir".into(), path_string(&self.layout.merged(id))?);
        }
        if meta.read_write && !meta.lowers.is_empty() {
            out.insert("WorkDir".into(), path_string(&self.layout.dir(id).join("work"))?);
        }
        if !meta.lowers.is_empty() {
            // The parents' diff dirs, nearest first, as moby shows them.
            let mut dirs = Vec::new();
            let mut cur = meta.parent.as_str();
            while let Some(p) = state.layers.get(cur) {
                dirs.push(path_string(&self.layout.diff(cur))?);
                cur = p.parent.as_str();
            }
            out.insert("LowerDir".into(), dirs.join(":"));
        }
        Ok(MetadataResponse::new(out))
    }

    fn as_diff(&self) -> Option<&dyn berth_plugin_api::DiffDriver> {
        self.host.native_diff.is_ok().then_some(self as &dyn berth_plugin_api::DiffDriver)
    }

    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        let mut state = self.lock();
        let mut errors = Vec::new();
        for id in state.mounted.clone() {
            match self.unmount_layer(&id) {
                Ok(()) => {
                    state.mounted.remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        state.refs.clear();
        // Anything else under the root (none, unless mounted behind the
        // driver's back, or an unmount above failed and succeeds now).
        if let Err(e) = sweep_mounts(&self.layout.root) {
            errors.push(e);
        }
        let layout = &self.layout;
        state.mounted.retain(|id| mount::is_mount_point(&layout.merged(id)).unwrap_or(true));
        match combine(errors) {
            Some(e) => Err(e.context("overlay2 cleanup")),
            None => Ok(()),
        }
    }
}

/// Unmounts everything under `root`, deepest first, and removes the
/// `merged` mount points of layers (only when empty: never a recursive
/// delete, which could reach through a mount that refused to go). Tries
/// every mount and reports every failure.
fn sweep_mounts(root: &Path) -> DriverResult<()> {
    let mut errors = Vec::new();
    match mount::mounts_under(root) {
        Ok(points) => {
            for m in points {
                if let Err(e) = mount::unmount_path(&m) {
                    errors.push(DriverError::io(format_args!("unmount stale mount {}", m.display()), &e));
                }
            }
        }
        Err(e) => errors.push(DriverError::io("read /proc/self/mountinfo", &e)),
    }
    for name in layout::read_dir(root)? {
        let merged = root.join(name).join("merged");
        match fs::remove_dir(&merged) {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => errors
                .push(DriverError::io(format_args!("remove stale mount point {}", merged.display()), &e)),
            _ => {}
        }
    }
    combine(errors).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    fn driver(dir: &Path) -> Overlay2Driver {
        let req = InitRequest::new(
            "overlay2",
            dir.join("root").to_str().unwrap(),
            dir.join("run").to_str().unwrap(),
        );
        match Overlay2Driver::new(req).unwrap() {
            Init::Ready(d) => d,
            Init::Skipped(why) => panic!("overlay2 skipped: {why} (tests run as root)"),
        }
    }

    #[test]
    fn the_mount2_options_of_128_layers_fit_in_a_page() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path());
        // Image-style ids: 64 hex digits. Layers 0..=128, so layer 127
        // tops a 128-layer chain and layer 128 has the most parents
        // allowed; a read-write layer on 127 has 128 lower dirs.
        let id = |i: usize| format!("{i:064x}");
        for i in 0..=MAX_DEPTH {
            let parent = if i == 0 { String::new() } else { id(i - 1) };
            d.create(CreateRequest::new(id(i), parent)).unwrap();
        }
        let ctr = "c".repeat(64);
        d.create_rw(CreateRequest::new(&ctr, id(MAX_DEPTH - 1))).unwrap();
        let page = rustix::param::page_size();
        let state = d.lock();
        for (top, lowers) in [(id(MAX_DEPTH - 1), 128), (ctr, 128), (id(MAX_DEPTH), 129)] {
            let ov = d.overlay_of(&top, &state.layers[&top]).unwrap();
            let data = ov.data();
            assert_eq!(ov.lowers.len(), lowers);
            assert!(data.len() < page, "{} bytes: {data}", data.len());
        }
    }

    #[test]
    fn size_without_project_quotas_names_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let d = driver(dir.path());
        let Err(why) = &d.quota else { return };
        let mut req = CreateRequest::new("q", "");
        req.storage_opt.insert("size".into(), "1G".into());
        let e = d.create_rw(req).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
        assert!(e.message.contains("\"q\"") && e.message.contains(&d.host.backing_fs), "{e}");
        assert_eq!(why.kind, ErrorKind::Unsupported);
        assert!(d
            .status(StatusRequest::default())
            .unwrap()
            .status
            .iter()
            .any(|(k, v)| k == "Quota" && v.starts_with("unsupported: ")));
    }

    #[test]
    fn combine_keeps_every_message() {
        assert!(combine(vec![]).is_none());
        let same = combine(vec![DriverError::conflict("a"), DriverError::conflict("b")]).unwrap();
        assert_eq!((same.kind, same.message.as_str()), (ErrorKind::Conflict, "2 errors: a; b"));
        let mixed = combine(vec![DriverError::conflict("a"), DriverError::not_found("b")]).unwrap();
        assert_eq!(mixed.kind, ErrorKind::Internal);
        assert_eq!(
            name_list(&["1", "2", "3", "4", "5", "6"]),
            "\"1\", \"2\", \"3\", \"4\", \"5\" and 1 more"
        );
    }
}
