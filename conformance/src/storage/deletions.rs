//! ST-07, ST-08, ST-13: deletions, opaque directories, and how diffs
//! encode them (OCI whiteouts).
//!
//! Each case edits a read-write child of a filled base, then checks the
//! child, its descendants and the base against models (flat replays of the
//! same edits), and again after the child's diff is applied to a fresh
//! child of the base — so a diff that loses a whiteout shows.

use std::io;
use std::path::Path;

use super::build::{dir, file, me, remove};
use super::engine::{self, round_trip};
use super::tarball::{self, RawTar};
use crate::case::{io, CaseResult, Failure};
use crate::ctx::Ctx;

fn base07(r: &Path) -> io::Result<()> {
    file(r, "keep", b"keep\n", 0o644, me())?;
    file(r, "victim", b"victim\n", 0o644, me())?;
    dir(r, "dir", 0o755, me())?;
    file(r, "dir/victim2", b"victim two\n", 0o600, me())?;
    file(r, "dir/keep2", b"keep two\n", 0o644, me())?;
    dir(r, "vdir", 0o755, me())?;
    file(r, "vdir/inner", b"inner\n", 0o644, me())
}

fn delete07(r: &Path) -> io::Result<()> {
    remove(r, "victim")?;
    remove(r, "dir/victim2")?;
    remove(r, "vdir")
}

fn reborn07(r: &Path) -> io::Result<()> {
    file(r, "victim", b"reborn in a descendant\n", 0o644, me())
}

pub(super) fn st07_deletion(ctx: &mut Ctx) -> CaseResult {
    let m0 = ctx.model("n0", &[&base07])?;
    let m1 = ctx.model("n1", &[&base07, &delete07])?;
    ctx.create_rw("st07-n0", "")?;
    ctx.edit_layer("st07-n0", "fill", &[&base07])?;
    ctx.create_rw("st07-n1", "st07-n0")?;
    ctx.edit_layer("st07-n1", "delete victim, dir/victim2 and vdir/", &[&delete07])?;
    ctx.create("st07-n2", "st07-n1")?;
    ctx.create_rw("st07-n3", "st07-n2")?;

    let gone = "layer N: its parent's tree without /victim, /dir/victim2 and /vdir";
    ctx.expect_layer("st07-n0", &m0, "layer N-1, which still has /victim, /dir/victim2 and /vdir")?;
    ctx.expect_layer("st07-n1", &m1, gone)?;
    ctx.expect_layer("st07-n2", &m1, "read-only child of layer N: the deletions of N")?;
    ctx.expect_layer("st07-n3", &m1, "read-write grandchild of layer N: the deletions of N")?;

    // A name deleted below can come back in a descendant, and only there.
    ctx.edit_layer("st07-n3", "recreate victim", &[&reborn07])?;
    let m3 = ctx.model("n3", &[&base07, &delete07, &reborn07])?;
    ctx.expect_layer("st07-n3", &m3, "the grandchild after it made /victim again")?;
    ctx.expect_layer("st07-n2", &m1, "layer N's child after a descendant made /victim again")?;
    ctx.expect_layer("st07-n1", &m1, "layer N after a descendant made /victim again")?;
    ctx.expect_layer("st07-n0", &m0, "layer N-1 after everything")?;

    // The same through diff and apply.
    round_trip(ctx, "st07-n1", "st07-n0", "st07-n1i")?;
    ctx.create("st07-n2i", "st07-n1i")?;
    let via = format!(
        "the diff of st07-n1 against st07-n0 applied to a fresh child of st07-n0 ({}): /victim, /dir/victim2 and /vdir deleted",
        engine::engine(ctx)
    );
    ctx.expect_layer("st07-n1i", &m1, &via)?;
    ctx.expect_layer("st07-n2i", &m1, &format!("read-only child of {via}"))?;
    ctx.expect_layer("st07-n0", &m0, "layer N-1 after the diff was applied beside it")?;
    Ok(())
}

fn base08(r: &Path) -> io::Result<()> {
    dir(r, "d", 0o755, me())?;
    file(r, "d/a", b"from below\n", 0o644, me())?;
    file(r, "d/.hidden", b"hidden below\n", 0o644, me())?;
    dir(r, "d/sub", 0o755, me())?;
    file(r, "d/sub/b", b"deep below\n", 0o644, me())?;
    dir(r, "other", 0o755, me())?;
    file(r, "other/x", b"untouched\n", 0o644, me())
}

/// Deletes `d` and makes it again, with a new file and a new, empty `sub`.
fn recreate08(r: &Path) -> io::Result<()> {
    remove(r, "d")?;
    dir(r, "d", 0o750, me())?;
    file(r, "d/new", b"from above\n", 0o644, me())?;
    dir(r, "d/sub", 0o700, me())
}

pub(super) fn st08_opaque(ctx: &mut Ctx) -> CaseResult {
    let m0 = ctx.model("n0", &[&base08])?;
    let m1 = ctx.model("n1", &[&base08, &recreate08])?;
    ctx.create_rw("st08-n0", "")?;
    ctx.edit_layer("st08-n0", "fill", &[&base08])?;
    ctx.create_rw("st08-n1", "st08-n0")?;
    ctx.edit_layer("st08-n1", "delete d/ and make it again", &[&recreate08])?;
    ctx.create("st08-n2", "st08-n1")?;
    ctx.create_rw("st08-n3", "st08-n2")?;

    let want = "/d holding only /d/new and an empty /d/sub: nothing from below";
    ctx.expect_layer("st08-n1", &m1, want)?;
    ctx.expect_layer("st08-n2", &m1, &format!("read-only child: {want}"))?;
    ctx.expect_layer("st08-n3", &m1, &format!("read-write grandchild: {want}"))?;
    ctx.expect_layer("st08-n0", &m0, "the lower layer, unchanged")?;

    round_trip(ctx, "st08-n1", "st08-n0", "st08-n1i")?;
    ctx.create("st08-n2i", "st08-n1i")?;
    let via =
        format!("the diff of st08-n1 applied to a fresh child of st08-n0 ({}): {want}", engine::engine(ctx));
    ctx.expect_layer("st08-n1i", &m1, &via)?;
    ctx.expect_layer("st08-n2i", &m1, &format!("read-only child of {via}"))?;
    Ok(())
}

fn base13(r: &Path) -> io::Result<()> {
    file(r, "keep", b"keep\n", 0o644, me())?;
    file(r, "gone", b"to be deleted\n", 0o644, me())?;
    dir(r, "dir", 0o755, me())?;
    file(r, "dir/gone2", b"to be deleted too\n", 0o644, me())?;
    file(r, "dir/keep", b"kept\n", 0o644, me())?;
    dir(r, "opq", 0o755, me())?;
    file(r, "opq/old1", b"old\n", 0o644, me())?;
    dir(r, "opq/sub", 0o755, me())?;
    file(r, "opq/sub/old2", b"old too\n", 0o644, me())?;
    dir(r, "late", 0o755, me())?;
    file(r, "late/old", b"hidden by a marker that comes last\n", 0o644, me())
}

fn edit13(r: &Path) -> io::Result<()> {
    remove(r, "gone")?;
    remove(r, "dir/gone2")?;
    remove(r, "opq")?;
    dir(r, "opq", 0o755, me())?;
    file(r, "opq/new", b"new\n", 0o644, me())
}

/// What the hand-made tar of ST-13 does, done by hand.
fn handmade13(r: &Path) -> io::Result<()> {
    remove(r, "gone")?;
    remove(r, "dir/gone2")?;
    remove(r, "opq")?;
    dir(r, "opq", 0o755, (0, 0))?;
    file(r, "opq/fresh", b"fresh\n", 0o644, (0, 0))?;
    remove(r, "late/old")?;
    file(r, "late/fresh2", b"same layer as the marker\n", 0o644, (0, 0))?;
    file(r, "added", b"added\n", 0o644, (0, 0))
}

/// The OCI way of saying [`handmade13`]; in `late/` the opaque marker
/// comes after an entry of the same layer, which it must not hide.
fn handmade13_tar() -> Vec<u8> {
    RawTar::new()
        .file(".wh.gone", b"")
        .file("dir/.wh.gone2", b"")
        .dir("opq", 0o755)
        .file("opq/.wh..wh..opq", b"")
        .file("opq/fresh", b"fresh\n")
        .file("late/fresh2", b"same layer as the marker\n")
        .file("late/.wh..wh..opq", b"")
        .file("added", b"added\n")
        .finish()
}

pub(super) fn st13_whiteout_format(ctx: &mut Ctx) -> CaseResult {
    ctx.create_rw("st13-n0", "")?;
    ctx.edit_layer("st13-n0", "fill", &[&base13])?;
    ctx.create_rw("st13-n1", "st13-n0")?;
    ctx.edit_layer("st13-n1", "delete gone, dir/gone2 and opq/, make opq/ again", &[&edit13])?;
    let tar = engine::export(ctx, "st13-n1", "st13-n0")?;
    let step = format!("read the diff of layer \"st13-n1\" against \"st13-n0\" ({})", engine::engine(ctx));
    let entries = io(&step, tarball::list(&tar))?;
    let shown = tarball::summary(&entries);

    let mut wrong = Vec::new();
    for (name, what) in [
        (".wh.gone", "the deletion of /gone"),
        ("dir/.wh.gone2", "the deletion of /dir/gone2"),
        ("opq/.wh..wh..opq", "opaque /opq (deleted and made again)"),
    ] {
        match entries.iter().find(|e| e.path == name) {
            None => wrong.push(format!("no {name} for {what}")),
            Some(e) if !e.is_regular() || e.size != 0 => wrong.push(format!(
                "{name} is type {:?} size {}, not an empty regular file",
                e.kind as char, e.size
            )),
            Some(_) => {}
        }
    }
    for name in ["gone", "dir/gone2", "opq/old1", "opq/sub", "opq/sub/old2", "keep", "dir/keep"] {
        if entries.iter().any(|e| e.path == name) {
            wrong.push(format!("an entry for {name}, which the child did not add or change"));
        }
    }
    if !entries.iter().any(|e| e.path == "opq/new" && e.is_regular()) {
        wrong.push("no entry for the new file opq/new".into());
    }
    if !wrong.is_empty() {
        return Err(Failure::new(
            format!("{step}: {shown}"),
            "deletions as empty files .wh.<name> beside them, the opaque dir as opq/.wh..wh..opq",
            wrong.join("; "),
        )
        .into());
    }

    // A hand-made tar in the OCI format gives the right tree.
    let want = ctx.model("imported", &[&base13, &handmade13])?;
    engine::import_ok(ctx, "st13-h", "st13-n0", &handmade13_tar(), "a hand-made OCI tar")?;
    let via =
        "the hand-made tar (.wh.gone, dir/.wh.gone2, opaque opq/ and late/) applied to a child of st13-n0";
    ctx.expect_layer("st13-h", &want, via)?;
    ctx.create("st13-h2", "st13-h")?;
    ctx.expect_layer("st13-h2", &want, &format!("read-only child of {via}"))?;
    Ok(())
}
