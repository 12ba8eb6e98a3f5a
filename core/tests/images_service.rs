//! The image service on vfs: shared layers stored once, removal, tags
//! moving between images, name resolution, listing filters, save → load
//! round trips, and reconcile after a crash (in a child process).

mod images_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_core::images::ImageService;
use berth_core::{DeleteItem, Filters};
use berth_plugin_api::ErrorKind;
use images_support::*;

fn base() -> Vec<u8> {
    layer(&[
        dir("etc", 0o755, (0, 0), 1_600_000_000),
        file("etc/os", b"base\n", 0o644, (0, 0), 1_600_000_000),
    ])
}

fn top(n: &str) -> Vec<u8> {
    let name = format!("app/{n}");
    let data = format!("app {n}\n");
    layer(&[
        dir("app", 0o755, (0, 0), 1_600_000_000),
        file(&name, data.as_bytes(), 0o644, (0, 0), 1_600_000_000),
    ])
}

/// vfs behind a counting proxy, and the service over it.
struct World {
    _subject: Subject,
    root: std::path::PathBuf,
    counting: Arc<Counting>,
    state: tempfile::TempDir,
    svc: ImageService,
}

fn world() -> Option<World> {
    let subject = vfs()?;
    let counting = Arc::new(Counting::new(subject.raw.clone()));
    let driver = wrap(counting.clone(), "vfs");
    let state = tempfile::tempdir().unwrap();
    let (svc, _) = service(&driver, state.path());
    Some(World { root: subject.root.clone(), _subject: subject, counting, state, svc })
}

fn hexes(chains: &[String]) -> BTreeSet<String> {
    chains.iter().map(|c| c.trim_start_matches("sha256:").to_string()).collect()
}

fn blob_count(state: &Path) -> usize {
    std::fs::read_dir(state.join("images/blobs/sha256")).unwrap().count()
}

#[test]
fn images_shared_layer_is_stored_once_and_rm_releases_layers_top_down() {
    let Some(w) = world() else { return };
    let a = Img::new(vec![base(), top("a")], "2024-01-01T00:00:00Z", &[], &["app:a"]);
    let b = Img::new(vec![base(), top("b")], "2024-01-02T00:00:00Z", &[], &["app:b"]);
    load(&w.svc, &docker_archive(&[&a])).unwrap();
    assert_eq!(w.counting.creates.load(Ordering::SeqCst), 2);
    let mut seen = Vec::new();
    w.svc.load(&mut docker_archive(&[&b]).as_slice(), &mut |p| seen.push((p.layer, p.state))).unwrap();
    assert_eq!(w.counting.creates.load(Ordering::SeqCst), 3, "the shared base must not be created again");
    assert!(seen.contains(&(1, berth_core::LayerState::Exists)), "{seen:?}");
    let all: BTreeSet<String> = hexes(&a.chains()).union(&hexes(&b.chains())).cloned().collect();
    assert_eq!(vfs_layers(&w.root), all);
    assert_eq!(w.svc.count(), 2);

    // rm by tag (the last one): untag, delete, the unshared top layer goes.
    let items = w.svc.remove("app:a", false).unwrap();
    assert_eq!(items[0], DeleteItem { untagged: Some("app:a".into()), deleted: None });
    assert_eq!(items[1].deleted.as_deref(), Some(a.id().as_str()));
    assert_eq!(items[2].deleted.as_deref(), Some(a.chains()[1].as_str()));
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(vfs_layers(&w.root), hexes(&b.chains()));
    let removes: Vec<String> =
        w.counting.calls.lock().unwrap().iter().filter(|c| c.starts_with("remove")).cloned().collect();
    assert_eq!(removes, [format!("remove {}", a.chains()[1].trim_start_matches("sha256:"))]);

    // rm by id: everything goes, top-down; so do the blobs.
    let items = w.svc.remove(&b.id(), false).unwrap();
    let deleted: Vec<&str> = items.iter().filter_map(|i| i.deleted.as_deref()).collect();
    assert_eq!(deleted, [b.id().as_str(), b.chains()[1].as_str(), b.chains()[0].as_str()]);
    assert!(vfs_layers(&w.root).is_empty());
    assert_eq!(blob_count(w.state.path()), 0);
    assert_eq!(w.svc.count(), 0);
    assert_eq!(w.svc.remove("app:b", false).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn images_tags_move_to_the_newer_image_and_rm_by_id_needs_force_across_repos() {
    let Some(w) = world() else { return };
    let old = Img::new(vec![base()], "2024-01-01T00:00:00Z", &[("v", "1")], &["demo:1", "demo:latest"]);
    let new = Img::new(vec![base(), top("x")], "2024-02-01T00:00:00Z", &[("v", "2")], &["demo:1"]);
    load(&w.svc, &docker_archive(&[&old])).unwrap();
    let loaded = load(&w.svc, &docker_archive(&[&new])).unwrap();
    assert_eq!(loaded[0].tags, ["demo:1"]);
    assert_eq!(w.svc.resolve("demo:1").unwrap(), new.id());
    assert_eq!(w.svc.resolve("demo").unwrap(), old.id());
    assert_eq!(w.svc.inspect(&old.id()).unwrap().repo_tags, ["demo:latest"]);
    // Loading the same archive again changes nothing.
    load(&w.svc, &docker_archive(&[&new])).unwrap();
    assert_eq!(w.svc.count(), 2);

    // A third image takes demo:latest: the old one is left dangling.
    let third = Img::new(vec![top("y")], "2024-03-01T00:00:00Z", &[], &["demo:latest", "other:1"]);
    load(&w.svc, &docker_archive(&[&third])).unwrap();
    let dangling =
        w.svc.list(&Filters::from_pairs(["dangling=true"], &["dangling"]).unwrap(), false).unwrap();
    assert_eq!(dangling.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), [old.id()]);
    assert!(dangling[0].repo_tags.is_empty());

    // By id with tags in two repositories: refused unless forced.
    let e = w.svc.remove(&third.id(), false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    let short = &third.id()["sha256:".len()..][..12];
    assert_eq!(
        e.message,
        format!("unable to delete {short} (must be forced) - image is referenced in multiple repositories")
    );
    let items = w.svc.remove(&third.id(), true).unwrap();
    let untagged: BTreeSet<&str> = items.iter().filter_map(|i| i.untagged.as_deref()).collect();
    assert_eq!(untagged, BTreeSet::from(["demo:latest", "other:1"]));
    // By tag when the image has more tags: untag only.
    let two = Img::new(vec![top("z")], "2024-04-01T00:00:00Z", &[], &["z:1", "z:2"]);
    load(&w.svc, &docker_archive(&[&two])).unwrap();
    assert_eq!(
        w.svc.remove("z:1", false).unwrap(),
        [DeleteItem { untagged: Some("z:1".into()), deleted: None }]
    );
    assert_eq!(w.svc.inspect("z:2").unwrap().repo_tags, ["z:2"]);
    // By id with tags of one repository: no force needed.
    let items = w.svc.remove(&two.id(), false).unwrap();
    assert_eq!(items[0].untagged.as_deref(), Some("z:2"));
}

#[test]
fn images_names_resolve_by_tag_name_id_and_unique_prefix() {
    let Some(w) = world() else { return };
    // Images until two share their first hex digit (an ambiguous prefix).
    let mut imgs: Vec<Img> = Vec::new();
    let shared = loop {
        let n = imgs.len();
        let label = n.to_string();
        let img = Img::new(vec![base()], "2024-01-01T00:00:00Z", &[("n", &label)], &[]);
        let first = img.id()["sha256:".len()..].chars().next().unwrap();
        let clash = imgs.iter().any(|i| i.id()["sha256:".len()..].starts_with(first));
        imgs.push(img);
        if clash {
            break first;
        }
    };
    let refs: Vec<&Img> = imgs.iter().collect();
    load(&w.svc, &docker_archive(&refs)).unwrap();
    let tagged =
        Img::new(vec![base()], "2024-01-01T00:00:00Z", &[("n", "tagged")], &["web:1.0", "web:latest"]);
    load(&w.svc, &docker_archive(&[&tagged])).unwrap();
    let id = tagged.id();
    let hex = &id["sha256:".len()..];
    assert_eq!(w.svc.resolve("web:1.0").unwrap(), id);
    assert_eq!(w.svc.resolve("web").unwrap(), id);
    assert_eq!(w.svc.resolve("docker.io/library/web:latest").unwrap(), id);
    assert_eq!(w.svc.resolve(&id).unwrap(), id);
    assert_eq!(w.svc.resolve(hex).unwrap(), id);
    let unique = (1..=64).map(|n| &hex[..n]).find(|p| w.svc.resolve(p).is_ok_and(|r| r == id)).unwrap();
    assert!(unique.len() < 64);
    assert_eq!(w.svc.resolve(&format!("sha256:{unique}")).unwrap(), id);
    let e = w.svc.resolve(&shared.to_string()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("ambiguous"), "{e}");
    for missing in ["web:2", "nothing", "sha256:zz", &"f".repeat(64)] {
        if w.svc.resolve(missing).is_ok() {
            continue; // "f…" could, in theory, be a real prefix
        }
        assert_eq!(w.svc.resolve(missing).unwrap_err().kind, ErrorKind::NotFound, "{missing}");
    }
}

#[test]
fn images_list_filters_and_inspect_shape() {
    let Some(w) = world() else { return };
    let a = Img::new(vec![base()], "2024-01-01T00:00:00Z", &[("tier", "db")], &["db:1"]);
    let b = Img::new(
        vec![base(), top("b")],
        "2024-02-01T00:00:00Z",
        &[("tier", "web")],
        &["web:1", "acme/web:2"],
    );
    let c = Img::new(vec![top("c")], "2024-03-01T00:00:00Z", &[], &[]);
    load(&w.svc, &docker_archive(&[&a, &b, &c])).unwrap();
    let f = |pairs: &[&str]| {
        let filters = Filters::from_pairs(pairs.iter().copied(), berth_core::images::LIST_FILTERS).unwrap();
        w.svc.list(&filters, false).map(|l| l.into_iter().map(|s| (s.id, s.repo_tags)).collect::<Vec<_>>())
    };
    let all = f(&[]).unwrap();
    assert_eq!(all.iter().map(|x| x.0.clone()).collect::<Vec<_>>(), [c.id(), b.id(), a.id()], "newest first");
    assert_eq!(f(&["label=tier=db"]).unwrap(), [(a.id(), vec!["db:1".to_string()])]);
    assert_eq!(f(&["reference=web"]).unwrap(), [(b.id(), vec!["web:1".to_string()])]);
    assert_eq!(f(&["reference=*/web:*"]).unwrap(), [(b.id(), vec!["acme/web:2".to_string()])]);
    assert_eq!(f(&["before=web:1"]).unwrap(), [(a.id(), vec!["db:1".to_string()])]);
    assert_eq!(f(&["since=web:1"]).unwrap(), [(c.id(), vec![])]);
    assert_eq!(f(&["dangling=false"]).unwrap().len(), 2);
    assert_eq!(f(&["before=nope"]).unwrap_err().kind, ErrorKind::NotFound);
    let bad = Filters::from_pairs(["colour=red"], &["colour"]).unwrap();
    let e = w.svc.list(&bad, true).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("invalid filter 'colour'"), "{e}");

    let s = &w.svc.list(&Filters::none(), true).unwrap()[1];
    let json = serde_json::to_value(s).unwrap();
    for key in [
        "Id",
        "ParentId",
        "RepoTags",
        "RepoDigests",
        "Created",
        "Size",
        "SharedSize",
        "VirtualSize",
        "Labels",
        "Containers",
    ] {
        assert!(json.get(key).is_some(), "summary lacks {key}: {json}");
    }
    assert_eq!(json["Created"], 1_706_745_600);
    assert_eq!(json["SharedSize"], -1);
    let i = serde_json::to_value(w.svc.inspect("web:1").unwrap()).unwrap();
    assert_eq!(i["Id"], b.id());
    assert_eq!(i["Created"], "2024-02-01T00:00:00Z");
    assert_eq!(i["Author"], "berth tests");
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(i["Config"]["Labels"]["tier"], "web");
    assert_eq!(i["Config"]["Hostname"], "");
    assert!(i["Config"].get("Healthcheck").is_none());
    assert!(i.get("Variant").is_none());
    assert_eq!(i["RootFS"]["Type"], "layers");
    assert_eq!(i["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(i["GraphDriver"]["Name"], "vfs");
    assert!(i["Metadata"]["LastTagTime"].as_str().unwrap().starts_with("20"));
    assert!(i["Size"].as_i64().unwrap() > 0);
    assert_eq!(w.svc.inspect("nope").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn images_save_then_load_gives_the_same_ids_and_blobs() {
    let Some(w) = world() else { return };
    let a =
        Img::new(vec![base(), top("a")], "2024-01-01T00:00:00Z", &[], &["round:a", "round:latest"]).gzipped();
    let b = Img::new(vec![base(), top("b")], "2024-01-02T00:00:00Z", &[], &["other:b"]);
    let c = Img::new(vec![top("c")], "2024-01-03T00:00:00Z", &[], &[]);
    load(&w.svc, &oci_archive(&[&a])).unwrap();
    load(&w.svc, &docker_archive(&[&b, &c])).unwrap();
    let mut saved = Vec::new();
    let names = ["round".to_string(), "other:b".to_string(), c.id()[7..19].to_string()];
    w.svc.save(&names, &mut saved).unwrap();

    // It is both a docker save archive and an OCI layout.
    let mut files = BTreeSet::new();
    let mut ar = tar::Archive::new(saved.as_slice());
    for e in ar.entries().unwrap() {
        files.insert(e.unwrap().path().unwrap().display().to_string());
    }
    for f in ["manifest.json", "index.json", "oci-layout"] {
        assert!(files.contains(f), "{f} missing from {files:?}");
    }
    for blob in a.blobs.iter().chain(&b.blobs).chain(&c.blobs) {
        assert!(files.contains(&format!("blobs/sha256/{}", sha(blob))), "layer blob missing");
    }

    // Into a fresh daemon: same ids, same tags, same layers.
    let Some(other) = vfs() else { return };
    let state = tempfile::tempdir().unwrap();
    let (svc2, _) = service(&other.driver, state.path());
    let loaded = load(&svc2, &saved).unwrap();
    let ids: BTreeSet<String> = loaded.iter().map(|l| l.id.clone()).collect();
    assert_eq!(ids, BTreeSet::from([a.id(), b.id(), c.id()]));
    assert_eq!(svc2.resolve("round:a").unwrap(), a.id());
    assert_eq!(svc2.resolve("round").unwrap(), a.id());
    assert_eq!(svc2.resolve("other:b").unwrap(), b.id());
    assert!(svc2.inspect(&c.id()).unwrap().repo_tags.is_empty());
    let want: BTreeSet<String> = [a.chains(), b.chains(), c.chains()].iter().flat_map(|c| hexes(c)).collect();
    assert_eq!(vfs_layers(&other.root), want);

    // Only the OCI index: the same images again (tags from annotations).
    let mut only_oci = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(saved.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if path == "manifest.json" {
            continue;
        }
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        only_oci.append_data(&mut h, &path, data.as_slice()).unwrap();
    }
    let Some(third) = vfs() else { return };
    let state3 = tempfile::tempdir().unwrap();
    let (svc3, _) = service(&third.driver, state3.path());
    load(&svc3, &only_oci.into_inner().unwrap()).unwrap();
    assert_eq!(svc3.resolve("round:latest").unwrap(), a.id());
    assert_eq!(svc3.count(), 3);

    assert_eq!(
        w.svc.save(&["missing:1".to_string()], &mut Vec::new()).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn images_invalid_tags_in_an_archive_are_refused_before_anything_is_stored() {
    let Some(w) = world() else { return };
    let img = Img::new(vec![base()], "2024-01-01T00:00:00Z", &[], &["Bad/Name:1"]);
    let e = load(&w.svc, &docker_archive(&[&img])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert_eq!(w.counting.creates.load(Ordering::SeqCst), 0);
    assert_eq!(w.svc.count(), 0);
}

// ------------------------------------------------------------ crash safety

/// Set in the child: where its state and vfs root are.
const CHILD_ENV: &str = "BERTH_IMAGES_CRASH_CHILD";

/// Runs in a child process only: loads an image with `BERTH_CRASH_AT` set,
/// which aborts the process part way.
#[test]
fn images_crash_child() {
    let Ok(dirs) = std::env::var(CHILD_ENV) else { return };
    let (state, vfs_root) = dirs.split_once('|').unwrap();
    let driver = vfs_at(Path::new(vfs_root));
    let crash_at = std::env::var("BERTH_CRASH_AT").ok();
    let (svc, _) = service_with(&driver, Path::new(state), crash_at);
    let img = crash_image();
    let _ = load(&svc, &docker_archive(&[&img]));
    if std::env::var("BERTH_IMAGES_CRASH_RM").is_ok() {
        let _ = svc.remove("crash:1", false);
    }
    panic!("the crash point was not reached");
}

fn crash_image() -> Img {
    Img::new(vec![base(), top("crash")], "2024-01-01T00:00:00Z", &[], &["crash:1"])
}

/// Crashes a child at `point` (after loading normally first when `rm`),
/// then re-opens the service and reconciles as the engine does.
fn crash_then_reconcile(point: &str, rm: bool) {
    let Some(subject) = vfs() else { return };
    let state = tempfile::tempdir().unwrap();
    if rm {
        let (svc, _) = service(&subject.driver, state.path());
        load(&svc, &docker_archive(&[&crash_image()])).unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "images_crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{}", state.path().display(), subject.root.display()))
        .env("BERTH_CRASH_AT", point);
    if rm {
        child.env("BERTH_IMAGES_CRASH_RM", "1");
    }
    let out = child.output().unwrap();
    assert!(!out.status.success(), "the child should have aborted at {point}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("crash point was not reached"),
        "{point} not reached"
    );

    let driver = vfs_at(&subject.root);
    let (svc, store) = service(&driver, state.path());
    let pending = store.pending().unwrap();
    assert!(!pending.is_empty(), "{point}: the crash left no intent");
    for (seq, intent) in pending {
        svc.reconcile(seq, &intent).unwrap();
    }
    svc.sweep().unwrap();
    assert!(store.pending().unwrap().is_empty());
    let img = crash_image();
    if rm {
        assert!(
            vfs_layers(&subject.root).is_empty(),
            "{point}: orphan layers {:?}",
            vfs_layers(&subject.root)
        );
        assert_eq!(svc.count(), 0, "{point}");
    } else {
        assert!(
            vfs_layers(&subject.root).is_empty(),
            "{point}: orphan layers {:?}",
            vfs_layers(&subject.root)
        );
        assert_eq!(svc.count(), 0);
        assert_eq!(blob_count(state.path()), 0, "{point}: orphan blobs");
        // And the load works afterwards.
        load(&svc, &docker_archive(&[&img])).unwrap();
        assert_eq!(vfs_layers(&subject.root), hexes(&img.chains()));
    }
}

#[test]
fn images_crash_after_layer_create_in_driver_leaves_no_orphan() {
    crash_then_reconcile("layer.create:after-driver", false);
}

#[test]
fn images_crash_after_layer_create_intent_leaves_no_orphan() {
    crash_then_reconcile("layer.create:after-intent", false);
}

#[test]
fn images_crash_before_image_records_leaves_no_orphan() {
    crash_then_reconcile("image.load:after-intent", false);
}

#[test]
fn images_crash_during_layer_remove_is_finished() {
    crash_then_reconcile("layer.remove:after-driver", true);
}
