//! btrfs through the real ABI path, each test on a loop-mounted btrfs of
//! its own: subvolumes and snapshots, read-only layers, reference counts,
//! parents and children, restarts after a crash, quotas, and declining on
//! other filesystems. Needs root, a loop device and btrfs-progs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::CreateRequest;
use berth_plugin_api::{ErrorKind, Init, Kind};
use common::*;

#[test]
fn the_plugin_declares_storage_and_no_diff() {
    let module = PluginModule::linked(berth_storage_btrfs::export::berth_plugin_root());
    let m = module.manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), ("btrfs", [Kind::Storage].as_slice()));
    assert!(module.describe()["description"].as_str().unwrap().contains("subvolume"));
    let env = Env::new();
    assert!(env.driver.as_diff().is_none(), "the core diffs btrfs layers itself");
}

#[test]
fn lifecycle_layers_are_subvolumes_and_status_tells_the_truth() {
    let env = Env::new();
    let status = env.status();
    assert_eq!(status["Backing Filesystem"], "btrfs");
    assert_eq!(Path::new(&status["Mount Point"]), env.fs.path());
    assert_eq!(Path::new(&status["Root Dir"]), env.root());
    assert!(status["Quota"].starts_with("disabled: run `btrfs quota enable "), "{}", status["Quota"]);
    assert_eq!(status["Layers"], "0");

    env.create_rw("a", "").unwrap();
    assert!(env.exists("a"));
    let dir = env.root().join("subvolumes/a");
    assert!(is_subvolume(&dir), "{} is a subvolume", dir.display());
    assert!(!is_read_only(&dir));
    let m = fs::metadata(&dir).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
    assert_eq!(fs::read(env.root().join("meta/a")).unwrap(), b"rw\n0\n");

    let p = env.get("a").unwrap();
    assert_eq!(p, dir, "get answers the subvolume itself");
    assert_eq!(env.get("a").unwrap(), p);
    assert_eq!(env.status()["In Use"], "1");
    fs::write(p.join("f"), b"x").unwrap();
    env.put("a").unwrap();
    env.put("a").unwrap();
    expect_err(env.put("a"), ErrorKind::FailedPrecondition);
    assert_eq!(env.status()["In Use"], "0");

    let md = env.metadata("a").unwrap();
    assert_eq!(Path::new(&md["Dir"]), dir);
    assert_eq!((md["Parent"].as_str(), md["ReadWrite"].as_str()), ("", "true"));
    assert!(md["SubvolumeId"].parse::<u64>().unwrap() >= 256, "{md:?}");
    assert!(!md.contains_key("Size"));

    env.remove("a").unwrap();
    assert!(!env.exists("a") && !dir.exists() && !env.root().join("meta/a").exists());
    assert_eq!(env.status()["Layers"], "0");
    expect_err(env.remove("a"), ErrorKind::NotFound);
    expect_err(env.get("a"), ErrorKind::NotFound);
    let subvols = must("btrfs", &["subvolume", "list", "-o", env.root().to_str().unwrap()]);
    assert!(!subvols.contains("subvolumes/a"), "{subvols}");
}

#[test]
fn snapshots_see_their_parents_content_and_diverge() {
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    let p = env.get("base").unwrap();
    fs::write(p.join("file"), b"from base").unwrap();
    fs::create_dir(p.join("dir")).unwrap();
    fs::set_permissions(p.join("dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("file", p.join("link")).unwrap();
    std::os::unix::fs::lchown(p.join("file"), Some(1234), Some(5678)).unwrap();
    fs::hard_link(p.join("file"), p.join("hard")).unwrap();
    env.put("base").unwrap();

    env.create("ro", "base").unwrap();
    env.create_rw("rw", "ro").unwrap();
    for id in ["ro", "rw"] {
        let c = env.get(id).unwrap();
        assert!(is_subvolume(&c), "{id}");
        assert_eq!(fs::read(c.join("file")).unwrap(), b"from base", "{id}");
        assert_eq!(fs::read_link(c.join("link")).unwrap(), Path::new("file"), "{id}");
        let f = fs::metadata(c.join("file")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.nlink()), (1234, 5678, 2), "{id}");
        assert_eq!(fs::metadata(c.join("dir")).unwrap().mode() & 0o7777, 0o1777, "{id}");
        env.put(id).unwrap();
    }
    assert_eq!(env.metadata("rw").unwrap()["Parent"], "ro");

    // A change in the child stays in the child, and one in the parent
    // after the snapshot stays in the parent.
    env.write("rw", "file", b"changed in rw");
    env.write("base", "later", b"after the snapshots");
    let base = env.get("base").unwrap();
    assert_eq!(fs::read(base.join("file")).unwrap(), b"from base");
    let rw = env.get("rw").unwrap();
    assert!(!rw.join("later").exists());
    assert_eq!(fs::read(rw.join("file")).unwrap(), b"changed in rw");
    env.put("rw").unwrap();
    env.put("base").unwrap();
}

#[test]
fn read_only_layers_are_read_only_subvolumes_that_refuse_real_writes() {
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    env.write("base", "existing", b"original");
    env.create("snap", "base").unwrap();
    env.create("empty", "").unwrap();
    for id in ["snap", "empty"] {
        let p = env.get(id).unwrap();
        assert!(is_read_only(&p), "{id} is flagged read-only");
        assert!(env.fs.path().join("root/meta").join(id).exists());
        let errs = [
            fs::write(p.join("new"), b"x").unwrap_err(),
            fs::create_dir(p.join("d")).unwrap_err(),
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap_err(),
        ];
        for e in errs {
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{id}: {e}");
        }
        env.put(id).unwrap();
    }
    let snap = env.get("snap").unwrap();
    let append = fs::OpenOptions::new().append(true).open(snap.join("existing")).unwrap_err();
    assert_eq!(append.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::remove_file(snap.join("existing")).unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(snap.join("existing")).unwrap(), b"original");
    env.put("snap").unwrap();
    let empty = env.get("empty").unwrap();
    let m = fs::metadata(&empty).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
    assert_eq!(names(&empty), Vec::<String>::new());
    env.put("empty").unwrap();
    // The parent stays writable, and read-only layers are removable.
    env.write("base", "later", b"ok");
    env.remove("snap").unwrap();
    env.remove("empty").unwrap();
}

#[test]
fn a_parent_with_children_is_a_conflict_and_the_children_survive() {
    let env = Env::new();
    env.create_rw("parent", "").unwrap();
    env.write("parent", "marker", b"from parent");
    env.create("child", "parent").unwrap();
    env.create_rw("grandchild", "child").unwrap();
    for id in ["parent", "child"] {
        let e = expect_err(env.remove(id), ErrorKind::Conflict);
        assert!(e.message.contains(&format!("{id:?}")) && e.message.contains("remove the child"), "{e}");
    }
    for id in ["parent", "child", "grandchild"] {
        assert!(env.exists(id), "{id}");
        let p = env.get(id).unwrap();
        assert_eq!(fs::read(p.join("marker")).unwrap(), b"from parent", "{id}");
        env.put(id).unwrap();
    }
    env.remove("grandchild").unwrap();
    expect_err(env.remove("parent"), ErrorKind::Conflict);
    env.remove("child").unwrap();
    env.remove("parent").unwrap();
    assert_eq!(names(&env.root().join("subvolumes")), Vec::<String>::new());
    assert_eq!(names(&env.root().join("meta")), Vec::<String>::new());
}

#[test]
fn removing_a_layer_destroys_the_subvolumes_nested_in_it() {
    let env = Env::new();
    env.create_rw("ctr", "").unwrap();
    let p = env.get("ctr").unwrap();
    fs::create_dir(p.join("deep")).unwrap();
    must("btrfs", &["subvolume", "create", p.join("deep/inner").to_str().unwrap()]);
    must("btrfs", &["subvolume", "create", p.join("deep/inner/innermost").to_str().unwrap()]);
    must(
        "btrfs",
        &[
            "subvolume",
            "snapshot",
            "-r",
            p.join("deep/inner").to_str().unwrap(),
            p.join("ro").to_str().unwrap(),
        ],
    );
    fs::write(p.join("deep/inner/innermost/f"), b"x").unwrap();
    env.put("ctr").unwrap();
    env.remove("ctr").unwrap();
    assert!(!p.exists());
    let left = must("btrfs", &["subvolume", "list", env.fs.path().to_str().unwrap()]);
    assert!(!left.contains("subvolumes/ctr"), "{left}");
}

#[test]
fn a_reopened_driver_sweeps_half_made_subvolumes_and_keeps_records_consistent() {
    let mut env = Env::new();
    env.create("a", "").unwrap();
    env.create_rw("b", "a").unwrap();
    env.write("b", "kept", b"k");
    env.create("c", "b").unwrap();
    env.get("c").unwrap();
    let root = env.root();
    let sub = |n: &str| root.join("subvolumes").join(n);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    // A crash in every place it can happen:
    // a staging subvolume with a subvolume nested in it,
    must("btrfs", &["subvolume", "create", &path(&sub(".berth-create-999-0"))]);
    must("btrfs", &["subvolume", "create", &path(&sub(".berth-create-999-0").join("nested"))]);
    // a read-only staging snapshot,
    must("btrfs", &["subvolume", "snapshot", "-r", &path(&sub("b")), &path(&sub(".berth-create-999-1"))]);
    // a subvolume renamed into place but without its record,
    must("btrfs", &["subvolume", "snapshot", &path(&sub("b")), &path(&sub("orphan"))]);
    // a record whose subvolume was destroyed, a half-written record,
    fs::write(root.join("meta/ghost"), b"rw\n0\n").unwrap();
    fs::write(root.join("meta/.berth-meta-999-2"), b"r").unwrap();
    // and a read-only layer whose flag was lost.
    must("btrfs", &["property", "set", "-ts", &path(&sub("c")), "ro", "false"]);

    env.reopen();
    assert_eq!(names(&root.join("subvolumes")), ["a", "b", "c"]);
    assert_eq!(names(&root.join("meta")), ["a", "b", "c"]);
    assert_eq!(env.status()["Layers"], "3");
    assert!(!env.exists("orphan") && !env.exists("ghost"));
    assert!(is_read_only(&sub("a")) && is_read_only(&sub("c")) && !is_read_only(&sub("b")));
    let b = env.metadata("b").unwrap();
    assert_eq!((b["Parent"].as_str(), b["ReadWrite"].as_str()), ("a", "true"));
    assert_eq!(fs::read(sub("c").join("kept")).unwrap(), b"k");
    let listed = must("btrfs", &["subvolume", "list", env.fs.path().to_str().unwrap()]);
    assert_eq!(listed.lines().count(), 3, "only the three layers are left: {listed}");
    // References do not survive the process that took them.
    expect_err(env.put("c"), ErrorKind::FailedPrecondition);
    expect_err(env.remove("a"), ErrorKind::Conflict);
    // The ids are usable again.
    env.create_rw("orphan", "c").unwrap();
    env.create("ghost", "").unwrap();
    assert_eq!(fs::read(env.get("orphan").unwrap().join("kept")).unwrap(), b"k");
    env.put("orphan").unwrap();
}

#[test]
fn a_subvolume_left_at_a_layers_name_does_not_block_the_id() {
    let env = Env::new();
    let debris = env.root().join("subvolumes/x");
    must("btrfs", &["subvolume", "create", debris.to_str().unwrap()]);
    fs::write(debris.join("junk"), b"j").unwrap();
    env.create("x", "").unwrap();
    assert_eq!(names(&env.get("x").unwrap()), Vec::<String>::new());
    env.put("x").unwrap();
}

#[test]
fn quota_limits_a_layer_when_quotas_are_enabled() {
    let env = Env::new();
    if let Err(e) = env.fs.enable_quota() {
        println!("skipped: this kernel cannot enable btrfs quotas: {e}");
        return;
    }
    assert!(env.status()["Quota"].starts_with("enabled"), "{}", env.status()["Quota"]);
    match env.create_sized("q", "", "8M", true) {
        Ok(()) => {}
        // ENOTSUP or EINVAL from the qgroup ioctls.
        Err(e) if e.message.contains("(os error 95)") || e.message.contains("(os error 22)") => {
            println!("skipped: this kernel refuses qgroup limits: {e}");
            return;
        }
        Err(e) => panic!("create with size=8M: {e}"),
    }
    let md = env.metadata("q").unwrap();
    assert_eq!(md["Size"], (8u64 << 20).to_string());
    assert_eq!(fs::read(env.root().join("meta/q")).unwrap(), format!("rw\n{}\n", 8u64 << 20).into_bytes());
    let p = env.get("q").unwrap();
    let err = write_until_refused(&p.join("big"), 32 << 20);
    assert!(matches!(err.raw_os_error(), Some(libc::EDQUOT | libc::ENOSPC)), "{err}");
    env.put("q").unwrap();
    let qgroups = must("btrfs", &["qgroup", "show", "-r", "--raw", env.fs.path().to_str().unwrap()]);
    let id = &md["SubvolumeId"];
    let line = qgroups.lines().find(|l| l.starts_with(&format!("0/{id} "))).unwrap_or_default();
    assert!(line.contains(&(8u64 << 20).to_string()), "qgroup 0/{id} limited: {qgroups}");

    // A read-only snapshot can be limited too; an unlimited layer is not.
    env.create_sized("q-ro", "q", "16M", false).unwrap();
    env.create_rw("free", "").unwrap();
    let p = env.get("free").unwrap();
    write_until_refused_ok(&p.join("big"), 24 << 20);
    env.put("free").unwrap();
    env.remove("q-ro").unwrap();
    env.remove("q").unwrap();
}

/// Writes up to `bytes` to `path` in 1 MiB steps, syncing, and returns the
/// error that stopped it (panics if nothing did).
fn write_until_refused(path: &Path, bytes: usize) -> std::io::Error {
    use std::io::Write;
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    for _ in 0..bytes >> 20 {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            return e;
        }
    }
    panic!("{bytes} bytes written to {} past the limit", path.display());
}

/// Writes `bytes` to `path`, which must succeed.
fn write_until_refused_ok(path: &Path, bytes: usize) {
    fs::write(path, vec![0x5au8; bytes]).unwrap();
}

#[test]
fn size_without_quotas_is_unsupported_and_names_the_command() {
    let env = Env::new();
    let e = expect_err(env.create_sized("q", "", "10M", true), ErrorKind::Unsupported);
    let cmd = format!("btrfs quota enable {}", env.fs.path().display());
    assert!(e.message.contains(&cmd) && e.message.contains("\"q\""), "{e}");
    assert!(!env.exists("q"));
    for (key, value) in [("size", "0"), ("size", "lots"), ("color", "blue")] {
        let mut req = CreateRequest::new("q", "");
        req.storage_opt.insert(key.into(), value.into());
        expect_err(env.driver.create_rw(req), ErrorKind::InvalidArgument);
    }
    assert_eq!(names(&env.root().join("subvolumes")), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn on_ext4_the_driver_declines_naming_the_filesystem() {
    let dir = tempfile::Builder::new().prefix("berth-btrfs-ext4-").tempdir_in("/var/tmp").unwrap();
    let fs_name = berth_plugin_api::util::quota::filesystem_name(dir.path()).unwrap();
    if fs_name != "ext4" {
        println!("skipped: /var/tmp is on {fs_name} here, not ext4");
        return;
    }
    for sub in ["", "not/yet/made"] {
        let base = dir.path().join(sub);
        match open(&base).unwrap() {
            Init::Skipped(why) => {
                assert!(why.contains("ext4") && why.contains("btrfs"), "{why}");
                assert!(why.contains(base.join("root").to_str().unwrap()), "{why}");
            }
            Init::Ready(_) => panic!("btrfs must decline on ext4"),
        }
    }
    assert_eq!(names(dir.path()), Vec::<String>::new(), "nothing created on a filesystem it declined");
}

#[test]
fn ids_options_and_references_are_checked() {
    let env = Env::new();
    env.create("ok", "").unwrap();
    for bad in ["", "a/b", ".", "..", "a\0b", ".berth-create-1-1", &"x".repeat(251)] {
        expect_err(env.create(bad, ""), ErrorKind::InvalidArgument);
        expect_err(env.create_rw(bad, ""), ErrorKind::InvalidArgument);
        expect_err(env.get(bad), ErrorKind::InvalidArgument);
        expect_err(env.remove(bad), ErrorKind::InvalidArgument);
        assert!(!env.exists(bad), "{bad:?}");
    }
    expect_err(env.create("ok", ""), ErrorKind::AlreadyExists);
    expect_err(env.create_rw("new", "missing"), ErrorKind::NotFound);
    assert!(!env.exists("new"));
    let e =
        expect_err(open_with(env.fs.path(), serde_json::json!({ "bogus": 1 })), ErrorKind::InvalidArgument);
    assert!(e.message.contains("bogus"), "{e}");
    env.get("ok").unwrap();
    env.cleanup().unwrap();
    expect_err(env.put("ok"), ErrorKind::FailedPrecondition);
    assert_eq!(env.status()["Layers"], "1");
}

#[test]
fn concurrent_creates_of_one_id_have_exactly_one_winner() {
    const THREADS: usize = 8;
    let env = Env::new();
    env.create_rw("parent", "").unwrap();
    env.write("parent", "f", b"x");
    let barrier = Arc::new(Barrier::new(THREADS));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (driver, barrier) = (Arc::clone(&env.driver), Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    let req = CreateRequest::new("same", "parent");
                    if i % 2 == 0 {
                        driver.create(req)
                    } else {
                        driver.create_rw(req)
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{}", e.message);
    }
    assert_eq!(names(&env.root().join("subvolumes")), ["parent", "same"]);
}
