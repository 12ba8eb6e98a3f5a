//! Acceptance: an image whose layers hold whiteouts, an opaque directory, a
//! hardlink to a file of a lower layer, symlinks, a `user.*` xattr, modes,
//! owners and mtimes, loaded through the image service onto vfs, overlay2
//! and btrfs, gives a top layer equal to the flat result of applying every
//! layer onto one plain directory. Also: OCI layouts with gzip layers, and
//! a hostile archive refused with nothing left behind.

mod images_support;

use berth_core::layers::{self, ApplyOptions};
use berth_plugin_api::storage::{GetRequest, PutRequest};
use berth_plugin_api::ErrorKind;
use images_support::*;

const T1: u64 = 1_600_000_000;
const T2: u64 = 1_650_000_000;
const T3: u64 = 1_700_000_000;

/// The three layers.
fn layers() -> Vec<Vec<u8>> {
    let mut x = file("xfile", b"with an xattr\n", 0o640, (0, 0), T1);
    x.xattrs.push(("user.comment", b"hello"));
    let l1 = layer(&[
        dir("etc", 0o755, (0, 0), T1),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, (0, 0), T1),
        dir("usr", 0o755, (0, 0), T1),
        dir("usr/bin", 0o755, (0, 0), T1),
        file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755, (0, 0), T1 + 1),
        dir("data", 0o750, (1000, 1000), T1),
        file("data/secret", b"s3cret\n", 0o600, (1000, 1000), T1 + 2),
        dir("gone", 0o755, (0, 0), T1),
        file("gone/file", b"going away\n", 0o644, (0, 0), T1),
        dir("opq", 0o755, (0, 0), T1),
        file("opq/old1", b"hidden by opaque\n", 0o644, (0, 0), T1),
        dir("opq/sub", 0o755, (0, 0), T1),
        file("opq/sub/old2", b"hidden too\n", 0o644, (0, 0), T1),
        file("old.txt", b"old\n", 0o644, (0, 0), T1),
        file("suid", b"setuid binary\n", 0o4755, (0, 0), T1),
        symlink("link-to-passwd", "/etc/passwd", T1),
        symlink("rel-link", "usr/bin/tool", T1),
        x,
    ]);
    let mut xd = dir("xdir", 0o755, (0, 0), T2);
    xd.xattrs.push(("user.dir", b"1"));
    let l2 = layer(&[
        file(".wh.old.txt", b"", 0o644, (0, 0), T2),
        file(".wh.gone", b"", 0o644, (0, 0), T2),
        dir("opq", 0o711, (0, 0), T2),
        file("opq/.wh..wh..opq", b"", 0o644, (0, 0), T2),
        file("opq/new", b"only this shows\n", 0o644, (0, 0), T2),
        dir("usr", 0o755, (0, 0), T1),
        dir("usr/bin", 0o755, (0, 0), T2),
        hardlink("usr/bin/tool-hardlink", "usr/bin/tool"),
        dir("etc", 0o755, (0, 0), T2),
        file("etc/hosts", b"127.0.0.1 localhost\n", 0o644, (0, 0), T2),
        xd,
        file("xdir/inside", b"in a dir with an xattr\n", 0o644, (0, 0), T2),
    ]);
    let l3 = layer(&[
        dir("etc", 0o755, (0, 0), T3),
        file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
            0o644,
            (0, 0),
            T3,
        ),
        file("etc/.wh.hosts", b"", 0o644, (0, 0), T3),
        symlink("link-to-passwd", "./etc/passwd", T3),
        dir("newdir", 0o700, (1000, 100), T3),
        dir("newdir/deep", 0o755, (0, 0), T3),
        file("newdir/deep/file", b"deep\n", 0o444, (1000, 100), T3),
        file("newdir/a", b"linked twice\n", 0o644, (0, 0), T3),
        hardlink("newdir/b", "newdir/a"),
    ]);
    vec![l1, l2, l3]
}

/// The flat result: every layer applied onto one plain directory.
fn flat(layers: &[Vec<u8>]) -> (tempfile::TempDir, Snapshot) {
    let t = tempfile::Builder::new().prefix("berth-img-flat").tempdir_in("/var/tmp").unwrap();
    for l in layers {
        layers::apply(t.path(), l.as_slice(), &ApplyOptions::default()).unwrap();
    }
    let s = snapshot(t.path());
    (t, s)
}

/// Loads the image onto `subject`'s driver and compares the top layer.
fn compare(name: &str, subject: Option<Subject>, gzipped: bool) {
    let Some(subject) = subject else {
        println!("SKIP {name}: driver not available here");
        return;
    };
    let layers = layers();
    let mut img = Img::new(layers.clone(), "2024-01-02T03:04:05Z", &[("flat", "yes")], &["flat:1"]);
    if gzipped {
        img = img.gzipped();
    }
    let archive = if gzipped { oci_archive(&[&img]) } else { docker_archive(&[&img]) };
    let state = tempfile::tempdir().unwrap();
    let (svc, _store) = service(&subject.driver, state.path());
    let mut seen = Vec::new();
    let loaded = svc.load(&mut archive.as_slice(), &mut |p| seen.push(p.clone())).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, img.id());
    assert_eq!(loaded[0].tags, ["flat:1"]);
    assert!(seen.iter().any(|p| p.layer == 3 && p.state == berth_core::LayerState::Applied), "{seen:?}");

    let top = img.chains().last().unwrap().trim_start_matches("sha256:").to_string();
    let get = GetRequest::new(top.clone());
    let path = subject.driver.call("get", move |d| d.get(get)).unwrap().path;
    let got = snapshot(std::path::Path::new(&path));
    let put = PutRequest::new(top);
    subject.driver.call("put", move |d| d.put(put)).unwrap();
    let (_flat_dir, want) = flat(&layers);
    let diffs = differences(&want, &got);
    assert!(diffs.is_empty(), "{name}: top layer differs from the flat result:\n{}", diffs.join("\n"));
    // The oracle sees what the test meant to build.
    assert!(want.entries.contains_key(std::path::Path::new("opq/new")));
    assert!(!want.entries.contains_key(std::path::Path::new("opq/old1")));
    assert!(!want.entries.contains_key(std::path::Path::new("gone")));
    assert_eq!(
        want.entries[std::path::Path::new("xfile")].xattrs.get("user.comment").map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert!(want.links.iter().any(|g| g.len() == 2 && g[0].ends_with("usr/bin/tool")), "{:?}", want.links);

    let inspect = svc.inspect("flat:1").unwrap();
    assert_eq!(inspect.root_fs.layers.len(), 3);
    assert_eq!(inspect.graph_driver.name, subject.driver.name());
    svc.remove("flat:1", false).unwrap();
    for c in img.chains() {
        assert!(!exists(&subject.driver, c.trim_start_matches("sha256:")), "{name}: layer {c} left after rm");
    }
}

#[test]
fn images_flat_vfs() {
    compare("vfs", vfs(), false);
}

#[test]
fn images_flat_overlay2() {
    compare("overlay2", overlay2(), false);
}

#[test]
fn images_flat_btrfs() {
    compare("btrfs", btrfs(), false);
}

#[test]
fn images_flat_oci_gzip_vfs() {
    compare("vfs (OCI layout, gzip layers)", vfs(), true);
}

#[test]
fn images_flat_oci_gzip_overlay2() {
    compare("overlay2 (OCI layout, gzip layers)", overlay2(), true);
}

/// A layer with `../escape` is refused; no layer, record, blob or spool is
/// left, and nothing appears outside the layer root.
fn hostile(name: &str, subject: Option<Subject>) {
    let Some(subject) = subject else {
        println!("SKIP {name}: driver not available here");
        return;
    };
    let base = layer(&[dir("etc", 0o755, (0, 0), T1), file("etc/ok", b"fine\n", 0o644, (0, 0), T1)]);
    let evil = raw_layer("../escape", b"pwned\n");
    let img = Img::new(vec![base, evil], "2024-01-01T00:00:00Z", &[], &["evil:1"]);
    let state = tempfile::tempdir().unwrap();
    let (svc, store) = service(&subject.driver, state.path());
    let err = load(&svc, &docker_archive(&[&img])).expect_err("a hostile layer must be refused");
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("escape") || err.message.contains(".."), "unclear error: {err}");
    assert_eq!(svc.count(), 0);
    assert!(svc.resolve("evil:1").is_err());
    for c in img.chains() {
        assert!(!exists(&subject.driver, c.trim_start_matches("sha256:")), "{name}: layer {c} left behind");
    }
    assert!(store.pending().unwrap().is_empty(), "{:?}", store.pending().unwrap());
    assert!(store.list::<serde_json::Value>("layer/").unwrap().is_empty());
    assert!(store.list::<serde_json::Value>("image/").unwrap().is_empty());
    let blobs = std::fs::read_dir(state.path().join("images/blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 0, "blobs left behind");
    assert_eq!(std::fs::read_dir(state.path().join("images/tmp")).unwrap().count(), 0, "spool left behind");
    let top = subject.root.parent().unwrap();
    assert!(find_named(top, "escape").is_empty(), "{name}: a file escaped: {:?}", find_named(top, "escape"));
    assert!(find_named(state.path(), "escape").is_empty());
}

#[test]
fn images_hostile_archive_vfs() {
    hostile("vfs", vfs());
}

#[test]
fn images_hostile_archive_overlay2() {
    hostile("overlay2", overlay2());
}
