//! Overlay mounts, their unmounting, and the mount table.
//!
//! Two ways to mount, chosen once when the driver starts:
//!
//! * **fsconfig** (Linux 6.8+): `fsopen("overlay")`, one `fsconfig` call per
//!   option and one `lowerdir+` per lower dir, `fsmount`, `move_mount`. No
//!   option string exists, so there is no size limit, the working directory
//!   is never involved, and the kernel's own explanation of a failure is read
//!   back from the file system context and put in the error.
//! * **mount(2)**: one option string, which the kernel copies into a single
//!   page. Lower dirs are named by their short links relative to the driver
//!   root (`l/<short>`), so a helper thread that has its own working
//!   directory (`unshare(CLONE_FS)`) changes into the root and mounts; the
//!   daemon's working directory never moves.
//!
//! Either way the new mount is made private, so it neither receives nor
//! sends mount events. A read-only mount (no upper dir) is also `nosuid`
//! and `nodev`.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use berth_plugin_api::util::mounts::mount_points;
use berth_plugin_api::DriverError;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, mount, mount_change, move_mount, unmount,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};

/// Longest string `fsconfig` takes (`strndup_user(value, 256)` in the
/// kernel, the NUL included).
const FSCONFIG_MAX: usize = 255;

/// Which system call makes overlay mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountApi {
    /// The new mount API, one `lowerdir+` per lower dir.
    Fsconfig,
    /// `mount(2)` with relative short links, from a helper thread.
    Classic,
}

impl MountApi {
    /// How status shows it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MountApi::Fsconfig => "fsconfig",
            MountApi::Classic => "mount(2)",
        }
    }
}

/// One overlay mount. Directories are relative to the driver root.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overlay {
    /// Lower dirs, top first (`l/<short>`).
    pub(crate) lowers: Vec<String>,
    /// Upper and work dir; `None` makes a read-only mount.
    pub(crate) upper: Option<(String, String)>,
    /// Options set before the directories, e.g. `("index", "off")`.
    pub(crate) options: Vec<(&'static str, &'static str)>,
}

impl Overlay {
    /// Whether the mount has no upper dir.
    pub(crate) fn read_only(&self) -> bool {
        self.upper.is_none()
    }

    /// The option string `mount(2)` gets, paths relative to the root.
    pub(crate) fn data(&self) -> String {
        let mut parts: Vec<String> = self.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("lowerdir={}", self.lowers.join(":")));
        if let Some((upper, work)) = &self.upper {
            parts.push(format!("upperdir={upper}"));
            parts.push(format!("workdir={work}"));
        }
        parts.join(",")
    }
}

/// A failed mount: the step, the errno and what the kernel said about it.
#[derive(Debug)]
pub(crate) struct MountError {
    /// The system call (and option) that failed.
    pub(crate) step: String,
    /// Its error.
    pub(crate) error: io::Error,
    /// The messages the kernel logged in the file system context.
    pub(crate) log: Vec<String>,
}

impl MountError {
    fn new(step: impl Into<String>, error: impl Into<io::Error>, log: Vec<String>) -> MountError {
        MountError { step: step.into(), error: error.into(), log }
    }

    /// As a driver error with `context` first.
    pub(crate) fn into_driver(self, context: impl fmt::Display) -> DriverError {
        DriverError::io(format_args!("{context}: {}", self.explain()), &self.error)
    }

    /// The step and the kernel's messages, without the errno.
    fn explain(&self) -> String {
        if self.log.is_empty() {
            format!("{} (the kernel log may say more)", self.step)
        } else {
            format!("{} (kernel: {})", self.step, self.log.join("; "))
        }
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.explain(), self.error)
    }
}

/// Mounts `ov` on the existing directory `target` (absolute). On failure
/// nothing stays mounted. With [`MountApi::Fsconfig`], a path too long for
/// `fsconfig` falls back to `mount(2)`.
pub(crate) fn mount_overlay(
    root: &Path,
    ov: &Overlay,
    target: &Path,
    api: MountApi,
) -> Result<(), MountError> {
    let too_long = |rel: &str| root.join(rel).as_os_str().len() > FSCONFIG_MAX;
    let fits = !ov.lowers.iter().any(|l| too_long(l))
        && ov.upper.as_ref().map_or(true, |(u, w)| !too_long(u) && !too_long(w));
    match api {
        MountApi::Fsconfig if fits => mount_fsconfig(root, ov, target)?,
        _ => mount_classic(root, ov, target)?,
    }
    mount_change(target, MountPropagationFlags::PRIVATE).map_err(|e| {
        let _ = unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW);
        MountError::new(format!("make {} private", target.display()), e, Vec::new())
    })
}

/// [`mount_overlay`] with the new mount API.
fn mount_fsconfig(root: &Path, ov: &Overlay, target: &Path) -> Result<(), MountError> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| MountError::new("fsopen(\"overlay\")", e, Vec::new()))?;
    let set = |key: &str, value: &Path| {
        fsconfig_set_string(&fs, key, value)
            .map_err(|e| MountError::new(format!("fsconfig {key}={}", value.display()), e, read_log(&fs)))
    };
    set("source", Path::new("overlay"))?;
    for (k, v) in &ov.options {
        set(k, Path::new(v))?;
    }
    for lower in &ov.lowers {
        set("lowerdir+", &root.join(lower))?;
    }
    if let Some((upper, work)) = &ov.upper {
        set("upperdir", &root.join(upper))?;
        set("workdir", &root.join(work))?;
    }
    fsconfig_create(&fs).map_err(|e| MountError::new("fsconfig create", e, read_log(&fs)))?;
    let attrs = if ov.read_only() {
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
    } else {
        MountAttrFlags::empty()
    };
    let mnt: OwnedFd = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| MountError::new("fsmount", e, read_log(&fs)))?;
    // Dropping `mnt` without attaching it dissolves the mount.
    move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| MountError::new(format!("move_mount to {}", target.display()), e, Vec::new()))
}

/// The messages the kernel logged in file system context `fs`.
fn read_log(fs: &OwnedFd) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA ends the log.
    while let Ok(n) = rustix::io::read(fs, &mut buf[..]) {
        if n == 0 || out.len() >= 16 {
            break;
        }
        let msg = String::from_utf8_lossy(&buf[..n]);
        // "e overlay: ..." for an error, "w " for a warning, "i " for info.
        out.push(msg.get(2..).unwrap_or(&msg).trim().to_string());
    }
    out
}

/// [`mount_overlay`] with `mount(2)`, relative paths, from a helper thread
/// whose working directory is the root.
fn mount_classic(root: &Path, ov: &Overlay, target: &Path) -> Result<(), MountError> {
    let data = ov.data();
    let page = rustix::param::page_size();
    if data.len() >= page {
        return Err(MountError::new(
            format!("mount(2) option string of {} bytes (one page is {page})", data.len()),
            io::Error::from_raw_os_error(libc::E2BIG),
            Vec::new(),
        ));
    }
    let data = CString::new(data).map_err(|_| {
        MountError::new("mount(2) option string", io::Error::from(io::ErrorKind::InvalidInput), Vec::new())
    })?;
    let flags = if ov.read_only() {
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV
    } else {
        MountFlags::empty()
    };
    let target = std::path::absolute(target)
        .map_err(|e| MountError::new(format!("resolve {}", target.display()), e, Vec::new()))?;
    let mounted = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), MountError> {
            // SAFETY: CLONE_FS gives this thread its own root, working
            // directory and umask. Nothing else runs on this thread and it
            // ends right after the mount, so no code can observe the
            // changed directory except the mount below, and the rest of the
            // process keeps its own.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| MountError::new("unshare(CLONE_FS) in the mount thread", e, Vec::new()))?;
            rustix::process::chdir(root)
                .map_err(|e| MountError::new(format!("chdir {}", root.display()), e, Vec::new()))?;
            mount("overlay", &target, "overlay", flags, data.as_c_str()).map_err(|e| {
                MountError::new(format!("mount(2) overlay on {}", target.display()), e, Vec::new())
            })
        })
        .join()
    });
    mounted.unwrap_or_else(|_| {
        Err(MountError::new("the mount thread", io::Error::other("it panicked"), Vec::new()))
    })
}

/// Unmounts `target` lazily, never following a symlink there. A path that
/// is not a mount point, or is gone, counts as unmounted.
pub(crate) fn unmount_path(target: &Path) -> io::Result<()> {
    match unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::INVAL) if !is_mount_point(target)? => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `path` is a mount point of this process's mount namespace.
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    Ok(mount_points()?.iter().any(|m| m == path))
}

/// Every mount point strictly below `dir`, deepest first (so they can be
/// unmounted in order). A path mounted several times appears several times.
pub(crate) fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = berth_plugin_api::util::mounts::mounts_under(dir)?;
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// `root` with lower dirs `l1` (holding `a`) and `l2` (holding `b`),
    /// `upper`, `work` and `merged`.
    fn dirs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for sub in ["l1", "l2", "upper", "work", "merged"] {
            fs::create_dir(d.path().join(sub)).unwrap();
        }
        fs::write(d.path().join("l1/a"), b"a").unwrap();
        fs::write(d.path().join("l2/b"), b"b").unwrap();
        d
    }

    fn check_rw_and_ro(api: MountApi) {
        let d = dirs();
        let root = d.path();
        let merged = root.join("merged");
        let rw = Overlay {
            lowers: vec!["l1".into(), "l2".into()],
            upper: Some(("upper".into(), "work".into())),
            options: vec![("index", "off")],
        };
        mount_overlay(root, &rw, &merged, api).unwrap();
        let seen = (fs::read(merged.join("a")), fs::read(merged.join("b")));
        let wrote = fs::write(merged.join("c"), b"c");
        let listed = mounts_under(root).unwrap();
        unmount_path(&merged).unwrap();
        assert_eq!((seen.0.unwrap(), seen.1.unwrap()), (b"a".to_vec(), b"b".to_vec()));
        wrote.unwrap();
        assert_eq!(fs::read(root.join("upper/c")).unwrap(), b"c", "writes land in the upper dir");
        assert_eq!(listed, vec![merged.clone()]);

        let ro = Overlay { lowers: vec!["l1".into(), "l2".into()], ..Overlay::default() };
        mount_overlay(root, &ro, &merged, api).unwrap();
        let write = fs::write(merged.join("d"), b"d");
        let read = fs::read(merged.join("a"));
        unmount_path(&merged).unwrap();
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
        assert_eq!(read.unwrap(), b"a");
        assert!(!is_mount_point(&merged).unwrap());
        unmount_path(&merged).unwrap();
    }

    #[test]
    fn fsconfig_mounts_read_write_and_read_only() {
        check_rw_and_ro(MountApi::Fsconfig);
    }

    #[test]
    fn classic_mounts_read_write_and_read_only_without_moving_our_cwd() {
        let before = std::env::current_dir().unwrap();
        check_rw_and_ro(MountApi::Classic);
        assert_eq!(std::env::current_dir().unwrap(), before);
    }

    #[test]
    fn fsconfig_failures_carry_the_kernels_words() {
        let d = dirs();
        let ov = Overlay { lowers: vec!["missing".into(), "l1".into()], ..Overlay::default() };
        let e = mount_overlay(d.path(), &ov, &d.path().join("merged"), MountApi::Fsconfig).unwrap_err();
        assert_eq!(e.error.raw_os_error(), Some(libc::ENOENT), "{e}");
        assert!(e.step.contains("lowerdir+") && e.step.contains("missing"), "{e}");
        // An option this overlay does not know: the kernel says which.
        let ov =
            Overlay { lowers: vec!["l1".into(), "l2".into()], options: vec![("bogus", "1")], upper: None };
        let e = mount_overlay(d.path(), &ov, &d.path().join("merged"), MountApi::Fsconfig).unwrap_err();
        assert_eq!(e.error.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert!(e.log.iter().any(|l| l.contains("bogus")), "{e}");
        assert!(e.to_string().contains("(kernel: "), "{e}");
        assert!(mounts_under(d.path()).unwrap().is_empty());
    }

    #[test]
    fn an_option_string_beyond_a_page_is_refused_before_the_kernel_sees_it() {
        let d = dirs();
        let ov = Overlay { lowers: vec!["l1".repeat(2100), "l2".into()], ..Overlay::default() };
        let e = mount_overlay(d.path(), &ov, &d.path().join("merged"), MountApi::Classic).unwrap_err();
        assert_eq!(e.error.raw_os_error(), Some(libc::E2BIG), "{e}");
        assert!(e.step.contains("one page"), "{e}");
    }

    #[test]
    fn paths_too_long_for_fsconfig_fall_back_to_mount2() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("r".repeat(200)).join("o".repeat(100));
        for sub in ["l1", "l2", "merged"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join("l1/a"), b"a").unwrap();
        assert!(root.join("l1").as_os_str().len() > FSCONFIG_MAX);
        let ov = Overlay { lowers: vec!["l1".into(), "l2".into()], ..Overlay::default() };
        mount_overlay(&root, &ov, &root.join("merged"), MountApi::Fsconfig).unwrap();
        let seen = fs::read(root.join("merged/a"));
        unmount_path(&root.join("merged")).unwrap();
        assert_eq!(seen.unwrap(), b"a");
    }

    #[test]
    fn data_lists_options_then_directories() {
        let ov = Overlay {
            lowers: vec!["l/A".into(), "l/B".into()],
            upper: Some(("l/C".into(), "id/work".into())),
            options: vec![("index", "off"), ("metacopy", "off")],
        };
        assert_eq!(ov.data(), "index=off,metacopy=off,lowerdir=l/A:l/B,upperdir=l/C,workdir=id/work");
    }
}
