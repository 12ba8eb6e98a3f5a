//! What a new layer keeps of its parent, through the real ABI path.
//!
//! Every test needs root and a real kernel: it makes device nodes, sets
//! `trusted.*` and `security.capability` xattrs, chowns and mounts.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;

/// A `security.capability` value, revision 2: `cap_net_bind_service`
/// permitted and effective.
const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted[0]: bit 10
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

/// Times set on the parent tree: (atime, mtime), nanoseconds included.
const DIR_TIMES: ((i64, i64), (i64, i64)) = ((1_100_000_000, 111_111_111), (1_000_000_000, 123_456_789));
const LINK_TIMES: ((i64, i64), (i64, i64)) = ((1_100_000_001, 222_222_222), (1_000_000_001, 987_654_321));
const FILE_TIMES: ((i64, i64), (i64, i64)) = ((1_100_000_002, 333_333_333), (1_000_000_002, 1));
const ROOT_TIMES: ((i64, i64), (i64, i64)) = ((1_100_000_003, 444_444_444), (1_000_000_003, 999_999_999));

/// Fills `r` with one of everything a copy must preserve.
fn populate(r: &Path) {
    // A regular file with user.* and trusted.* xattrs.
    fs::write(r.join("file"), b"hello").unwrap();
    chmod(&r.join("file"), 0o644);
    set_xattr(&r.join("file"), "user.berth", b"value");
    set_xattr(&r.join("file"), "trusted.berth", b"t\0binary\xff");

    // setuid file owned by 1000:1000 (chown clears setuid: order matters).
    fs::write(r.join("suid"), b"#!/bin/sh\n").unwrap();
    chown(&r.join("suid"), 1000, 1000);
    chmod(&r.join("suid"), 0o4755);

    // A file with a capability, owned by 1000:1000 (chown clears it too).
    fs::write(r.join("cap"), b"\x7fELF").unwrap();
    chown(&r.join("cap"), 1000, 1000);
    chmod(&r.join("cap"), 0o755);
    set_xattr(&r.join("cap"), "security.capability", &CAP_NET_BIND_SERVICE);

    // setgid and sticky directories, a directory without write permission.
    fs::create_dir(r.join("sgid")).unwrap();
    fs::write(r.join("sgid/inner"), b"in").unwrap();
    chown(&r.join("sgid/inner"), 1000, 1001);
    chown(&r.join("sgid"), 1000, 1000);
    chmod(&r.join("sgid"), 0o2775);
    fs::create_dir(r.join("sticky")).unwrap();
    chmod(&r.join("sticky"), 0o1777);
    fs::create_dir(r.join("readonly")).unwrap();
    fs::write(r.join("readonly/f"), b"r").unwrap();
    chmod(&r.join("readonly"), 0o555);
    fs::write(r.join("noperm"), b"").unwrap();
    chmod(&r.join("noperm"), 0o000);

    // Special files: fifo, character and block devices, a unix socket.
    mknod(&r.join("fifo"), libc::S_IFIFO | 0o640, 0, 0);
    mknod(&r.join("null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&r.join("loop"), libc::S_IFBLK | 0o660, 7, 0);
    chown(&r.join("loop"), 0, 6);
    drop(std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap());
    set_xattr(&r.join("fifo"), "trusted.fifo", b"f");

    // A hardlink group of three names across two directories.
    fs::create_dir_all(r.join("dir/sub")).unwrap();
    fs::write(r.join("hard_a"), b"shared").unwrap();
    fs::hard_link(r.join("hard_a"), r.join("hard_b")).unwrap();
    fs::hard_link(r.join("hard_a"), r.join("dir/hard_c")).unwrap();
    // A hardlinked fifo.
    mknod(&r.join("fifo_a"), libc::S_IFIFO | 0o600, 0, 0);
    fs::hard_link(r.join("fifo_a"), r.join("dir/fifo_b")).unwrap();

    // Symlinks: dangling absolute, relative escaping, to a directory; one
    // with a trusted.* xattr of its own.
    std::os::unix::fs::symlink("/nonexistent/absolute/target", r.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../../../escape", r.join("dir/rel")).unwrap();
    std::os::unix::fs::symlink("dir", r.join("to_dir")).unwrap();
    set_xattr(&r.join("dangling"), "trusted.link", b"on the link itself");
    std::os::unix::fs::lchown(r.join("to_dir"), Some(1000), Some(1000)).unwrap();

    // Nesting, xattrs on directories, odd names, a larger file.
    fs::write(r.join("dir/sub/deep.txt"), b"deep").unwrap();
    set_xattr(&r.join("dir"), "user.dir", b"d");
    set_xattr(&r.join("dir/sub"), "trusted.overlay.opaque", b"y");
    fs::write(r.join("with space\nand newline"), b"x").unwrap();
    fs::write(r.join(OsStr::from_bytes(b"not-utf8-\xff\xfe")), b"bytes").unwrap();
    let big: Vec<u8> = (0..(1u32 << 20) + 17).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    fs::write(r.join("big"), &big).unwrap();

    // The root's own attributes.
    chown(r, 0, 1000);
    chmod(r, 0o750);
    set_xattr(r, "user.root", b"r");

    // Times last, children before their directories.
    set_times(&r.join("file"), FILE_TIMES.0, FILE_TIMES.1);
    set_times(&r.join("fifo"), FILE_TIMES.0, FILE_TIMES.1);
    set_times(&r.join("dangling"), LINK_TIMES.0, LINK_TIMES.1);
    set_times(&r.join("dir/rel"), LINK_TIMES.0, LINK_TIMES.1);
    set_times(&r.join("dir/sub"), DIR_TIMES.0, DIR_TIMES.1);
    set_times(&r.join("dir"), DIR_TIMES.0, DIR_TIMES.1);
    set_times(r, ROOT_TIMES.0, ROOT_TIMES.1);
}

fn times(p: &Path) -> ((i64, i64), (i64, i64)) {
    let m = fs::symlink_metadata(p).unwrap();
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

#[test]
fn a_child_is_an_exact_copy_of_its_parent() {
    let env = Env::new();
    env.create_rw("base", "").unwrap();
    let base = env.get("base").unwrap();
    populate(&base);

    env.create("ro", "base").unwrap();
    // Access times first, before anything reads either tree.
    let ro = env.dir_of("ro");
    assert_eq!(times(&ro.join("file")), FILE_TIMES, "file");
    assert_eq!(times(&ro.join("fifo")), FILE_TIMES, "fifo");
    assert_eq!(times(&ro.join("dangling")), LINK_TIMES, "symlink");
    assert_eq!(times(&ro.join("dir/rel")), LINK_TIMES, "relative symlink");
    assert_eq!(times(&ro.join("dir/sub")), DIR_TIMES, "nested directory");
    assert_eq!(times(&ro.join("dir")), DIR_TIMES, "directory");
    assert_eq!(times(&ro), ROOT_TIMES, "layer root");

    env.create_rw("grand", "ro").unwrap();
    let want = snapshot(&base);
    assert_same_tree(&want, &snapshot(&ro));
    assert_same_tree(&want, &snapshot(&env.dir_of("grand")));
    let mounted = env.get("ro").unwrap();
    assert_same_tree(&want, &snapshot(&mounted));
    env.put("ro").unwrap();
    env.put("base").unwrap();

    // The oracle compares all of this already; spelled out so that a
    // broken oracle cannot hide a lost property.
    let g = env.dir_of("grand");
    let m = |p: &str| fs::symlink_metadata(g.join(p)).unwrap();
    assert_eq!((m("suid").mode() & 0o7777, m("suid").uid(), m("suid").gid()), (0o4755, 1000, 1000));
    assert_eq!((m("sgid").mode() & 0o7777, m("sgid").uid()), (0o2775, 1000));
    assert_eq!(m("sticky").mode() & 0o7777, 0o1777);
    assert_eq!(m("noperm").mode() & 0o7777, 0);
    assert_eq!(m("readonly").mode() & 0o7777, 0o555);
    assert_eq!((m("").mode() & 0o7777, m("").gid()), (0o750, 1000));
    let cap = xattrs(&g.join("cap"));
    assert_eq!(cap[OsStr::new("security.capability")], CAP_NET_BIND_SERVICE, "capability kept");
    assert_eq!((m("cap").uid(), m("cap").mode() & 0o7777), (1000, 0o755));
    assert_eq!(xattrs(&g.join("file"))[OsStr::new("user.berth")], b"value");
    assert_eq!(xattrs(&g.join("file"))[OsStr::new("trusted.berth")], b"t\0binary\xff");
    assert_eq!(xattrs(&g.join("dangling"))[OsStr::new("trusted.link")], b"on the link itself");
    assert_eq!(xattrs(&g)[OsStr::new("user.root")], b"r");
    assert!(m("fifo").file_type().is_fifo());
    assert!(m("sock").file_type().is_socket());
    assert!(m("null").file_type().is_char_device());
    assert_eq!(m("null").rdev(), libc::makedev(1, 3));
    assert!(m("loop").file_type().is_block_device());
    assert_eq!((m("loop").rdev(), m("loop").gid()), (libc::makedev(7, 0), 6));
    assert_eq!(m("hard_a").ino(), m("hard_b").ino());
    assert_eq!(m("hard_a").ino(), m("dir/hard_c").ino());
    assert_eq!(m("hard_a").nlink(), 3);
    assert_ne!(m("hard_a").ino(), fs::symlink_metadata(base.join("hard_a")).unwrap().ino(), "a copy");
    assert_eq!(m("fifo_a").ino(), m("dir/fifo_b").ino());
    assert_eq!(fs::read_link(g.join("dangling")).unwrap(), Path::new("/nonexistent/absolute/target"));
    assert_eq!(fs::read_link(g.join("dir/rel")).unwrap(), Path::new("../../../escape"));
    assert_eq!(m("to_dir").uid(), 1000);
    assert_eq!((m("dir/sub").mtime(), m("dir/sub").mtime_nsec()), DIR_TIMES.1);
    assert_eq!((m("dangling").mtime(), m("dangling").mtime_nsec()), LINK_TIMES.1);
    assert_eq!(fs::read(g.join("big")).unwrap(), fs::read(base.join("big")).unwrap());
}

#[test]
fn a_base_layer_is_an_empty_root_0755_root_root() {
    let env = Env::new();
    env.create("ro", "").unwrap();
    env.create_rw("rw", "").unwrap();
    for id in ["ro", "rw"] {
        let path = env.get(id).unwrap();
        let m = fs::metadata(&path).unwrap();
        let entries = fs::read_dir(&path).unwrap().count();
        env.put(id).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), entries), (0o755, 0, 0, 0), "layer {id}");
    }
}

#[test]
fn a_deletion_stays_in_its_layer_and_below() {
    let env = Env::new();
    env.create_rw("n-1", "").unwrap();
    fs::write(env.get("n-1").unwrap().join("f"), b"x").unwrap();
    env.create_rw("n", "n-1").unwrap();
    fs::remove_file(env.get("n").unwrap().join("f")).unwrap();
    env.create("n+1", "n").unwrap();
    assert!(env.dir_of("n-1").join("f").exists());
    assert!(!env.dir_of("n").join("f").exists());
    let top = env.get("n+1").unwrap();
    let gone = !top.join("f").exists();
    env.put("n+1").unwrap();
    assert!(gone);
}

#[test]
fn hardlinks_to_lower_files_survive_removal_of_the_original_name() {
    let env = Env::new();
    env.create_rw("lower", "").unwrap();
    fs::write(env.get("lower").unwrap().join("orig"), b"content").unwrap();
    env.create_rw("upper", "lower").unwrap();
    let up = env.get("upper").unwrap();
    fs::hard_link(up.join("orig"), up.join("link")).unwrap();
    fs::remove_file(up.join("orig")).unwrap();
    env.create("child", "upper").unwrap();
    let c = env.dir_of("child");
    assert_eq!(fs::read(c.join("link")).unwrap(), b"content");
    assert!(!c.join("orig").exists());
    assert_eq!(fs::read(env.dir_of("lower").join("orig")).unwrap(), b"content");
}

#[test]
fn a_chain_of_128_layers_mounts_and_each_level_equals_its_replay() {
    const DEPTH: usize = 128;
    let env = Env::new();
    let mut parent = String::new();
    for i in 0..DEPTH {
        let id = format!("l{i}");
        env.create_rw(&id, &parent).unwrap();
        let dir = env.get(&id).unwrap();
        fs::write(dir.join(format!("f{i}")), i.to_string()).unwrap();
        fs::write(dir.join("shared"), i.to_string()).unwrap();
        env.put(&id).unwrap();
        env.create(&format!("ro{i}"), &id).unwrap();
        parent = id;
    }
    let mut paths = Vec::new();
    for i in 0..DEPTH {
        paths.push(env.get(&format!("ro{i}")).unwrap());
    }
    assert_eq!(env.mounts().len(), DEPTH, "one read-only mount per level");
    for (i, path) in paths.iter().enumerate() {
        let mut names: Vec<String> =
            fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut want: Vec<String> = (0..=i).map(|j| format!("f{j}")).chain(["shared".into()]).collect();
        want.sort();
        assert_eq!(names, want, "level {i}");
        assert_eq!(fs::read_to_string(path.join("shared")).unwrap(), i.to_string());
    }
    for i in 0..DEPTH {
        env.put(&format!("ro{i}")).unwrap();
    }
    assert_eq!(env.mounts(), Vec::<std::path::PathBuf>::new());
    // Removal goes top-down.
    for i in (0..DEPTH).rev() {
        env.remove(&format!("ro{i}")).unwrap();
        env.remove(&format!("l{i}")).unwrap();
    }
    assert_eq!(env.status()["Layers"], "0");
}
