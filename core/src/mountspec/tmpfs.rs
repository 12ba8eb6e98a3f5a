//! tmpfs mount options: the accepted names, sizes as Docker writes them,
//! and the option list Docker hands the runtime.

use std::collections::HashSet;

use super::{MountSpec, Propagation};

/// Flags a tmpfs mount may carry in [`TmpfsOptions::options`](super::TmpfsOptions::options).
pub(super) const TMPFS_FLAGS: [&str; 17] = [
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "sync",
    "async",
    "dirsync",
];

/// `key=value` options a tmpfs mount may carry besides `size` and `mode`.
pub(super) const TMPFS_DATA_KEYS: [&str; 5] = ["uid", "gid", "nr_inodes", "nr_blocks", "mpol"];

/// Docker's `units.RAMInBytes`: a decimal number, an optional space, an
/// optional binary unit (`k`, `m`, `g`, `t`, `p`, any case), then an
/// optional `i` and an optional `b`: `64m`, `1.5 GiB`, `512`.
pub(super) fn parse_ram_bytes(s: &str) -> Option<i64> {
    berth_plugin_api::util::parse_size(s).ok().and_then(|b| i64::try_from(b).ok())
}

/// The OCI options of a tmpfs mount: Docker's defaults (`noexec`,
/// `nosuid`, `nodev`, `rprivate`), then `ro`, `mode=`, `size=` and the
/// spec's own options, merged so the last of each kind wins.
pub(super) fn oci_options(spec: &MountSpec) -> Vec<String> {
    let mut raw: Vec<String> =
        ["noexec", "nosuid", "nodev", Propagation::RPrivate.as_str()].map(str::to_owned).to_vec();
    if spec.read_only {
        raw.push("ro".to_owned());
    }
    if let Some(opts) = &spec.tmpfs_options {
        if opts.mode != 0 {
            raw.push(format!("mode={:o}", opts.mode));
        }
        if opts.size_bytes != 0 {
            raw.push(format!("size={}", render_size(opts.size_bytes)));
        }
        raw.extend(opts.options.iter().map(|o| o.join("=")));
    }
    merge_options(raw)
}

/// A size with the largest binary suffix that divides it: `64m`, `1g`,
/// `1536` — what Docker hands the kernel.
fn render_size(bytes: i64) -> String {
    for (suffix, divisor) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes % divisor == 0 {
            return format!("{}{suffix}", bytes / divisor);
        }
    }
    bytes.to_string()
}

/// Keeps the last option of each kind, in the order those last ones came
/// (moby's `MergeTmpfsOptions`): `exec` and `noexec` are one kind, as are
/// `ro`/`rw`, `sync`/`async`, every propagation, and each `key=`.
fn merge_options(raw: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut kept: Vec<String> = raw.into_iter().rev().filter(|opt| seen.insert(option_kind(opt))).collect();
    kept.reverse();
    kept
}

fn option_kind(opt: &str) -> String {
    if let Some((key, _)) = opt.split_once('=') {
        return format!("{key}=");
    }
    let kind = match opt {
        "rw" => "ro",
        "async" => "sync",
        p if Propagation::known(p).is_some() => "propagation",
        flag => flag.strip_prefix("no").filter(|base| TMPFS_FLAGS.contains(base)).unwrap_or(flag),
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_follow_docker_units() {
        for (text, want) in [
            ("512", 512),
            ("1k", 1024),
            ("1K", 1024),
            ("64m", 64 << 20),
            ("64MiB", 64 << 20),
            ("64mb", 64 << 20),
            ("2 g", 2 << 30),
            ("1.5g", 3 << 29),
            ("1t", 1 << 40),
            ("1p", 1 << 50),
            ("10b", 10),
            ("0", 0),
        ] {
            assert_eq!(parse_ram_bytes(text), Some(want), "{text}");
        }
        for bad in ["", "m", "-1m", "1x", "1.m", ".5m", "1.2.3", "1  m", "1mm", "99999999999p"] {
            assert_eq!(parse_ram_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_render_with_the_largest_even_suffix() {
        assert_eq!(render_size(1 << 30), "1g");
        assert_eq!(render_size(3 << 30), "3g");
        assert_eq!(render_size(1536 << 20), "1536m");
        assert_eq!(render_size(65536 << 10), "64m");
        assert_eq!(render_size(3 << 10), "3k");
        assert_eq!(render_size(1000), "1000");
    }

    #[test]
    fn option_merge_keeps_the_last_of_each_kind() {
        let raw =
            ["noatime", "ro", "size=10k", "atime", "rw", "rprivate", "size=1024k", "slave", "noexec", "exec"];
        let merged = merge_options(raw.map(str::to_owned).to_vec());
        assert_eq!(merged, ["atime", "rw", "size=1024k", "slave", "exec"]);
    }
}
