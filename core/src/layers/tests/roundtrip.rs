//! apply(diff(lower, upper)) onto a copy of lower gives upper.

use std::io::Read;
use std::path::Path;

use berth_plugin_api::storage::ChangeKind;
use rustix::fs::FileType;

use super::oracle::{assert_same, snapshot};
use super::*;
use crate::layers::{apply, changes, diff, diff_size, ApplyReport};

const LONG: &str = "a-directory-name-that-is-quite-long/and-another-one-that-is-also-long/\
                    and-a-third-to-pass-one-hundred-bytes";

/// A parent tree with every file type, special bits, owners, xattrs,
/// hardlinks, long and non-UTF-8 names, and nanosecond mtimes.
fn make_lower(root: &Path) {
    dir(root, "etc", 0o755, (0, 0));
    file(root, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, (0, 0));
    file(root, "etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o640, (0, 42));
    let hosts = file(root, "etc/hosts", b"127.0.0.1 localhost\n", 0o644, (0, 0));
    xattr(&hosts, "user.mime_type", b"text/plain");
    file(root, "etc/delete-me", b"bye\n", 0o600, (7, 7));
    symlink(root, "etc/localtime", "/usr/share/zoneinfo/UTC");
    dir(root, "usr/bin", 0o755, (0, 0));
    file(root, "usr/bin/tool", &[0x7f, b'E', b'L', b'F', 1, 2, 3], 0o4755, (0, 0));
    hardlink(root, "usr/bin/tool-alias", "usr/bin/tool");
    file(root, "usr/bin/sg", b"setgid\n", 0o2711, (0, 50));
    let ping = file(root, "usr/bin/ping", b"ping binary\n", 0o755, (0, 0));
    xattr(&ping, "security.capability", &cap_net_raw());
    symlink(root, "usr/bin/sh", "tool");
    dir(root, "usr/lib", 0o755, (0, 0));
    file(root, "usr/lib/libc.so", &vec![7u8; 3 << 20], 0o755, (0, 0));
    symlink(root, "lib", "usr/lib");
    dir(root, "tmp", 0o1777, (0, 0));
    let log = dir(root, "var/log", 0o2775, (0, 1007));
    xattr(&log, "trusted.berth.test", b"lower");
    file(root, "var/log/old.log", b"old\n", 0o640, (1000, 1007));
    dir(root, "old/sub", 0o700, (5, 5));
    file(root, "old/sub/file", b"in a deleted dir\n", 0o644, (0, 0));
    for n in ["a", "b", "c"] {
        file(root, &format!("cache/{n}"), n.as_bytes(), 0o644, (0, 0));
    }
    file(root, "emptied/only", b"x", 0o644, (0, 0));
    file(root, "opt/app/config", b"key=value\n", 0o644, (33, 33));
    file(
        root,
        "opt/app/data",
        &(0..200_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>(),
        0o644,
        (0, 0),
    );
    file(root, "replace/file-becomes-dir", b"f", 0o644, (0, 0));
    file(root, "replace/dir-becomes-file/inner", b"i", 0o644, (0, 0));
    node(root, "dev/null", FileType::CharacterDevice, 0o666, (1, 3));
    node(root, "dev/loop9", FileType::BlockDevice, 0o660, (7, 9));
    node(root, "run/fifo", FileType::Fifo, 0o600, (0, 0));
    file(root, &format!("{LONG}/file-with-a-long-path"), b"long\n", 0o644, (0, 0));
    symlink(root, "long-target", format!("/{LONG}/file-with-a-long-path"));
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    std::fs::write(root.join(latin1), b"non-utf8 name\n").unwrap();
    stamp_all(root, 1_600_000_000);
}

/// The child: every kind of change on top of a copy of `lower`.
fn make_upper(lower: &Path, root: &Path) {
    copy_tree(lower, root);
    // ST-10: same-size content change plus mode change, at once.
    file(root, "etc/passwd", b"root:x:0:0::/root:/bin/ZZ\n", 0o600, (0, 0));
    own_mode(&root.join("etc/shadow"), 0o640, (0, 1000));
    xattr(&root.join("etc/hosts"), "user.mime_type", b"text/x-hosts");
    std::fs::remove_file(root.join("etc/delete-me")).unwrap();
    std::fs::remove_dir_all(root.join("old")).unwrap();
    // ST-08: a directory deleted and made again holds only new entries.
    std::fs::remove_dir_all(root.join("cache")).unwrap();
    file(root, "cache/new", b"fresh\n", 0o644, (0, 0));
    // A directory merely emptied.
    std::fs::remove_file(root.join("emptied/only")).unwrap();
    // ST-09: links to lower files, one surviving the original's removal.
    dir(root, "usr/local", 0o755, (0, 0));
    hardlink(root, "usr/local/tool-link", "usr/bin/tool");
    hardlink(root, "opt/app/config2", "opt/app/config");
    std::fs::remove_file(root.join("opt/app/config")).unwrap();
    // A new hardlink group among new files.
    file(root, "new/deep/a", b"shared content\n", 0o644, (0, 0));
    hardlink(root, "new/deep/b", "new/deep/a");
    let n = file(root, "usr/bin/new", b"new tool\n", 0o2755, (0, 20));
    xattr(&n, "security.capability", &cap_net_raw());
    xattr(&n, "user.origin", b"upper");
    stamp(&n, 1_700_000_000, 123_456_789);
    symlink(root, "usr/bin/sh2", "new");
    std::fs::remove_file(root.join("usr/bin/sh")).unwrap();
    symlink(root, "usr/bin/sh", "new");
    // Type changes.
    std::fs::remove_file(root.join("lib")).unwrap();
    file(root, "lib/real", b"lib is a directory now\n", 0o644, (0, 0));
    std::fs::remove_file(root.join("replace/file-becomes-dir")).unwrap();
    file(root, "replace/file-becomes-dir/inside", b"d", 0o644, (0, 0));
    std::fs::remove_dir_all(root.join("replace/dir-becomes-file")).unwrap();
    file(root, "replace/dir-becomes-file", b"now a file", 0o755, (0, 0));
    // Devices and fifos.
    std::fs::remove_file(root.join("dev/loop9")).unwrap();
    node(root, "dev/loop9", FileType::BlockDevice, 0o660, (7, 10));
    node(root, "dev/zero", FileType::CharacterDevice, 0o666, (1, 5));
    std::fs::remove_file(root.join("run/fifo")).unwrap();
    node(root, "run/fifo2", FileType::Fifo, 0o620, (0, 0));
    xattr(&root.join("var/log"), "trusted.berth.test", b"upper");
    file(root, "var/log/new.log", b"appended\n", 0o640, (1000, 1007));
    file(root, &format!("{LONG}/another-file-with-a-long-path"), b"long2\n", 0o644, (0, 0));
    hardlink(root, &format!("{LONG}/a-hardlink-with-a-long-name"), &format!("{LONG}/file-with-a-long-path"));
}

/// Builds both trees, then checks the diff applied onto a copy of lower.
fn round_trip(encode: impl Fn(Vec<u8>) -> Vec<u8>) {
    let t = tmp();
    let (lower, upper, target) = (t.path().join("lower"), t.path().join("upper"), t.path().join("target"));
    for d in [&lower, &upper, &target] {
        std::fs::create_dir(d).unwrap();
    }
    make_lower(&lower);
    make_upper(&lower, &upper);
    copy_tree(&lower, &target);

    let mut tar = Vec::new();
    let size = diff(Some(&lower), &upper, &mut tar).unwrap();
    assert_eq!(size, diff_size(Some(&lower), &upper).unwrap());
    let report = apply(&target, encode(tar).as_slice(), &all_allowed()).unwrap();
    assert_eq!(report.size, size, "applied size equals the diff size");
    assert_eq!(report.skipped_xattrs, 0);
    assert_same(&snapshot(&upper, false).without_root(), &snapshot(&target, false).without_root());
}

#[test]
fn layers_round_trip_plain() {
    round_trip(|t| t);
}

#[test]
fn layers_round_trip_gzip() {
    round_trip(|t| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &t).unwrap();
        enc.finish().unwrap()
    });
}

#[test]
fn layers_round_trip_zstd() {
    round_trip(|t| zstd::encode_all(t.as_slice(), 3).unwrap());
}

#[test]
fn layers_full_diff_onto_empty_root_gives_the_tree() {
    let t = tmp();
    let (lower, target) = (t.path().join("lower"), t.path().join("target"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&target).unwrap();
    make_lower(&lower);
    let mut tar = Vec::new();
    diff(None, &lower, &mut tar).unwrap();
    apply(&target, tar.as_slice(), &all_allowed()).unwrap();
    assert_same(&snapshot(&lower, false).without_root(), &snapshot(&target, false).without_root());
}

/// The tar's entry names, in order.
fn names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries().unwrap().map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned()).collect()
}

#[test]
fn layers_diff_encodes_whiteouts_and_opaque_dirs_deterministically() {
    let t = tmp();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&upper).unwrap();
    make_lower(&lower);
    make_upper(&lower, &upper);
    let (mut one, mut two) = (Vec::new(), Vec::new());
    diff(Some(&lower), &upper, &mut one).unwrap();
    diff(Some(&lower), &upper, &mut two).unwrap();
    assert_eq!(one, two, "the same trees give the same bytes");
    let n = names(&one);
    let pos = |s: &str| n.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} not in {n:?}"));
    assert!(pos("etc/") < pos("etc/.wh.delete-me") && pos("etc/.wh.delete-me") < pos("etc/hosts"));
    assert!(pos("cache/") < pos("cache/.wh..wh..opq") && pos("cache/.wh..wh..opq") < pos("cache/new"));
    pos(".wh.old");
    pos("emptied/.wh.only");
    assert!(!n.iter().any(|x| x.starts_with("cache/.wh.a")), "opaque replaces per-entry whiteouts");
    assert!(!n.iter().any(|x| x.starts_with("old/")), "a deleted directory is one whiteout");
    // Unchanged entries are left out.
    assert!(!n.iter().any(|x| x == "usr/lib/libc.so" || x == "opt/app/data"));
    // The new link to an unchanged lower file is a hardlink entry.
    let mut a = tar::Archive::new(one.as_slice());
    let link = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| &*e.path_bytes() == b"usr/local/tool-link")
        .unwrap();
    assert_eq!(link.header().entry_type(), tar::EntryType::Link);
    assert_eq!(&*link.link_name_bytes().unwrap(), b"usr/bin/tool");
}

#[test]
fn layers_changes_lists_added_modified_deleted() {
    let t = tmp();
    let (lower, upper) = (t.path().join("lower"), t.path().join("upper"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&upper).unwrap();
    file(&lower, "keep/same", b"same", 0o644, (0, 0));
    file(&lower, "keep/edit", b"1234", 0o644, (0, 0));
    file(&lower, "gone/inner/x", b"x", 0o644, (0, 0));
    file(&lower, "top", b"t", 0o644, (0, 0));
    stamp_all(&lower, 1_600_000_000);
    copy_tree(&lower, &upper);
    file(&upper, "keep/edit", b"5678", 0o644, (0, 0));
    std::fs::remove_dir_all(upper.join("gone")).unwrap();
    file(&upper, "added/one", b"1", 0o644, (0, 0));
    let got: Vec<(String, ChangeKind)> =
        changes(Some(&lower), &upper).unwrap().into_iter().map(|c| (c.path, c.kind)).collect();
    let want = vec![
        ("/added".to_owned(), ChangeKind::Add),
        ("/added/one".to_owned(), ChangeKind::Add),
        ("/gone".to_owned(), ChangeKind::Delete),
        ("/keep".to_owned(), ChangeKind::Modify),
        ("/keep/edit".to_owned(), ChangeKind::Modify),
    ];
    assert_eq!(got, want);
}

#[test]
fn layers_same_size_change_within_one_second_is_captured() {
    for round in 0..5 {
        let t = tmp();
        let (lower, upper, target) = (t.path().join("l"), t.path().join("u"), t.path().join("t"));
        for d in [&lower, &upper, &target] {
            std::fs::create_dir(d).unwrap();
        }
        file(&lower, "f", b"aaaa", 0o644, (0, 0));
        copy_tree(&lower, &upper);
        copy_tree(&lower, &target);
        file(&upper, "f", b"bbbb", 0o600, (0, 0));
        let mut tar = Vec::new();
        diff(Some(&lower), &upper, &mut tar).unwrap();
        apply(&target, tar.as_slice(), &all_allowed()).unwrap();
        assert_eq!(std::fs::read(target.join("f")).unwrap(), b"bbbb", "round {round}");
        assert_same(&snapshot(&upper, false).without_root(), &snapshot(&target, false).without_root());
    }
}

#[test]
fn layers_content_change_hidden_in_one_timestamp_tick_is_captured() {
    let t = tmp();
    let (lower, upper) = (t.path().join("l"), t.path().join("u"));
    std::fs::create_dir(&lower).unwrap();
    std::fs::create_dir(&upper).unwrap();
    let f = file(&lower, "f", b"aaaa", 0o644, (0, 0));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    stamp(&f, now.as_secs() as i64, 5);
    copy_tree(&lower, &upper);
    // Same size, same mtime to the nanosecond: only the content differs.
    std::fs::write(upper.join("f"), b"bbbb").unwrap();
    stamp(&upper.join("f"), now.as_secs() as i64, 5);
    let got = changes(Some(&lower), &upper).unwrap();
    assert!(got.iter().any(|c| c.path == "/f" && c.kind == ChangeKind::Modify), "{got:?}");
}

#[test]
fn layers_apply_of_a_whiteout_spares_what_the_same_layer_made() {
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    file(&root, "d/lower", b"from below", 0o644, (0, 0));
    let tar = RawTar::default()
        .entry("d/", b'5', b"", b"")
        .file("d/mine", b"this layer")
        .file("d/.wh.mine", b"")
        .file("d/.wh..wh..opq", b"")
        .finish();
    let report = apply(&root, tar.as_slice(), &all_allowed()).unwrap();
    assert_eq!(report, ApplyReport { size: 10, entries: 4, whiteouts: 2, skipped_xattrs: 0 });
    assert!(!root.join("d/lower").exists(), "opaque hides what was below");
    assert_eq!(std::fs::read(root.join("d/mine")).unwrap(), b"this layer");
}

#[test]
fn layers_apply_reads_its_own_stream_only_once() {
    // A reader that hands out one byte at a time still works (magic
    // detection loops; the tar reader buffers).
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let t = tmp();
    let tar = RawTar::default().file("x", b"hello").finish();
    let gz = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar).unwrap();
        enc.finish().unwrap()
    };
    apply(t.path(), Trickle(&gz), &all_allowed()).unwrap();
    assert_eq!(std::fs::read(t.path().join("x")).unwrap(), b"hello");
}
