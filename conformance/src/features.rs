//! The host features that gate cases, found cheaply and without loading
//! kernel modules, once per process:
//!
//! * filesystems (`overlay`, `btrfs`, `zfs`): listed in `/proc/filesystems`;
//! * `device-mapper`: its misc device (`/proc/misc`,
//!   `/sys/class/misc/device-mapper`);
//! * link kinds (`veth`, `bridge`, `macvlan`, `vxlan`, `8021q`) and
//!   `nf_tables`: the module is loaded (`/sys/module/<m>`, `/proc/net/vlan`
//!   for 802.1Q), built in (`modules.builtin`) or loadable (`modules.dep`
//!   of `/lib/modules/<release>`). A built-in module without parameters
//!   shows in none of those when the kernel has no module tree; then (and
//!   only then, when nothing can be loaded behind the suite's back) one
//!   probe in a private network namespace (`unshare --net`, with
//!   `--map-root-user` when not root) tries `ip link add` of each kind and
//!   `nft list tables`; it takes about 0.1 s and leaves nothing;
//! * `root`: the effective uid is 0.
//!
//! Any of these present at the module level counts; a feature that is
//! neither found nor probed is absent.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The features recorded in a report, in the order the human line shows
/// them.
pub const ALL: [&str; 11] = [
    "overlay",
    "btrfs",
    "zfs",
    "device-mapper",
    "veth",
    "bridge",
    "macvlan",
    "vxlan",
    "8021q",
    "nf_tables",
    "root",
];

/// The link kinds and the module that provides each, as `ip link add …
/// type <kind>` names them.
const LINKS: [(&str, &str); 5] =
    [("veth", "veth"), ("bridge", "bridge"), ("macvlan", "macvlan"), ("vxlan", "vxlan"), ("8021q", "8021q")];

/// This host's features (found once per process): name → present.
pub fn detect() -> BTreeMap<String, bool> {
    static FOUND: OnceLock<BTreeMap<String, bool>> = OnceLock::new();
    FOUND.get_or_init(find).clone()
}

fn find() -> BTreeMap<String, bool> {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let fs = |name: &str| {
        filesystems.lines().any(|l| l.split_whitespace().last() == Some(name)) || module_available(name)
    };
    let mut out = BTreeMap::new();
    for name in ["overlay", "btrfs", "zfs"] {
        out.insert(name.to_string(), fs(name));
    }
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    let dm = misc.lines().any(|l| l.split_whitespace().nth(1) == Some("device-mapper"))
        || Path::new("/sys/class/misc/device-mapper").exists()
        || module_available("dm_mod");
    out.insert("device-mapper".into(), dm);
    let mut unknown = Vec::new();
    for (kind, module) in LINKS {
        let known = module_available(module) || (kind == "8021q" && Path::new("/proc/net/vlan").exists());
        out.insert(kind.to_string(), known);
        if !known {
            unknown.push(kind);
        }
    }
    let nft = module_available("nf_tables");
    out.insert("nf_tables".into(), nft);
    if !nft {
        unknown.push("nf_tables");
    }
    // Only a kernel without a module tree can hide built-ins; probing
    // there loads nothing.
    if !unknown.is_empty() && !modules_dir().exists() {
        for found in probe() {
            if unknown.contains(&found.as_str()) {
                out.insert(found, true);
            }
        }
    }
    out.insert("root".into(), crate::sys::euid() == 0);
    out
}

/// `/lib/modules/<release>`.
fn modules_dir() -> std::path::PathBuf {
    Path::new("/lib/modules").join(crate::sys::kernel_release())
}

/// Whether module `name` is loaded, built in, or loadable (listed in the
/// module tree) — without loading it.
fn module_available(name: &str) -> bool {
    let norm = |s: &str| s.replace('-', "_");
    let name = norm(name);
    if Path::new("/sys/module").join(&name).exists() {
        return true;
    }
    let dir = modules_dir();
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f)).is_ok_and(|text| {
            text.lines().any(|l| {
                let path = l.split(':').next().unwrap_or_default();
                let file = path.rsplit('/').next().unwrap_or_default();
                file.split(".ko").next().is_some_and(|stem| norm(stem) == name)
            })
        })
    })
}

/// What a private network namespace can make: the link kinds of [`LINKS`]
/// and `nf_tables`, by name. Empty when the probe cannot run.
fn probe() -> Vec<String> {
    const SCRIPT: &str = "\
        ip link add cfp0 type veth peer name cfp1 >/dev/null 2>&1 && echo veth; \
        ip link add cfb0 type bridge >/dev/null 2>&1 && echo bridge; \
        ip link add link cfp0 name cfm0 type macvlan >/dev/null 2>&1 && echo macvlan; \
        ip link add cfx0 type vxlan id 42 dstport 4789 >/dev/null 2>&1 && echo vxlan; \
        ip link add link cfp0 name cfv0 type vlan id 42 >/dev/null 2>&1 && echo 8021q; \
        nft list tables >/dev/null 2>&1 && echo nf_tables; \
        true";
    let mut cmd = Command::new("unshare");
    if crate::sys::euid() != 0 {
        cmd.arg("--map-root-user");
    }
    cmd.args(["--net", "sh", "-c", SCRIPT]);
    match cmd.output() {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_is_recorded_once_and_cached() {
        let f = detect();
        assert_eq!(f.len(), ALL.len());
        assert!(ALL.iter().all(|n| f.contains_key(*n)));
        assert_eq!(f, detect());
    }
}
