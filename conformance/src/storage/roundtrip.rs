//! ST-10, ST-12, ST-14: what a diff captures, and that applying it gives
//! the same tree back.

use std::io;
use std::path::Path;
use std::time::Instant;

use super::build::{
    chmod, dir, fifo, file, hardlink, me, mtime, need_root, own, remove, set_mtime, symlink, xattr,
    CAP_NET_BIND_SERVICE,
};
use super::engine;
use super::oracle::{self, value};
use super::tarball::{self, TarEntry};
use crate::case::{check, io, CaseResult, Failure};
use crate::ctx::Ctx;

fn base10(r: &Path) -> io::Result<()> {
    file(r, "same", b"aaaa\n", 0o644, me())?;
    file(r, "mode", b"mode\n", 0o644, me())?;
    file(r, "both", b"1111\n", 0o644, me())?;
    file(r, "other", b"unchanged\n", 0o644, me())
}

/// Same-size rewrites and mode changes, each file's mtime put back to what
/// it was: what a file system with one-second timestamps shows for an edit
/// inside the second the file was written.
fn edit10(r: &Path) -> io::Result<()> {
    let keep = |rel: &str, f: &dyn Fn() -> io::Result<()>| -> io::Result<()> {
        let t = mtime(r, rel)?;
        f()?;
        set_mtime(r, rel, t)
    };
    keep("same", &|| std::fs::write(r.join("same"), b"bbbb\n"))?;
    keep("mode", &|| chmod(r, "mode", 0o755))?;
    keep("both", &|| {
        std::fs::write(r.join("both"), b"2222\n")?;
        chmod(r, "both", 0o600)
    })
}

pub(super) fn st10_racy_edits(ctx: &mut Ctx) -> CaseResult {
    let want = ctx.model("edited", &[&base10, &edit10])?;
    for i in 1..=5 {
        let (b, c, k) = (format!("st10-b{i}"), format!("st10-c{i}"), format!("st10-k{i}"));
        ctx.create_rw(&b, "")?;
        let t0 = Instant::now();
        ctx.edit_layer(&b, "fill", &[&base10])?;
        ctx.create_rw(&c, &b)?;
        ctx.edit_layer(
            &c,
            "rewrite same and both with as many bytes, chmod mode and both, keep mtimes",
            &[&edit10],
        )?;
        let ms = t0.elapsed().as_millis();
        let tar = engine::export(ctx, &c, &b)?;
        let step = format!(
            "diff #{i} of layer {c:?} against {b:?} ({}; edits made {ms} ms after the files were written)",
            engine::engine(ctx)
        );
        let entries = io(&step, tarball::list(&tar))?;
        let mut wrong = Vec::new();
        for (name, content, mode) in [
            ("same", &b"bbbb\n"[..], 0o644),
            ("mode", &b"mode\n"[..], 0o755),
            ("both", &b"2222\n"[..], 0o600),
        ] {
            match entries.iter().find(|e| e.path == name) {
                None => wrong.push(format!("{name}: not in the diff")),
                Some(e) if !e.is_regular() => wrong.push(format!("{name}: type {:?}", e.kind as char)),
                Some(e) => {
                    if e.data != content {
                        wrong.push(format!("{name}: content {:?}", String::from_utf8_lossy(&e.data)));
                    }
                    if e.mode & 0o7777 != mode {
                        wrong.push(format!("{name}: mode {:04o}", e.mode & 0o7777));
                    }
                }
            }
        }
        if !wrong.is_empty() {
            return Err(Failure::new(
                format!("{step}: {}", tarball::summary(&entries)),
                "same (content bbbb, 0644), mode (0755) and both (content 2222, 0600) in the diff",
                wrong.join("; "),
            )
            .into());
        }
        engine::import_ok(ctx, &k, &b, &tar, &format!("the diff of layer {c:?}"))?;
        let via = format!("diff #{i} of {c} applied to a fresh child of {b}: the edited contents and modes");
        ctx.expect_layer(&k, &want, &via)?;
    }
    Ok(())
}

fn base12(r: &Path) -> io::Result<()> {
    dir(r, "etc", 0o755, (0, 0))?;
    file(r, "etc/conf", b"conf v1\n", 0o644, (0, 0))?;
    file(r, "etc/secret", b"s\n", 0o600, (1000, 1000))?;
    file(r, "etc/conf.d", b"a file, then a directory\n", 0o644, (0, 0))?;
    dir(r, "bin", 0o755, (0, 0))?;
    file(r, "bin/tool", b"#!/bin/sh\n", 0o4755, (0, 0))?;
    symlink(r, "bin/tool-link", "tool")?;
    symlink(r, "abs", "/etc/conf")?;
    dir(r, "share", 0o755, (0, 0))?;
    dir(r, "share/doc", 0o755, (0, 0))?;
    file(r, "share/doc/readme", b"readme\n", 0o644, (0, 0))?;
    dir(r, "hl", 0o755, (0, 0))?;
    file(r, "hl/a", b"linked\n", 0o644, (0, 0))?;
    hardlink(r, "hl/b", "hl/a")?;
    fifo(r, "pipe", 0o640)?;
    dir(r, "empty", 0o755, (0, 0))?;
    dir(r, "tmp", 0o1777, (0, 0))?;
    file(r, "tmp/old", b"old\n", 0o644, (0, 0))?;
    dir(r, "sgid", 0o2775, (0, 1000))
}

fn edit12(r: &Path) -> io::Result<()> {
    file(r, "etc/conf", b"conf version two\n", 0o644, (0, 0))?;
    own(&r.join("etc/secret"), 0o640, (1001, 1002))?;
    dir(r, "new", 0o755, (0, 0))?;
    dir(r, "new/dir", 0o700, (0, 0))?;
    file(r, "new/dir/file", b"nested\n", 0o644, (0, 0))?;
    file(r, "etc/new", b"new in etc\n", 0o644, (0, 0))?;
    remove(r, "bin/tool-link")?;
    remove(r, "share/doc")?;
    remove(r, "etc/conf.d")?;
    dir(r, "etc/conf.d", 0o755, (0, 0))?;
    file(r, "etc/conf.d/x", b"x\n", 0o644, (0, 0))?;
    remove(r, "empty")?;
    file(r, "empty", b"a directory, now a file\n", 0o644, (0, 0))?;
    remove(r, "abs")?;
    symlink(r, "abs", "/etc/other")?;
    remove(r, "tmp")?;
    dir(r, "tmp", 0o1777, (0, 0))?;
    file(r, "tmp/fresh", b"fresh\n", 0o644, (0, 0))?;
    hardlink(r, "hl/c", "hl/a")?;
    let big: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    file(r, "big", &big, 0o644, (0, 0))?;
    std::fs::write(r.join("sgid/inside"), b"made in a setgid directory\n")?;
    chmod(r, "sgid/inside", 0o644)
}

pub(super) fn st12_round_trip(ctx: &mut Ctx) -> CaseResult {
    need_root("the trees have files of other owners, setuid bits and a setgid directory")?;
    ctx.create_rw("st12-n0", "")?;
    ctx.edit_layer("st12-n0", "fill", &[&base12])?;
    ctx.create_rw("st12-n1", "st12-n0")?;
    ctx.edit_layer("st12-n1", "modify, add, delete, replace, relink", &[&edit12])?;
    let size = engine::diff_size(ctx, "st12-n1", "st12-n0")?;
    let tar = engine::export(ctx, "st12-n1", "st12-n0")?;
    let applied = engine::import_ok(ctx, "st12-n1i", "st12-n0", &tar, "the diff of layer \"st12-n1\"")?;
    let child = ctx.layer_tree("st12-n1")?;
    let copy = ctx.layer_tree("st12-n1i")?;
    oracle::expect_same(
        format!(
            "tree of layer \"st12-n1i\" (the diff of st12-n1 against st12-n0 applied to a fresh child of st12-n0, {})",
            engine::engine(ctx)
        ),
        "identical to the tree of layer \"st12-n1\"",
        &child,
        &copy,
    )?;
    check(
        applied == size,
        "size applied to \"st12-n1i\" against diff_size(\"st12-n1\", \"st12-n0\")",
        format!("{size} bytes (diff_size)"),
        format!("{applied} bytes applied"),
    )?;
    check(
        size >= 256 * 1024,
        "diff_size(\"st12-n1\", \"st12-n0\")",
        "at least the 262144 bytes of the new file /big",
        format!("{size} bytes"),
    )?;
    Ok(())
}

fn base14(r: &Path) -> io::Result<()> {
    file(r, "f", b"xattrs\n", 0o644, me())?;
    xattr(r, "f", "user.berth", b"value")?;
    xattr(r, "f", "user.bin", &[0, 1, 0xff, 0x80])?;
    file(r, "cap", b"\x7fELF", 0o755, (1000, 1000))?;
    xattr(r, "cap", "security.capability", &CAP_NET_BIND_SERVICE)?;
    dir(r, "d", 0o755, me())?;
    xattr(r, "d", "user.dir", b"on a directory")
}

fn edit14(r: &Path) -> io::Result<()> {
    xattr(r, "f", "user.added", b"set above")?;
    file(r, "cap2", b"\x7fELF2", 0o750, (1000, 1000))?;
    xattr(r, "cap2", "security.capability", &CAP_NET_BIND_SERVICE)?;
    dir(r, "d2", 0o755, me())?;
    xattr(r, "d2", "user.dir2", b"new directory")?;
    file(r, "plain", b"no xattrs\n", 0o644, me())
}

/// Fails unless the exported `entries` carry each `(path, xattr, value)`.
fn expect_exported(entries: &[TarEntry], step: &str, want: &[(&str, &str, &[u8])]) -> CaseResult {
    let mut wrong = Vec::new();
    for (path, name, v) in want {
        match entries.iter().find(|e| e.path == *path) {
            None => wrong.push(format!("/{path}: not in the diff")),
            Some(e) => match e.xattrs.get(*name) {
                None => wrong.push(format!("/{path}: xattr {name} lost (no SCHILY.xattr.{name} record)")),
                Some(got) if got != v => {
                    wrong.push(format!("/{path}: xattr {name}: want {}, have {}", value(v), value(got)))
                }
                Some(_) => {}
            },
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let want: Vec<String> = want.iter().map(|(p, n, _)| format!("/{p} {n}")).collect();
    Err(Failure::new(step, format!("PAX xattr records for {}", want.join(", ")), wrong.join("; ")).into())
}

pub(super) fn st14_xattrs(ctx: &mut Ctx) -> CaseResult {
    need_root("security.capability and files of other owners need CAP_SETFCAP and CAP_CHOWN")?;
    let m0 = ctx.model("n0", &[&base14])?;
    let m1 = ctx.model("n1", &[&base14, &edit14])?;
    ctx.create_rw("st14-n0", "")?;
    ctx.edit_layer("st14-n0", "set user.* xattrs and security.capability", &[&base14])?;
    ctx.expect_layer("st14-n0", &m0, "the layer after put and a new get: every xattr as set")?;
    ctx.create("st14-n0c", "st14-n0")?;
    ctx.expect_layer("st14-n0c", &m0, "a read-only child: every xattr of its parent")?;

    let how = engine::engine(ctx);
    let tar = engine::export(ctx, "st14-n0", "")?;
    let step = format!("diff of layer \"st14-n0\" against nothing ({how})");
    let entries = io(&step, tarball::list(&tar))?;
    expect_exported(
        &entries,
        &step,
        &[
            ("f", "user.berth", b"value"),
            ("f", "user.bin", &[0, 1, 0xff, 0x80]),
            ("cap", "security.capability", &CAP_NET_BIND_SERVICE),
            ("d", "user.dir", b"on a directory"),
        ],
    )?;
    engine::import_ok(ctx, "st14-n0i", "", &tar, "the diff of layer \"st14-n0\"")?;
    ctx.expect_layer("st14-n0i", &m0, &format!("the diff of st14-n0 applied to a new base layer ({how})"))?;

    ctx.create_rw("st14-n1", "st14-n0")?;
    ctx.edit_layer("st14-n1", "add xattrs to a lower file and new files", &[&edit14])?;
    ctx.expect_layer("st14-n1", &m1, "a read-write child after xattrs were added")?;
    let tar = engine::export(ctx, "st14-n1", "st14-n0")?;
    let step = format!("diff of layer \"st14-n1\" against \"st14-n0\" ({how})");
    let entries = io(&step, tarball::list(&tar))?;
    expect_exported(
        &entries,
        &step,
        &[
            ("f", "user.berth", b"value"),
            ("f", "user.added", b"set above"),
            ("cap2", "security.capability", &CAP_NET_BIND_SERVICE),
            ("d2", "user.dir2", b"new directory"),
        ],
    )?;
    engine::import_ok(ctx, "st14-n1i", "st14-n0", &tar, "the diff of layer \"st14-n1\"")?;
    ctx.create("st14-n2i", "st14-n1i")?;
    let via = format!("the diff of st14-n1 applied to a fresh child of st14-n0 ({how})");
    ctx.expect_layer("st14-n1i", &m1, &via)?;
    ctx.expect_layer("st14-n2i", &m1, &format!("read-only child of {via}"))?;
    Ok(())
}
