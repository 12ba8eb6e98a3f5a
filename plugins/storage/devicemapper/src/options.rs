//! The driver's options (moby's `dm.*` names), and the direct-lvm setup
//! that turns a bare block device into a thin pool when asked to.
//!
//! There is no loopback mode: the pool is either an existing thin pool
//! (`dm.thinpooldev`) or one made once from `dm.directlvm_device` with
//! lvm2 (`pvcreate`, `vgcreate berth`, `lvcreate` of data and metadata,
//! `lvconvert --thinpool`, an autoextend profile), as moby's
//! `device_setup.go` does for its `docker` volume group.

use std::path::Path;

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use crate::dmsetup::Fs;
use crate::runner::{Cmd, Runner};

/// The volume group direct-lvm makes.
const VG: &str = "berth";
/// The device-mapper name of the pool direct-lvm makes (`<vg>-<lv>`).
pub(crate) const LVM_POOL: &str = "berth-thinpool";
/// The lvm profile that autoextends it.
const PROFILE: &str = "berth-thinpool";

/// The driver's options from the configuration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DmOptions {
    /// The thin pool to use: its device-mapper name or `/dev/mapper/<name>`.
    #[serde(rename = "dm.thinpooldev")]
    pub(crate) thinpooldev: Option<String>,
    /// The virtual size of base devices (default `10G`).
    #[serde(rename = "dm.basesize")]
    pub(crate) basesize: Option<String>,
    /// `ext4` or `xfs` (default: xfs when the kernel and `mkfs.xfs` have it).
    #[serde(rename = "dm.fs")]
    pub(crate) fs: Option<String>,
    /// Extra arguments for `mkfs`.
    #[serde(rename = "dm.mkfsarg")]
    pub(crate) mkfsarg: Vec<String>,
    /// Extra mount options, comma-separated.
    #[serde(rename = "dm.mountopt")]
    pub(crate) mountopt: Option<String>,
    /// The share of the pool that must stay free for a create, e.g. `10%`.
    #[serde(rename = "dm.min_free_space")]
    pub(crate) min_free_space: Option<String>,
    /// A block device to make a pool on (direct-lvm).
    #[serde(rename = "dm.directlvm_device")]
    pub(crate) directlvm_device: Option<String>,
    /// Wipe the direct-lvm device even if it holds a filesystem.
    #[serde(rename = "dm.directlvm_device_force")]
    pub(crate) directlvm_device_force: bool,
    /// Percent of the volume group for data (default 95).
    #[serde(rename = "dm.thinp_percent")]
    pub(crate) thinp_percent: Option<u64>,
    /// Percent of the volume group for metadata (default 1).
    #[serde(rename = "dm.thinp_metapercent")]
    pub(crate) thinp_metapercent: Option<u64>,
    /// Pool fill percentage that triggers an autoextend (default 80).
    #[serde(rename = "dm.thinp_autoextend_threshold")]
    pub(crate) thinp_autoextend_threshold: Option<u64>,
    /// How much an autoextend grows the pool, in percent (default 20).
    #[serde(rename = "dm.thinp_autoextend_percent")]
    pub(crate) thinp_autoextend_percent: Option<u64>,
}

/// The direct-lvm setup, as recorded in `<root>/setup-config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LvmSetup {
    /// The block device.
    pub(crate) device: String,
    /// Percent of the volume group for data.
    pub(crate) thinp_percent: u64,
    /// Percent of the volume group for metadata.
    pub(crate) meta_percent: u64,
    /// Autoextend threshold, percent.
    pub(crate) autoextend_threshold: u64,
    /// Autoextend step, percent.
    pub(crate) autoextend_percent: u64,
    /// Whether a filesystem on the device may be wiped.
    #[serde(skip)]
    pub(crate) force: bool,
}

/// The options, checked and with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// The pool's device-mapper name.
    pub(crate) pool: String,
    /// Base device size in bytes.
    pub(crate) base_size: u64,
    /// The filesystem asked for; `None` lets the driver choose.
    pub(crate) fs: Option<Fs>,
    /// Extra `mkfs` arguments.
    pub(crate) mkfs_args: Vec<String>,
    /// Extra mount options.
    pub(crate) mount_opts: Vec<String>,
    /// Minimum free share of the pool, percent.
    pub(crate) min_free_percent: u64,
    /// The direct-lvm setup to make the pool from, if any.
    pub(crate) lvm: Option<LvmSetup>,
}

fn bad(why: impl std::fmt::Display) -> DriverError {
    DriverError::invalid_argument(format!("devicemapper options: {why}"))
}

/// A percentage option in `0..=max`.
fn percent(name: &str, value: Option<u64>, default: u64, max: u64) -> DriverResult<u64> {
    match value.unwrap_or(default) {
        v if v <= max => Ok(v),
        v => Err(bad(format_args!("{name} is {v}; give a percentage of at most {max}"))),
    }
}

impl Config {
    /// Checks `o` and fills in defaults.
    pub(crate) fn from_options(o: &DmOptions) -> DriverResult<Config> {
        let lvm = match (&o.thinpooldev, &o.directlvm_device) {
            (Some(_), Some(_)) => return Err(bad("set dm.thinpooldev or dm.directlvm_device, not both")),
            (None, None) => {
                return Err(bad("a thin pool is needed: set dm.thinpooldev to an existing thin pool, or \
                     dm.directlvm_device to a spare block device to make one on (loopback pools are \
                     not supported)"))
            }
            (None, Some(device)) => {
                if !device.starts_with("/dev/") {
                    return Err(bad(format_args!("dm.directlvm_device {device:?} is not a /dev path")));
                }
                if o.thinp_percent.is_some() != o.thinp_metapercent.is_some() {
                    return Err(bad("set both dm.thinp_percent and dm.thinp_metapercent, or neither"));
                }
                let setup = LvmSetup {
                    device: device.clone(),
                    thinp_percent: percent("dm.thinp_percent", o.thinp_percent, 95, 100)?,
                    meta_percent: percent("dm.thinp_metapercent", o.thinp_metapercent, 1, 100)?,
                    autoextend_threshold: percent(
                        "dm.thinp_autoextend_threshold",
                        o.thinp_autoextend_threshold,
                        80,
                        100,
                    )?,
                    autoextend_percent: percent(
                        "dm.thinp_autoextend_percent",
                        o.thinp_autoextend_percent,
                        20,
                        1000,
                    )?,
                    force: o.directlvm_device_force,
                };
                if setup.thinp_percent + setup.meta_percent > 100 {
                    return Err(bad("dm.thinp_percent and dm.thinp_metapercent add up to more than 100"));
                }
                Some(setup)
            }
            (Some(_), None) => None,
        };
        let pool = match &o.thinpooldev {
            Some(dev) => {
                let name = dev.strip_prefix("/dev/mapper/").unwrap_or(dev);
                if name.is_empty() || name.contains('/') || name.len() > 127 {
                    return Err(bad(format_args!(
                        "dm.thinpooldev {dev:?} is not a device-mapper name or /dev/mapper/<name>"
                    )));
                }
                name.to_string()
            }
            None => LVM_POOL.to_string(),
        };
        let base_size = match &o.basesize {
            Some(s) => {
                berth_plugin_api::util::parse_size(s).map_err(|e| bad(format_args!("dm.basesize: {e}")))?
            }
            None => 10 << 30,
        };
        if base_size < 1 << 20 || base_size % 512 != 0 {
            return Err(bad(format_args!(
                "dm.basesize {base_size} must be at least 1M and a multiple of 512 bytes"
            )));
        }
        let fs = match o.fs.as_deref() {
            None => None,
            Some(name) => {
                Some(Fs::parse(name).ok_or_else(|| bad(format_args!("dm.fs {name:?}: use ext4 or xfs")))?)
            }
        };
        let min_free_percent = match o.min_free_space.as_deref() {
            None => 10,
            Some(s) => s
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u64>().ok())
                .filter(|n| *n < 100)
                .ok_or_else(|| {
                    bad(format_args!("dm.min_free_space {s:?}: give a percentage below 100, e.g. 10%"))
                })?,
        };
        let mount_opts = o
            .mountopt
            .as_deref()
            .map(|s| s.split(',').filter(|p| !p.is_empty()).map(String::from).collect())
            .unwrap_or_default();
        Ok(Config { pool, base_size, fs, mkfs_args: o.mkfsarg.clone(), mount_opts, min_free_percent, lvm })
    }
}

/// The lvm2 commands that make the pool from `s.device`, in order (the
/// autoextend profile is written between the last two).
pub(crate) fn lvm_commands(s: &LvmSetup) -> Vec<Cmd> {
    let data = format!("{}%VG", s.thinp_percent);
    let meta = format!("{}%VG", s.meta_percent);
    let (pool, pool_meta) = (format!("{VG}/thinpool"), format!("{VG}/thinpoolmeta"));
    vec![
        Cmd::new(["pvcreate", "-f", &s.device]),
        Cmd::new(["vgcreate", VG, &s.device]),
        Cmd::new(["lvcreate", "--wipesignatures", "y", "-n", "thinpool", VG, "--extents", &data]),
        Cmd::new(["lvcreate", "--wipesignatures", "y", "-n", "thinpoolmeta", VG, "--extents", &meta]),
        Cmd::new([
            "lvconvert",
            "-y",
            "--zero",
            "n",
            "-c",
            "512K",
            "--thinpool",
            &pool,
            "--poolmetadata",
            &pool_meta,
        ]),
        Cmd::new(["lvchange", "--metadataprofile", PROFILE, &pool]),
    ]
}

/// The lvm profile that makes lvm2 grow the pool as it fills.
pub(crate) fn lvm_profile(s: &LvmSetup) -> String {
    format!(
        "activation {{\n\tthin_pool_autoextend_threshold={}\n\tthin_pool_autoextend_percent={}\n}}\n",
        s.autoextend_threshold, s.autoextend_percent
    )
}

/// Makes the direct-lvm pool unless `<root>/setup-config.json` says it was
/// made with the same setup; a different recorded setup is refused.
pub(crate) fn setup_direct_lvm(
    runner: &dyn Runner,
    root: &Path,
    s: &LvmSetup,
    profile_dir: &Path,
) -> DriverResult<()> {
    let record = root.join("setup-config.json");
    match std::fs::read(&record) {
        Ok(bytes) => {
            let prev: LvmSetup = serde_json::from_slice(&bytes)
                .map_err(|e| DriverError::internal(format!("{} is unreadable: {e}", record.display())))?;
            let same = LvmSetup { force: s.force, ..prev.clone() } == *s;
            return if same {
                Ok(())
            } else {
                Err(DriverError::invalid_argument(format!(
                    "the direct-lvm pool was made from {} with other settings ({}); changing the direct-lvm \
                     setup is not supported",
                    prev.device,
                    record.display()
                )))
            };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DriverError::io(format_args!("read {}", record.display()), &e)),
    }
    let run = |cmd: &Cmd| -> DriverResult<String> {
        let out = runner.run(cmd).map_err(|e| crate::dmsetup::not_run(cmd, &e))?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(crate::dmsetup::failure(cmd, &out).context("set up the direct-lvm thin pool"))
        }
    };
    if !s.force {
        // blkid exits 2 when it finds no signature at all.
        let probe = Cmd::new(["blkid", "-o", "value", "-s", "TYPE", &s.device]);
        if let Ok(kind) = run(&probe) {
            if !kind.trim().is_empty() {
                return Err(DriverError::failed_precondition(format!(
                    "{} holds a filesystem ({}); set dm.directlvm_device_force = true to wipe it, or \
                     choose another device",
                    s.device,
                    kind.trim()
                )));
            }
        }
    }
    let cmds = lvm_commands(s);
    let (last, first) = cmds.split_last().ok_or_else(|| DriverError::internal("no lvm commands"))?;
    for cmd in first {
        run(cmd)?;
    }
    std::fs::create_dir_all(profile_dir)
        .and_then(|()| std::fs::write(profile_dir.join(format!("{PROFILE}.profile")), lvm_profile(s)))
        .map_err(|e| {
            DriverError::io(format_args!("write the lvm profile in {}", profile_dir.display()), &e)
        })?;
    run(last)?;
    let json = serde_json::to_vec(s).map_err(|e| DriverError::internal(format!("encode the setup: {e}")))?;
    berth_plugin_api::util::write_atomic(&record, &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::script::Script;

    fn opts(json: serde_json::Value) -> DmOptions {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_pool_is_required_and_defaults_fill_in() {
        let e = Config::from_options(&DmOptions::default()).unwrap_err();
        assert!(e.message.contains("loopback pools are not supported"), "{e}");
        let c = Config::from_options(&opts(serde_json::json!({"dm.thinpooldev": "/dev/mapper/vg-pool"})))
            .unwrap();
        assert_eq!(
            c,
            Config {
                pool: "vg-pool".into(),
                base_size: 10 << 30,
                fs: None,
                mkfs_args: vec![],
                mount_opts: vec![],
                min_free_percent: 10,
                lvm: None
            }
        );
        let c = Config::from_options(&opts(serde_json::json!({
            "dm.thinpooldev": "p", "dm.basesize": "20G", "dm.fs": "ext4", "dm.mkfsarg": ["-b", "4096"],
            "dm.mountopt": "discard,noatime", "dm.min_free_space": "5%"
        })))
        .unwrap();
        assert_eq!((c.base_size, c.fs, c.min_free_percent), (20 << 30, Some(Fs::Ext4), 5));
        assert_eq!(
            (c.mkfs_args.len(), c.mount_opts),
            (2, vec!["discard".to_string(), "noatime".to_string()])
        );
    }

    #[test]
    fn bad_options_are_invalid_arguments() {
        for bad in [
            serde_json::json!({"dm.thinpooldev": "p", "dm.directlvm_device": "/dev/sdb"}),
            serde_json::json!({"dm.thinpooldev": "/dev/vg/pool"}),
            serde_json::json!({"dm.thinpooldev": "p", "dm.basesize": "1k"}),
            serde_json::json!({"dm.thinpooldev": "p", "dm.fs": "btrfs"}),
            serde_json::json!({"dm.thinpooldev": "p", "dm.min_free_space": "150%"}),
            serde_json::json!({"dm.directlvm_device": "sdb"}),
            serde_json::json!({"dm.directlvm_device": "/dev/sdb", "dm.thinp_percent": 90}),
            serde_json::json!({"dm.directlvm_device": "/dev/sdb", "dm.thinp_percent": 90, "dm.thinp_metapercent": 20}),
        ] {
            let e = Config::from_options(&opts(bad.clone())).unwrap_err();
            assert_eq!(e.kind, berth_plugin_api::ErrorKind::InvalidArgument, "{bad}");
        }
        let r: Result<DmOptions, _> = serde_json::from_value(serde_json::json!({"dm.loopdatasize": "100G"}));
        assert!(r.is_err(), "unknown keys are refused");
    }

    #[test]
    fn direct_lvm_runs_the_lvm2_commands_once() {
        let c = Config::from_options(&opts(serde_json::json!({"dm.directlvm_device": "/dev/xvdf"}))).unwrap();
        assert_eq!(c.pool, "berth-thinpool");
        let setup = c.lvm.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profile");
        let s = Script::new();
        s.fail(&["blkid", "-o", "value", "-s", "TYPE", "/dev/xvdf"], 2, "")
            .ok(&["pvcreate", "-f", "/dev/xvdf"], "  Physical volume \"/dev/xvdf\" successfully created.\n")
            .ok(&["vgcreate", "berth", "/dev/xvdf"], "")
            .ok(&["lvcreate", "--wipesignatures", "y", "-n", "thinpool", "berth", "--extents", "95%VG"], "")
            .ok(
                &["lvcreate", "--wipesignatures", "y", "-n", "thinpoolmeta", "berth", "--extents", "1%VG"],
                "",
            )
            .ok(
                &[
                    "lvconvert",
                    "-y",
                    "--zero",
                    "n",
                    "-c",
                    "512K",
                    "--thinpool",
                    "berth/thinpool",
                    "--poolmetadata",
                    "berth/thinpoolmeta",
                ],
                "",
            )
            .ok(&["lvchange", "--metadataprofile", "berth-thinpool", "berth/thinpool"], "");
        setup_direct_lvm(&*s, dir.path(), &setup, &profiles).unwrap();
        s.assert_done();
        let profile = std::fs::read_to_string(profiles.join("berth-thinpool.profile")).unwrap();
        assert_eq!(
            profile,
            "activation {\n\tthin_pool_autoextend_threshold=80\n\tthin_pool_autoextend_percent=20\n}\n"
        );
        // Made already: nothing runs; other settings are refused.
        setup_direct_lvm(&*s, dir.path(), &setup, &profiles).unwrap();
        assert_eq!(s.calls().len(), 7);
        let other = LvmSetup { thinp_percent: 50, ..setup };
        let e = setup_direct_lvm(&*s, dir.path(), &other, &profiles).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }

    #[test]
    fn direct_lvm_refuses_a_device_with_a_filesystem_unless_forced() {
        let setup = LvmSetup {
            device: "/dev/xvdf".into(),
            thinp_percent: 95,
            meta_percent: 1,
            autoextend_threshold: 80,
            autoextend_percent: 20,
            force: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let s = Script::new();
        s.ok(&["blkid", "-o", "value", "-s", "TYPE", "/dev/xvdf"], "ext4\n");
        let e = setup_direct_lvm(&*s, dir.path(), &setup, dir.path()).unwrap_err();
        assert_eq!(e.kind, berth_plugin_api::ErrorKind::FailedPrecondition);
        assert!(e.message.contains("holds a filesystem (ext4)"), "{e}");
        s.fail(&["pvcreate", "-f", "/dev/xvdf"], 5, "  Device /dev/xvdf not found.\n");
        let forced = LvmSetup { force: true, ..setup };
        let e = setup_direct_lvm(&*s, dir.path(), &forced, dir.path()).unwrap_err();
        assert!(
            e.message.starts_with("set up the direct-lvm thin pool: `pvcreate -f /dev/xvdf` failed"),
            "{e}"
        );
        assert!(!dir.path().join("setup-config.json").exists());
        s.assert_done();
    }
}
