//! The CLI's three mount syntaxes: `-v`/`--volume`, `--mount` and `--tmpfs`.
//!
//! Each parser answers a [`MountSpec`] that has passed
//! [`MountSpec::validate_shape`]; nothing here looks at the host, so the CLI
//! can parse on one machine for a daemon on another. Relative bind sources
//! (`./dir`) are the CLI's to make absolute before parsing, as Docker's CLI
//! does: here they are refused.

use std::collections::BTreeMap;

use berth_plugin_api::{DriverError, DriverResult};

use super::tmpfs::{parse_ram_bytes, TMPFS_DATA_KEYS, TMPFS_FLAGS};
use super::{
    BindOptions, MountSpec, MountType, Propagation, TmpfsOptions, VolumeDriverConfig, VolumeOptions,
};

/// Parses Docker's `-v`/`--volume` syntax, `[SRC:]DST[:OPTS]`:
///
/// * `SRC` absolute: a bind mount of that host path. As in Docker, a
///   missing host path is created (the spec gets
///   [`BindOptions::create_mountpoint`]).
/// * `SRC` a name: that named volume. No `SRC`: an anonymous volume.
/// * `OPTS`: a comma list of at most one each of `ro`|`rw`, `z`|`Z`
///   (SELinux relabel: accepted, ignored), `nocopy` (volumes only), a
///   propagation (`shared`, `rshared`, `slave`, `rslave`, `private`,
///   `rprivate`; binds only) and a consistency (`consistent`, `cached`,
///   `delegated`: accepted, ignored).
///
/// Errors are `invalid_argument` and quote `raw`.
pub fn parse_volume(raw: &str) -> DriverResult<MountSpec> {
    parse_volume_spec(raw).map_err(|e| e.context(format!("invalid volume specification {raw:?}")))
}

/// Parses Docker's `--mount` syntax: comma-separated `key=value` fields
/// (CSV, so a field may be quoted to hold commas).
///
/// Keys: `type` (`volume` when absent), `source`|`src`,
/// `target`|`dst`|`destination`, `readonly`|`ro`, `consistency`,
/// `bind-propagation`, `bind-nonrecursive`, `bind-recursive`
/// (`enabled`|`disabled`|`writable`), `bind-create-src`, `volume-subpath`,
/// `volume-nocopy`, `volume-driver`, `volume-opt=k=v`, `volume-label=k=v`,
/// `tmpfs-size` (bytes, or with a `k`, `m`, `g`, `t`, `p` suffix),
/// `tmpfs-mode` (octal). The boolean keys may be given bare (`readonly`)
/// or as `=true|1|false|0`.
///
/// Errors are `invalid_argument` (`unsupported` for `npipe`, `cluster`
/// and `image` mounts, and `bind-recursive=readonly`) and quote `raw`.
pub fn parse_mount(raw: &str) -> DriverResult<MountSpec> {
    parse_mount_spec(raw).map_err(|e| e.context(format!("invalid --mount value {raw:?}")))
}

/// Parses Docker's `--tmpfs` syntax, `DST[:OPTS]`, where `OPTS` is a comma
/// list of mount options: `ro`|`rw`, `size=` (as `tmpfs-size`), `mode=`
/// (octal), the flags `exec`, `suid`, `dev`, `atime`, `diratime`,
/// `relatime`, `strictatime` (and their `no` forms), `sync`, `async`,
/// `dirsync`, `defaults` (ignored), and `uid=`, `gid=`, `nr_inodes=`,
/// `nr_blocks=`, `mpol=`.
///
/// Errors are `invalid_argument` and quote `raw`.
pub fn parse_tmpfs(raw: &str) -> DriverResult<MountSpec> {
    parse_tmpfs_spec(raw).map_err(|e| e.context(format!("invalid --tmpfs value {raw:?}")))
}

fn parse_volume_spec(raw: &str) -> DriverResult<MountSpec> {
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [""] | ["", ..] => return Err(invalid("the source or target is empty: use [SRC:]DST[:OPTS]")),
        [target] => ("", *target, ""),
        [_, ""] => return Err(invalid("the target is empty: use [SRC:]DST[:OPTS]")),
        [source, target] => {
            if parse_mode(target).is_ok() {
                return Err(invalid("options need both a source and a target: use SRC:DST:OPTS"));
            }
            (*source, *target, "")
        }
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(invalid("too many colons: use [SRC:]DST[:OPTS]")),
    };
    let mode = parse_mode(mode)?;
    let mut spec = MountSpec {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only: mode.read_only,
        consistency: mode.consistency.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    if source.starts_with('/') {
        if mode.no_copy {
            return Err(invalid("\"nocopy\" is for volumes, not bind mounts"));
        }
        spec.kind = MountType::Bind;
        spec.bind_options = Some(BindOptions {
            propagation: mode.propagation,
            create_mountpoint: true,
            ..Default::default()
        });
    } else {
        if let Some(p) = mode.propagation {
            return Err(invalid(format!("propagation {:?} is for bind mounts, not volumes", p.as_str())));
        }
        spec.kind = MountType::Volume;
        if mode.no_copy {
            spec.volume_options = Some(VolumeOptions { no_copy: true, ..Default::default() });
        }
    }
    spec.validate_shape()?;
    Ok(spec)
}

/// The options of a `-v` spec.
#[derive(Default)]
struct Mode<'a> {
    read_only: bool,
    propagation: Option<Propagation>,
    no_copy: bool,
    consistency: Option<&'a str>,
}

fn parse_mode(mode: &str) -> DriverResult<Mode<'_>> {
    let mut out = Mode::default();
    if mode.is_empty() {
        return Ok(out);
    }
    // One option per class at most: rw, label, propagation, copy, consistency.
    let mut seen: [Option<&str>; 5] = [None; 5];
    for opt in mode.split(',') {
        let class = match opt {
            "ro" | "rw" => {
                out.read_only = opt == "ro";
                0
            }
            "z" | "Z" => 1,
            "nocopy" => {
                out.no_copy = true;
                3
            }
            "consistent" | "cached" | "delegated" => {
                out.consistency = Some(opt);
                4
            }
            _ => match Propagation::known(opt) {
                Some(p) => {
                    out.propagation = Some(p);
                    2
                }
                None => {
                    return Err(invalid(format!(
                        "unknown option {opt:?} in {mode:?}: use ro, rw, z, Z, nocopy, or a propagation \
                         (shared, rshared, slave, rslave, private, rprivate)"
                    )))
                }
            },
        };
        if let Some(prev) = seen[class].replace(opt) {
            return Err(invalid(format!(
                "options {prev:?} and {opt:?} conflict in {mode:?}: give one at most"
            )));
        }
    }
    Ok(out)
}

fn parse_mount_spec(raw: &str) -> DriverResult<MountSpec> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(invalid("value is empty"));
    }
    let mut spec = MountSpec { kind: MountType::Volume, ..Default::default() };
    let mut writable_requested = false;
    for field in split_csv(value)? {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field.as_str(), None),
        };
        if key.trim() != key {
            return Err(invalid(format!("option {key:?} in {field:?} must not have whitespace")));
        }
        if let Some(v) = val {
            if v.trim().is_empty() {
                return Err(invalid(format!("value for {key:?} is empty")));
            }
            if v.trim() != v {
                return Err(invalid(format!("value for {key:?} in {field:?} must not have whitespace")));
            }
        }
        let key = key.to_ascii_lowercase();
        let is_bool = matches!(
            key.as_str(),
            "readonly" | "ro" | "volume-nocopy" | "bind-nonrecursive" | "bind-create-src"
        );
        if val.is_none() && !is_bool {
            return Err(invalid(format!("field {field:?} must be a key=value pair")));
        }
        let v = val.unwrap_or_default();
        match key.as_str() {
            "type" => spec.kind = MountType::from(v.to_ascii_lowercase()),
            "source" | "src" => spec.source = v.to_owned(),
            "target" | "dst" | "destination" => spec.target = v.to_owned(),
            "readonly" | "ro" => spec.read_only = parse_bool(&key, val)?,
            "consistency" => spec.consistency = v.to_ascii_lowercase(),
            "bind-propagation" => {
                bind_options(&mut spec).propagation = Some(Propagation::from(v.to_ascii_lowercase()))
            }
            "bind-nonrecursive" => bind_options(&mut spec).non_recursive = parse_bool(&key, val)?,
            "bind-recursive" => match v {
                "enabled" => bind_options(&mut spec).non_recursive = false,
                "disabled" => bind_options(&mut spec).non_recursive = true,
                // Read-only at the top, submounts as they are: what "ro" does here.
                "writable" => {
                    bind_options(&mut spec);
                    writable_requested = true;
                }
                "readonly" => {
                    return Err(DriverError::unsupported(
                        "bind-recursive=readonly (recursively read-only binds) is not supported: \
                         use readonly, which makes the top mount read-only",
                    ))
                }
                _ => {
                    return Err(invalid(format!(
                        "invalid value for bind-recursive: {v:?}: use enabled, disabled or writable"
                    )))
                }
            },
            "bind-create-src" => bind_options(&mut spec).create_mountpoint = parse_bool(&key, val)?,
            "volume-subpath" => volume_options(&mut spec).subpath = v.to_owned(),
            "volume-nocopy" => volume_options(&mut spec).no_copy = parse_bool(&key, val)?,
            "volume-label" => set_pair(&mut volume_options(&mut spec).labels, v),
            "volume-driver" => volume_driver(&mut spec).name = v.to_owned(),
            "volume-opt" => set_pair(&mut volume_driver(&mut spec).options, v),
            "tmpfs-size" => tmpfs_options(&mut spec).size_bytes = parse_size("tmpfs-size", v)?,
            "tmpfs-mode" => tmpfs_options(&mut spec).mode = parse_octal_mode("tmpfs-mode", v)?,
            _ => return Err(invalid(format!("unknown option {key:?} in {field:?}"))),
        }
    }
    if writable_requested && !spec.read_only {
        return Err(invalid("bind-recursive=writable requires readonly"));
    }
    let kind = spec.kind.as_str();
    for (given, group, owner) in [
        (spec.bind_options.is_some(), "bind-*", MountType::Bind),
        (spec.volume_options.is_some(), "volume-*", MountType::Volume),
        (spec.tmpfs_options.is_some(), "tmpfs-*", MountType::Tmpfs),
    ] {
        if given && spec.kind != owner {
            return Err(invalid(format!("cannot mix '{group}' options with mount type '{kind}'")));
        }
    }
    spec.validate_shape()?;
    Ok(spec)
}

fn parse_tmpfs_spec(raw: &str) -> DriverResult<MountSpec> {
    let (target, opts) = raw.split_once(':').unwrap_or((raw, ""));
    let mut spec = MountSpec { kind: MountType::Tmpfs, target: target.to_owned(), ..Default::default() };
    let mut tmpfs = TmpfsOptions::default();
    let mut rw: Option<&str> = None;
    for opt in opts.split(',').filter(|_| !opts.is_empty()) {
        match opt.split_once('=') {
            None => match opt {
                "ro" | "rw" => {
                    if let Some(prev) = rw.replace(opt).filter(|prev| *prev != opt) {
                        return Err(invalid(format!("options {prev:?} and {opt:?} conflict")));
                    }
                    spec.read_only = opt == "ro";
                }
                "defaults" => {}
                "" => return Err(invalid(format!("empty option in {opts:?}"))),
                flag if TMPFS_FLAGS.contains(&flag) => tmpfs.options.push(vec![flag.to_owned()]),
                key if key == "size" || key == "mode" || TMPFS_DATA_KEYS.contains(&key) => {
                    return Err(invalid(format!("option {key:?} needs a value ({key}=...)")))
                }
                other => return Err(invalid(format!("unknown tmpfs option {other:?}"))),
            },
            Some(("size", v)) => tmpfs.size_bytes = parse_size("size", v)?,
            Some(("mode", v)) => tmpfs.mode = parse_octal_mode("mode", v)?,
            Some((key, v)) if TMPFS_DATA_KEYS.contains(&key) => {
                tmpfs.options.push(vec![key.to_owned(), v.to_owned()])
            }
            Some((key, _)) => return Err(invalid(format!("unknown tmpfs option {key:?}"))),
        }
    }
    if tmpfs != TmpfsOptions::default() {
        spec.tmpfs_options = Some(tmpfs);
    }
    spec.validate_shape()?;
    Ok(spec)
}

fn bind_options(spec: &mut MountSpec) -> &mut BindOptions {
    spec.bind_options.get_or_insert_with(Default::default)
}

fn volume_options(spec: &mut MountSpec) -> &mut VolumeOptions {
    spec.volume_options.get_or_insert_with(Default::default)
}

fn volume_driver(spec: &mut MountSpec) -> &mut VolumeDriverConfig {
    volume_options(spec).driver_config.get_or_insert_with(Default::default)
}

fn tmpfs_options(spec: &mut MountSpec) -> &mut TmpfsOptions {
    spec.tmpfs_options.get_or_insert_with(Default::default)
}

/// `k=v` into `map`; a pair without a key is ignored, as Docker does.
fn set_pair(map: &mut BTreeMap<String, String>, pair: &str) {
    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
    if !k.is_empty() {
        map.insert(k.to_owned(), v.to_owned());
    }
}

/// A boolean option: bare means true; otherwise `true`, `1`, `false`, `0`.
fn parse_bool(key: &str, val: Option<&str>) -> DriverResult<bool> {
    match val {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(invalid(format!(
            "invalid value for {key:?}: {other:?} is not a boolean: use true, 1, false or 0"
        ))),
    }
}

fn parse_size(key: &str, val: &str) -> DriverResult<i64> {
    parse_ram_bytes(val).ok_or_else(|| {
        invalid(format!(
            "invalid value for {key}: {val:?}: give bytes, or a number with a k, m, g, t or p suffix"
        ))
    })
}

fn parse_octal_mode(key: &str, val: &str) -> DriverResult<u32> {
    u32::from_str_radix(val, 8)
        .map_err(|_| invalid(format!("invalid value for {key}: {val:?}: give an octal mode such as 1777")))
}

/// One CSV record, as Go's `encoding/csv` reads it: fields split on
/// commas; a field starting with `"` is quoted (`""` is a quote inside it).
fn split_csv(line: &str) -> DriverResult<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(invalid("a quoted field is not closed: missing \"")),
                }
            }
            fields.push(field);
            match chars.next() {
                None => return Ok(fields),
                Some(',') => {}
                Some(_) => {
                    return Err(invalid("extraneous \" in a quoted field: double it (\"\") inside quotes"))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(invalid("bare \" in a field: quote the whole field")),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

fn invalid(message: impl Into<String>) -> DriverError {
    DriverError::invalid_argument(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    #[track_caller]
    fn assert_err(result: DriverResult<MountSpec>, kind: ErrorKind, fragments: &[&str]) {
        let err = result.expect_err("expected an error");
        assert_eq!(err.kind, kind, "{}", err.message);
        for fragment in fragments {
            assert!(err.message.contains(fragment), "{:?} lacks {fragment:?}", err.message);
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn volume_spec_with_an_absolute_source_is_a_bind_that_creates_its_source() {
        let spec = parse_volume("/host/dir:/ctr/dir").unwrap();
        assert_eq!(spec.kind, MountType::Bind);
        assert_eq!((spec.source.as_str(), spec.target.as_str()), ("/host/dir", "/ctr/dir"));
        assert!(!spec.read_only);
        let bo = spec.bind_options.unwrap();
        assert!(bo.create_mountpoint, "-v creates a missing host path, as Docker does");
        assert_eq!(bo.propagation, None);
        assert_eq!(spec.volume_options, None);
    }

    #[test]
    fn volume_spec_with_a_name_is_a_named_volume() {
        let spec = parse_volume("data:/var/lib/data").unwrap();
        assert_eq!(spec.kind, MountType::Volume);
        assert_eq!(spec.source, "data");
        assert_eq!(spec.target, "/var/lib/data");
        assert_eq!((spec.bind_options, spec.volume_options), (None, None));
    }

    #[test]
    fn volume_spec_with_only_a_target_is_an_anonymous_volume() {
        let spec = parse_volume("/scratch").unwrap();
        assert_eq!(spec.kind, MountType::Volume);
        assert!(spec.is_anonymous_volume());
        assert_eq!(spec.target, "/scratch");
    }

    #[test]
    fn volume_spec_options_set_read_only_propagation_and_nocopy() {
        let spec = parse_volume("/h:/c:ro,rshared").unwrap();
        assert!(spec.read_only);
        assert_eq!(spec.bind_options.unwrap().propagation, Some(Propagation::RShared));

        let spec = parse_volume("/h:/c:rw").unwrap();
        assert!(!spec.read_only);

        let spec = parse_volume("data:/c:nocopy,ro").unwrap();
        assert!(spec.read_only);
        assert!(spec.volume_options.unwrap().no_copy);

        for p in Propagation::ALL {
            let spec = parse_volume(&format!("/h:/c:{p}")).unwrap();
            assert_eq!(spec.bind_options.unwrap().propagation, Some(p));
        }
        // An empty option list is allowed, as in Docker.
        assert!(parse_volume("data:/c:").is_ok());
    }

    #[test]
    fn volume_spec_label_and_consistency_options_are_accepted() {
        let spec = parse_volume("/h:/c:z").unwrap();
        assert_eq!(spec.kind, MountType::Bind);
        let spec = parse_volume("/h:/c:Z,ro,cached").unwrap();
        assert!(spec.read_only);
        assert_eq!(spec.consistency, "cached");
    }

    #[test]
    fn volume_spec_refuses_conflicting_options() {
        assert_err(
            parse_volume("/h:/c:ro,rw"),
            ErrorKind::InvalidArgument,
            &["invalid volume specification \"/h:/c:ro,rw\"", "\"ro\" and \"rw\" conflict"],
        );
        assert_err(parse_volume("/h:/c:ro,ro"), ErrorKind::InvalidArgument, &["\"ro\" and \"ro\" conflict"]);
        assert_err(
            parse_volume("/h:/c:shared,slave"),
            ErrorKind::InvalidArgument,
            &["\"shared\" and \"slave\""],
        );
        assert_err(parse_volume("/h:/c:z,Z"), ErrorKind::InvalidArgument, &["\"z\" and \"Z\""]);
    }

    #[test]
    fn volume_spec_refuses_unknown_options_and_bad_shapes() {
        assert_err(parse_volume("/h:/c:bogus"), ErrorKind::InvalidArgument, &["unknown option \"bogus\""]);
        assert_err(parse_volume("/h:/c:ro,"), ErrorKind::InvalidArgument, &["unknown option \"\""]);
        assert_err(parse_volume(""), ErrorKind::InvalidArgument, &["source or target is empty"]);
        assert_err(parse_volume(":/c"), ErrorKind::InvalidArgument, &["source or target is empty"]);
        assert_err(parse_volume("data:"), ErrorKind::InvalidArgument, &["target is empty"]);
        assert_err(parse_volume("/c:rw"), ErrorKind::InvalidArgument, &["need both a source and a target"]);
        assert_err(parse_volume("a:/b:ro:x"), ErrorKind::InvalidArgument, &["too many colons"]);
        assert_err(
            parse_volume("data:rel"),
            ErrorKind::InvalidArgument,
            &["target path \"rel\" must be absolute"],
        );
        assert_err(parse_volume("data:/"), ErrorKind::InvalidArgument, &["must not be \"/\""]);
    }

    #[test]
    fn volume_spec_refuses_options_of_the_other_kind() {
        assert_err(
            parse_volume("data:/c:shared"),
            ErrorKind::InvalidArgument,
            &["\"shared\" is for bind mounts"],
        );
        assert_err(parse_volume("/h:/c:nocopy"), ErrorKind::InvalidArgument, &["\"nocopy\" is for volumes"]);
    }

    #[test]
    fn volume_spec_refuses_invalid_volume_names() {
        assert_err(
            parse_volume("./rel:/c"),
            ErrorKind::InvalidArgument,
            &["volume name \"./rel\" is invalid", "absolute path"],
        );
        assert_err(parse_volume("-x:/c"), ErrorKind::InvalidArgument, &["volume name \"-x\""]);
    }

    #[test]
    fn mount_flag_parses_every_bind_option() {
        let spec = parse_mount(
            "type=bind,source=/a,target=/b,readonly,bind-propagation=RShared,bind-nonrecursive,\
             bind-create-src,consistency=Delegated",
        )
        .unwrap();
        assert_eq!(spec.kind, MountType::Bind);
        assert_eq!((spec.source.as_str(), spec.target.as_str()), ("/a", "/b"));
        assert!(spec.read_only);
        assert_eq!(spec.consistency, "delegated");
        assert_eq!(
            spec.bind_options,
            Some(BindOptions {
                propagation: Some(Propagation::RShared),
                non_recursive: true,
                create_mountpoint: true
            })
        );
        let spec = parse_mount("type=bind,src=/a,dst=/b,ro=false").unwrap();
        assert!(!spec.read_only);
        assert_eq!(spec.bind_options, None);
        let spec = parse_mount("type=bind,src=/a,destination=/b").unwrap();
        assert_eq!(spec.target, "/b");
    }

    #[test]
    fn mount_flag_bind_recursive_values() {
        let spec = parse_mount("type=bind,src=/a,dst=/b,bind-recursive=disabled").unwrap();
        assert!(spec.bind_options.unwrap().non_recursive);
        let spec = parse_mount("type=bind,src=/a,dst=/b,bind-recursive=enabled").unwrap();
        assert!(!spec.bind_options.unwrap().non_recursive);
        assert!(parse_mount("type=bind,src=/a,dst=/b,bind-recursive=writable,readonly").unwrap().read_only);
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,bind-recursive=writable"),
            ErrorKind::InvalidArgument,
            &["requires readonly"],
        );
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,bind-recursive=readonly,readonly"),
            ErrorKind::Unsupported,
            &["bind-recursive=readonly"],
        );
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,bind-recursive=maybe"),
            ErrorKind::InvalidArgument,
            &["invalid value for bind-recursive"],
        );
    }

    #[test]
    fn mount_flag_parses_every_volume_option() {
        let spec = parse_mount(
            "type=volume,source=data,target=/d,volume-driver=acme,volume-opt=size=10G,volume-opt=o=a=b,\
             volume-label=team=core,volume-label=bare,volume-nocopy,volume-subpath=sub/dir",
        )
        .unwrap();
        assert_eq!(spec.kind, MountType::Volume);
        let vo = spec.volume_options.unwrap();
        assert!(vo.no_copy);
        assert_eq!(vo.subpath, "sub/dir");
        assert_eq!(vo.labels, map(&[("team", "core"), ("bare", "")]));
        let driver = vo.driver_config.unwrap();
        assert_eq!(driver.name, "acme");
        assert_eq!(driver.options, map(&[("size", "10G"), ("o", "a=b")]));

        let spec = parse_mount("src=data,dst=/d,volume-nocopy=0").unwrap();
        assert!(!spec.volume_options.unwrap().no_copy);
    }

    #[test]
    fn mount_flag_defaults_to_a_volume() {
        let spec = parse_mount("target=/d").unwrap();
        assert_eq!(spec.kind, MountType::Volume);
        assert!(spec.is_anonymous_volume());
        let spec = parse_mount("  src=data,target=/d  ").unwrap();
        assert_eq!(spec.source, "data");
    }

    #[test]
    fn mount_flag_parses_tmpfs_size_and_mode() {
        let spec = parse_mount("type=tmpfs,target=/run,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(spec.kind, MountType::Tmpfs);
        let to = spec.tmpfs_options.unwrap();
        assert_eq!(to.size_bytes, 64 << 20);
        assert_eq!(to.mode, 0o1770);
        assert_err(
            parse_mount("type=tmpfs,target=/run,tmpfs-size=lots"),
            ErrorKind::InvalidArgument,
            &["invalid value for tmpfs-size: \"lots\""],
        );
        assert_err(
            parse_mount("type=tmpfs,target=/run,tmpfs-mode=999"),
            ErrorKind::InvalidArgument,
            &["invalid value for tmpfs-mode: \"999\"", "octal"],
        );
        assert_err(
            parse_mount("type=tmpfs,target=/run,tmpfs-mode=17777"),
            ErrorKind::InvalidArgument,
            &["tmpfs mode 17777 is invalid"],
        );
        assert_err(
            parse_mount("type=tmpfs,src=x,target=/run"),
            ErrorKind::InvalidArgument,
            &["takes no source"],
        );
    }

    #[test]
    fn mount_flag_booleans_take_docker_spellings() {
        for (text, want) in [
            ("readonly", true),
            ("readonly=1", true),
            ("ro=true", true),
            ("ro=0", false),
            ("readonly=false", false),
        ] {
            assert_eq!(
                parse_mount(&format!("type=bind,src=/a,dst=/b,{text}")).unwrap().read_only,
                want,
                "{text}"
            );
        }
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,readonly=yes"),
            ErrorKind::InvalidArgument,
            &["\"yes\" is not a boolean"],
        );
    }

    #[test]
    fn mount_flag_refuses_unknown_bare_and_blank_fields() {
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,colour=red"),
            ErrorKind::InvalidArgument,
            &["invalid --mount value", "unknown option \"colour\" in \"colour=red\""],
        );
        assert_err(
            parse_mount("type=bind,src=/a,/b"),
            ErrorKind::InvalidArgument,
            &["\"/b\" must be a key=value pair"],
        );
        assert_err(
            parse_mount("type=bind,,src=/a"),
            ErrorKind::InvalidArgument,
            &["\"\" must be a key=value pair"],
        );
        assert_err(parse_mount(""), ErrorKind::InvalidArgument, &["value is empty"]);
        assert_err(
            parse_mount("type=,target=/b"),
            ErrorKind::InvalidArgument,
            &["value for \"type\" is empty"],
        );
        assert_err(
            parse_mount("type= bind,target=/b"),
            ErrorKind::InvalidArgument,
            &["must not have whitespace"],
        );
        assert_err(
            parse_mount(" type=bind, target=/b"),
            ErrorKind::InvalidArgument,
            &["must not have whitespace"],
        );
        assert_err(parse_mount("type=volume"), ErrorKind::InvalidArgument, &["target is required"]);
        assert_err(parse_mount("type=bind,target=/b"), ErrorKind::InvalidArgument, &["source is required"]);
        assert_err(
            parse_mount("type=bogus,target=/b"),
            ErrorKind::InvalidArgument,
            &["\"bogus\" is unknown"],
        );
        assert_err(
            parse_mount("type=npipe,src=x,target=/b"),
            ErrorKind::Unsupported,
            &["\"npipe\" is not supported"],
        );
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,bind-propagation=sideways"),
            ErrorKind::InvalidArgument,
            &["invalid propagation mode \"sideways\""],
        );
    }

    #[test]
    fn mount_flag_refuses_mixing_option_groups() {
        assert_err(
            parse_mount("type=bind,src=/a,dst=/b,volume-nocopy"),
            ErrorKind::InvalidArgument,
            &["cannot mix 'volume-*' options with mount type 'bind'"],
        );
        assert_err(
            parse_mount("src=data,dst=/b,bind-propagation=shared"),
            ErrorKind::InvalidArgument,
            &["cannot mix 'bind-*' options with mount type 'volume'"],
        );
        assert_err(
            parse_mount("type=volume,dst=/b,tmpfs-size=1m"),
            ErrorKind::InvalidArgument,
            &["cannot mix 'tmpfs-*' options with mount type 'volume'"],
        );
    }

    #[test]
    fn mount_flag_quoted_fields_may_hold_commas() {
        let spec =
            parse_mount(r#"type=volume,src=nfs,dst=/n,"volume-opt=o=addr=10.0.0.1,rw,nfsvers=4""#).unwrap();
        let opts = spec.volume_options.unwrap().driver_config.unwrap().options;
        assert_eq!(opts.get("o").map(String::as_str), Some("addr=10.0.0.1,rw,nfsvers=4"));
        assert_eq!(split_csv(r#"a,"b ""q"" c",d"#).unwrap(), ["a", r#"b "q" c"#, "d"]);
        assert_eq!(split_csv("a,,").unwrap(), ["a", "", ""]);
        assert_err(parse_mount(r#"type=bind,src=/a"b,dst=/c"#), ErrorKind::InvalidArgument, &["bare \""]);
        assert_err(parse_mount(r#""type=bind,src=/a"#), ErrorKind::InvalidArgument, &["not closed"]);
        assert_err(parse_mount(r#""type=bind"x,src=/a"#), ErrorKind::InvalidArgument, &["extraneous \""]);
    }

    #[test]
    fn tmpfs_flag_parses_size_mode_and_flags() {
        let spec = parse_tmpfs("/run").unwrap();
        assert_eq!(spec.kind, MountType::Tmpfs);
        assert_eq!(spec.target, "/run");
        assert_eq!(spec.tmpfs_options, None);

        let spec = parse_tmpfs("/run:rw,noexec,nosuid,size=65536k,mode=1770,uid=1000,defaults").unwrap();
        assert!(!spec.read_only);
        let to = spec.tmpfs_options.unwrap();
        assert_eq!(to.size_bytes, 65536 << 10);
        assert_eq!(to.mode, 0o1770);
        let want: Vec<Vec<String>> =
            vec![vec!["noexec".into()], vec!["nosuid".into()], vec!["uid".into(), "1000".into()]];
        assert_eq!(to.options, want);

        assert!(parse_tmpfs("/run:ro").unwrap().read_only);
        assert!(parse_tmpfs("/run:ro,ro").unwrap().read_only);
    }

    #[test]
    fn tmpfs_flag_refuses_unknown_and_conflicting_options() {
        assert_err(
            parse_tmpfs("/run:ro,rw"),
            ErrorKind::InvalidArgument,
            &["invalid --tmpfs value \"/run:ro,rw\"", "\"ro\" and \"rw\" conflict"],
        );
        assert_err(
            parse_tmpfs("/run:bogus"),
            ErrorKind::InvalidArgument,
            &["unknown tmpfs option \"bogus\""],
        );
        assert_err(
            parse_tmpfs("/run:colour=red"),
            ErrorKind::InvalidArgument,
            &["unknown tmpfs option \"colour\""],
        );
        assert_err(parse_tmpfs("/run:uid"), ErrorKind::InvalidArgument, &["\"uid\" needs a value"]);
        assert_err(parse_tmpfs("/run:size=50%"), ErrorKind::InvalidArgument, &["invalid value for size"]);
        assert_err(parse_tmpfs("/run:mode=8"), ErrorKind::InvalidArgument, &["invalid value for mode"]);
        assert_err(parse_tmpfs("/run:ro,,noexec"), ErrorKind::InvalidArgument, &["empty option"]);
        assert_err(parse_tmpfs("run"), ErrorKind::InvalidArgument, &["must be absolute"]);
        assert_err(parse_tmpfs("/"), ErrorKind::InvalidArgument, &["must not be \"/\""]);
        assert_err(parse_tmpfs(":size=1m"), ErrorKind::InvalidArgument, &["target is required"]);
    }
}
