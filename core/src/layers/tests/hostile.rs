//! Hostile layers: each fails with an invalid-argument error, and a
//! sentinel tree beside the root is left exactly as it was (contents,
//! modes, owners, times, ctimes, link counts, xattrs), as is the listing of
//! the directory holding both.

use std::path::Path;

use berth_plugin_api::ErrorKind;

use super::oracle::{assert_same, snapshot};
use super::*;
use crate::layers::{apply, ApplyOptions};

/// A root and a sentinel side by side.
struct Scene {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    sentinel: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let t = tmp();
        let base = t.path().to_path_buf();
        let (root, sentinel) = (base.join("root"), base.join("sentinel"));
        std::fs::create_dir(&root).unwrap();
        file(&sentinel, "file", b"precious\n", 0o644, (0, 0));
        file(&sentinel, "dir/inner", b"also precious\n", 0o600, (0, 0));
        dir(&root, "somedir", 0o755, (0, 0));
        stamp_all(&sentinel, 1_500_000_000);
        Scene { _tmp: t, base, root, sentinel }
    }

    /// The sentinel's absolute path, as bytes, joined with `rest`.
    fn abs(&self, rest: &str) -> Vec<u8> {
        let mut p = bytes(&self.sentinel);
        if !rest.is_empty() {
            p.push(b'/');
            p.extend_from_slice(rest.as_bytes());
        }
        p
    }

    fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Applies `tar` with `opts`; it must fail as invalid and leave the
    /// sentinel and the base listing untouched.
    fn refused_with(&self, tar: Vec<u8>, opts: &ApplyOptions) {
        let (before, listing) = (snapshot(&self.sentinel, true), self.listing());
        let err = apply(&self.root, tar.as_slice(), opts).expect_err("a hostile layer must be refused");
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
        assert_same(&before, &snapshot(&self.sentinel, true));
        assert_eq!(listing, self.listing(), "nothing is created beside the root");
    }

    fn refused(&self, tar: Vec<u8>) {
        self.refused_with(tar, &ApplyOptions::default());
    }

    /// A symlink in the root (as if from a lower layer) to the sentinel.
    fn lower_symlink(&self, name: &str, rest: &str) {
        symlink(&self.root, name, std::ffi::OsStr::from_bytes(&self.abs(rest)));
    }
}

#[test]
fn layers_hostile_absolute_path() {
    let s = Scene::new();
    s.refused(RawTar::default().file(s.abs("evil"), b"x").finish());
}

#[test]
fn layers_hostile_dotdot_path() {
    let s = Scene::new();
    s.refused(RawTar::default().file("../sentinel/evil", b"x").finish());
    s.refused(RawTar::default().file("somedir/../../sentinel/file", b"overwritten").finish());
}

#[test]
fn layers_hostile_symlink_escaping_by_dotdot() {
    let s = Scene::new();
    s.refused(RawTar::default().symlink("esc", "../sentinel").finish());
    s.refused(RawTar::default().symlink("somedir/esc", "../../sentinel").symlink("ok", "x").finish());
}

#[test]
fn layers_hostile_write_through_a_symlink_of_the_layer() {
    let s = Scene::new();
    let abs = s.abs("");
    s.refused(RawTar::default().symlink("esc", &abs).file("esc/evil", b"x").finish());
    s.refused(RawTar::default().symlink("esc2", &abs).file("esc2/file", b"overwritten").finish());
    s.refused(RawTar::default().symlink("esc3", &abs).entry("esc3/newdir/", b'5', b"", b"").finish());
    s.refused(RawTar::default().symlink("esc4", "somedir").file("esc4/through", b"x").finish());
}

#[test]
fn layers_hostile_write_through_a_symlink_from_below() {
    let s = Scene::new();
    s.lower_symlink("esc", "");
    s.refused(RawTar::default().file("esc/evil", b"x").finish());
    s.refused(RawTar::default().file("esc/dir/inner", b"overwritten").finish());
}

#[test]
fn layers_hostile_hardlink_escaping() {
    let s = Scene::new();
    s.refused(RawTar::default().hardlink("hl", "../sentinel/file").finish());
    s.refused(RawTar::default().hardlink("hl", s.abs("file")).finish());
}

#[test]
fn layers_hostile_hardlink_through_a_symlink() {
    let s = Scene::new();
    let abs = s.abs("");
    s.refused(RawTar::default().symlink("esc", &abs).hardlink("hl", "esc/file").finish());
    s.lower_symlink("low", "");
    s.refused(RawTar::default().hardlink("hl2", "low/file").finish());
    s.refused(RawTar::default().hardlink("hl3", "low/dir/inner").finish());
}

#[test]
fn layers_hostile_hardlink_to_a_directory_or_nothing() {
    let s = Scene::new();
    s.refused(RawTar::default().hardlink("hl", "somedir").finish());
    s.refused(RawTar::default().hardlink("hl", "missing").finish());
}

#[test]
fn layers_hostile_whiteout_through_a_symlink() {
    let s = Scene::new();
    let abs = s.abs("");
    s.refused(RawTar::default().symlink("esc", &abs).file("esc/.wh.file", b"").finish());
    s.refused(RawTar::default().symlink("esc2", &abs).file("esc2/.wh..wh..opq", b"").finish());
    s.lower_symlink("low", "");
    s.refused(RawTar::default().file("low/.wh.file", b"").finish());
    s.refused(RawTar::default().file("low/.wh..wh..opq", b"").finish());
    s.refused(RawTar::default().file("low/dir/.wh.inner", b"").finish());
    s.refused(RawTar::default().file("low/dir/.wh..wh..opq", b"").finish());
    s.refused(RawTar::default().file("../sentinel/.wh.file", b"").finish());
}

#[test]
fn layers_hostile_device_nodes_when_not_allowed() {
    let s = Scene::new();
    s.refused(RawTar::default().entry("dev/mem", b'3', b"", b"").finish());
    s.refused(RawTar::default().entry("dev/sda", b'4', b"", b"").finish());
    let no_fifos = ApplyOptions { allow_fifos: false, ..ApplyOptions::default() };
    s.refused_with(RawTar::default().entry("run/fifo", b'6', b"", b"").finish(), &no_fifos);
    assert!(!s.root.join("dev").exists(), "nothing is made for a refused node");
}

#[test]
fn layers_hostile_malformed_tars() {
    let s = Scene::new();
    let mut truncated = RawTar::default().file("big", &[1u8; 4096]).finish();
    truncated.truncate(512 + 1000);
    s.refused(truncated);
    let mut bad_sum = RawTar::default().file("x", b"x").finish();
    bad_sum[148] ^= 1;
    s.refused(bad_sum);
    s.refused(RawTar::default().file("a/.wh.b/c", b"x").finish());
}

#[test]
fn layers_replacing_a_symlink_from_below_never_follows_it() {
    let s = Scene::new();
    s.lower_symlink("f", "file");
    s.lower_symlink("d", "dir");
    let before = snapshot(&s.sentinel, true);
    let tar =
        RawTar::default().file("f", b"mine").entry("d", b'5', b"", b"").symlink("l", "../../x/..").finish();
    // The last entry climbs out and fails; the first two have replaced
    // their symlinks without touching the sentinel.
    let err = apply(&s.root, tar.as_slice(), &ApplyOptions::default()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert_same(&before, &snapshot(&s.sentinel, true));
    assert_eq!(std::fs::read(s.root.join("f")).unwrap(), b"mine");
    assert!(std::fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
}

#[test]
fn layers_whiteout_of_a_symlink_removes_the_link_only() {
    let s = Scene::new();
    s.lower_symlink("d", "dir");
    let before = snapshot(&s.sentinel, true);
    apply(&s.root, RawTar::default().file(".wh.d", b"").finish().as_slice(), &ApplyOptions::default())
        .unwrap();
    assert!(std::fs::symlink_metadata(s.root.join("d")).is_err());
    assert_same(&before, &snapshot(&s.sentinel, true));
    assert!(Path::new(&s.sentinel).join("dir/inner").exists());
}
