//! The storage contract of vfs, through the real ABI path: lifecycle,
//! errors and their kinds, mounts and their reference counts, restarts.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use berth_plugin_api::ffi::PluginModule;
use berth_plugin_api::storage::CreateRequest;
use berth_plugin_api::{ErrorKind, Kind};
use common::*;

#[test]
fn the_plugin_declares_storage_and_no_diff() {
    let module = PluginModule::linked(berth_storage_vfs::export::berth_plugin_root());
    let m = module.manifest();
    assert_eq!((m.name.as_str(), m.kinds.as_slice()), ("vfs", [Kind::Storage].as_slice()));
    assert!(module.describe()["description"].as_str().unwrap().contains("copy"));
    let env = Env::new();
    assert!(env.driver.as_diff().is_none(), "the core diffs vfs layers itself");
}

#[test]
fn lifecycle_exists_and_status_tell_the_truth() {
    let env = Env::new();
    assert!(!env.exists("a"));
    assert_eq!(env.status()["Layers"], "0");
    env.create("a", "").unwrap();
    assert!(env.exists("a"));
    assert_eq!(env.status()["Layers"], "1");
    let path = env.get("a").unwrap();
    assert_eq!(path, env.run_root().join("mnt/a"));
    assert_eq!(env.status()["Mounted"], "1");
    env.put("a").unwrap();
    assert_eq!(env.status()["Mounted"], "0");
    env.remove("a").unwrap();
    assert!(!env.exists("a"));
    assert_eq!(env.status()["Layers"], "0");
    assert!(!env.root().join("dir/a").exists() && !env.root().join("meta/a.json").exists());
}

#[test]
fn status_and_metadata_describe_the_driver_and_the_layer() {
    let env = Env::new();
    env.create("base", "").unwrap();
    env.create_rw("top", "base").unwrap();
    let status = env.status();
    assert_eq!(PathBuf::from(&status["Root Dir"]), env.root());
    assert_eq!(status["Layers"], "2");
    let base = env.metadata("base").unwrap();
    assert_eq!(base["Parent"], "");
    assert_eq!(base["ReadWrite"], "false");
    assert_eq!(PathBuf::from(&base["Dir"]), env.root().join("dir/base"));
    let top = env.metadata("top").unwrap();
    assert_eq!((top["Parent"].as_str(), top["ReadWrite"].as_str()), ("base", "true"));
}

#[test]
fn a_read_only_layer_refuses_a_real_write() {
    let env = Env::new();
    env.create("ro", "").unwrap();
    let path = env.get("ro").unwrap();
    let write = fs::write(path.join("new"), b"x");
    let mkdir = fs::create_dir(path.join("d"));
    let mounted = env.mounts().contains(&path);
    env.put("ro").unwrap();
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert_eq!(mkdir.unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert!(mounted, "{} is a mount point while in use", path.display());
    assert_eq!(fs::read_dir(env.dir_of("ro")).unwrap().count(), 0, "nothing reached the layer");
}

#[test]
fn a_read_write_layer_is_its_directory() {
    let env = Env::new();
    env.create_rw("rw", "").unwrap();
    let path = env.get("rw").unwrap();
    assert_eq!(path, env.dir_of("rw"));
    fs::write(path.join("new"), b"x").unwrap();
    env.put("rw").unwrap();
    assert!(env.mounts().is_empty(), "no mount for a read-write layer");
    env.create("child", "rw").unwrap();
    assert_eq!(fs::read(env.dir_of("child").join("new")).unwrap(), b"x");
}

#[test]
fn gets_are_reference_counted() {
    let env = Env::new();
    env.create("ro", "").unwrap();
    let p1 = env.get("ro").unwrap();
    let p2 = env.get("ro").unwrap();
    assert_eq!(p1, p2);
    assert_eq!(env.mounts(), vec![p1.clone()], "one mount for two references");
    env.put("ro").unwrap();
    assert_eq!(env.mounts(), vec![p1.clone()], "still mounted after the first put");
    let still_ro = fs::write(p1.join("x"), b"x").unwrap_err().raw_os_error();
    assert_eq!(still_ro, Some(libc::EROFS));
    env.put("ro").unwrap();
    assert!(env.mounts().is_empty(), "the last put unmounts");
    let e = expect_err(env.put("ro"), ErrorKind::FailedPrecondition);
    assert!(e.message.contains("\"ro\""), "{}", e.message);

    env.create_rw("rw", "").unwrap();
    env.get("rw").unwrap();
    env.put("rw").unwrap();
    expect_err(env.put("rw"), ErrorKind::FailedPrecondition);
}

#[test]
fn a_layer_with_children_cannot_be_removed_and_top_down_removal_works() {
    let env = Env::new();
    env.create("parent", "").unwrap();
    env.create("child", "parent").unwrap();
    let e = expect_err(env.remove("parent"), ErrorKind::Conflict);
    assert!(e.message.contains("\"parent\"") && e.message.contains("\"child\""), "{}", e.message);
    assert!(env.exists("parent"));
    env.remove("child").unwrap();
    env.remove("parent").unwrap();
    assert!(!env.exists("parent") && !env.exists("child"));
}

#[test]
fn an_existing_id_is_already_exists_and_an_id_is_reusable_after_remove() {
    let env = Env::new();
    env.create_rw("a", "").unwrap();
    fs::write(env.get("a").unwrap().join("old"), b"x").unwrap();
    env.put("a").unwrap();
    let e = expect_err(env.create("a", ""), ErrorKind::AlreadyExists);
    assert!(e.message.contains("\"a\""), "{}", e.message);
    expect_err(env.create_rw("a", ""), ErrorKind::AlreadyExists);
    assert!(env.dir_of("a").join("old").exists(), "a refused create changes nothing");
    env.remove("a").unwrap();
    env.create("a", "").unwrap();
    assert_eq!(env.metadata("a").unwrap()["ReadWrite"], "false");
    assert_eq!(fs::read_dir(env.dir_of("a")).unwrap().count(), 0, "a fresh layer");
}

#[test]
fn unknown_ids_are_not_found_and_exists_says_false() {
    let env = Env::new();
    let e = expect_err(env.create("child", "missing"), ErrorKind::NotFound);
    assert!(e.message.contains("\"missing\""), "{}", e.message);
    assert!(!env.exists("child"), "a failed create leaves nothing");
    for e in [
        env.get("nope").unwrap_err(),
        env.put("nope").unwrap_err(),
        env.remove("nope").unwrap_err(),
        env.metadata("nope").unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
        assert!(e.message.contains("\"nope\""), "{}", e.message);
    }
    assert!(!env.exists("nope"));
}

#[test]
fn invalid_ids_are_invalid_arguments() {
    let env = Env::new();
    env.create("ok", "").unwrap();
    for bad in ["", "a/b", "/", ".", "..", "a\0b", &"x".repeat(251)] {
        expect_err(env.create(bad, ""), ErrorKind::InvalidArgument);
        expect_err(env.create_rw(bad, ""), ErrorKind::InvalidArgument);
        expect_err(env.get(bad), ErrorKind::InvalidArgument);
        expect_err(env.put(bad), ErrorKind::InvalidArgument);
        expect_err(env.remove(bad), ErrorKind::InvalidArgument);
        expect_err(env.metadata(bad), ErrorKind::InvalidArgument);
        assert!(!env.exists(bad), "{bad:?}");
        if !bad.is_empty() {
            expect_err(env.create("child", bad), ErrorKind::InvalidArgument);
        }
    }
    assert_eq!(env.status()["Layers"], "1");
    assert!(env.root().join("dir/ok").is_dir(), "nothing escaped");
}

#[test]
fn concurrent_creates_of_one_id_have_exactly_one_winner() {
    const THREADS: usize = 8;
    let env = Env::new();
    env.create_rw("parent", "").unwrap();
    let p = env.get("parent").unwrap();
    for i in 0..200 {
        fs::write(p.join(format!("f{i}")), vec![i as u8; 4096]).unwrap();
    }
    env.put("parent").unwrap();
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
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.kind, ErrorKind::AlreadyExists, "{}", r.message);
    }
    assert_eq!(fs::read_dir(env.dir_of("same")).unwrap().count(), 200);
    assert_eq!(fs::read_dir(env.root().join("tmp")).unwrap().count(), 0, "losers cleaned up");
}

#[test]
fn removing_a_mounted_layer_unmounts_it_first() {
    let env = Env::new();
    env.create("ro", "").unwrap();
    env.get("ro").unwrap();
    env.get("ro").unwrap();
    env.remove("ro").unwrap();
    assert!(env.mounts().is_empty());
    assert!(!env.run_root().join("mnt/ro").exists());
    expect_err(env.put("ro"), ErrorKind::NotFound);
}

#[test]
fn a_reopened_driver_lists_the_same_layers_and_sweeps_stale_mounts() {
    let mut env = Env::new();
    env.create("a", "").unwrap();
    env.create_rw("b", "a").unwrap();
    env.create("c", "b").unwrap();
    let mounted = env.get("c").unwrap();
    fs::write(env.dir_of("b").join("kept"), b"k").unwrap();
    // Leftovers of a crashed create.
    fs::create_dir_all(env.root().join("tmp/create-1-1/half")).unwrap();
    assert_eq!(env.mounts(), vec![mounted.clone()]);

    env.reopen(); // no cleanup: a crash
    assert!(env.mounts().is_empty(), "stale mount swept at start");
    assert!(!mounted.exists(), "stale mount point removed");
    assert_eq!(fs::read_dir(env.root().join("tmp")).unwrap().count(), 0, "temp dirs swept");
    assert_eq!(env.status()["Layers"], "3");
    for id in ["a", "b", "c"] {
        assert!(env.exists(id), "{id}");
    }
    let b = env.metadata("b").unwrap();
    assert_eq!((b["Parent"].as_str(), b["ReadWrite"].as_str()), ("a", "true"));
    assert_eq!(env.metadata("c").unwrap()["ReadWrite"], "false");
    assert_eq!(fs::read(env.dir_of("b").join("kept")).unwrap(), b"k");
    expect_err(env.put("c"), ErrorKind::FailedPrecondition);
    let again = env.get("c").unwrap();
    assert_eq!(env.mounts(), vec![again]);
    env.put("c").unwrap();
    expect_err(env.remove("a"), ErrorKind::Conflict);
}

#[test]
fn cleanup_unmounts_everything_it_mounted() {
    let env = Env::new();
    for id in ["x", "y", "z"] {
        env.create(id, "").unwrap();
    }
    env.create_rw("w", "").unwrap();
    env.get("x").unwrap();
    env.get("x").unwrap();
    env.get("y").unwrap();
    env.get("w").unwrap();
    assert_eq!(env.mounts().len(), 2);
    env.cleanup().unwrap();
    assert!(env.mounts().is_empty());
    assert_eq!(fs::read_dir(env.run_root().join("mnt")).unwrap().count(), 0);
    expect_err(env.put("x"), ErrorKind::FailedPrecondition);
    expect_err(env.put("w"), ErrorKind::FailedPrecondition);
    // Idempotent, and the driver keeps working.
    env.cleanup().unwrap();
    env.get("z").unwrap();
    env.put("z").unwrap();
}

#[test]
fn unknown_option_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = expect_err(open_with(dir.path(), serde_json::json!({ "bogus": 1 })), ErrorKind::InvalidArgument);
    assert!(e.message.contains("bogus"), "{}", e.message);
    open_with(dir.path(), serde_json::json!({})).unwrap();
}

#[test]
fn storage_options_size_is_unsupported_and_others_invalid() {
    let env = Env::new();
    let mut req = CreateRequest::new("q", "");
    req.storage_opt.insert("size".into(), "1G".into());
    expect_err(env.driver.create(req), ErrorKind::Unsupported);
    let mut req = CreateRequest::new("q", "");
    req.storage_opt.insert("color".into(), "blue".into());
    expect_err(env.driver.create_rw(req), ErrorKind::InvalidArgument);
    assert!(!env.exists("q"));
}
