//! Checks of mount specs, one at a time and as a list.

use std::collections::BTreeMap;
use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};

use super::tmpfs::{TMPFS_DATA_KEYS, TMPFS_FLAGS};
use super::{clean_path, MountSpec, MountType, Propagation};
use crate::volumes::valid_volume_name;

/// The largest tmpfs mode: permission bits, setuid, setgid and sticky.
const MAX_MODE: u32 = 0o7777;

impl MountSpec {
    /// Checks everything that does not need the host: the type, the target,
    /// the source's form, that only the options of this type are given, and
    /// each option's value. Errors are `invalid_argument`, or `unsupported`
    /// for `npipe`, `cluster` and `image` mounts; the message names the mount.
    pub fn validate_shape(&self) -> DriverResult<()> {
        self.check_shape().map_err(|e| e.context(self.describe()))
    }

    /// [`validate_shape`](Self::validate_shape), then, for a bind, that the
    /// host path exists: `not_found`, naming the path, unless
    /// [`BindOptions::create_mountpoint`](super::BindOptions::create_mountpoint)
    /// asks to create it.
    pub fn validate(&self) -> DriverResult<()> {
        self.validate_shape()?;
        if self.kind != MountType::Bind {
            return Ok(());
        }
        let create = self.bind_options.as_ref().is_some_and(|o| o.create_mountpoint);
        match host_path_exists(Path::new(&self.source)) {
            Ok(true) => Ok(()),
            Ok(false) if create => Ok(()),
            Ok(false) => Err(DriverError::not_found(format!(
                "{}: source path {} does not exist on the host: create it, or set \
                 BindOptions.CreateMountpoint (bind-create-src) to have it created",
                self.describe(),
                self.source
            ))),
            Err(e) => {
                Err(DriverError::io(format!("{}: check source path {}", self.describe(), self.source), &e))
            }
        }
    }

    fn check_shape(&self) -> DriverResult<()> {
        match &self.kind {
            MountType::Bind | MountType::Volume | MountType::Tmpfs => {}
            MountType::Npipe | MountType::Cluster | MountType::Image => {
                return Err(DriverError::unsupported(format!(
                    "mount type {:?} is not supported: use bind, volume or tmpfs",
                    self.kind.as_str()
                )))
            }
            MountType::Other(name) if name.is_empty() => {
                return Err(invalid("mount type is required: use bind, volume or tmpfs"))
            }
            MountType::Other(name) => {
                return Err(invalid(format!("mount type {name:?} is unknown: use bind, volume or tmpfs")))
            }
        }
        check_target(&self.target)?;
        match self.kind {
            MountType::Bind => self.check_bind(),
            MountType::Volume => self.check_volume(),
            _ => self.check_tmpfs(),
        }
    }

    fn check_bind(&self) -> DriverResult<()> {
        self.refuse_foreign_options()?;
        if self.source.is_empty() {
            return Err(invalid("source is required: the host path to mount"));
        }
        if !self.source.starts_with('/') {
            return Err(invalid(format!("source path {:?} must be absolute", self.source)));
        }
        if let Some(Propagation::Other(name)) =
            self.bind_options.as_ref().and_then(|o| o.propagation.as_ref())
        {
            let known: Vec<&str> = Propagation::ALL.iter().map(Propagation::as_str).collect();
            return Err(invalid(format!(
                "invalid propagation mode {name:?}: use one of {}",
                known.join(", ")
            )));
        }
        Ok(())
    }

    fn check_volume(&self) -> DriverResult<()> {
        self.refuse_foreign_options()?;
        let anonymous = self.source.is_empty();
        if !anonymous && !valid_volume_name(&self.source) {
            let hint = if self.source.contains('/') {
                "; to mount a host directory, give an absolute path (a bind mount)"
            } else {
                ""
            };
            return Err(invalid(format!(
                "volume name {:?} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]*{hint}",
                self.source
            )));
        }
        if anonymous && self.read_only {
            return Err(invalid("an anonymous volume cannot be read-only: it starts empty"));
        }
        let subpath = self.volume_options.as_ref().map_or("", |o| o.subpath.as_str());
        if !subpath.is_empty() {
            if anonymous {
                return Err(invalid("an anonymous volume cannot take a subpath: name the volume"));
            }
            if !is_local(subpath) {
                return Err(invalid(format!(
                    "subpath {subpath:?} must be a relative path within the volume"
                )));
            }
        }
        Ok(())
    }

    fn check_tmpfs(&self) -> DriverResult<()> {
        self.refuse_foreign_options()?;
        if !self.source.is_empty() {
            return Err(invalid(format!("a tmpfs mount takes no source (got {:?})", self.source)));
        }
        let Some(opts) = &self.tmpfs_options else { return Ok(()) };
        if opts.size_bytes < 0 {
            return Err(invalid(format!("tmpfs size must not be negative (got {})", opts.size_bytes)));
        }
        if opts.mode > MAX_MODE {
            return Err(invalid(format!(
                "tmpfs mode {:o} is invalid: give permission bits only, at most 7777 (octal)",
                opts.mode
            )));
        }
        for opt in &opts.options {
            match opt.as_slice() {
                [flag] if TMPFS_FLAGS.contains(&flag.as_str()) => {}
                [key, _] if TMPFS_DATA_KEYS.contains(&key.as_str()) => {}
                [flag] if TMPFS_DATA_KEYS.contains(&flag.as_str()) => {
                    return Err(invalid(format!("tmpfs option {flag:?} needs a value")))
                }
                [key, _] if TMPFS_FLAGS.contains(&key.as_str()) => {
                    return Err(invalid(format!("tmpfs option {key:?} takes no value")))
                }
                [name] | [name, _] => return Err(invalid(format!("unknown tmpfs option {name:?}"))),
                _ => {
                    return Err(invalid(format!(
                        "tmpfs option {opt:?} is malformed: give [flag] or [key, value]"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Options of another mount type are an error, not silently dropped.
    fn refuse_foreign_options(&self) -> DriverResult<()> {
        let kind = self.kind.as_str();
        if self.bind_options.is_some() && self.kind != MountType::Bind {
            return Err(invalid(format!("BindOptions (bind-*) are for bind mounts, not {kind} mounts")));
        }
        if self.volume_options.is_some() && self.kind != MountType::Volume {
            return Err(invalid(format!(
                "VolumeOptions (volume-*) are for volume mounts, not {kind} mounts"
            )));
        }
        if self.tmpfs_options.is_some() && self.kind != MountType::Tmpfs {
            return Err(invalid(format!("TmpfsOptions (tmpfs-*) are for tmpfs mounts, not {kind} mounts")));
        }
        Ok(())
    }
}

/// Validates every mount ([`MountSpec::validate`], so bind sources must
/// exist) and refuses two mounts at the same (cleaned) target.
pub fn validate_all(mounts: &[MountSpec]) -> DriverResult<()> {
    let mut seen: BTreeMap<String, &MountSpec> = BTreeMap::new();
    for spec in mounts {
        spec.validate()?;
        let target = spec.clean_target();
        if let Some(first) = seen.insert(target.clone(), spec) {
            return Err(invalid(format!(
                "duplicate mount point {target:?}: {} and {} both mount there",
                first.describe(),
                spec.describe()
            )));
        }
    }
    Ok(())
}

fn check_target(target: &str) -> DriverResult<()> {
    if target.is_empty() {
        return Err(invalid("target is required: the path in the container"));
    }
    if !target.starts_with('/') {
        return Err(invalid(format!("target path {target:?} must be absolute")));
    }
    if clean_path(target) == "/" {
        return Err(invalid("target must not be \"/\": the container's root cannot be a mount"));
    }
    Ok(())
}

/// Whether `path` exists on the host (symlinks followed). A path through a
/// file (`/etc/passwd/x`) does not exist rather than being an error.
pub(super) fn host_path_exists(path: &Path) -> std::io::Result<bool> {
    match path.try_exists() {
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
        other => other,
    }
}

/// Go's `filepath.IsLocal`: not empty, not absolute, and not leaving its
/// directory lexically (`a/../b` is local, `a/../..` is not).
pub(super) fn is_local(path: &str) -> bool {
    if path.is_empty() || path.starts_with('/') {
        return false;
    }
    let clean = clean_path(path);
    clean != ".." && !clean.starts_with("../")
}

fn invalid(message: impl Into<String>) -> DriverError {
    DriverError::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountspec::{BindOptions, TmpfsOptions, VolumeDriverConfig, VolumeOptions};
    use berth_plugin_api::ErrorKind;

    fn bind(source: &str, target: &str) -> MountSpec {
        MountSpec {
            kind: MountType::Bind,
            source: source.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    fn volume(name: &str, target: &str) -> MountSpec {
        MountSpec {
            kind: MountType::Volume,
            source: name.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    fn tmpfs(target: &str, opts: TmpfsOptions) -> MountSpec {
        MountSpec {
            kind: MountType::Tmpfs,
            target: target.into(),
            tmpfs_options: Some(opts),
            ..Default::default()
        }
    }

    /// Asserts `result` failed with `kind` and a message containing every
    /// fragment.
    #[track_caller]
    fn assert_err(result: DriverResult<()>, kind: ErrorKind, fragments: &[&str]) {
        let err = result.expect_err("expected an error");
        assert_eq!(err.kind, kind, "{}", err.message);
        for fragment in fragments {
            assert!(err.message.contains(fragment), "{:?} lacks {fragment:?}", err.message);
        }
    }

    #[test]
    fn type_is_required_and_unknown_types_are_refused() {
        let mut spec = volume("v", "/v");
        spec.kind = MountType::Other(String::new());
        assert_err(
            spec.validate_shape(),
            ErrorKind::InvalidArgument,
            &["mount at \"/v\"", "type is required"],
        );
        spec.kind = MountType::Other("BIND".into());
        assert_err(spec.validate_shape(), ErrorKind::InvalidArgument, &["\"BIND\" is unknown"]);
    }

    #[test]
    fn npipe_cluster_and_image_are_unsupported() {
        for kind in [MountType::Npipe, MountType::Cluster, MountType::Image] {
            let mut spec = volume("v", "/v");
            let name = kind.as_str().to_owned();
            spec.kind = kind;
            assert_err(spec.validate_shape(), ErrorKind::Unsupported, &[&name, "not supported"]);
        }
    }

    #[test]
    fn target_must_be_present_absolute_and_not_root() {
        assert_err(volume("v", "").validate_shape(), ErrorKind::InvalidArgument, &["target is required"]);
        assert_err(
            volume("v", "data").validate_shape(),
            ErrorKind::InvalidArgument,
            &["volume \"v\" at \"data\"", "target path \"data\" must be absolute"],
        );
        for root in ["/", "//", "/a/..", "/./"] {
            assert_err(
                volume("v", root).validate_shape(),
                ErrorKind::InvalidArgument,
                &["must not be \"/\""],
            );
        }
        assert!(volume("v", "/a/../b").validate_shape().is_ok());
    }

    #[test]
    fn bind_source_must_be_given_and_absolute() {
        assert_err(bind("", "/x").validate_shape(), ErrorKind::InvalidArgument, &["source is required"]);
        assert_err(
            bind("rel/dir", "/x").validate_shape(),
            ErrorKind::InvalidArgument,
            &["bind mount \"rel/dir\" at \"/x\"", "source path \"rel/dir\" must be absolute"],
        );
    }

    #[test]
    fn bind_source_must_exist_on_the_host_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("present");
        std::fs::create_dir(&present).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind(present.to_str().unwrap(), "/p").validate().is_ok());
        assert!(bind(file.to_str().unwrap(), "/f").validate().is_ok());

        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap();
        assert_err(
            bind(missing, "/m").validate(),
            ErrorKind::NotFound,
            &[missing, "does not exist", "CreateMountpoint"],
        );
        // The shape alone does not look at the host.
        assert!(bind(missing, "/m").validate_shape().is_ok());
        let through_file = file.join("sub");
        assert_err(bind(through_file.to_str().unwrap(), "/t").validate(), ErrorKind::NotFound, &["file/sub"]);

        let mut create = bind(missing, "/m");
        create.bind_options = Some(BindOptions { create_mountpoint: true, ..Default::default() });
        assert!(create.validate().is_ok());
        assert!(!Path::new(missing).exists(), "validation must not create anything");
    }

    #[test]
    fn options_of_another_type_are_refused() {
        let mut b = bind("/tmp", "/x");
        b.volume_options = Some(VolumeOptions::default());
        assert_err(
            b.validate_shape(),
            ErrorKind::InvalidArgument,
            &["bind mount", "VolumeOptions", "not bind mounts"],
        );
        let mut b = bind("/tmp", "/x");
        b.tmpfs_options = Some(TmpfsOptions::default());
        assert_err(b.validate_shape(), ErrorKind::InvalidArgument, &["TmpfsOptions"]);

        let mut v = volume("v", "/x");
        v.bind_options = Some(BindOptions { propagation: Some(Propagation::Shared), ..Default::default() });
        assert_err(
            v.validate_shape(),
            ErrorKind::InvalidArgument,
            &["volume \"v\"", "BindOptions", "not volume mounts"],
        );

        let mut t = tmpfs("/x", TmpfsOptions::default());
        t.bind_options = Some(BindOptions::default());
        assert_err(t.validate_shape(), ErrorKind::InvalidArgument, &["tmpfs at \"/x\"", "BindOptions"]);
        let mut t = tmpfs("/x", TmpfsOptions::default());
        t.volume_options = Some(VolumeOptions::default());
        assert_err(t.validate_shape(), ErrorKind::InvalidArgument, &["VolumeOptions"]);
    }

    #[test]
    fn propagation_must_be_a_known_mode() {
        let mut b = bind("/tmp", "/x");
        b.bind_options = Some(BindOptions {
            propagation: Some(Propagation::Other("sideways".into())),
            ..Default::default()
        });
        assert_err(
            b.validate_shape(),
            ErrorKind::InvalidArgument,
            &["invalid propagation mode \"sideways\"", "rslave"],
        );
        for p in Propagation::ALL {
            b.bind_options = Some(BindOptions { propagation: Some(p), ..Default::default() });
            assert!(b.validate_shape().is_ok());
        }
    }

    #[test]
    fn volume_names_subpaths_and_read_only_rules() {
        assert_err(
            volume("../etc", "/x").validate_shape(),
            ErrorKind::InvalidArgument,
            &["volume name \"../etc\" is invalid", "absolute path"],
        );
        assert_err(volume("-x", "/x").validate_shape(), ErrorKind::InvalidArgument, &["volume name \"-x\""]);
        assert!(volume("data_1.x-y", "/x").validate_shape().is_ok());

        let mut anon = volume("", "/x");
        anon.read_only = true;
        assert_err(
            anon.validate_shape(),
            ErrorKind::InvalidArgument,
            &["anonymous volume at \"/x\"", "read-only"],
        );

        let with_subpath = |name: &str, subpath: &str| {
            let mut v = volume(name, "/x");
            v.volume_options = Some(VolumeOptions { subpath: subpath.into(), ..Default::default() });
            v
        };
        assert_err(
            with_subpath("", "a").validate_shape(),
            ErrorKind::InvalidArgument,
            &["cannot take a subpath"],
        );
        for bad in ["/etc", "..", "../x", "a/../../x"] {
            assert_err(
                with_subpath("v", bad).validate_shape(),
                ErrorKind::InvalidArgument,
                &["subpath", "relative path within"],
            );
        }
        for good in ["a", "a/b", "a/../b", "."] {
            assert!(with_subpath("v", good).validate_shape().is_ok(), "{good}");
        }
        let mut driven = volume("v", "/x");
        driven.volume_options = Some(VolumeOptions {
            driver_config: Some(VolumeDriverConfig { name: "acme".into(), ..Default::default() }),
            ..Default::default()
        });
        assert!(driven.validate_shape().is_ok());
    }

    #[test]
    fn tmpfs_rules() {
        let mut with_source = tmpfs("/t", TmpfsOptions::default());
        with_source.source = "tmpfs".into();
        assert_err(
            with_source.validate_shape(),
            ErrorKind::InvalidArgument,
            &["tmpfs at \"/t\"", "takes no source"],
        );

        let negative = tmpfs("/t", TmpfsOptions { size_bytes: -1, ..Default::default() });
        assert_err(negative.validate_shape(), ErrorKind::InvalidArgument, &["must not be negative", "-1"]);

        let bad_mode = tmpfs("/t", TmpfsOptions { mode: 0o10000, ..Default::default() });
        assert_err(bad_mode.validate_shape(), ErrorKind::InvalidArgument, &["tmpfs mode 10000 is invalid"]);
        assert!(tmpfs("/t", TmpfsOptions { mode: 0o7777, size_bytes: 1 << 20, ..Default::default() })
            .validate_shape()
            .is_ok());

        let opts = |options: &[&[&str]]| {
            tmpfs(
                "/t",
                TmpfsOptions {
                    options: options.iter().map(|o| o.iter().map(|s| s.to_string()).collect()).collect(),
                    ..Default::default()
                },
            )
        };
        assert!(opts(&[&["exec"], &["nosuid"], &["uid", "1000"]]).validate_shape().is_ok());
        assert_err(
            opts(&[&["bogus"]]).validate_shape(),
            ErrorKind::InvalidArgument,
            &["unknown tmpfs option \"bogus\""],
        );
        assert_err(
            opts(&[&["uid"]]).validate_shape(),
            ErrorKind::InvalidArgument,
            &["\"uid\" needs a value"],
        );
        assert_err(
            opts(&[&["exec", "1"]]).validate_shape(),
            ErrorKind::InvalidArgument,
            &["\"exec\" takes no value"],
        );
        assert_err(opts(&[&[]]).validate_shape(), ErrorKind::InvalidArgument, &["malformed"]);
        assert_err(opts(&[&["a", "b", "c"]]).validate_shape(), ErrorKind::InvalidArgument, &["malformed"]);
    }

    #[test]
    fn duplicate_targets_are_refused_after_cleaning() {
        let list = [volume("a", "/data"), tmpfs("/run", TmpfsOptions::default()), volume("b", "/data//./")];
        assert_err(
            validate_all(&list),
            ErrorKind::InvalidArgument,
            &[
                "duplicate mount point \"/data\"",
                "volume \"a\" at \"/data\"",
                "volume \"b\" at \"/data//./\"",
            ],
        );
        assert!(validate_all(&[volume("a", "/data"), volume("a", "/data/sub")]).is_ok());
    }

    #[test]
    fn validate_all_checks_each_mount_and_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let list = [volume("a", "/a"), bind(missing.to_str().unwrap(), "/b")];
        assert_err(validate_all(&list), ErrorKind::NotFound, &["bind mount", "nope"]);
        let list = [volume("a", "/a"), volume("b", "rel")];
        assert_err(validate_all(&list), ErrorKind::InvalidArgument, &["volume \"b\" at \"rel\""]);
        assert!(validate_all(&[]).is_ok());
    }
}
