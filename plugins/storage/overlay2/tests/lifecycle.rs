//! overlay2 through the real ABI path: its layout, deep chains, mounts and
//! their reference counts, read-only layers, restarts after a crash,
//! options. Needs root and overlay in the kernel.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::CreateRequest;
use berth_plugin_api::{ErrorKind, Init, Kind};
use common::*;

#[test]
fn the_plugin_declares_storage_with_a_native_diff() {
    let module = PluginModule::linked(berth_storage_overlay2::export::berth_plugin_root());
    let m = module.manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), ("overlay2", [Kind::Storage].as_slice()));
    let env = Env::new();
    assert!(env.driver.as_diff().is_some(), "the diff dir is the diff on this host");
}

#[test]
fn layers_are_laid_out_as_moby_does() {
    let env = Env::new();
    let root = env.root();
    env.create("base", "").unwrap();
    env.create_rw("top", "base").unwrap();
    let link = |id: &str| fs::read_to_string(root.join(id).join("link")).unwrap();
    let (base, top) = (link("base"), link("top"));
    for short in [&base, &top] {
        assert_eq!(short.len(), 26, "{short}");
        assert!(short.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "{short}");
    }
    assert_eq!(fs::read_link(root.join("l").join(&base)).unwrap(), Path::new("../base/diff"));
    assert_eq!(fs::read_link(root.join("l").join(&top)).unwrap(), Path::new("../top/diff"));
    assert_eq!(fs::read_to_string(root.join("top/lower")).unwrap(), format!("l/{base}"));
    assert!(!root.join("base/lower").exists(), "a base layer has no lower file");
    assert!(root.join("top/work").is_dir() && root.join("top/diff").is_dir());
    assert_eq!(names(&root.join("l")), {
        let mut v = vec![base.clone(), top.clone()];
        v.sort();
        v
    });

    let md = env.metadata("top").unwrap();
    assert_eq!(PathBuf::from(&md["UpperDir"]), root.join("top/diff"));
    assert_eq!(PathBuf::from(&md["LowerDir"]), root.join("base/diff"));
    assert_eq!(PathBuf::from(&md["MergedDir"]), root.join("top/merged"));
    assert_eq!((md["Parent"].as_str(), md["ReadWrite"].as_str()), ("base", "true"));

    let p = env.get("top").unwrap();
    assert_eq!(p, root.join("top/merged"));
    assert_eq!(env.mounts(), vec![p.clone()]);
    fs::write(p.join("new"), b"n").unwrap();
    env.put("top").unwrap();
    assert_eq!(fs::read(root.join("top/diff/new")).unwrap(), b"n", "writes land in the layer's diff");
    assert!(!root.join("top/merged").exists(), "the mount point goes with the last put");

    env.remove("top").unwrap();
    assert!(!root.join("top").exists() && !root.join("l").join(&top).exists());
    assert_eq!(names(&root.join(".berth/tmp")), Vec::<String>::new());
}

#[test]
fn a_read_write_base_layer_is_its_diff_dir() {
    let env = Env::new();
    env.create_rw("rw", "").unwrap();
    let p = env.get("rw").unwrap();
    assert_eq!(p, env.root().join("rw/diff"));
    assert!(env.mounts().is_empty(), "nothing to mount");
    fs::write(p.join("x"), b"x").unwrap();
    env.put("rw").unwrap();
    expect_err(env.put("rw"), ErrorKind::FailedPrecondition);
}

#[test]
fn a_128_layer_chain_mounts_and_shows_every_file() {
    for api in APIS {
        let env = Env::with_api(api);
        assert_eq!(env.status()["Mount API"], if api == "mount" { "mount(2)" } else { "fsconfig" });
        env.chain(128);
        // The read-write top: 127 lower dirs and an upper dir.
        let top = env.get("c127").unwrap();
        let mut want: Vec<String> = (0..128).map(|i| format!("f{i}")).collect();
        want.sort();
        assert_eq!(names(&top), want, "{api}: the top shows the file of every layer");
        assert_eq!(fs::read_to_string(top.join("f0")).unwrap(), "0");
        env.put("c127").unwrap();
        // A read-only view on it: 128 lower dirs, and a container layer on
        // that: 128 lower dirs and an upper dir.
        env.create("view", "c127").unwrap();
        env.create_rw("ctr", "c127").unwrap();
        for id in ["view", "ctr"] {
            let p = env.get(id).unwrap();
            assert_eq!(names(&p), want, "{api}: {id}");
            env.put(id).unwrap();
        }
        assert!(env.mounts().is_empty());
        // 128 parents is the limit.
        let e = expect_err(env.create("c128-child", "view"), ErrorKind::FailedPrecondition);
        assert!(e.message.contains("128"), "{e}");
    }
}

#[test]
fn gets_are_reference_counted() {
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    for id in ["ro", "rw"] {
        if id == "ro" {
            env.create(id, "base").unwrap();
        } else {
            env.create_rw(id, "base").unwrap();
        }
        let p1 = env.get(id).unwrap();
        let p2 = env.get(id).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(env.mounts(), vec![p1.clone()], "one mount for two references");
        assert_eq!(env.status()["Mounted"], "1");
        env.put(id).unwrap();
        assert_eq!(env.mounts(), vec![p1.clone()], "still mounted after the first put");
        assert!(p1.is_dir());
        env.put(id).unwrap();
        assert!(env.mounts().is_empty(), "the last put unmounts");
        assert_eq!(env.status()["Mounted"], "0");
        let e = expect_err(env.put(id), ErrorKind::FailedPrecondition);
        assert!(e.message.contains(&format!("{id:?}")), "{e}");
    }
}

#[test]
fn a_read_only_layer_refuses_real_writes() {
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    fs::write(env.get("base").unwrap().join("existing"), b"old").unwrap();
    env.put("base").unwrap();
    env.create("ro", "base").unwrap();
    env.create("ro-base", "").unwrap();
    for id in ["ro", "ro-base"] {
        let p = env.get(id).unwrap();
        let write = fs::write(p.join("new"), b"x");
        let mkdir = fs::create_dir(p.join("d"));
        let rename = fs::rename(p.join("existing"), p.join("moved"));
        env.put(id).unwrap();
        assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS), "{id}");
        assert_eq!(mkdir.unwrap_err().raw_os_error(), Some(libc::EROFS), "{id}");
        assert!(rename.is_err(), "{id}");
        assert_eq!(names(&env.upper_of(id)), Vec::<String>::new(), "nothing reached layer {id:?}");
    }
    assert_eq!(fs::read(env.upper_of("base").join("existing")).unwrap(), b"old");
}

#[test]
fn a_killed_daemons_mounts_are_cleaned_on_reopen() {
    let mut env = Env::new();
    env.chain(3);
    env.create("ro", "c2").unwrap();
    let mounted = [env.get("c2").unwrap(), env.get("ro").unwrap(), env.get("ro").unwrap()];
    // A container's own mount inside the merged view, and a half-made layer.
    fs::create_dir(mounted[0].join("proc")).unwrap();
    rustix::mount::mount_bind("/proc", mounted[0].join("proc")).unwrap();
    fs::create_dir_all(env.root().join(".berth/tmp/create-1-1/diff")).unwrap();
    assert_eq!(env.mounts().len(), 3);

    env.reopen(); // no cleanup: the daemon was killed
    assert!(env.mounts().is_empty(), "stale mounts swept at start: {:?}", env.mounts());
    assert!(!mounted[0].exists() && !mounted[1].exists(), "stale mount points removed");
    assert_eq!(names(&env.root().join(".berth/tmp")), Vec::<String>::new(), "half-made layers swept");
    assert_eq!(env.status()["Layers"], "4");
    assert_eq!(fs::read_to_string(env.upper_of("c1").join("f1")).unwrap(), "1");
    expect_err(env.put("ro"), ErrorKind::FailedPrecondition);
    let again = env.get("ro").unwrap();
    assert_eq!(names(&again), ["f0", "f1", "f2", "proc"]);
    env.put("ro").unwrap();
    expect_err(env.remove("c0"), ErrorKind::Conflict);
}

#[test]
fn cleanup_unmounts_everything_and_the_driver_keeps_working() {
    let env = Env::new();
    env.chain(2);
    env.create("ro", "c1").unwrap();
    env.create("ro-base", "").unwrap();
    for id in ["c1", "ro", "ro", "ro-base", "c0"] {
        env.get(id).unwrap();
    }
    assert_eq!(env.mounts().len(), 3);
    env.cleanup().unwrap();
    assert!(env.mounts().is_empty());
    for id in ["c1", "ro", "c0"] {
        expect_err(env.put(id), ErrorKind::FailedPrecondition);
    }
    env.cleanup().unwrap();
    env.get("ro").unwrap();
    env.put("ro").unwrap();
    assert!(env.mounts().is_empty());
}

#[test]
fn removing_a_mounted_layer_unmounts_it_but_not_through_a_foreign_mount() {
    let env = Env::new();
    env.chain(2);
    env.get("c1").unwrap();
    env.get("c1").unwrap();
    env.remove("c1").unwrap();
    assert!(env.mounts().is_empty());
    expect_err(env.put("c1"), ErrorKind::NotFound);

    let p = env.get("c0").unwrap();
    fs::create_dir(p.join("proc")).unwrap();
    rustix::mount::mount_bind("/proc", p.join("proc")).unwrap();
    let e = expect_err(env.remove("c0"), ErrorKind::Conflict);
    assert!(e.message.contains("proc"), "{e}");
    rustix::mount::unmount(p.join("proc"), rustix::mount::UnmountFlags::DETACH).unwrap();
    env.put("c0").unwrap();
    env.remove("c0").unwrap();
    assert_eq!(env.status()["Layers"], "0");
}

#[test]
fn size_is_a_typed_unsupported_error_without_project_quotas() {
    let env = Env::new();
    let quota = env.status()["Quota"].clone();
    if !quota.starts_with("unsupported") {
        eprintln!("skipped: this host has project quotas ({quota})");
        return;
    }
    for rw in [true, false] {
        let mut req = CreateRequest::new("q", "");
        req.storage_opt.insert("size".into(), "10M".into());
        let res = if rw { env.driver.create_rw(req) } else { env.driver.create(req) };
        let e = expect_err(res, ErrorKind::Unsupported);
        assert!(e.message.contains("\"q\"") && e.message.contains("quota"), "{e}");
    }
    let mut req = CreateRequest::new("q", "");
    req.storage_opt.insert("size".into(), "lots".into());
    expect_err(env.driver.create_rw(req), ErrorKind::InvalidArgument);
    let mut req = CreateRequest::new("q", "");
    req.storage_opt.insert("color".into(), "blue".into());
    expect_err(env.driver.create_rw(req), ErrorKind::InvalidArgument);
    assert!(!env.exists("q"));
}

#[test]
fn options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for bad in
        [serde_json::json!({ "bogus": 1 }), serde_json::json!({ "mount_api": "fuse" }), serde_json::json!(3)]
    {
        let Err(e) = open_with(dir.path(), bad.clone()) else { panic!("{bad} accepted") };
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    }
    for api in ["auto", "fsconfig", "mount"] {
        let Init::Ready(_) = open_with(dir.path(), serde_json::json!({ "mount_api": api })).unwrap() else {
            panic!("{api} declined")
        };
    }
}

#[test]
fn reserved_and_invalid_ids_are_invalid_arguments() {
    let env = Env::new();
    for bad in ["", "l", ".berth", "..", "a/b", &"x".repeat(251)] {
        expect_err(env.create(bad, ""), ErrorKind::InvalidArgument);
        expect_err(env.get(bad), ErrorKind::InvalidArgument);
        assert!(!env.exists(bad));
    }
    expect_err(env.create("child", "missing"), ErrorKind::NotFound);
    expect_err(env.create("x", "l"), ErrorKind::InvalidArgument);
}

#[test]
fn status_describes_the_host() {
    let env = Env::new();
    env.create("a", "").unwrap();
    let s = env.status();
    assert_eq!(
        s["Backing Filesystem"],
        berth_plugin_api::util::quota::filesystem_name(env.dir.path()).unwrap()
    );
    assert_eq!(s["Supports d_type"], "true");
    assert_eq!(s["Native Overlay Diff"], "true");
    assert_eq!(PathBuf::from(&s["Root Dir"]), env.root());
    assert_eq!(s["Layers"], "1");
}

#[test]
fn a_root_inside_an_overlay_is_skipped_with_the_reason() {
    let env = Env::new();
    env.chain(2);
    let merged = env.get("c1").unwrap();
    let inner = open_with(&merged.join("nested"), serde_json::Value::Null);
    env.put("c1").unwrap();
    match inner.unwrap() {
        Init::Skipped(why) => assert!(why.contains("overlay"), "{why}"),
        Init::Ready(_) => panic!("overlay2 accepted an overlay as its upper file system"),
    }
}
