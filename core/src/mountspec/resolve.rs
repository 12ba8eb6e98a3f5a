//! Resolution: mount specs in, OCI runtime mounts out, with the volumes
//! they need mounted through the volume service.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, DriverResult};
use oci_spec::runtime::Mount;

use super::tmpfs;
use super::validate::{host_path_exists, validate_all};
use super::{clean_path, MountSpec, MountType, Propagation};

/// The label Docker puts on a volume created for an anonymous mount; its
/// value is empty. `resolve` adds it to the labels of every anonymous
/// [`VolumeMountSpec`].
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What the resolver asks of the volume service for one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VolumeMountSpec {
    /// The volume's name; `None` for an anonymous volume, which the
    /// mounter creates under a fresh generated name.
    pub name: Option<String>,
    /// The driver to create the volume with when it does not exist; `None`
    /// for the configured default. A volume that exists under another
    /// driver than a named one should be refused (`conflict`).
    pub driver: Option<String>,
    /// Driver options, used only when the volume is created.
    pub driver_options: BTreeMap<String, String>,
    /// Labels, used only when the volume is created. Anonymous requests
    /// carry [`ANONYMOUS_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// Who takes the mount (the container): the volume service counts one
    /// reference per `(volume, mount_id)` and releases it on
    /// [`VolumeMounter::unmount_volume`] with the same id.
    pub mount_id: String,
}

/// The volume service's answer to [`VolumeMounter::mount_volume`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MountedVolume {
    /// The volume's name: the requested one, or the generated name of an
    /// anonymous volume.
    pub name: String,
    /// The driver holding the volume.
    pub driver: String,
    /// Host path of the volume's data, mounted and ready to bind.
    pub path: PathBuf,
}

impl MountedVolume {
    /// A mounted volume `name` of `driver`, with its data at `path`.
    pub fn new(name: impl Into<String>, driver: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        MountedVolume { name: name.into(), driver: driver.into(), path: path.into() }
    }
}

/// What the mount resolver needs from the volume service.
///
/// The resolver never holds a volume it cannot give back: every successful
/// `mount_volume` is matched by exactly one `unmount_volume`, either when a
/// later mount of the same list fails or, after a successful [`resolve`],
/// through [`Resolved::release`].
pub trait VolumeMounter {
    /// Ensures the volume exists — creating it with the request's driver,
    /// options and labels when missing; an anonymous request (`name: None`)
    /// always creates a new volume under a generated name — mounts it for
    /// user `req.mount_id`, and answers its host path.
    fn mount_volume(&self, req: &VolumeMountSpec) -> DriverResult<MountedVolume>;

    /// Releases what `mount_volume` took for `mount_id` on volume `name`
    /// (called for each already-mounted volume when a later mount in the
    /// same list fails, so nothing leaks).
    fn unmount_volume(&self, name: &str, mount_id: &str) -> DriverResult<()>;

    /// Removes anonymous volume `name`, made by `mount_volume` for a mount
    /// list that then failed (after its reference was released), so a
    /// failed resolve leaves no new volume behind.
    fn discard_volume(&self, name: &str) -> DriverResult<()>;
}

/// A volume reference taken by [`resolve`], to give back with
/// [`Resolved::release`] (or [`VolumeMounter::unmount_volume`]) when the
/// container no longer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRef {
    /// The volume's name (generated for an anonymous volume).
    pub name: String,
    /// The driver holding it.
    pub driver: String,
    /// The user the mount was taken for.
    pub mount_id: String,
    /// Whether it was created for an anonymous mount (Docker removes those
    /// with the container when asked to: `docker rm -v`, `--rm`).
    pub anonymous: bool,
    /// Host path of the volume's data.
    pub path: PathBuf,
    /// Targets (cleaned) where the image's content should be copied into
    /// the volume if it is empty, as Docker does: every target of this
    /// volume in the list except those with `NoCopy` or a `Subpath`.
    pub copy_up_targets: Vec<String>,
}

/// The answer of [`resolve`]: the mounts to place in an OCI bundle and the
/// volume references that keep them valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The mounts, parents before children (sorted by target depth; mounts
    /// of one depth keep the order of the list).
    pub mounts: Vec<Mount>,
    /// The volume references taken, one per distinct volume, in the order
    /// they were taken.
    pub volumes: Vec<VolumeRef>,
}

impl Resolved {
    /// Gives back every volume reference, newest first. Every release is
    /// tried; the failures are reported together, with the first one's kind.
    pub fn release(&self, mounter: &dyn VolumeMounter) -> DriverResult<()> {
        let errors: Vec<DriverError> = self
            .volumes
            .iter()
            .rev()
            .filter_map(|v| {
                let context = format!("unmount volume {:?} (mount id {:?})", v.name, v.mount_id);
                mounter.unmount_volume(&v.name, &v.mount_id).err().map(|e| e.context(context))
            })
            .collect();
        match errors.first() {
            None => Ok(()),
            Some(first) => Err(DriverError::new(
                first.kind,
                errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "),
            )),
        }
    }
}

/// Resolves a container's mounts for user `mount_id`.
///
/// First the whole list is validated ([`validate_all`]: shapes, bind
/// sources on the host, duplicate targets) and nothing is taken if it
/// fails. Then each spec, in list order, becomes an OCI mount:
///
/// * bind: type `bind`, source the cleaned host path (created as a
///   directory, mode 755, when missing and `CreateMountpoint` is set),
///   options `rbind` (`bind` when `NonRecursive`), `ro`|`rw`, and the
///   propagation (default `rprivate`);
/// * volume: the volume is mounted through `mounter` (once per distinct
///   named volume, even when mounted at several targets), then bound like a
///   bind with options `rbind`, `ro`|`rw` — no propagation, as Docker. With a
///   `Subpath`, the source is that path inside the volume, which must exist
///   and, symlinks resolved, stay beneath the volume;
/// * tmpfs: type `tmpfs`, source `tmpfs`, options Docker's defaults
///   `noexec`, `nosuid`, `nodev`, `rprivate`, then `ro`, `mode=` (octal),
///   `size=` (with the largest `g`/`m`/`k` suffix that divides it) and the
///   spec's own options; a later option overrides an earlier one of its
///   kind (`exec` undoes `noexec`).
///
/// On any failure every volume taken so far is given back and the error,
/// keeping its kind, names the mount that failed (and any release that
/// failed too).
///
/// The subpath check resolves symlinks when `resolve` runs; a container
/// that can write to the volume could swap a component for a symlink
/// before the runtime mounts it, so untrusted volumes should be mounted
/// through a race-free path (`openat2`, or binding the opened directory)
/// by whoever places the mount.
pub fn resolve(mounts: &[MountSpec], mounter: &dyn VolumeMounter, mount_id: &str) -> DriverResult<Resolved> {
    validate_all(mounts)?;
    let mut resolved = Resolved::default();
    let mut staged: Vec<(usize, Mount)> = Vec::with_capacity(mounts.len());
    for spec in mounts {
        match resolve_one(spec, mounter, mount_id, &mut resolved.volumes) {
            Ok(mount) => staged.push((depth(&spec.clean_target()), mount)),
            Err(err) => {
                let err = err.context(spec.describe());
                let mut cleanup: Vec<String> =
                    resolved.release(mounter).err().into_iter().map(|e| e.message).collect();
                for v in resolved.volumes.iter().filter(|v| v.anonymous) {
                    if let Err(e) = mounter.discard_volume(&v.name) {
                        cleanup.push(format!("remove anonymous volume {:?}: {}", v.name, e.message));
                    }
                }
                return Err(if cleanup.is_empty() {
                    err
                } else {
                    DriverError::new(
                        err.kind,
                        format!("{}; rollback also failed: {}", err.message, cleanup.join("; ")),
                    )
                });
            }
        }
    }
    // Stable: mounts of one depth keep the order the user gave.
    staged.sort_by_key(|(depth, _)| *depth);
    resolved.mounts = staged.into_iter().map(|(_, m)| m).collect();
    Ok(resolved)
}

fn resolve_one(
    spec: &MountSpec,
    mounter: &dyn VolumeMounter,
    mount_id: &str,
    taken: &mut Vec<VolumeRef>,
) -> DriverResult<Mount> {
    let target = spec.clean_target();
    let rw = if spec.read_only { "ro" } else { "rw" };
    match spec.kind {
        MountType::Bind => {
            let opts = spec.bind_options.clone().unwrap_or_default();
            let source = clean_path(&spec.source);
            if opts.create_mountpoint {
                create_source(Path::new(&source))?;
            }
            let recursion = if opts.non_recursive { "bind" } else { "rbind" };
            let propagation = opts.propagation.unwrap_or(Propagation::RPrivate);
            let options = vec![recursion.to_owned(), rw.to_owned(), propagation.as_str().to_owned()];
            Ok(oci_mount(target, "bind", source.into(), options))
        }
        MountType::Volume => {
            let opts = spec.volume_options.clone().unwrap_or_default();
            let driver = opts.driver_config.unwrap_or_default();
            let anonymous = spec.source.is_empty();
            let existing = taken.iter().position(|r| !anonymous && !r.anonymous && r.name == spec.source);
            let index = match existing {
                Some(i) => {
                    if !driver.name.is_empty() && driver.name != taken[i].driver {
                        return Err(DriverError::conflict(format!(
                            "volume {:?} is already mounted from driver {:?} by this container, not {:?}",
                            spec.source, taken[i].driver, driver.name
                        )));
                    }
                    i
                }
                None => {
                    let mut labels = opts.labels.clone();
                    if anonymous {
                        labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                    }
                    let req = VolumeMountSpec {
                        name: (!anonymous).then(|| spec.source.clone()),
                        driver: (!driver.name.is_empty()).then_some(driver.name),
                        driver_options: driver.options,
                        labels,
                        mount_id: mount_id.to_owned(),
                    };
                    let mounted = mounter.mount_volume(&req)?;
                    taken.push(VolumeRef {
                        name: mounted.name,
                        driver: mounted.driver,
                        mount_id: mount_id.to_owned(),
                        anonymous,
                        path: mounted.path,
                        copy_up_targets: Vec::new(),
                    });
                    taken.len() - 1
                }
            };
            let volume = &mut taken[index];
            let source = if opts.subpath.is_empty() {
                volume.path.clone()
            } else {
                beneath(&volume.path, &opts.subpath)?
            };
            if !opts.no_copy && opts.subpath.is_empty() {
                volume.copy_up_targets.push(target.clone());
            }
            Ok(oci_mount(target, "bind", source, vec!["rbind".to_owned(), rw.to_owned()]))
        }
        MountType::Tmpfs => Ok(oci_mount(target, "tmpfs", "tmpfs".into(), tmpfs::oci_options(spec))),
        _ => Err(DriverError::internal(format!("mount type {:?} passed validation", spec.kind.as_str()))),
    }
}

fn oci_mount(destination: String, typ: &str, source: PathBuf, options: Vec<String>) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(destination.into())
        .set_typ(Some(typ.to_owned()))
        .set_source(Some(source))
        .set_options(Some(options));
    mount
}

/// The number of components of a cleaned absolute path (`/a/b` is 2).
fn depth(target: &str) -> usize {
    target.split('/').filter(|s| !s.is_empty()).count()
}

/// Creates a missing bind source as a directory, as Docker does for
/// `CreateMountpoint` (and for every `-v` bind).
fn create_source(source: &Path) -> DriverResult<()> {
    match host_path_exists(source) {
        Ok(true) => Ok(()),
        Ok(false) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(source)
            .map_err(|e| DriverError::io(format!("create source path {}", source.display()), &e)),
        Err(e) => Err(DriverError::io(format!("check source path {}", source.display()), &e)),
    }
}

/// `root/subpath` with symlinks resolved, refused unless it exists and
/// stays beneath `root` (itself resolved).
fn beneath(root: &Path, subpath: &str) -> DriverResult<PathBuf> {
    let root = root
        .canonicalize()
        .map_err(|e| DriverError::io(format!("resolve volume path {}", root.display()), &e))?;
    let joined = root.join(subpath);
    let resolved = match joined.canonicalize() {
        Ok(path) => path,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::not_found(format!(
                "subpath {subpath:?} does not exist in the volume (looked for {}): create it first",
                joined.display()
            )))
        }
        Err(e) => {
            return Err(DriverError::io(format!("resolve subpath {subpath:?} at {}", joined.display()), &e))
        }
    };
    if !resolved.starts_with(&root) {
        return Err(DriverError::invalid_argument(format!(
            "subpath {subpath:?} resolves to {}, outside the volume at {}",
            resolved.display(),
            root.display()
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountspec::{parse_mount, parse_tmpfs, parse_volume, BindOptions, VolumeOptions};
    use berth_plugin_api::ErrorKind;
    use std::cell::{Cell, RefCell};

    /// A volume service double: records every call, keeps volumes as
    /// directories under `root`, and fails where told to.
    #[derive(Default)]
    struct FakeMounter {
        root: PathBuf,
        calls: RefCell<Vec<String>>,
        requests: RefCell<Vec<VolumeMountSpec>>,
        fail_mount: Option<&'static str>,
        fail_unmount: Option<&'static str>,
        anonymous: Cell<u32>,
    }

    impl FakeMounter {
        fn new(root: &Path) -> Self {
            FakeMounter { root: root.to_owned(), ..Default::default() }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl VolumeMounter for FakeMounter {
        fn mount_volume(&self, req: &VolumeMountSpec) -> DriverResult<MountedVolume> {
            self.requests.borrow_mut().push(req.clone());
            let name = req.name.clone().unwrap_or_else(|| {
                self.anonymous.set(self.anonymous.get() + 1);
                format!("anon{}", self.anonymous.get())
            });
            self.calls.borrow_mut().push(format!("mount {name} {}", req.mount_id));
            if self.fail_mount == Some(name.as_str()) {
                return Err(DriverError::unavailable(format!("driver of volume {name:?} is down")));
            }
            let path = self.root.join(&name);
            std::fs::create_dir_all(&path).unwrap();
            Ok(MountedVolume::new(name, req.driver.clone().unwrap_or_else(|| "local".into()), path))
        }

        fn unmount_volume(&self, name: &str, mount_id: &str) -> DriverResult<()> {
            self.calls.borrow_mut().push(format!("unmount {name} {mount_id}"));
            if self.fail_unmount == Some(name) {
                return Err(DriverError::internal(format!("volume {name:?} is stuck")));
            }
            Ok(())
        }

        fn discard_volume(&self, name: &str) -> DriverResult<()> {
            self.calls.borrow_mut().push(format!("discard {name}"));
            Ok(())
        }
    }

    fn opts(mount: &Mount) -> Vec<&str> {
        mount.options().as_ref().unwrap().iter().map(String::as_str).collect()
    }

    fn dest(mount: &Mount) -> &str {
        mount.destination().to_str().unwrap()
    }

    fn src(mount: &Mount) -> &Path {
        mount.source().as_deref().unwrap()
    }

    fn typ(mount: &Mount) -> &str {
        mount.typ().as_deref().unwrap()
    }

    fn host_dir(root: &Path, name: &str) -> String {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_str().unwrap().to_owned()
    }

    #[test]
    fn bind_resolves_to_rbind_rw_rprivate_by_default() {
        let tmp = tempfile::tempdir().unwrap();
        let host = host_dir(tmp.path(), "h");
        let mounter = FakeMounter::new(tmp.path());
        let spec = parse_mount(&format!("type=bind,src={host}/./,dst=/data/")).unwrap();
        let resolved = resolve(&[spec], &mounter, "c1").unwrap();
        let [mount] = resolved.mounts.as_slice() else { panic!("one mount expected") };
        assert_eq!(typ(mount), "bind");
        assert_eq!(dest(mount), "/data");
        assert_eq!(src(mount), Path::new(&host));
        assert_eq!(opts(mount), ["rbind", "rw", "rprivate"]);
        assert!(resolved.volumes.is_empty());
        assert!(mounter.calls().is_empty());
    }

    #[test]
    fn non_recursive_read_only_bind_with_propagation() {
        let tmp = tempfile::tempdir().unwrap();
        let host = host_dir(tmp.path(), "h");
        let spec =
            parse_mount(&format!("type=bind,src={host},dst=/d,ro,bind-nonrecursive,bind-propagation=rslave"))
                .unwrap();
        let resolved = resolve(&[spec], &FakeMounter::new(tmp.path()), "c1").unwrap();
        assert_eq!(opts(&resolved.mounts[0]), ["bind", "ro", "rslave"]);
    }

    #[test]
    fn missing_bind_source_is_not_found_unless_created() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("a/b");
        let missing_str = missing.to_str().unwrap();
        let strict = parse_mount(&format!("type=bind,src={missing_str},dst=/d")).unwrap();
        let err = resolve(&[strict], &FakeMounter::new(tmp.path()), "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains(missing_str), "{}", err.message);
        assert!(!missing.exists());

        // -v creates the source, as Docker does; so does bind-create-src.
        let resolved = resolve(
            &[parse_volume(&format!("{missing_str}:/d")).unwrap()],
            &FakeMounter::new(tmp.path()),
            "c1",
        )
        .unwrap();
        assert!(missing.is_dir());
        assert_eq!(src(&resolved.mounts[0]), missing);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&missing).unwrap().permissions().mode() & 0o777, 0o755 & !umask());
    }

    fn umask() -> u32 {
        let probe = tempfile::tempdir().unwrap();
        let dir = probe.path().join("probe");
        std::fs::DirBuilder::new().mode(0o777).create(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        !std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn tmpfs_gets_dockers_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let resolved = resolve(&[parse_tmpfs("/run").unwrap()], &FakeMounter::new(tmp.path()), "c1").unwrap();
        let mount = &resolved.mounts[0];
        assert_eq!((typ(mount), dest(mount)), ("tmpfs", "/run"));
        assert_eq!(src(mount), Path::new("tmpfs"));
        assert_eq!(opts(mount), ["noexec", "nosuid", "nodev", "rprivate"]);
    }

    #[test]
    fn tmpfs_read_only_mode_size_and_overrides() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let spec = parse_mount("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770,readonly").unwrap();
        let resolved = resolve(&[spec], &m, "c1").unwrap();
        assert_eq!(
            opts(&resolved.mounts[0]),
            ["noexec", "nosuid", "nodev", "rprivate", "ro", "mode=1770", "size=64m"]
        );

        let spec = parse_tmpfs("/t:exec,suid,size=1536,uid=1000,mode=700").unwrap();
        let resolved = resolve(&[spec], &m, "c1").unwrap();
        assert_eq!(
            opts(&resolved.mounts[0]),
            ["nodev", "rprivate", "mode=700", "size=1536", "exec", "suid", "uid=1000"]
        );
    }

    #[test]
    fn volumes_are_mounted_through_the_mounter_and_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let spec = parse_mount(
            "src=data,dst=/var/lib/data,volume-driver=acme,volume-opt=size=1G,volume-label=team=core",
        )
        .unwrap();
        let resolved = resolve(&[spec], &m, "c1").unwrap();

        let requests = m.requests.borrow();
        let [req] = requests.as_slice() else { panic!("one request expected") };
        assert_eq!(req.name.as_deref(), Some("data"));
        assert_eq!(req.driver.as_deref(), Some("acme"));
        assert_eq!(req.driver_options, BTreeMap::from([("size".to_owned(), "1G".to_owned())]));
        assert_eq!(req.labels, BTreeMap::from([("team".to_owned(), "core".to_owned())]));
        assert_eq!(req.mount_id, "c1");

        let mount = &resolved.mounts[0];
        assert_eq!((typ(mount), dest(mount)), ("bind", "/var/lib/data"));
        assert_eq!(src(mount), tmp.path().join("data"));
        assert_eq!(opts(mount), ["rbind", "rw"]);
        assert_eq!(
            resolved.volumes,
            [VolumeRef {
                name: "data".into(),
                driver: "acme".into(),
                mount_id: "c1".into(),
                anonymous: false,
                path: tmp.path().join("data"),
                copy_up_targets: vec!["/var/lib/data".into()],
            }]
        );
    }

    #[test]
    fn anonymous_volumes_get_the_label_and_a_generated_name() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let list = [parse_volume("/cache").unwrap(), parse_mount("dst=/scratch,volume-nocopy").unwrap()];
        let resolved = resolve(&list, &m, "c9").unwrap();
        for req in m.requests.borrow().iter() {
            assert_eq!(req.name, None);
            assert_eq!(req.driver, None);
            assert_eq!(req.labels.get(ANONYMOUS_LABEL).map(String::as_str), Some(""));
        }
        let names: Vec<&str> = resolved.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["anon1", "anon2"]);
        assert!(resolved.volumes.iter().all(|v| v.anonymous && v.driver == "local"));
        assert_eq!(resolved.volumes[0].copy_up_targets, ["/cache"]);
        assert!(resolved.volumes[1].copy_up_targets.is_empty(), "nocopy skips the copy-up");
        assert_eq!(src(&resolved.mounts[1]), tmp.path().join("anon2"));
    }

    #[test]
    fn a_volume_at_two_targets_is_mounted_once() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let list = [parse_volume("data:/a").unwrap(), parse_volume("data:/b:ro").unwrap()];
        let resolved = resolve(&list, &m, "c1").unwrap();
        assert_eq!(m.calls(), ["mount data c1"]);
        assert_eq!(resolved.mounts.len(), 2);
        assert_eq!(src(&resolved.mounts[0]), src(&resolved.mounts[1]));
        assert_eq!(opts(&resolved.mounts[1]), ["rbind", "ro"]);
        assert_eq!(resolved.volumes.len(), 1);
        assert_eq!(resolved.volumes[0].copy_up_targets, ["/a", "/b"]);

        let clash =
            [parse_volume("data:/a").unwrap(), parse_mount("src=data,dst=/b,volume-driver=acme").unwrap()];
        let m = FakeMounter::new(tmp.path());
        let err = resolve(&clash, &m, "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert!(err.message.contains("volume \"data\" at \"/b\""), "{}", err.message);
        assert_eq!(m.calls(), ["mount data c1", "unmount data c1"]);
    }

    #[test]
    fn mounts_are_ordered_parents_first_and_stably() {
        let tmp = tempfile::tempdir().unwrap();
        let host = host_dir(tmp.path(), "h");
        let list = [
            parse_tmpfs("/a/b/c").unwrap(),
            parse_volume("vol:/a").unwrap(),
            parse_tmpfs("/z").unwrap(),
            parse_volume(&format!("{host}:/a/b")).unwrap(),
            parse_tmpfs("/b").unwrap(),
            parse_tmpfs("/y/x").unwrap(),
        ];
        let resolved = resolve(&list, &FakeMounter::new(tmp.path()), "c1").unwrap();
        let order: Vec<&str> = resolved.mounts.iter().map(dest).collect();
        assert_eq!(order, ["/a", "/z", "/b", "/a/b", "/y/x", "/a/b/c"]);
    }

    #[test]
    fn a_failure_mid_list_releases_every_volume_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let host = host_dir(tmp.path(), "h");
        let m = FakeMounter { fail_mount: Some("bad"), ..FakeMounter::new(tmp.path()) };
        let list = [
            parse_volume("a:/a").unwrap(),
            parse_volume("/anon").unwrap(),
            parse_volume(&format!("{host}:/h")).unwrap(),
            parse_volume("bad:/bad").unwrap(),
            parse_volume("c:/c").unwrap(),
        ];
        let err = resolve(&list, &m, "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.starts_with("volume \"bad\" at \"/bad\": "), "{}", err.message);
        assert!(err.message.contains("is down"), "{}", err.message);
        assert_eq!(
            m.calls(),
            [
                "mount a c1",
                "mount anon1 c1",
                "mount bad c1",
                "unmount anon1 c1",
                "unmount a c1",
                "discard anon1"
            ],
            "every reference released, then the anonymous volume made for the list removed"
        );
    }

    #[test]
    fn a_bind_that_cannot_be_created_releases_the_volumes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let under_file = file.join("sub");
        let m = FakeMounter::new(tmp.path());
        let list =
            [parse_volume("a:/a").unwrap(), parse_volume(&format!("{}:/b", under_file.display())).unwrap()];
        let err = resolve(&list, &m, "c1").unwrap_err();
        assert!(err.message.starts_with("bind mount"), "{}", err.message);
        assert!(err.message.contains("create source path"), "{}", err.message);
        assert_eq!(m.calls(), ["mount a c1", "unmount a c1"]);
    }

    #[test]
    fn rollback_failures_are_reported_with_the_original_error() {
        let tmp = tempfile::tempdir().unwrap();
        let m =
            FakeMounter { fail_mount: Some("bad"), fail_unmount: Some("a"), ..FakeMounter::new(tmp.path()) };
        let list =
            [parse_volume("a:/a").unwrap(), parse_volume("b:/b").unwrap(), parse_volume("bad:/bad").unwrap()];
        let err = resolve(&list, &m, "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "the original kind is kept");
        assert!(err.message.contains("volume \"bad\" at \"/bad\""), "{}", err.message);
        assert!(err
            .message
            .contains("rollback also failed: unmount volume \"a\" (mount id \"c1\"): volume \"a\" is stuck"));
        assert_eq!(m.calls(), ["mount a c1", "mount b c1", "mount bad c1", "unmount b c1", "unmount a c1"]);
    }

    #[test]
    fn an_invalid_list_takes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let err =
            resolve(&[parse_volume("a:/a").unwrap(), parse_volume("b:/a/").unwrap()], &m, "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("duplicate mount point \"/a\""), "{}", err.message);
        let bad_name = MountSpec {
            kind: MountType::Volume,
            source: "no good".into(),
            target: "/n".into(),
            ..Default::default()
        };
        let err = resolve(&[parse_volume("a:/a").unwrap(), bad_name], &m, "c1").unwrap_err();
        assert!(err.message.contains("volume name \"no good\" is invalid"), "{}", err.message);
        assert!(m.calls().is_empty());
    }

    fn with_subpath(name: &str, target: &str, subpath: &str) -> MountSpec {
        MountSpec {
            kind: MountType::Volume,
            source: name.into(),
            target: target.into(),
            volume_options: Some(VolumeOptions { subpath: subpath.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_subpath_resolves_beneath_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data/sub/dir")).unwrap();
        let m = FakeMounter::new(tmp.path());
        let resolved = resolve(&[with_subpath("data", "/d", "sub/../sub/dir")], &m, "c1").unwrap();
        let want = tmp.path().join("data/sub/dir").canonicalize().unwrap();
        assert_eq!(src(&resolved.mounts[0]), want);
        assert!(resolved.volumes[0].copy_up_targets.is_empty(), "no copy-up into a subpath");
    }

    #[test]
    fn a_subpath_escaping_through_a_symlink_is_refused_and_released() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        std::fs::create_dir_all(tmp.path().join("secret")).unwrap();
        std::os::unix::fs::symlink("../secret", tmp.path().join("data/link")).unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("data/root")).unwrap();
        for subpath in ["link", "root/etc"] {
            let m = FakeMounter::new(tmp.path());
            let err =
                resolve(&[parse_volume("a:/a").unwrap(), with_subpath("data", "/d", subpath)], &m, "c1")
                    .unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{}", err.message);
            assert!(err.message.contains("volume \"data\" at \"/d\""), "{}", err.message);
            assert!(err.message.contains("outside the volume"), "{}", err.message);
            assert_eq!(m.calls(), ["mount a c1", "mount data c1", "unmount data c1", "unmount a c1"]);
        }
    }

    #[test]
    fn a_missing_subpath_is_not_found_and_released() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let err = resolve(&[with_subpath("data", "/d", "nope")], &m, "c1").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("subpath \"nope\" does not exist"), "{}", err.message);
        assert_eq!(m.calls(), ["mount data c1", "unmount data c1"]);
    }

    #[test]
    fn release_gives_back_newest_first_and_reports_every_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let m = FakeMounter::new(tmp.path());
        let list =
            [parse_volume("a:/a").unwrap(), parse_volume("b:/b").unwrap(), parse_volume("/c").unwrap()];
        let resolved = resolve(&list, &m, "c1").unwrap();
        resolved.release(&m).unwrap();
        assert_eq!(m.calls()[3..], ["unmount anon1 c1", "unmount b c1", "unmount a c1"]);

        let stuck = FakeMounter { fail_unmount: Some("b"), ..FakeMounter::new(tmp.path()) };
        let two = Resolved {
            volumes: vec![
                resolved.volumes[1].clone(),
                resolved.volumes[0].clone(),
                resolved.volumes[1].clone(),
            ],
            ..Default::default()
        };
        let err = two.release(&stuck).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert_eq!(err.message.matches("volume \"b\" is stuck").count(), 2, "{}", err.message);
        assert_eq!(stuck.calls(), ["unmount b c1", "unmount a c1", "unmount b c1"], "every release is tried");
    }

    #[test]
    fn resolved_mounts_serialize_as_oci_config_json() {
        let tmp = tempfile::tempdir().unwrap();
        let resolved =
            resolve(&[parse_tmpfs("/run:size=1m").unwrap()], &FakeMounter::new(tmp.path()), "c1").unwrap();
        let json = serde_json::to_value(&resolved.mounts[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "destination": "/run",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["noexec", "nosuid", "nodev", "rprivate", "size=1m"],
            })
        );
    }

    #[test]
    fn bind_options_survive_json_round_trip_into_resolution() {
        let tmp = tempfile::tempdir().unwrap();
        let host = host_dir(tmp.path(), "h");
        let json = format!(
            r#"[{{"Type":"bind","Source":"{host}","Target":"/h","ReadOnly":true,
                 "BindOptions":{{"Propagation":"shared"}}}}]"#
        );
        let specs: Vec<MountSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            specs[0].bind_options,
            Some(BindOptions { propagation: Some(Propagation::Shared), ..Default::default() })
        );
        let resolved = resolve(&specs, &FakeMounter::new(tmp.path()), "c1").unwrap();
        assert_eq!(opts(&resolved.mounts[0]), ["rbind", "ro", "shared"]);
    }
}
