//! The native diff of overlay2 through the ABI: OCI whiteouts out and in,
//! a diff applied to a fresh child gives the same tree, changes and sizes,
//! and hostile tars refused without touching anything outside the layer.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, ErrorKind};
use common::*;

/// A `security.capability` value (v2, cap_net_bind_service).
const CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn diff_of(env: &Env) -> &dyn DiffDriver {
    env.driver.as_diff().expect("overlay2 offers a native diff on this host")
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).unwrap();
}

/// One entry of a tree, as far as a diff must keep it (times to the
/// second: tar headers carry seconds).
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    owner: (u32, u32),
    mtime: i64,
    content: Vec<u8>,
    target: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    first_link: Option<PathBuf>,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for name in names(&root.join(&rel)) {
            let rel = rel.join(name);
            let path = root.join(&rel);
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let kind = [(ft.is_dir(), 'd'), (ft.is_file(), 'f'), (ft.is_symlink(), 'l'), (ft.is_fifo(), 'p')]
                .iter()
                .find(|(is, _)| *is)
                .map_or('c', |(_, k)| *k);
            if ft.is_dir() {
                todo.push(rel.clone());
            }
            let mut xattrs = BTreeMap::new();
            if !ft.is_symlink() {
                let mut list = vec![0u8; 4096];
                let n = rustix::fs::llistxattr(&path, &mut list[..]).unwrap();
                for x in list[..n].split(|b| *b == 0).filter(|x| !x.is_empty()) {
                    let x = String::from_utf8(x.to_vec()).unwrap();
                    let mut v = vec![0u8; 4096];
                    let len = rustix::fs::lgetxattr(&path, x.as_str(), &mut v[..]).unwrap();
                    v.truncate(len);
                    xattrs.insert(x, v);
                }
            }
            let first_link = (!ft.is_dir() && m.nlink() > 1)
                .then(|| inodes.entry((m.dev(), m.ino())).or_insert_with(|| rel.clone()).clone());
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode(),
                    owner: (m.uid(), m.gid()),
                    mtime: if ft.is_dir() { 0 } else { m.mtime() },
                    content: if ft.is_file() { fs::read(&path).unwrap() } else { Vec::new() },
                    target: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
                    rdev: m.rdev(),
                    xattrs,
                    first_link,
                },
            );
        }
    }
    out
}

/// `base`: a bit of everything; `top` on it: every kind of change.
fn base_and_top(env: &Env) {
    env.create_rw("base", "").unwrap();
    let b = env.get("base").unwrap();
    for f in ["keep", "change", "del", "orig", "dir/a", "dir/b", "dir2/x", "dir2/y"] {
        if let Some(parent) = Path::new(f).parent() {
            fs::create_dir_all(b.join(parent)).unwrap();
        }
        fs::write(b.join(f), format!("{f}\n")).unwrap();
    }
    set_xattr(&b.join("keep"), "user.berth", b"kept");
    std::os::unix::fs::lchown(b.join("keep"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(b.join("keep"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("keep", b.join("sl")).unwrap();
    env.put("base").unwrap();

    env.create_rw("top", "base").unwrap();
    let t = env.get("top").unwrap();
    fs::write(t.join("change"), "changed\n").unwrap();
    fs::set_permissions(t.join("change"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(t.join("del")).unwrap();
    fs::remove_dir_all(t.join("dir")).unwrap();
    fs::create_dir(t.join("dir")).unwrap();
    fs::write(t.join("dir/c"), "c\n").unwrap();
    fs::remove_file(t.join("dir2/x")).unwrap();
    fs::hard_link(t.join("orig"), t.join("orig2")).unwrap();
    fs::write(t.join("new"), "new\n").unwrap();
    set_xattr(&t.join("new"), "user.note", b"\x00binary\xff");
    set_xattr(&t.join("new"), "security.capability", &CAP);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        t.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("/outside/on/purpose", t.join("abs-link")).unwrap();
    env.put("top").unwrap();
}

#[test]
fn a_diff_applied_to_a_fresh_child_gives_the_same_tree() {
    let env = Env::new();
    base_and_top(&env);
    let d = diff_of(&env);
    let mut tar = Vec::new();
    d.diff(DiffRequest::new("top", "base"), &mut tar).unwrap();

    // OCI whiteouts, not overlay's.
    let mut archive = tar::Archive::new(tar.as_slice());
    let listed: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string())
        .collect();
    for want in [".wh.del", "dir/.wh..wh..opq", "dir2/.wh.x", "dir/c", "new", "orig2", "null", "fifo"] {
        assert!(listed.iter().any(|p| p == want), "{want} missing from {listed:?}");
    }
    assert!(!listed.iter().any(|p| p == "dir/a" || p == "keep"), "{listed:?}");

    env.create("copy", "base").unwrap();
    let size = d.apply_diff(ApplyDiffRequest::new("copy", "base"), &mut tar.as_slice()).unwrap().size;
    assert_eq!(size, d.diff_size(DiffSizeRequest::new("copy", "base")).unwrap());
    assert_eq!(size, d.diff_size(DiffSizeRequest::new("top", "base")).unwrap());
    assert_eq!(size, ("changed\n".len() + "c\n".len() + "orig\n".len() + "new\n".len()) as u64);

    let (t, c) = (env.get("top").unwrap(), env.get("copy").unwrap());
    let (want, got) = (snapshot(&t), snapshot(&c));
    env.put("top").unwrap();
    env.put("copy").unwrap();
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
    for (path, e) in &want {
        assert_eq!(e, &got[path], "{}", path.display());
    }
    assert!(!want.contains_key(Path::new("del")) && !want.contains_key(Path::new("dir/a")));
    assert_eq!(want[Path::new("keep")].mode & 0o7777, 0o4755);
    assert_eq!(got[Path::new("orig2")].first_link.as_deref(), Some(Path::new("orig")));
    assert_eq!(got[Path::new("new")].xattrs["security.capability"], CAP);

    // The copy's diff is the same tar again.
    let mut again = Vec::new();
    d.diff(DiffRequest::new("copy", "base"), &mut again).unwrap();
    assert_eq!(again, tar, "diffs are deterministic");
}

#[test]
fn changes_list_exactly_what_changed() {
    let env = Env::new();
    base_and_top(&env);
    let changes = diff_of(&env).changes(ChangesRequest::new("top", "base")).unwrap();
    let got: Vec<(String, ChangeKind)> = changes.into_iter().map(|c| (c.path, c.kind)).collect();
    use ChangeKind::*;
    let want: Vec<(String, ChangeKind)> = [
        ("/abs-link", Add),
        ("/change", Modify),
        ("/del", Delete),
        ("/dir", Modify),
        ("/dir/a", Delete),
        ("/dir/b", Delete),
        ("/dir/c", Add),
        ("/dir2", Modify),
        ("/dir2/x", Delete),
        ("/fifo", Add),
        ("/new", Add),
        ("/null", Add),
        ("/orig", Modify),
        ("/orig2", Add),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), *k))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn other_pairs_and_busy_layers_are_refused_with_their_kinds() {
    let env = Env::new();
    env.chain(3);
    let d = diff_of(&env);
    let e = expect_err(d.diff(DiffRequest::new("c2", "c0"), &mut Vec::new()), ErrorKind::Unsupported);
    assert!(e.message.contains("\"c1\""), "{e}");
    expect_err(d.changes(ChangesRequest::new("c2", "")), ErrorKind::Unsupported);
    expect_err(d.diff_size(DiffSizeRequest::new("nope", "")), ErrorKind::NotFound);
    env.get("c2").unwrap();
    let e = expect_err(d.apply_diff(ApplyDiffRequest::new("c2", "c1"), &mut &[][..]), ErrorKind::Conflict);
    assert!(e.message.contains("mounted"), "{e}");
    env.put("c2").unwrap();
    // An empty tar is a valid, empty diff.
    let mut empty = Vec::new();
    tar::Builder::new(&mut empty).finish().unwrap();
    assert_eq!(d.apply_diff(ApplyDiffRequest::new("c2", "c1"), &mut empty.as_slice()).unwrap().size, 0);
}

/// A tar of raw entries `(path, type, link target, data)`, written with
/// the header fields set by hand so nothing sanitises the names.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..path.len()].copy_from_slice(path.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, *data).unwrap();
    }
    out.into_inner().unwrap()
}

#[test]
fn hostile_tars_are_refused_and_touch_nothing_outside_the_layer() {
    use tar::EntryType::*;
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), b"safe").unwrap();
    let out = outside.to_str().unwrap();
    let mut broken = raw_tar(&[("file", Regular, "", b"x")]);
    broken[108..116].copy_from_slice(b"notanum\0"); // the uid field
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a malformed header", broken),
        ("absolute path", raw_tar(&[(&format!("{out}/evil"), Regular, "", b"x")])),
        ("dot-dot", raw_tar(&[("../../outside/evil", Regular, "", b"x")])),
        ("dot-dot inside", raw_tar(&[("a/../../outside/evil", Regular, "", b"x")])),
        (
            "write through a symlink",
            raw_tar(&[("esc", Symlink, out, b""), ("esc/victim", Regular, "", b"pwned")]),
        ),
        (
            "whiteout through a symlink",
            raw_tar(&[("esc", Symlink, out, b""), ("esc/.wh.victim", Regular, "", b"")]),
        ),
        (
            "opaque through a symlink",
            raw_tar(&[("esc", Symlink, out, b""), ("esc/.wh..wh..opq", Regular, "", b"")]),
        ),
        ("hardlink out", raw_tar(&[("hl", Link, "../../outside/victim", b"")])),
        ("absolute hardlink", raw_tar(&[("hl", Link, &format!("{out}/victim"), b"")])),
        (
            "hardlink through a symlink",
            raw_tar(&[("esc", Symlink, out, b""), ("hl", Link, "esc/victim", b"")]),
        ),
        ("a char device 0/0", raw_tar(&[("fake-whiteout", Char, "", b"")])),
        (
            "directory through a symlink",
            raw_tar(&[("esc", Symlink, out, b""), ("esc/newdir", Directory, "", b"")]),
        ),
    ];
    env.create_rw("below", "").unwrap();
    fs::write(env.get("below").unwrap().join("only-below"), b"b").unwrap();
    env.put("below").unwrap();
    let d = diff_of(&env);
    for (i, (what, tar)) in cases.iter().enumerate() {
        let id = format!("h{i}");
        env.create(&id, "below").unwrap();
        let res = d.apply_diff(ApplyDiffRequest::new(&id, "below"), &mut tar.as_slice());
        let e = expect_err(res, ErrorKind::InvalidArgument);
        assert!(e.message.contains(&format!("{id:?}")), "{what}: {e}");
        assert_eq!(names(&outside), ["victim"], "{what}: nothing created outside");
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"safe", "{what}: nothing changed outside");
        assert!(!env.dir.path().join("evil").exists() && !env.root().join("evil").exists(), "{what}");
    }
}

fn set_times(path: &Path, secs: i64) {
    let t = rustix::fs::Timespec { tv_sec: secs, tv_nsec: 0 };
    let stamps = rustix::fs::Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(rustix::fs::CWD, path, &stamps, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut v = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(path, name, &mut v[..]).ok()?;
    v.truncate(n);
    Some(v)
}

#[test]
fn a_hardlink_to_a_lower_file_copies_it_up_first() {
    use tar::EntryType::*;
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    let b = env.upper_of("base");
    fs::create_dir(b.join("dir")).unwrap();
    fs::write(b.join("dir/orig2"), b"another lower file\n").unwrap();
    fs::write(b.join("orig"), b"orig\n").unwrap();
    fs::write(b.join("gone"), b"deleted in mid\n").unwrap();
    fs::create_dir(b.join("odir")).unwrap();
    fs::write(b.join("odir/f"), b"hidden by an opaque dir\n").unwrap();
    std::os::unix::fs::lchown(b.join("dir/orig2"), Some(1001), Some(1002)).unwrap();
    fs::set_permissions(b.join("dir/orig2"), fs::Permissions::from_mode(0o640)).unwrap();
    set_xattr(&b.join("dir/orig2"), "user.note", b"kept");
    set_xattr(&b.join("dir/orig2"), "security.capability", &CAP);
    set_xattr(&b.join("dir/orig2"), "trusted.overlay.berth-test", b"x");
    set_times(&b.join("dir/orig2"), 1_500_000_000);
    std::os::unix::fs::lchown(b.join("dir"), Some(1003), Some(1004)).unwrap();
    fs::set_permissions(b.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    set_xattr(&b.join("dir"), "user.dir", b"d");
    set_times(&b.join("dir"), 1_400_000_000);

    // A middle layer: `gone` deleted (a whiteout), `odir` made anew (opaque).
    env.create_rw("mid", "base").unwrap();
    let m = env.get("mid").unwrap();
    fs::remove_file(m.join("gone")).unwrap();
    fs::remove_dir_all(m.join("odir")).unwrap();
    fs::create_dir(m.join("odir")).unwrap();
    env.put("mid").unwrap();

    let d = diff_of(&env);
    let tar = raw_tar(&[("top3", Link, "dir/orig2", b""), (".wh.orig", Regular, "", b"")]);
    env.create("h", "mid").unwrap();
    let size = d.apply_diff(ApplyDiffRequest::new("h", "mid"), &mut tar.as_slice()).unwrap().size;
    assert_eq!(size, "another lower file\n".len() as u64, "the copied-up content counts");

    let u = env.upper_of("h");
    let (f, dir) = (u.join("dir/orig2"), u.join("dir"));
    let fm = fs::symlink_metadata(&f).expect("dir/orig2 copied up");
    assert_eq!(fs::read(&f).unwrap(), b"another lower file\n");
    assert_eq!((fm.mode() & 0o7777, fm.uid(), fm.gid(), fm.mtime()), (0o640, 1001, 1002, 1_500_000_000));
    assert_eq!(xattr(&f, "user.note").as_deref(), Some(&b"kept"[..]));
    assert_eq!(xattr(&f, "security.capability").as_deref(), Some(&CAP[..]));
    assert_eq!(xattr(&f, "trusted.overlay.berth-test"), None, "overlay's own xattrs stay below");
    let dm = fs::symlink_metadata(&dir).unwrap();
    assert_eq!((dm.mode() & 0o7777, dm.uid(), dm.gid(), dm.mtime()), (0o750, 1003, 1004, 1_400_000_000));
    assert_eq!(xattr(&dir, "user.dir").as_deref(), Some(&b"d"[..]));
    assert_eq!(xattr(&dir, "trusted.overlay.opaque"), None, "a copied-up directory is not opaque");
    let tm = fs::symlink_metadata(u.join("top3")).unwrap();
    assert_eq!((tm.dev(), tm.ino()), (fm.dev(), fm.ino()), "top3 is a link to the copy");
    assert!(fs::symlink_metadata(u.join("orig")).unwrap().file_type().is_char_device());

    let merged = env.get("h").unwrap();
    assert_eq!(fs::read(merged.join("top3")).unwrap(), b"another lower file\n");
    assert_eq!(fs::read(merged.join("dir/orig2")).unwrap(), b"another lower file\n");
    assert!(!merged.join("orig").exists() && !merged.join("gone").exists());
    env.put("h").unwrap();

    // Whited out or hidden by an opaque directory in a higher layer: absent.
    for (i, target) in ["gone", "odir/f", "nowhere", "dir/nowhere", "dir"].iter().enumerate() {
        let id = format!("w{i}");
        env.create(&id, "mid").unwrap();
        let tar = raw_tar(&[("hl", Link, target, b"")]);
        let e = expect_err(
            d.apply_diff(ApplyDiffRequest::new(&id, "mid"), &mut tar.as_slice()),
            ErrorKind::InvalidArgument,
        );
        assert!(e.message.contains(target), "{target}: {e}");
    }
}

#[test]
fn symlinks_may_not_climb_above_the_layer_root() {
    use tar::EntryType::*;
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    let d = diff_of(&env);
    let bad = [
        ("esc", "../../../../etc"),
        ("esc", "../evil-target"),
        ("a/esc", "../../evil"),
        ("a/b/esc", "x/../../../../evil"),
        ("esc", ""),
    ];
    for (i, (path, target)) in bad.iter().enumerate() {
        let id = format!("s{i}");
        env.create(&id, "base").unwrap();
        let tar = raw_tar(&[(path, Symlink, target, b"")]);
        let res = d.apply_diff(ApplyDiffRequest::new(&id, "base"), &mut tar.as_slice());
        expect_err(res, ErrorKind::InvalidArgument);
    }
    env.create("ok", "base").unwrap();
    let tar = raw_tar(&[
        ("ok-file", Regular, "", b"fine\n"),
        ("okdir/up", Symlink, "../ok-file", b""),
        ("a/b/c", Symlink, "../../ok-file", b""),
        ("abs", Symlink, "/etc/hostname", b""),
        ("dot", Symlink, "./x/../ok-file", b""),
    ]);
    d.apply_diff(ApplyDiffRequest::new("ok", "base"), &mut tar.as_slice()).unwrap();
    let merged = env.get("ok").unwrap();
    assert_eq!(fs::read(merged.join("okdir/up")).unwrap(), b"fine\n");
    assert_eq!(fs::read_link(merged.join("abs")).unwrap(), Path::new("/etc/hostname"));
    env.put("ok").unwrap();
}

#[test]
fn entries_under_a_lower_symlink_or_file_are_refused() {
    use tar::EntryType::*;
    let env = Env::new();
    let outside = env.dir.path().join("outside");
    fs::create_dir_all(outside.join("dir")).unwrap();
    fs::write(outside.join("passwd"), b"safe").unwrap();
    fs::write(outside.join("dir/inner"), b"safe").unwrap();
    env.create_rw("base", "").unwrap();
    let b = env.upper_of("base");
    std::os::unix::fs::symlink(&outside, b.join("low")).unwrap();
    std::os::unix::fs::symlink("ldir", b.join("rel")).unwrap();
    fs::write(b.join("plain"), b"a file").unwrap();
    fs::create_dir(b.join("ldir")).unwrap();
    fs::set_permissions(b.join("ldir"), fs::Permissions::from_mode(0o711)).unwrap();
    // A middle layer that changes nothing: the symlink is two layers down.
    env.create("mid", "base").unwrap();

    let d = diff_of(&env);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("file through a lower symlink", raw_tar(&[("low/evil-low", Regular, "", b"x")])),
        ("whiteout through a lower symlink", raw_tar(&[("low/.wh.passwd", Regular, "", b"")])),
        ("opaque marker through a lower symlink", raw_tar(&[("low/.wh..wh..opq", Regular, "", b"")])),
        ("nested whiteout through a lower symlink", raw_tar(&[("low/dir/.wh.inner", Regular, "", b"")])),
        ("directory through a lower symlink", raw_tar(&[("low/evil-dir", Directory, "", b"")])),
        ("file through a relative lower symlink", raw_tar(&[("rel/evil", Regular, "", b"x")])),
        ("file under a lower file", raw_tar(&[("plain/evil", Regular, "", b"x")])),
        ("hardlink through a lower symlink", raw_tar(&[("evil-hl", Link, "low/passwd", b"")])),
        ("hardlink through a lower file", raw_tar(&[("evil-hl", Link, "plain/x", b"")])),
    ];
    for (i, (what, tar)) in cases.iter().enumerate() {
        let id = format!("l{i}");
        env.create(&id, "mid").unwrap();
        let res = d.apply_diff(ApplyDiffRequest::new(&id, "mid"), &mut tar.as_slice());
        expect_err(res, ErrorKind::InvalidArgument);
        let u = env.upper_of(&id);
        for p in ["low", "rel", "plain"] {
            assert!(!u.join(p).exists(), "{what}: {p} made in the upper dir");
        }
        assert_eq!(names(&outside), ["dir", "passwd"], "{what}");
        assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"safe", "{what}");
        assert_eq!(names(&outside.join("dir")), ["inner"], "{what}");
    }

    // A directory the tar names replaces the symlink in this layer; an
    // implied parent that is a lower directory is copied up.
    env.create("fine", "mid").unwrap();
    let tar = raw_tar(&[
        ("low", Directory, "", b""),
        ("low/ok", Regular, "", b"ok"),
        ("ldir/new", Regular, "", b"n"),
    ]);
    d.apply_diff(ApplyDiffRequest::new("fine", "mid"), &mut tar.as_slice()).unwrap();
    let u = env.upper_of("fine");
    assert_eq!(fs::read(u.join("low/ok")).unwrap(), b"ok");
    assert_eq!(fs::symlink_metadata(u.join("ldir")).unwrap().mode() & 0o7777, 0o711);
    assert_eq!(names(&outside), ["dir", "passwd"]);
}
