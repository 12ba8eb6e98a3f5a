//! Whether this host can run the zfs driver at all, and if not, why.
//!
//! The probe only reads: `/dev/zfs` (the control device the OpenZFS module
//! creates), `/proc/filesystems` (where the module registers `zfs`), the
//! `zfs` and `zpool` programs, and the effective uid. It never runs a
//! command, so it cannot load a module or make a device node.

use std::path::Path;

use crate::runner::find_program;

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// Whether `/dev/zfs` exists.
    pub(crate) dev_zfs: bool,
    /// The text of `/proc/filesystems`; `None` when unreadable.
    pub(crate) filesystems: Option<String>,
    /// Whether the `zfs` program is installed.
    pub(crate) zfs_cmd: bool,
    /// Whether the `zpool` program is installed.
    pub(crate) zpool_cmd: bool,
    /// The effective uid.
    pub(crate) euid: u32,
}

impl Host {
    /// This host.
    pub(crate) fn current() -> Host {
        Host {
            dev_zfs: Path::new("/dev/zfs").exists(),
            filesystems: std::fs::read_to_string("/proc/filesystems").ok(),
            zfs_cmd: find_program("zfs").is_some(),
            zpool_cmd: find_program("zpool").is_some(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
        }
    }

    /// Whether the kernel registered the `zfs` filesystem type.
    fn kernel_has_zfs(&self) -> bool {
        self.filesystems
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some("zfs")))
    }

    /// Why the driver cannot run here, naming everything that is missing;
    /// `None` when it can.
    pub(crate) fn skip_reason(&self) -> Option<String> {
        let mut kernel = Vec::new();
        if !self.dev_zfs {
            kernel.push("/dev/zfs is missing");
        }
        if !self.kernel_has_zfs() {
            kernel.push(match self.filesystems {
                Some(_) => "\"zfs\" is absent from /proc/filesystems",
                None => "/proc/filesystems cannot be read",
            });
        }
        let tools: Vec<&str> =
            [("zfs", self.zfs_cmd), ("zpool", self.zpool_cmd)].iter().filter(|t| !t.1).map(|t| t.0).collect();
        let tools_text = match tools.as_slice() {
            [] => None,
            [one] => Some(format!("the {one} command is not installed")),
            _ => Some("the zfs and zpool commands are not installed".to_string()),
        };
        if !kernel.is_empty() {
            let also = tools_text.map(|t| format!("; {t} either")).unwrap_or_default();
            return Some(format!(
                "this kernel has no ZFS: {}{also}; load the OpenZFS module (modprobe zfs) or choose \
                 another storage driver (overlay2, btrfs, vfs)",
                kernel.join(" and ")
            ));
        }
        if let Some(t) = tools_text {
            return Some(format!("{t}: install the OpenZFS userland (zfsutils-linux)"));
        }
        if self.euid != 0 {
            return Some("zfs must run as root to create, clone and mount datasets".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/filesystems` of this machine's kernel (6.18, no ZFS), as
    /// read while writing the driver.
    const NO_ZFS: &str =
        "nodev\tsysfs\nnodev\ttmpfs\nnodev\tproc\n\text4\n\tsquashfs\nnodev\toverlay\n\txfs\n\tbtrfs\n";
    /// The same with the OpenZFS module loaded: it registers `zfs` as a
    /// block filesystem (no `nodev`).
    const WITH_ZFS: &str = "nodev\tsysfs\n\text4\n\tzfs\n";

    fn host(dev_zfs: bool, filesystems: &str, tools: bool, euid: u32) -> Host {
        Host { dev_zfs, filesystems: Some(filesystems.into()), zfs_cmd: tools, zpool_cmd: tools, euid }
    }

    #[test]
    fn a_kernel_without_zfs_names_every_missing_piece() {
        let why = host(false, NO_ZFS, false, 0).skip_reason().unwrap();
        assert_eq!(
            why,
            "this kernel has no ZFS: /dev/zfs is missing and \"zfs\" is absent from /proc/filesystems; \
             the zfs and zpool commands are not installed either; load the OpenZFS module (modprobe zfs) \
             or choose another storage driver (overlay2, btrfs, vfs)"
        );
        let why = host(false, NO_ZFS, true, 0).skip_reason().unwrap();
        assert!(!why.contains("commands"), "{why}");
        let unreadable = Host { filesystems: None, ..host(true, "", true, 0) };
        assert!(unreadable.skip_reason().unwrap().contains("/proc/filesystems cannot be read"));
    }

    #[test]
    fn tools_and_root_are_checked_after_the_kernel() {
        let mut h = host(true, WITH_ZFS, true, 0);
        assert_eq!(h.skip_reason(), None);
        h.zpool_cmd = false;
        assert_eq!(
            h.skip_reason().unwrap(),
            "the zpool command is not installed: install the OpenZFS userland (zfsutils-linux)"
        );
        h.zpool_cmd = true;
        h.euid = 1000;
        assert!(h.skip_reason().unwrap().contains("must run as root"));
    }

    #[test]
    fn this_machine_has_no_zfs() {
        // The kernel this crate was written on has no ZFS and loads no
        // modules; a host with ZFS skips this check.
        let h = Host::current();
        if h.dev_zfs {
            return;
        }
        let why = h.skip_reason().expect("no /dev/zfs: the driver must decline");
        assert!(why.starts_with("this kernel has no ZFS: /dev/zfs is missing"), "{why}");
    }
}
