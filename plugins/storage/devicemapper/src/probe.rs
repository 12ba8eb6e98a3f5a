//! Whether this host can run the devicemapper driver at all, and if not,
//! why.
//!
//! The probe only reads: `/proc/misc` (where the device-mapper driver
//! registers its control device, `<minor> device-mapper`), the block
//! section of `/proc/devices` (its major, `<major> device-mapper`),
//! `/dev/mapper/control`, the `dmsetup` program and the effective uid. It
//! never runs `dmsetup` before the kernel is known to have device-mapper:
//! libdevmapper creates `/dev/mapper/control` when it is missing, even on
//! a kernel that cannot answer it.

use std::path::Path;

use crate::runner::find_program;

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// `/proc/misc`, if readable.
    pub(crate) misc: Option<String>,
    /// `/proc/devices`, if readable.
    pub(crate) devices: Option<String>,
    /// Whether `/dev/mapper/control` exists.
    pub(crate) control: bool,
    /// Whether the `dmsetup` program is installed.
    pub(crate) dmsetup: bool,
    /// The effective uid.
    pub(crate) euid: u32,
}

impl Host {
    /// This host.
    pub(crate) fn current() -> Host {
        Host {
            misc: std::fs::read_to_string("/proc/misc").ok(),
            devices: std::fs::read_to_string("/proc/devices").ok(),
            control: Path::new("/dev/mapper/control").exists(),
            dmsetup: find_program("dmsetup").is_some(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
        }
    }

    /// Whether `/proc/misc` lists the device-mapper control device.
    fn misc_has_dm(&self) -> bool {
        self.misc
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().nth(1) == Some("device-mapper")))
    }

    /// Whether the block section of `/proc/devices` lists device-mapper.
    fn block_has_dm(&self) -> bool {
        let Some(text) = self.devices.as_deref() else { return false };
        text.split("Block devices:")
            .nth(1)
            .is_some_and(|block| block.lines().any(|l| l.split_whitespace().nth(1) == Some("device-mapper")))
    }

    /// Why the driver cannot run here, naming everything that is missing;
    /// `None` when it can.
    pub(crate) fn skip_reason(&self) -> Option<String> {
        let no_tool = (!self.dmsetup).then_some("the dmsetup command is not installed");
        if !self.misc_has_dm() && !self.block_has_dm() {
            let mut missing = Vec::new();
            if !self.control {
                missing.push("/dev/mapper/control is missing".to_string());
            }
            missing.push(match (&self.misc, &self.devices) {
                (Some(_), Some(_)) => {
                    "\"device-mapper\" is absent from /proc/misc and /proc/devices".to_string()
                }
                _ => "/proc/misc or /proc/devices cannot be read".to_string(),
            });
            let also = no_tool.map(|t| format!("; {t} either")).unwrap_or_default();
            return Some(format!(
                "this kernel has no device-mapper: {}{also}; load dm_mod and dm_thin_pool (modprobe \
                 dm_thin_pool) or choose another storage driver (overlay2, btrfs, vfs)",
                missing.join(" and ")
            ));
        }
        if !self.control {
            return Some(
                "the kernel has device-mapper but /dev/mapper/control is missing: create it with \
                 `dmsetup mknodes` or let udev do so"
                    .into(),
            );
        }
        if let Some(t) = no_tool {
            return Some(format!("{t}: install lvm2 (or dmsetup)"));
        }
        if self.euid != 0 {
            return Some("devicemapper must run as root to manage thin devices and mount them".into());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/misc` and `/proc/devices` of the machine this driver was
    /// written on (kernel 6.18, no device-mapper), as read then.
    const MISC_NO_DM: &str = "234 btrfs-control\n259 cpu_dma_latency\n258 vsock\n200 tun\n237 loop-control\n\
229 fuse\n235 autofs\n257 userfaultfd\n232 kvm\n183 hw_random\n256 vga_arbiter\n";
    const DEVICES_NO_DM: &str =
        "Character devices:\n  1 mem\n  4 /dev/vc/0\n 10 misc\n\nBlock devices:\n  7 loop\n\
253 zram\n254 virtblk\n259 blkext\n";
    /// The same lines on a kernel with device-mapper (misc minor 236, a
    /// dynamic block major).
    const MISC_DM: &str = "236 device-mapper\n237 loop-control\n";
    const DEVICES_DM: &str = "Character devices:\n 10 misc\n\nBlock devices:\n  7 loop\n252 device-mapper\n";

    fn host(misc: &str, devices: &str, control: bool, dmsetup: bool) -> Host {
        Host { misc: Some(misc.into()), devices: Some(devices.into()), control, dmsetup, euid: 0 }
    }

    #[test]
    fn a_kernel_without_device_mapper_names_every_missing_piece() {
        let why = host(MISC_NO_DM, DEVICES_NO_DM, false, true).skip_reason().unwrap();
        assert_eq!(
            why,
            "this kernel has no device-mapper: /dev/mapper/control is missing and \"device-mapper\" is \
             absent from /proc/misc and /proc/devices; load dm_mod and dm_thin_pool (modprobe dm_thin_pool) \
             or choose another storage driver (overlay2, btrfs, vfs)"
        );
        // A stale control node (libdevmapper made it) does not make a driver.
        let why = host(MISC_NO_DM, DEVICES_NO_DM, true, false).skip_reason().unwrap();
        assert!(why.starts_with("this kernel has no device-mapper: \"device-mapper\" is absent"), "{why}");
        assert!(why.contains("the dmsetup command is not installed either"), "{why}");
        let unreadable = Host { misc: None, ..host("", "", false, true) };
        assert!(unreadable.skip_reason().unwrap().contains("cannot be read"));
    }

    #[test]
    fn node_tool_and_root_are_checked_after_the_kernel() {
        assert_eq!(host(MISC_DM, DEVICES_DM, true, true).skip_reason(), None);
        assert_eq!(host(MISC_NO_DM, DEVICES_DM, true, true).skip_reason(), None, "either list will do");
        assert!(host(MISC_DM, DEVICES_DM, false, true).skip_reason().unwrap().contains("dmsetup mknodes"));
        assert!(host(MISC_DM, DEVICES_DM, true, false).skip_reason().unwrap().contains("install lvm2"));
        let user = Host { euid: 1000, ..host(MISC_DM, DEVICES_DM, true, true) };
        assert!(user.skip_reason().unwrap().contains("must run as root"));
        // "device-mapper" as a character device does not count.
        let chr = "Character devices:\n 10 device-mapper\n\nBlock devices:\n  7 loop\n";
        assert!(host(MISC_NO_DM, chr, true, true).skip_reason().is_some());
    }

    #[test]
    fn this_machine_has_no_device_mapper() {
        let h = Host::current();
        if h.misc_has_dm() || h.block_has_dm() {
            return; // a host with device-mapper
        }
        let why = h.skip_reason().expect("no device-mapper: the driver must decline");
        assert!(why.starts_with("this kernel has no device-mapper: "), "{why}");
        assert!(why.contains("\"device-mapper\" is absent from /proc/misc and /proc/devices"), "{why}");
    }
}
