//! `size=` on plain volumes: project quotas on the real kernel (run as
//! root). Filesystems are loop-mounted images each test makes itself.
//! Tests named `..._or_skip` need kernel quota support this host may lack;
//! they print `SKIP <name>: <reason>` (past the harness's capture) instead
//! of passing silently.

mod common;

use std::fs;
use std::path::Path;

use berth_plugin_api::util::quota::{project_id, set_project_id, ProjectQuota};
use berth_plugin_api::ErrorKind;
use common::*;
use serde_json::json;

/// Creating a sized volume on `root` is unsupported naming `fs`, and
/// leaves nothing behind.
fn assert_unsupported(root: &Path, fs_name: &str) {
    let before: Vec<_> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name()).collect();
    let d = open(root);
    let e = assert_err(create_with(&d, "q", &[("size", "10M")]), ErrorKind::Unsupported, fs_name);
    for text in ["volume q", "size=10M", "prjquota", root.to_str().unwrap()] {
        assert!(e.message.contains(text), "{:?} lacks {text:?}", e.message);
    }
    assert!(names(&d).is_empty());
    let after: Vec<_> = fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "nothing left behind");
    // Plain volumes still work there.
    create(&d, "plain").unwrap();
    remove(&d, "plain").unwrap();
}

#[test]
fn size_on_a_tmpfs_data_dir_is_unsupported_naming_it() {
    let sb = Sandbox::new();
    let root = sb.mount("tmpfs", "tmpfs", "tmpfs-root", "size=4m").unwrap();
    assert_unsupported(&root, "tmpfs");
}

#[test]
fn size_on_ext4_without_prjquota_is_unsupported_naming_it() {
    let sb = Sandbox::new();
    let dev = match sb.loop_fs("berth-vol-noquota", 16, "mkfs.ext4", &["-q", "-F"]) {
        Ok(dev) => dev,
        Err(why) => {
            skip("size_on_ext4_without_prjquota_is_unsupported_naming_it", &why);
            return;
        }
    };
    let root = sb.mount("ext4", &dev, "ext4-root", "").unwrap();
    assert_unsupported(&root, "ext4");
}

/// A sized volume on `root` (a filesystem enforcing project quotas): the
/// limit holds, ids are distinct and released, a reopen keeps them.
fn check_enforced(root: &Path) {
    let d = open(root);
    create_with(&d, "q", &[("size", "1M")]).unwrap();
    create_with(&d, "r", &[("size", "512k")]).unwrap();
    let (sq, sr) = (get(&d, "q").unwrap().status, get(&d, "r").unwrap().status);
    assert_eq!((&sq["size"], &sr["size"]), (&json!(1 << 20), &json!(512 << 10)));
    let (iq, ir) = (sq["project_id"].as_u64().unwrap(), sr["project_id"].as_u64().unwrap());
    assert_ne!(iq, ir);
    let data = root.join("q/_data");
    assert_eq!(u64::from(project_id(&data).unwrap()), iq);
    assert_eq!(write_error(&data.join("fits"), 256 << 10), None);
    let e = write_error(&data.join("too-big"), 4 << 20);
    assert!(matches!(e, Some(libc::EDQUOT | libc::ENOSPC)), "writing past the limit: {e:?}");
    // Subdirectories inherit the project.
    fs::create_dir(data.join("sub")).unwrap();
    assert_eq!(u64::from(project_id(&data.join("sub")).unwrap()), iq);
    remove(&d, "q").unwrap();
    let file = fs::read_to_string(root.join(".berth-quota.json")).unwrap();
    assert!(!file.contains("\"q\"") && file.contains("\"r\""), "{file}");
    let d = open(root);
    assert_eq!(get(&d, "r").unwrap().status["project_id"], json!(ir));
    remove(&d, "r").unwrap();
}

#[test]
fn size_quota_is_enforced_on_ext4_prjquota_or_skip() {
    let name = "size_quota_is_enforced_on_ext4_prjquota_or_skip";
    let sb = Sandbox::new();
    let dev = match sb.loop_fs("berth-vol-prjquota", 32, "mkfs.ext4", &["-q", "-F", "-O", "quota,project"]) {
        Ok(dev) => dev,
        Err(why) => return skip(name, &why),
    };
    match sb.mount("ext4", &dev, "ext4-prj", "prjquota") {
        Ok(root) => check_enforced(&root),
        Err(why) => skip(
            name,
            &format!(
                "this kernel cannot mount ext4 with project quotas (it needs CONFIG_QUOTA and \
                 CONFIG_QFMT_V2): {why}"
            ),
        ),
    }
}

#[test]
fn size_quota_is_enforced_on_xfs_prjquota_or_skip() {
    let name = "size_quota_is_enforced_on_xfs_prjquota_or_skip";
    let sb = Sandbox::new();
    let dev = match sb.loop_fs("berth-vol-xfs-prj", 320, "mkfs.xfs", &["-q", "-f"]) {
        Ok(dev) => dev,
        Err(why) => return skip(name, &format!("no xfs (install xfsprogs): {why}")),
    };
    match sb.mount("xfs", &dev, "xfs-prj", "prjquota") {
        Ok(root) => check_enforced(&root),
        Err(why) => skip(
            name,
            &format!("this kernel cannot mount xfs with project quotas (it needs CONFIG_XFS_QUOTA): {why}"),
        ),
    }
}

#[test]
fn xfs_project_ids_are_set_and_inherited_or_skip() {
    let name = "xfs_project_ids_are_set_and_inherited_or_skip";
    let sb = Sandbox::new();
    let dev = match sb.loop_fs("berth-vol-xfs", 320, "mkfs.xfs", &["-q", "-f"]) {
        Ok(dev) => dev,
        Err(why) => return skip(name, &format!("no xfs (install xfsprogs): {why}")),
    };
    // Project ids work on xfs with or without quotas enabled.
    let root = sb.mount("xfs", &dev, "xfs-root", "").unwrap();
    let dir = root.join("limited");
    fs::create_dir(&dir).unwrap();
    assert_eq!(project_id(&dir).unwrap(), 0);
    set_project_id(&dir, 4242).unwrap();
    assert_eq!(project_id(&dir).unwrap(), 4242);
    fs::create_dir_all(dir.join("a/b")).unwrap();
    assert_eq!(project_id(&dir.join("a/b")).unwrap(), 4242, "inherited two levels down");
    // Without enforcement, a quota is unsupported, naming xfs and the fix.
    let e = ProjectQuota::open(&root, root.join("q.json")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.message);
    assert!(e.message.contains("xfs") && e.message.contains("prjquota"), "{}", e.message);
    assert_unsupported(&root, "xfs");
}
