//! Per-volume options (`--opt`), with Docker's meaning for the local driver.
//!
//! | key | meaning |
//! |---|---|
//! | `type` | filesystem type for mount(2): `tmpfs`, `ext4`, `nfs`, `none` (with `o=bind`), ... |
//! | `device` | what to mount: `tmpfs`, `/dev/loop3`, `:/export`, a host path for a bind |
//! | `o` | comma-separated mount options, like `mount -o` |
//! | `size` | a quota on a plain volume: `10M`, `1g`, `512k`, bytes |
//!
//! As in Docker, `type` and `device` need each other and `o` needs both;
//! any other key is refused. `o` is split like moby's `parseOptions`: words
//! of the flag table (`ro`, `nosuid`, `bind`, `rprivate`, ...) become
//! `MS_*` flags, everything else (`size=64m`, `mode=1777`, `addr=10.0.0.1`)
//! is handed to the filesystem as mount data, in order.

use std::collections::BTreeMap;
use std::path::Path;

use berth_plugin_api::util::parse_size;
use berth_plugin_api::{DriverError, DriverResult};
use libc::c_ulong;

/// Propagation types, applied by a second mount(2) call.
pub const PROPAGATION: c_ulong = libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;

/// `o` words that are flags: (word, clears the flag, flag). Docker's table
/// (moby/sys `mount/flags_unix.go`) plus `lazytime` and `nosymfollow`.
const FLAGS: &[(&str, bool, c_ulong)] = &[
    ("defaults", false, 0),
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("suid", true, libc::MS_NOSUID),
    ("nosuid", false, libc::MS_NOSUID),
    ("dev", true, libc::MS_NODEV),
    ("nodev", false, libc::MS_NODEV),
    ("exec", true, libc::MS_NOEXEC),
    ("noexec", false, libc::MS_NOEXEC),
    ("sync", false, libc::MS_SYNCHRONOUS),
    ("async", true, libc::MS_SYNCHRONOUS),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("mand", false, libc::MS_MANDLOCK),
    ("nomand", true, libc::MS_MANDLOCK),
    ("atime", true, libc::MS_NOATIME),
    ("noatime", false, libc::MS_NOATIME),
    ("diratime", true, libc::MS_NODIRATIME),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("bind", false, libc::MS_BIND),
    ("rbind", false, libc::MS_BIND | libc::MS_REC),
    ("unbindable", false, libc::MS_UNBINDABLE),
    ("runbindable", false, libc::MS_UNBINDABLE | libc::MS_REC),
    ("private", false, libc::MS_PRIVATE),
    ("rprivate", false, libc::MS_PRIVATE | libc::MS_REC),
    ("shared", false, libc::MS_SHARED),
    ("rshared", false, libc::MS_SHARED | libc::MS_REC),
    ("slave", false, libc::MS_SLAVE),
    ("rslave", false, libc::MS_SLAVE | libc::MS_REC),
    ("relatime", false, libc::MS_RELATIME),
    ("norelatime", true, libc::MS_RELATIME),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
    ("lazytime", false, libc::MS_LAZYTIME),
    ("nolazytime", true, libc::MS_LAZYTIME),
    ("nosymfollow", false, libc::MS_NOSYMFOLLOW),
];

/// The keys this driver takes.
const KEYS: [&str; 4] = ["type", "o", "device", "size"];

/// A volume's options, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// What is mounted on the data directory, for a mount-backed volume.
    pub backing: Option<Backing>,
    /// The quota of a plain volume, in bytes (`size=`; 0 means none).
    pub size: Option<u64>,
}

/// A mount-backed volume's mount: `type`, `device` and `o`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    /// Filesystem type, as given.
    pub fs_type: String,
    /// Mount source, as given.
    pub device: String,
    /// `o`, as given.
    pub o: String,
    /// `MS_*` flags from `o` (propagation types included).
    pub flags: c_ulong,
    /// The words of `o` that are not flags, comma-joined: the mount data.
    pub data: String,
}

impl Backing {
    /// Whether this is a bind mount of a host path (`o=bind` or `rbind`).
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }

    /// `type=… device=… o=…` with any password masked, for messages.
    pub fn describe(&self) -> String {
        format!("type={} device={} o={}", self.fs_type, self.device, mask_password(&self.o))
    }
}

/// `o` with the value of `password=` replaced by `********` (Docker masks it
/// in mount errors too).
pub fn mask_password(o: &str) -> String {
    o.split(',')
        .map(|w| if w.starts_with("password=") { "password=********" } else { w })
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits `o` into `MS_*` flags and mount data, like moby's `parseOptions`.
/// Words are applied in order, so `ro,rw` is read-write. Empty words are
/// skipped.
pub fn parse_o(o: &str) -> (c_ulong, String) {
    let mut flags: c_ulong = 0;
    let mut data = Vec::new();
    for word in o.split(',').filter(|w| !w.is_empty()) {
        match FLAGS.iter().find(|(name, _, _)| *name == word) {
            Some((_, _, 0)) => {}
            Some((_, true, flag)) => flags &= !flag,
            Some((_, false, flag)) => flags |= flag,
            None => data.push(word),
        }
    }
    (flags, data.join(","))
}

/// Decodes and checks the options of volume `name` without looking at the
/// host: unknown keys, Docker's required pairs, empty values, `size`
/// syntax, and combinations that cannot mount.
pub fn parse(name: &str, opts: &BTreeMap<String, String>) -> DriverResult<VolumeOptions> {
    let invalid = |msg: String| DriverError::invalid_argument(format!("volume {name}: {msg}"));
    if let Some(key) = opts.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown option {key:?}; the local driver takes type, o, device and size"
        )));
    }
    // Docker's mandatoryOpts: device needs type, type needs device, o needs both.
    for (key, needs) in [("device", &["type"][..]), ("type", &["device"]), ("o", &["device", "type"])] {
        if opts.contains_key(key) {
            if let Some(missing) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(invalid(format!(
                    "option {key:?} needs option {missing:?} too (a mount-backed volume takes type, device \
                     and optionally o, e.g. type=tmpfs device=tmpfs o=size=64m)"
                )));
            }
        }
    }
    for key in ["type", "device"] {
        if opts.get(key).is_some_and(|v| v.trim().is_empty()) {
            return Err(invalid(format!("option {key:?} is empty")));
        }
    }
    let size = match opts.get("size") {
        None => None,
        Some(text) => {
            let bytes = parse_size(text).map_err(|e| invalid(format!("option \"size\": {e}")))?;
            Some(bytes).filter(|b| *b > 0)
        }
    };
    let backing = match (opts.get("type"), opts.get("device")) {
        (Some(fs_type), Some(device)) => {
            let o = opts.get("o").cloned().unwrap_or_default();
            let (flags, data) = parse_o(&o);
            Some(Backing { fs_type: fs_type.clone(), device: device.clone(), o, flags, data })
        }
        _ => None,
    };
    if let Some(b) = &backing {
        if opts.contains_key("size") {
            return Err(invalid(format!(
                "option \"size\" limits a plain volume and cannot be combined with type={}; \
                 for tmpfs give the size in o (o=size=64m)",
                b.fs_type
            )));
        }
        if o_has(&b.o, "remount") {
            return Err(invalid("option \"o\": remount does not apply to a volume's own mount".into()));
        }
        if b.fs_type == "none" && !b.is_bind() {
            return Err(invalid(format!(
                "type=none mounts nothing by itself: add o=bind (or rbind) to bind {} into the volume",
                b.device
            )));
        }
        if b.is_bind() && !Path::new(&b.device).is_absolute() {
            return Err(invalid(format!(
                "option \"device\": bind source {:?} is not an absolute path",
                b.device
            )));
        }
    }
    Ok(VolumeOptions { backing, size })
}

fn o_has(o: &str, word: &str) -> bool {
    o.split(',').any(|w| w == word)
}

/// The checks of [`parse`] that look at the host, made at create: a bind
/// source must exist and be a directory or file.
pub fn check_host(name: &str, opts: &VolumeOptions) -> DriverResult<()> {
    let Some(b) = opts.backing.as_ref().filter(|b| b.is_bind()) else { return Ok(()) };
    match std::fs::metadata(&b.device) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DriverError::not_found(format!(
            "volume {name}: bind source {} does not exist; create it first",
            b.device
        ))),
        Err(e) => Err(DriverError::io(format_args!("volume {name}: bind source {}", b.device), &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn err(pairs: &[(&str, &str)]) -> DriverError {
        parse("v", &opts(pairs)).unwrap_err()
    }

    #[test]
    fn no_options_is_a_plain_volume() {
        assert_eq!(parse("v", &BTreeMap::new()).unwrap(), VolumeOptions::default());
    }

    #[test]
    fn o_splits_into_flags_and_data_in_order() {
        let (f, d) = parse_o("size=64m,mode=1777,nosuid,nodev,noexec,uid=1000");
        assert_eq!(f, libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        assert_eq!(d, "size=64m,mode=1777,uid=1000");
        assert_eq!(parse_o("bind,ro"), (libc::MS_BIND | libc::MS_RDONLY, String::new()));
        assert_eq!(parse_o("ro,rw"), (0, String::new()));
        assert_eq!(parse_o("rw,ro"), (libc::MS_RDONLY, String::new()));
        assert_eq!(
            parse_o("rbind,rprivate"),
            (libc::MS_BIND | libc::MS_REC | libc::MS_PRIVATE, String::new())
        );
        assert_eq!(parse_o("defaults,,noatime,"), (libc::MS_NOATIME, String::new()));
        assert_eq!(parse_o("addr=10.0.0.1,nfsvers=4,soft"), (0, "addr=10.0.0.1,nfsvers=4,soft".into()));
        assert_eq!(parse_o(""), (0, String::new()));
    }

    #[test]
    fn the_three_docker_cases_decode() {
        let t = parse("v", &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m,mode=1777")]))
            .unwrap();
        let b = t.backing.unwrap();
        assert_eq!((b.fs_type.as_str(), b.device.as_str(), b.flags), ("tmpfs", "tmpfs", 0));
        assert_eq!(b.data, "size=64m,mode=1777");
        assert!(!b.is_bind());

        let bind = parse("v", &opts(&[("type", "none"), ("o", "bind,ro"), ("device", "/srv/x")])).unwrap();
        let b = bind.backing.unwrap();
        assert!(b.is_bind());
        assert_eq!(b.flags, libc::MS_BIND | libc::MS_RDONLY);

        let blk = parse("v", &opts(&[("type", "ext4"), ("device", "/dev/loop3")])).unwrap();
        assert_eq!(blk.backing.unwrap().o, "");
        assert_eq!(blk.size, None);
    }

    #[test]
    fn size_is_a_quota_on_a_plain_volume() {
        assert_eq!(parse("v", &opts(&[("size", "10M")])).unwrap().size, Some(10 << 20));
        assert_eq!(parse("v", &opts(&[("size", "512k")])).unwrap().size, Some(512 << 10));
        assert_eq!(parse("v", &opts(&[("size", "1g")])).unwrap().size, Some(1 << 30));
        assert_eq!(parse("v", &opts(&[("size", "4096")])).unwrap().size, Some(4096));
        assert_eq!(parse("v", &opts(&[("size", "0")])).unwrap(), VolumeOptions::default(), "0: no limit");
        let e = err(&[("size", "ten")]);
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("volume v") && e.message.contains("\"size\"") && e.message.contains("ten")
        );
        let e = err(&[("size", "1g"), ("type", "tmpfs"), ("device", "tmpfs")]);
        assert!(e.message.contains("o=size="), "{}", e.message);
    }

    #[test]
    fn bad_combinations_are_invalid_naming_volume_and_option() {
        for (pairs, text) in [
            (&[("bogus", "1")][..], "unknown option \"bogus\""),
            (&[("type", "tmpfs"), ("bogus", "1"), ("device", "tmpfs")], "\"bogus\""),
            (&[("type", "tmpfs")], "option \"type\" needs option \"device\""),
            (&[("device", "/dev/sdb1")], "option \"device\" needs option \"type\""),
            (&[("o", "size=1m")], "option \"o\" needs option \"device\""),
            (&[("o", "size=1m"), ("device", "tmpfs")], "needs option \"type\""),
            (&[("type", ""), ("device", "x")], "option \"type\" is empty"),
            (&[("type", "ext4"), ("device", " ")], "option \"device\" is empty"),
            (&[("type", "none"), ("device", "/srv")], "add o=bind"),
            (&[("type", "none"), ("device", "/srv"), ("o", "ro")], "add o=bind"),
            (&[("type", "none"), ("device", "srv"), ("o", "bind")], "not an absolute path"),
            (&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "remount")], "remount"),
        ] {
            let e = err(pairs);
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{pairs:?}");
            assert!(e.message.starts_with("volume v: "), "{}", e.message);
            assert!(e.message.contains(text), "{pairs:?}: {:?} lacks {text:?}", e.message);
        }
    }

    #[test]
    fn a_missing_bind_source_is_not_found_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let o = parse("v", &opts(&[("type", "none"), ("o", "bind"), ("device", gone.to_str().unwrap())]))
            .unwrap();
        let e = check_host("v", &o).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(e.message.contains(gone.to_str().unwrap()), "{}", e.message);
        let here =
            parse("v", &opts(&[("type", "none"), ("o", "rbind"), ("device", dir.path().to_str().unwrap())]))
                .unwrap();
        check_host("v", &here).unwrap();
        // Only binds are checked: a device may appear later (nfs, loop).
        let nfs =
            parse("v", &opts(&[("type", "nfs"), ("o", "addr=10.0.0.1"), ("device", ":/export")])).unwrap();
        check_host("v", &nfs).unwrap();
    }

    #[test]
    fn passwords_are_masked_in_descriptions() {
        let b =
            parse("v", &opts(&[("type", "cifs"), ("device", "//h/s"), ("o", "username=u,password=hunter2")]))
                .unwrap()
                .backing
                .unwrap();
        let d = b.describe();
        assert!(!d.contains("hunter2") && d.contains("password=********") && d.contains("username=u"), "{d}");
    }
}
