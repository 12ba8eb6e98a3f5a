//! Mount-backed volumes on the real kernel (run as root): tmpfs, binds of
//! host directories, a block device, reference counting of the backing
//! mount, and what a reopened (or killed) driver does with it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_plugin_api::ErrorKind;
use common::*;
use serde_json::json;

#[test]
fn tmpfs_honours_size_and_mode_and_goes_with_the_last_unmount() {
    let sb = Sandbox::new();
    let d = open(sb.path());
    create_owned(&d, "t", &tmpfs_opts("size=1m,mode=1777")).unwrap();
    let data = sb.path().join("t/_data");
    assert_eq!(mount_count(&data), 0, "create mounts nothing");
    assert_eq!(mount(&d, "t", &id(1)).unwrap(), data.to_str().unwrap());
    assert_eq!(mount_count(&data), 1);
    assert_eq!(fs::metadata(&data).unwrap().permissions().mode() & 0o7777, 0o1777);
    // Writing past the size fails with ENOSPC; within it works.
    assert_eq!(write_error(&data.join("small"), 256 << 10), None);
    assert_eq!(write_error(&data.join("big"), 2 << 20), Some(libc::ENOSPC));
    let s = get(&d, "t").unwrap().status;
    assert_eq!(
        (&s["type"], &s["device"], &s["mounted"], &s["refs"]),
        (&json!("tmpfs"), &json!("tmpfs"), &json!(true), &json!(1))
    );
    unmount(&d, "t", &id(1)).unwrap();
    assert_eq!(mount_count(&data), 0);
    assert!(!data.join("small").exists(), "tmpfs data goes with its mount");
    assert_eq!(get(&d, "t").unwrap().status["mounted"], json!(false));
    remove(&d, "t").unwrap();
    assert!(!sb.path().join("t").exists());
}

#[test]
fn n_mount_ids_share_one_backing_mount() {
    let sb = Sandbox::new();
    let d = open(sb.path());
    create_owned(&d, "t", &tmpfs_opts("size=1m")).unwrap();
    let data = sb.path().join("t/_data");
    for n in 1..=5 {
        mount(&d, "t", &id(n)).unwrap();
        assert_eq!(mount_count(&data), 1, "after mount {n}");
    }
    fs::write(data.join("shared"), "x").unwrap();
    // The same id again is the same mount.
    mount(&d, "t", &id(3)).unwrap();
    assert_eq!(mount_count(&data), 1);
    assert_err(remove(&d, "t"), ErrorKind::Conflict, "in use by 5 mounts");
    for n in 1..=4 {
        unmount(&d, "t", &id(n)).unwrap();
        assert_eq!(mount_count(&data), 1, "after unmount {n}");
        assert!(data.join("shared").exists());
    }
    unmount(&d, "t", &id(2)).unwrap();
    assert_eq!(mount_count(&data), 1, "a released id does not count twice");
    unmount(&d, "t", &id(5)).unwrap();
    assert_eq!(mount_count(&data), 0);
    unmount(&d, "t", &id(5)).unwrap();
    remove(&d, "t").unwrap();
}

#[test]
fn a_reopened_driver_neither_mounts_twice_nor_leaves_a_mount() {
    let sb = Sandbox::new();
    let data = sb.path().join("t/_data");
    {
        let d = open(sb.path());
        create_owned(&d, "t", &tmpfs_opts("size=1m")).unwrap();
        mount(&d, "t", &id(1)).unwrap();
        mount(&d, "t", &id(2)).unwrap();
        fs::write(data.join("kept"), "x").unwrap();
    }
    // Daemon restart: the driver is reopened on the same root.
    let d = open(sb.path());
    assert_eq!(mount_count(&data), 1);
    let s = get(&d, "t").unwrap().status;
    assert_eq!((&s["mounted"], &s["refs"]), (&json!(true), &json!(2)));
    mount(&d, "t", &id(3)).unwrap();
    assert_eq!(mount_count(&data), 1, "the next mount does not mount twice");
    assert!(data.join("kept").exists(), "same tmpfs, same data");
    for n in 1..=3 {
        unmount(&d, "t", &id(n)).unwrap();
    }
    assert_eq!(mount_count(&data), 0);
    remove(&d, "t").unwrap();
}

#[test]
fn a_backing_mount_that_vanished_comes_back_and_an_orphan_goes() {
    let sb = Sandbox::new();
    let (used, orphan) = (sb.path().join("used/_data"), sb.path().join("orphan/_data"));
    {
        let d = open(sb.path());
        create_owned(&d, "used", &tmpfs_opts("size=1m")).unwrap();
        create_owned(&d, "orphan", &tmpfs_opts("size=1m")).unwrap();
        mount(&d, "used", &id(1)).unwrap();
    }
    // Someone unmounted it behind the driver's back ...
    run("umount", &[used.to_str().unwrap()]).unwrap();
    // ... and a crash came between mount(2) and recording the id.
    run("mount", &["-t", "tmpfs", "tmpfs", orphan.to_str().unwrap()]).unwrap();
    let d = open(sb.path());
    assert_eq!(mount_count(&orphan), 0, "a mount nobody holds is taken down on open");
    assert_eq!(get(&d, "used").unwrap().status["mounted"], json!(false));
    mount(&d, "used", &id(1)).unwrap();
    assert_eq!(mount_count(&used), 1, "the recorded id gets its mount back");
    unmount(&d, "used", &id(1)).unwrap();
    assert_eq!(mount_count(&used), 0);
}

/// The child half of [`a_driver_killed_with_sigkill_is_picked_up_by_the_next`]:
/// opens the driver at `$BERTH_KILL9_ROOT`, mounts, says so, and waits to be
/// killed. Not a test on its own.
#[test]
#[ignore = "helper process of a_driver_killed_with_sigkill_is_picked_up_by_the_next"]
fn kill9_child_process_helper() {
    let Ok(root) = std::env::var("BERTH_KILL9_ROOT") else { return };
    let root = Path::new(&root);
    let d = open(root);
    create_owned(&d, "t", &tmpfs_opts("size=1m")).unwrap();
    mount(&d, "t", &id(1)).unwrap();
    mount(&d, "t", &id(2)).unwrap();
    unmount(&d, "t", &id(1)).unwrap();
    fs::write(root.join("ready"), "").unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_driver_killed_with_sigkill_is_picked_up_by_the_next() {
    let sb = Sandbox::new();
    let root = sb.mkdir("root");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "kill9_child_process_helper", "--nocapture"])
        .env("BERTH_KILL9_ROOT", &root)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !root.join("ready").exists() {
        if start.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the child driver never got ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let data = root.join("t/_data");
    assert_eq!(mount_count(&data), 1);
    let d = open(&root);
    assert_eq!(get(&d, "t").unwrap().status["refs"], json!(1));
    mount(&d, "t", &id(3)).unwrap();
    assert_eq!(mount_count(&data), 1);
    unmount(&d, "t", &id(1)).unwrap(); // released before the kill: a no-op
    unmount(&d, "t", &id(2)).unwrap();
    assert_eq!(mount_count(&data), 1);
    unmount(&d, "t", &id(3)).unwrap();
    assert_eq!(mount_count(&data), 0);
    remove(&d, "t").unwrap();
}

#[test]
fn a_bind_volume_shows_the_host_directory() {
    let sb = Sandbox::new();
    let host = sb.mkdir("host");
    fs::write(host.join("before"), "from the host").unwrap();
    let d = open(&sb.mkdir("root"));
    let opts = [("type", "none"), ("o", "bind"), ("device", host.to_str().unwrap())];
    create_with(&d, "b", &opts).unwrap();
    let p = mount(&d, "b", &id(1)).unwrap();
    assert_eq!(fs::read_to_string(Path::new(&p).join("before")).unwrap(), "from the host");
    fs::write(Path::new(&p).join("through"), "via the volume").unwrap();
    assert_eq!(fs::read_to_string(host.join("through")).unwrap(), "via the volume");
    unmount(&d, "b", &id(1)).unwrap();
    assert_eq!(mount_count(Path::new(&p)), 0);
    remove(&d, "b").unwrap();
    // Removing the volume never touches the host's files.
    assert!(host.join("before").exists() && host.join("through").exists());
}

#[test]
fn a_read_only_bind_refuses_writes() {
    let sb = Sandbox::new();
    let host = sb.mkdir("host");
    fs::write(host.join("f"), "x").unwrap();
    let d = open(&sb.mkdir("root"));
    let opts = [("type", "none"), ("o", "bind,ro"), ("device", host.to_str().unwrap())];
    create_with(&d, "ro", &opts).unwrap();
    let p = mount(&d, "ro", &id(1)).unwrap();
    assert_eq!(fs::read_to_string(Path::new(&p).join("f")).unwrap(), "x");
    let e = fs::write(Path::new(&p).join("new"), "y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    fs::write(host.join("new"), "y").unwrap();
    unmount(&d, "ro", &id(1)).unwrap();
    remove(&d, "ro").unwrap();
}

#[test]
fn a_missing_bind_source_is_not_found_at_create_and_at_mount() {
    let sb = Sandbox::new();
    let d = open(&sb.mkdir("root"));
    let gone = sb.path().join("gone");
    let opts = [("type", "none"), ("o", "bind"), ("device", gone.to_str().unwrap())];
    assert_err(create_with(&d, "b", &opts), ErrorKind::NotFound, gone.to_str().unwrap());
    assert!(names(&d).is_empty());
    // Made, used, then deleted on the host: the mount says what is missing.
    fs::create_dir(&gone).unwrap();
    create_with(&d, "b", &opts).unwrap();
    fs::remove_dir(&gone).unwrap();
    assert_err(mount(&d, "b", &id(1)), ErrorKind::NotFound, gone.to_str().unwrap());
    assert_eq!(get(&d, "b").unwrap().status["refs"], json!(0));
    remove(&d, "b").unwrap();
}

#[test]
fn a_failed_mount_records_nothing_and_leaves_nothing_mounted() {
    let sb = Sandbox::new();
    let d = open(sb.path());
    // tmpfs refuses an option it does not know.
    create_owned(&d, "bad", &tmpfs_opts("size=1m,bogus=1")).unwrap();
    let e = assert_err(mount(&d, "bad", &id(1)), ErrorKind::InvalidArgument, "volume bad");
    assert!(e.message.contains("bogus=1") && e.message.contains("type=tmpfs"), "{}", e.message);
    // A filesystem type the kernel lacks.
    create_with(&d, "nofs", &[("type", "berthfs"), ("device", "x")]).unwrap();
    assert_err(mount(&d, "nofs", &id(1)), ErrorKind::InvalidArgument, "berthfs");
    // A block filesystem on something that is not a block device.
    let file = sb.path().join("plain-file");
    fs::write(&file, "").unwrap();
    create_with(&d, "notblk", &[("type", "ext4"), ("device", file.to_str().unwrap())]).unwrap();
    assert_err(mount(&d, "notblk", &id(1)), ErrorKind::InvalidArgument, "not a block device");
    for v in ["bad", "nofs", "notblk"] {
        assert_eq!(mount_count(&sb.path().join(v).join("_data")), 0, "{v}");
        assert_eq!(get(&d, v).unwrap().status["refs"], json!(0), "{v}");
        remove(&d, v).unwrap();
    }
}

#[test]
fn a_block_device_volume_keeps_its_data_across_mounts() {
    let sb = Sandbox::new();
    let dev = match sb.loop_fs("berth-vol-blk", 16, "mkfs.ext4", &["-q", "-F"]) {
        Ok(dev) => dev,
        Err(why) => {
            skip(
                "a_block_device_volume_keeps_its_data_across_mounts",
                &format!("no ext4 loop device: {why}"),
            );
            return;
        }
    };
    let d = open(&sb.mkdir("root"));
    create_with(&d, "blk", &[("type", "ext4"), ("device", dev.as_str()), ("o", "noatime")]).unwrap();
    let p = mount(&d, "blk", &id(1)).unwrap();
    assert_eq!(mount_count(Path::new(&p)), 1);
    assert!(Path::new(&p).join("lost+found").is_dir(), "the ext4 filesystem is mounted");
    fs::write(Path::new(&p).join("persisted"), "on disk").unwrap();
    let s = get(&d, "blk").unwrap().status;
    assert_eq!((&s["type"], &s["device"], &s["mounted"]), (&json!("ext4"), &json!(dev), &json!(true)));
    unmount(&d, "blk", &id(1)).unwrap();
    assert_eq!(mount_count(Path::new(&p)), 0);
    assert!(!Path::new(&p).join("persisted").exists());
    mount(&d, "blk", &id(2)).unwrap();
    assert_eq!(fs::read_to_string(Path::new(&p).join("persisted")).unwrap(), "on disk");
    // Busy (a file open inside) at the last unmount: detached all the same.
    let busy = fs::File::open(Path::new(&p).join("persisted")).unwrap();
    unmount(&d, "blk", &id(2)).unwrap();
    assert_eq!(mount_count(Path::new(&p)), 0);
    drop(busy);
    remove(&d, "blk").unwrap();
}

/// The optional fields of the mountinfo line of `path` (`shared:N`, ...).
fn propagation(path: &Path) -> String {
    let p = fs::canonicalize(path).unwrap();
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = table.lines().find(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap())).unwrap().to_owned();
    let fields: Vec<&str> = line.split(' ').collect();
    let end = fields.iter().position(|f| *f == "-").unwrap();
    fields[6..end].join(" ")
}

#[test]
fn propagation_flags_apply_and_a_bad_pair_leaves_nothing_mounted() {
    let sb = Sandbox::new();
    let host = sb.mkdir("host");
    let d = open(&sb.mkdir("root"));
    let src = host.to_str().unwrap();
    create_with(&d, "priv", &[("type", "none"), ("o", "rbind,rprivate"), ("device", src)]).unwrap();
    let p = mount(&d, "priv", &id(1)).unwrap();
    assert_eq!(propagation(Path::new(&p)), "", "private: no shared or master peer group");
    unmount(&d, "priv", &id(1)).unwrap();
    create_with(&d, "shared", &[("type", "none"), ("o", "bind,shared"), ("device", src)]).unwrap();
    let p = mount(&d, "shared", &id(1)).unwrap();
    assert!(propagation(Path::new(&p)).contains("shared:"), "{}", propagation(Path::new(&p)));
    unmount(&d, "shared", &id(1)).unwrap();
    // Two propagation types at once: the second step fails after the bind
    // was made, and the bind is undone.
    create_with(&d, "both", &[("type", "none"), ("o", "bind,shared,slave"), ("device", src)]).unwrap();
    assert_err(mount(&d, "both", &id(1)), ErrorKind::InvalidArgument, "o=bind,shared,slave");
    assert_eq!(mount_count(&sb.path().join("root/both/_data")), 0);
    for v in ["priv", "shared", "both"] {
        remove(&d, v).unwrap();
    }
}
