//! Mount specs: what a container asks to have mounted — bind mounts, named
//! and anonymous volumes, tmpfs — as Docker spells it, checked, and turned
//! into OCI runtime mounts.
//!
//! # Vocabulary
//!
//! * A **mount spec** ([`MountSpec`]) is one entry of Docker's
//!   `HostConfig.Mounts` (moby `api/types/mount`): a type, a source, a target
//!   in the container and per-type options. The CLI's `-v`/`--volume`,
//!   `--mount` and `--tmpfs` syntaxes all parse into it ([`parse_volume`],
//!   [`parse_mount`], [`parse_tmpfs`]), so the rest of the engine sees one
//!   shape whatever the user typed.
//! * The **source** is a host path for a bind, a volume name for a volume
//!   (empty for an anonymous one), and nothing for a tmpfs.
//! * The **target** is the absolute path inside the container. Targets are
//!   compared after lexical cleaning (`/a//b/` is `/a/b`).
//!
//! # Lifecycle
//!
//! 1. **Parse** a CLI string, or decode the JSON of an API request.
//! 2. **Validate**: [`MountSpec::validate_shape`] checks everything that does
//!    not need the host (the CLI can run it), [`MountSpec::validate`] adds
//!    the host-path check of binds, [`validate_all`] adds duplicate targets.
//! 3. **Resolve** the whole list with [`resolve`]: volumes are mounted through
//!    a [`VolumeMounter`] (the volume service), and every spec becomes an
//!    [`oci_spec::runtime::Mount`], ordered parents first. The answer,
//!    [`Resolved`], lists the volume references taken; the container gives
//!    them back with [`Resolved::release`] when it stops. If anything fails
//!    half-way, `resolve` gives back what it took before answering the error.
//!
//! All errors are [`DriverError`](berth_plugin_api::DriverError)s:
//! `invalid_argument` for a bad spec, `not_found` for a missing bind source
//! or volume subpath, `unsupported` for mount types this engine cannot serve
//! (`npipe`, `cluster`, `image`). Their messages name the mount
//! (`bind mount "/src" at "/dst": ...`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

mod parse;
mod resolve;
mod tmpfs;
mod validate;

pub use parse::{parse_mount, parse_tmpfs, parse_volume};
pub use resolve::{
    resolve, MountedVolume, Resolved, VolumeMountSpec, VolumeMounter, VolumeRef, ANONYMOUS_LABEL,
};
pub use validate::validate_all;

/// The kind of a mount, as Docker names it in `Mount.Type`.
///
/// Decoded from any string: a name this engine does not know is kept in
/// [`MountType::Other`] so that validation can refuse it with a clear
/// message instead of a decoding error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MountType {
    /// `bind`: a host path.
    Bind,
    /// `volume`: a named or anonymous volume.
    Volume,
    /// `tmpfs`: a memory file system.
    Tmpfs,
    /// `npipe`: a Windows named pipe (unsupported here).
    Npipe,
    /// `cluster`: a Swarm cluster volume (unsupported here).
    Cluster,
    /// `image`: another image's file system (unsupported here).
    Image,
    /// Any other name, including the empty one (no type given).
    Other(String),
}

impl MountType {
    /// The wire name: `bind`, `volume`, ...
    pub fn as_str(&self) -> &str {
        match self {
            MountType::Bind => "bind",
            MountType::Volume => "volume",
            MountType::Tmpfs => "tmpfs",
            MountType::Npipe => "npipe",
            MountType::Cluster => "cluster",
            MountType::Image => "image",
            MountType::Other(name) => name,
        }
    }
}

impl Default for MountType {
    /// No type given: [`MountType::Other`] with an empty name, which
    /// validation refuses, as Docker's API does.
    fn default() -> Self {
        MountType::Other(String::new())
    }
}

impl From<String> for MountType {
    fn from(name: String) -> Self {
        match name.as_str() {
            "bind" => MountType::Bind,
            "volume" => MountType::Volume,
            "tmpfs" => MountType::Tmpfs,
            "npipe" => MountType::Npipe,
            "cluster" => MountType::Cluster,
            "image" => MountType::Image,
            _ => MountType::Other(name),
        }
    }
}

impl From<MountType> for String {
    fn from(kind: MountType) -> Self {
        match kind {
            MountType::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for MountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mount propagation of a bind mount (`mount(8)`'s shared subtrees).
///
/// Decoded from any string; an unknown name is kept in
/// [`Propagation::Other`] for validation to refuse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Propagation {
    /// `rprivate`, the default for binds: no event crosses, recursively.
    RPrivate,
    /// `private`: no event crosses, top mount only.
    Private,
    /// `rshared`: events cross both ways, recursively.
    RShared,
    /// `shared`: events cross both ways, top mount only.
    Shared,
    /// `rslave`: host events reach the container, recursively.
    RSlave,
    /// `slave`: host events reach the container, top mount only.
    Slave,
    /// Any other name.
    Other(String),
}

impl Propagation {
    /// Every known mode, in Docker's order.
    pub const ALL: [Propagation; 6] = [
        Propagation::RPrivate,
        Propagation::Private,
        Propagation::RShared,
        Propagation::Shared,
        Propagation::RSlave,
        Propagation::Slave,
    ];

    /// The wire name, which is also the OCI mount option: `rprivate`, ...
    pub fn as_str(&self) -> &str {
        match self {
            Propagation::RPrivate => "rprivate",
            Propagation::Private => "private",
            Propagation::RShared => "rshared",
            Propagation::Shared => "shared",
            Propagation::RSlave => "rslave",
            Propagation::Slave => "slave",
            Propagation::Other(name) => name,
        }
    }

    /// The known mode named `name`, if any.
    pub fn known(name: &str) -> Option<Propagation> {
        Propagation::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl From<String> for Propagation {
    fn from(name: String) -> Self {
        Propagation::known(&name).unwrap_or(Propagation::Other(name))
    }
}

impl From<Propagation> for String {
    fn from(p: Propagation) -> Self {
        match p {
            Propagation::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mount of a container: an entry of Docker's `HostConfig.Mounts`.
///
/// JSON uses Docker's names (`Type`, `Source`, `Target`, `ReadOnly`,
/// `BindOptions`, ...); unknown fields are ignored and `null` reads as empty,
/// as Docker's own decoder does. Empty fields are left out when encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct MountSpec {
    /// What kind of mount this is.
    #[serde(rename = "Type", deserialize_with = "null_is_default")]
    pub kind: MountType,
    /// Host path (bind), volume name (volume; empty for an anonymous
    /// volume), or empty (tmpfs).
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub source: String,
    /// Absolute path in the container.
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub target: String,
    /// Mount read-only.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_is_default")]
    pub read_only: bool,
    /// Docker Desktop's consistency hint (`consistent`, `cached`,
    /// `delegated`): accepted and ignored, as Docker on Linux does.
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub consistency: String,
    /// Options of a bind mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_options: Option<BindOptions>,
    /// Options of a volume mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_options: Option<VolumeOptions>,
    /// Options of a tmpfs mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_options: Option<TmpfsOptions>,
}

/// Docker's `BindOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct BindOptions {
    /// Propagation mode; none means `rprivate`.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "empty_is_none")]
    pub propagation: Option<Propagation>,
    /// Bind only the top mount (`bind`), not the mounts beneath it (`rbind`).
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_is_default")]
    pub non_recursive: bool,
    /// Create the host path (as a directory) when it does not exist,
    /// instead of failing with `not_found`.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_is_default")]
    pub create_mountpoint: bool,
}

/// Docker's `VolumeOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeOptions {
    /// Do not copy the image's content at the target into an empty volume.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "null_is_default")]
    pub no_copy: bool,
    /// Labels for the volume, used when this mount creates it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_is_default")]
    pub labels: BTreeMap<String, String>,
    /// Mount this relative path inside the volume instead of its root.
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub subpath: String,
    /// Driver and driver options, used when this mount creates the volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_config: Option<VolumeDriverConfig>,
}

/// Docker's `Driver` of a volume mount: which volume driver, with what
/// options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct VolumeDriverConfig {
    /// The driver's name; empty for the configured default.
    #[serde(skip_serializing_if = "String::is_empty", deserialize_with = "null_is_default")]
    pub name: String,
    /// Options handed to the driver at create.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_is_default")]
    pub options: BTreeMap<String, String>,
}

/// Docker's `TmpfsOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct TmpfsOptions {
    /// Size limit in bytes; 0 for the kernel's default (half the memory).
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "null_is_default")]
    pub size_bytes: i64,
    /// Permission bits of the tmpfs root (e.g. `0o1777`); 0 for the
    /// kernel's default (1777).
    #[serde(skip_serializing_if = "is_zero_u32", deserialize_with = "null_is_default")]
    pub mode: u32,
    /// Further mount options, each `[flag]` or `[key, value]`: Docker takes
    /// `exec`/`noexec` here; berth also takes `suid`, `dev`, the atime
    /// flags, `sync`/`async`/`dirsync` (with their `no` forms) and `uid`,
    /// `gid`, `nr_inodes`, `nr_blocks`, `mpol`, which `--tmpfs` can pass.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "null_is_default")]
    pub options: Vec<Vec<String>>,
}

impl MountSpec {
    /// How errors name this mount: `bind mount "/src" at "/dst"`,
    /// `volume "data" at "/dst"`, `anonymous volume at "/dst"`,
    /// `tmpfs at "/dst"`.
    pub fn describe(&self) -> String {
        let target = &self.target;
        match &self.kind {
            MountType::Bind => format!("bind mount {:?} at {target:?}", self.source),
            MountType::Volume if self.source.is_empty() => format!("anonymous volume at {target:?}"),
            MountType::Volume => format!("volume {:?} at {target:?}", self.source),
            MountType::Tmpfs => format!("tmpfs at {target:?}"),
            MountType::Other(name) if name.is_empty() => format!("mount at {target:?}"),
            other => format!("{other} mount at {target:?}"),
        }
    }

    /// Whether this is a volume mount without a name.
    pub fn is_anonymous_volume(&self) -> bool {
        self.kind == MountType::Volume && self.source.is_empty()
    }

    /// Sets the volume driver of a volume mount that names none: what
    /// Docker's `HostConfig.VolumeDriver` (`--volume-driver`) does to `-v`
    /// volumes. Binds and tmpfs mounts are left alone, as is an empty
    /// `driver`.
    pub fn set_default_volume_driver(&mut self, driver: &str) {
        if self.kind != MountType::Volume || driver.is_empty() {
            return;
        }
        let config = self
            .volume_options
            .get_or_insert_with(Default::default)
            .driver_config
            .get_or_insert_with(Default::default);
        if config.name.is_empty() {
            config.name = driver.to_owned();
        }
    }

    /// The target, lexically cleaned: what duplicates are checked on and
    /// what the OCI mount's destination is.
    pub fn clean_target(&self) -> String {
        clean_path(&self.target)
    }
}

/// Go's `path.Clean`: collapses `//`, `.` and `..` lexically (`..` at the
/// root stays at the root); an empty relative path is `.`.
pub(crate) fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if !rooted => parts.push(".."),
                _ => {}
            },
            seg => parts.push(seg),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// `null` decodes as the default value, as Go's decoder leaves a field
/// alone on `null`.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `null` and `""` both decode as `None` (Docker sends `"Propagation": ""`).
fn empty_is_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()).map(T::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_docker_field_names_and_round_trips() {
        let json = r#"{
            "Type": "volume", "Source": "data", "Target": "/var/lib/data", "ReadOnly": true,
            "Consistency": "cached",
            "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"}, "Subpath": "sub/dir",
                              "DriverConfig": {"Name": "local", "Options": {"type": "nfs"}}}
        }"#;
        let spec: MountSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.kind, MountType::Volume);
        assert_eq!(spec.source, "data");
        assert_eq!(spec.target, "/var/lib/data");
        assert!(spec.read_only);
        assert_eq!(spec.consistency, "cached");
        let vo = spec.volume_options.as_ref().unwrap();
        assert!(vo.no_copy);
        assert_eq!(vo.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(vo.subpath, "sub/dir");
        let driver = vo.driver_config.as_ref().unwrap();
        assert_eq!(driver.name, "local");
        assert_eq!(driver.options.get("type").map(String::as_str), Some("nfs"));
        let again: MountSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);

        let bind: MountSpec = serde_json::from_str(
            r#"{"Type":"bind","Source":"/a","Target":"/b",
                "BindOptions":{"Propagation":"rshared","NonRecursive":true,"CreateMountpoint":true}}"#,
        )
        .unwrap();
        let bo = bind.bind_options.unwrap();
        assert_eq!(bo.propagation, Some(Propagation::RShared));
        assert!(bo.non_recursive && bo.create_mountpoint);

        let tmpfs: MountSpec = serde_json::from_str(
            r#"{"Type":"tmpfs","Target":"/run","TmpfsOptions":{"SizeBytes":65536,"Mode":1023,"Options":[["exec"]]}}"#,
        )
        .unwrap();
        let to = tmpfs.tmpfs_options.unwrap();
        assert_eq!((to.size_bytes, to.mode), (65536, 0o1777));
        assert_eq!(to.options, vec![vec!["exec".to_owned()]]);
    }

    #[test]
    fn json_tolerates_unknown_fields_and_nulls() {
        let spec: MountSpec = serde_json::from_str(
            r#"{"Type":"bind","Source":"/a","Target":"/b","Consistency":null,"ClusterOptions":{},
                "BindOptions":{"Propagation":"","ReadOnlyNonRecursive":true,"NonRecursive":null},
                "VolumeOptions":null,"Future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(spec.kind, MountType::Bind);
        assert_eq!(spec.consistency, "");
        assert_eq!(spec.bind_options, Some(BindOptions::default()));
        assert_eq!(spec.volume_options, None);

        let labels: VolumeOptions = serde_json::from_str(r#"{"Labels":null,"DriverConfig":null}"#).unwrap();
        assert_eq!(labels, VolumeOptions::default());
    }

    #[test]
    fn json_encoding_omits_empty_fields_like_docker() {
        let spec = MountSpec {
            kind: MountType::Tmpfs,
            target: "/run".into(),
            tmpfs_options: Some(TmpfsOptions::default()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            r#"{"Type":"tmpfs","Target":"/run","TmpfsOptions":{}}"#
        );
    }

    #[test]
    fn unknown_type_and_propagation_names_are_kept_for_validation() {
        let spec: MountSpec = serde_json::from_str(r#"{"Type":"BIND","Target":"/x"}"#).unwrap();
        assert_eq!(spec.kind, MountType::Other("BIND".into()));
        let spec: MountSpec = serde_json::from_str(r#"{"Target":"/x"}"#).unwrap();
        assert_eq!(spec.kind, MountType::Other(String::new()));
        let npipe: MountType = serde_json::from_str(r#""npipe""#).unwrap();
        assert_eq!(npipe, MountType::Npipe);
        assert_eq!(serde_json::to_string(&MountType::Other("weird".into())).unwrap(), r#""weird""#);
        let p: Propagation = serde_json::from_str(r#""sideways""#).unwrap();
        assert_eq!(p, Propagation::Other("sideways".into()));
        for p in Propagation::ALL {
            assert_eq!(Propagation::from(p.as_str().to_owned()), p);
        }
    }

    #[test]
    fn describe_names_the_mount() {
        let mut spec = MountSpec {
            kind: MountType::Bind,
            source: "/a".into(),
            target: "/b".into(),
            ..Default::default()
        };
        assert_eq!(spec.describe(), r#"bind mount "/a" at "/b""#);
        spec.kind = MountType::Volume;
        spec.source = "data".into();
        assert_eq!(spec.describe(), r#"volume "data" at "/b""#);
        spec.source.clear();
        assert_eq!(spec.describe(), r#"anonymous volume at "/b""#);
        assert!(spec.is_anonymous_volume());
        spec.kind = MountType::Tmpfs;
        assert_eq!(spec.describe(), r#"tmpfs at "/b""#);
        spec.kind = MountType::Npipe;
        assert_eq!(spec.describe(), r#"npipe mount at "/b""#);
    }

    #[test]
    fn default_volume_driver_applies_to_volumes_without_one() {
        let mut vol = MountSpec {
            kind: MountType::Volume,
            source: "v".into(),
            target: "/v".into(),
            ..Default::default()
        };
        vol.set_default_volume_driver("acme");
        assert_eq!(vol.volume_options.as_ref().unwrap().driver_config.as_ref().unwrap().name, "acme");
        vol.set_default_volume_driver("other");
        assert_eq!(vol.volume_options.as_ref().unwrap().driver_config.as_ref().unwrap().name, "acme");

        let mut bind = MountSpec {
            kind: MountType::Bind,
            source: "/a".into(),
            target: "/a".into(),
            ..Default::default()
        };
        bind.set_default_volume_driver("acme");
        assert_eq!(bind.volume_options, None);
    }

    #[test]
    fn clean_path_follows_go_path_clean() {
        for (input, want) in [
            ("/a//b/./c/", "/a/b/c"),
            ("/a/b/../c", "/a/c"),
            ("/../..", "/"),
            ("/", "/"),
            ("a/../..", ".."),
            ("a/./b", "a/b"),
            ("", "."),
            ("../a/../../b", "../../b"),
        ] {
            assert_eq!(clean_path(input), want, "{input}");
        }
    }
}
