//! What the host offers overlay2, found by really mounting a tiny overlay
//! under the driver root when the driver starts (as moby's checks do):
//! whether overlay works there at all, which mount API to use, whether the
//! backing file system reports file types in directory entries (`d_type`,
//! without which overlay misbehaves), and whether the upper dir of a mount
//! records changes faithfully (a native diff is possible).

use std::fs;
use std::io;
use std::path::Path;

use rustix::fs::{FileType, OFlags, XattrFlags};

use crate::layout::{remove_any, Layout};
use crate::mount::{mount_overlay, unmount_path, MountApi, MountError, Overlay};

/// Which mount API the operator asked for (driver option `mount_api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ApiChoice {
    /// fsconfig when it works, else `mount(2)`.
    #[default]
    Auto,
    /// fsconfig only.
    Fsconfig,
    /// `mount(2)` only.
    Classic,
}

/// The facts found at start.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// The file system under the root (`ext4`, `xfs`, ...).
    pub(crate) backing_fs: String,
    /// The mount API every mount uses.
    pub(crate) api: MountApi,
    /// Options given to every mount: whatever of `index=off`,
    /// `redirect_dir=off` and `metacopy=off` this kernel knows, so that
    /// renames of lower directories and metadata changes are copied up
    /// whole and the upper dir is a faithful diff.
    pub(crate) options: Vec<(&'static str, &'static str)>,
    /// Whether the upper dir is a faithful diff; otherwise why not.
    pub(crate) native_diff: Result<(), String>,
}

/// Options to set when the kernel has them: each exists as a module
/// parameter of the same name when the overlay code knows it.
const OPTIONS: [(&str, &str); 3] = [("index", "off"), ("redirect_dir", "off"), ("metacopy", "off")];

/// Probes `layout`'s root. `Err` is the reason overlay2 cannot run here.
pub(crate) fn probe(layout: &Layout, choice: ApiChoice) -> Result<Host, String> {
    let root = &layout.root;
    let backing_fs = berth_plugin_api::util::quota::filesystem_name(root)
        .unwrap_or_else(|e| format!("an unknown file system ({e})"));
    let options: Vec<_> = OPTIONS
        .iter()
        .copied()
        .filter(|(name, _)| Path::new("/sys/module/overlay/parameters").join(name).exists())
        .collect();
    let dir = layout.temp_path("probe");
    let result = (|| {
        let setup = |e: io::Error| format!("cannot prepare the overlay probe in {}: {e}", dir.display());
        make_probe_tree(&dir).map_err(setup)?;
        if !supports_d_type(&dir).map_err(setup)? {
            return Err(format!(
                "the backing file system of {} ({backing_fs}) does not report file types in directory entries \
                 (d_type), which overlay needs; on xfs, make the file system with ftype=1",
                root.display()
            ));
        }
        let (api, native_diff) = try_mounts(layout, &dir, &options, choice).map_err(|e| {
            format!(
                "overlay cannot be mounted with its upper dir on {} ({backing_fs}): {e}; put the overlay2 root on \
                 a file system that can hold overlay upper dirs (ext4, xfs), not on overlay itself",
                root.display()
            )
        })?;
        Ok(Host { backing_fs: backing_fs.clone(), api, options: options.clone(), native_diff })
    })();
    let _ = unmount_path(&dir.join("merged"));
    let _ = remove_any(&dir);
    result
}

/// `l1/{a,d,d1/}`, `l2/{b,d/}` (`d` opaque in `l2`), `upper`, `work`,
/// `merged`.
fn make_probe_tree(dir: &Path) -> io::Result<()> {
    for sub in ["l1/d", "l1/d1", "l2/d", "upper", "work", "merged"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    fs::write(dir.join("l1/a"), b"a")?;
    fs::write(dir.join("l2/b"), b"b")?;
    rustix::fs::lsetxattr(dir.join("l2/d"), "trusted.overlay.opaque", b"y", XattrFlags::empty())?;
    Ok(())
}

/// Whether directory entries under `dir` carry their file type.
fn supports_d_type(dir: &Path) -> io::Result<bool> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut entries = rustix::fs::Dir::new(fd)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." && entry.file_type() == FileType::Unknown {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Mounts the probe tree with the chosen API (fsconfig first for
/// [`ApiChoice::Auto`]), checks it, and answers the API that worked and
/// whether native diffs are faithful.
fn try_mounts(
    layout: &Layout,
    dir: &Path,
    options: &[(&'static str, &'static str)],
    choice: ApiChoice,
) -> Result<(MountApi, Result<(), String>), String> {
    let apis: &[MountApi] = match choice {
        ApiChoice::Auto => &[MountApi::Fsconfig, MountApi::Classic],
        ApiChoice::Fsconfig => &[MountApi::Fsconfig],
        ApiChoice::Classic => &[MountApi::Classic],
    };
    let rel = dir.strip_prefix(&layout.root).map_err(|_| "the probe is outside the root".to_string())?;
    let rel = |sub: &str| rel.join(sub).to_string_lossy().into_owned();
    let ov = Overlay {
        lowers: vec![rel("l2"), rel("l1")],
        upper: Some((rel("upper"), rel("work"))),
        options: options.to_vec(),
    };
    let merged = dir.join("merged");
    let mut failures = Vec::new();
    for api in apis {
        match mount_overlay(&layout.root, &ov, &merged, *api) {
            Ok(()) => {
                let checked = check_probe(dir);
                let unmounted = unmount_path(&merged);
                checked?;
                unmounted.map_err(|e| format!("unmount the probe at {}: {e}", merged.display()))?;
                return Ok((*api, native_diff(dir)));
            }
            Err(e) => failures.push(describe(*api, &e)),
        }
    }
    Err(failures.join("; "))
}

fn describe(api: MountApi, e: &MountError) -> String {
    format!("with {}: {e}", api.name())
}

/// Checks the mounted probe: both lowers visible, a write lands in the
/// upper dir, a copied-up opaque dir, a rename of a lower dir.
fn check_probe(dir: &Path) -> Result<(), String> {
    let merged = dir.join("merged");
    let fail =
        |what: &str, e: io::Error| format!("the probe overlay at {} fails to {what}: {e}", merged.display());
    let a = fs::read(merged.join("a")).map_err(|e| fail("show a file of its lower layer", e))?;
    let b = fs::read(merged.join("b")).map_err(|e| fail("show a file of its upper lower layer", e))?;
    if (a.as_slice(), b.as_slice()) != (b"a".as_slice(), b"b".as_slice()) {
        return Err(format!("the probe overlay at {} shows wrong contents", merged.display()));
    }
    fs::write(merged.join("new"), b"n").map_err(|e| fail("take a write", e))?;
    if fs::read(dir.join("upper/new")).ok().as_deref() != Some(b"n".as_slice()) {
        return Err(format!(
            "a write to the probe overlay at {} did not reach its upper dir",
            merged.display()
        ));
    }
    // Copy up the opaque dir `d` (checked in `native_diff`).
    fs::write(merged.join("d/f"), b"f").map_err(|e| fail("write into a directory of a lower layer", e))?;
    // A rename of a lower dir: refused (EXDEV) with redirect_dir=off, or
    // recorded as a redirect (checked in `native_diff`).
    match fs::rename(merged.join("d1"), merged.join("d2")) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Ok(()),
        Err(e) => Err(fail("rename a directory of a lower layer", e)),
    }
}

/// Whether the probe's upper dir, after [`check_probe`], holds a faithful
/// diff: the opaque flag was not copied up (a bug before Linux 4.8) and no
/// redirect was recorded.
fn native_diff(dir: &Path) -> Result<(), String> {
    let mut buf = [0u8; 16];
    let opaque = rustix::fs::lgetxattr(dir.join("upper/d"), "trusted.overlay.opaque", &mut buf[..]);
    if opaque.is_ok_and(|n| &buf[..n] == b"y") {
        return Err("this kernel copies up the opaque flag of a directory (fixed in Linux 4.8)".into());
    }
    if rustix::fs::lgetxattr(dir.join("upper/d2"), "trusted.overlay.redirect", &mut buf[..]).is_ok() {
        return Err(
            "renamed directories are recorded as redirects (redirect_dir cannot be turned off)".into()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_runs_overlay_with_both_apis_and_native_diffs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path().join("root").to_str().unwrap()).unwrap();
        for (choice, api) in [(ApiChoice::Classic, MountApi::Classic), (ApiChoice::Auto, MountApi::Fsconfig)]
        {
            let host = probe(&layout, choice).unwrap();
            assert_eq!(host.api, api);
            assert_eq!(host.native_diff, Ok(()));
            assert!(host.options.contains(&("index", "off")), "{:?}", host.options);
            assert_eq!(host.backing_fs, berth_plugin_api::util::quota::filesystem_name(dir.path()).unwrap());
        }
        assert_eq!(crate::layout::read_dir(&layout.tmp()).unwrap().len(), 0, "the probe cleans up");
        assert!(crate::mount::mounts_under(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn an_upper_dir_on_overlay_is_refused_with_the_reason() {
        // The driver root inside a mounted overlay: overlay cannot use an
        // overlay as its upper file system.
        let dir = tempfile::tempdir().unwrap();
        let outer = Layout::open(dir.path().join("outer").to_str().unwrap()).unwrap();
        for sub in ["lo1", "lo2", "up", "wk", "mnt"] {
            fs::create_dir(outer.root.join(sub)).unwrap();
        }
        let ov = Overlay {
            lowers: vec!["lo1".into(), "lo2".into()],
            upper: Some(("up".into(), "wk".into())),
            options: vec![],
        };
        let mnt = outer.root.join("mnt");
        mount_overlay(&outer.root, &ov, &mnt, MountApi::Fsconfig).unwrap();
        let inner = Layout::open(mnt.join("root").to_str().unwrap());
        let probed = inner.map(|l| probe(&l, ApiChoice::Auto));
        unmount_path(&mnt).unwrap();
        let why = probed.unwrap().unwrap_err();
        assert!(why.contains("(overlay)") && why.contains("not on overlay itself"), "{why}");
        eprintln!("{why}");
    }
}
