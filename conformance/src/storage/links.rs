//! ST-09 and ST-17: hardlinks to lower files, and renames inside a layer.

use std::cell::Cell;
use std::io;
use std::path::Path;

use super::build::{dir, file, hardlink, me, remove, rename};
use super::engine::{self, round_trip};
use super::tarball::RawTar;
use crate::case::CaseResult;
use crate::ctx::Ctx;

fn base09(r: &Path) -> io::Result<()> {
    file(r, "orig", b"the original name\n", 0o640, me())?;
    dir(r, "dir", 0o755, me())?;
    file(r, "dir/orig2", b"another lower file\n", 0o600, me())
}

/// Links to lower files from the upper layer, then the first original
/// name removed.
fn link09(r: &Path) -> io::Result<()> {
    hardlink(r, "link1", "orig")?;
    hardlink(r, "dir/link2", "orig")?;
    hardlink(r, "top2", "dir/orig2")?;
    remove(r, "orig")
}

pub(super) fn st09_hardlinks(ctx: &mut Ctx) -> CaseResult {
    let m0 = ctx.model("n0", &[&base09])?;
    let m1 = ctx.model("n1", &[&base09, &link09])?;
    ctx.create_rw("st09-n0", "")?;
    ctx.edit_layer("st09-n0", "fill", &[&base09])?;
    ctx.create_rw("st09-n1", "st09-n0")?;
    ctx.edit_layer(
        "st09-n1",
        "link link1 and dir/link2 to orig, top2 to dir/orig2, remove orig",
        &[&link09],
    )?;

    let want = "/link1 = /dir/link2 with orig's content after orig was removed, /top2 = /dir/orig2";
    ctx.expect_layer("st09-n1", &m1, want)?;
    ctx.create("st09-n2", "st09-n1")?;
    ctx.expect_layer("st09-n2", &m1, &format!("read-only child: {want}"))?;
    ctx.expect_layer("st09-n0", &m0, "the lower layer, where orig is still there")?;

    round_trip(ctx, "st09-n1", "st09-n0", "st09-n1i")?;
    ctx.create("st09-n2i", "st09-n1i")?;
    let via =
        format!("the diff of st09-n1 applied to a fresh child of st09-n0 ({}): {want}", engine::engine(ctx));
    ctx.expect_layer("st09-n1i", &m1, &via)?;
    ctx.expect_layer("st09-n2i", &m1, &format!("read-only child of {via}"))?;

    let mh = ctx.model("h", &[&base09, &lower_link09])?;
    engine::import_ok(
        ctx,
        "st09-h",
        "st09-n0",
        &lower_link_tar(),
        "a tar linking /top3 to the lower /dir/orig2",
    )?;
    ctx.create("st09-h2", "st09-h")?;
    let via = format!(
        "a tar with hardlink top3 → dir/orig2 (a file of the layer below) and .wh.orig, applied to a child of st09-n0 ({})",
        engine::engine(ctx)
    );
    ctx.expect_layer("st09-h", &mh, &via)?;
    ctx.expect_layer("st09-h2", &mh, &format!("read-only child of {via}"))?;
    Ok(())
}

/// A new name linked to an unchanged file of the layer below, and the
/// original name deleted: what [`lower_link_tar`] says.
fn lower_link09(r: &Path) -> io::Result<()> {
    hardlink(r, "top3", "dir/orig2")?;
    remove(r, "orig")
}

/// A layer tar whose hardlink names a file only the layer below has, as
/// berth-core's naive diff writes a new link to an unchanged lower file
/// (and as images built elsewhere hold them).
fn lower_link_tar() -> Vec<u8> {
    RawTar::new().hardlink("top3", "dir/orig2").file(".wh.orig", b"").finish()
}

fn base17(r: &Path) -> io::Result<()> {
    file(r, "a", b"plain rename\n", 0o644, me())?;
    file(r, "b", b"overwrites c\n", 0o600, me())?;
    file(r, "c", b"overwritten by b\n", 0o644, me())?;
    dir(r, "d", 0o750, me())?;
    file(r, "d/x", b"in a lower directory\n", 0o644, me())?;
    dir(r, "d/sub", 0o755, me())?;
    file(r, "d/sub/y", b"deeper\n", 0o640, me())?;
    std::os::unix::fs::symlink("x", r.join("d/link-to-x"))?;
    dir(r, "e", 0o755, me())
}

/// The renames of ST-17. `copied` learns whether the lower directory had
/// to be copied (`EXDEV`, as `mv` then does).
fn renames17(r: &Path, copied: &Cell<bool>) -> io::Result<()> {
    rename(r, "a", "a2")?;
    rename(r, "b", "c")?;
    copied.set(rename(r, "d", "d2")?);
    file(r, "n", b"made in this layer\n", 0o644, me())?;
    rename(r, "n", "e/n")?;
    rename(r, "e/n", "e/n2")?;
    Ok(())
}

pub(super) fn st17_renames(ctx: &mut Ctx) -> CaseResult {
    // Overlay without redirect_dir refuses to rename a directory from a
    // lower layer (EXDEV); tools then copy and delete, which is what
    // `build::rename` does. The plugin interface has no way to declare the
    // exception, so the case checks the result either way.
    let model_copied = Cell::new(false);
    let m0 = ctx.model("n0", &[&base17])?;
    let m1 = ctx.model("n1", &[&base17, &|r| renames17(r, &model_copied)])?;
    ctx.create_rw("st17-n0", "")?;
    ctx.edit_layer("st17-n0", "fill", &[&base17])?;
    ctx.create_rw("st17-n1", "st17-n0")?;
    let copied = Cell::new(false);
    ctx.edit_layer(
        "st17-n1",
        "rename a to a2, b over c, directory d to d2 (copying on EXDEV), new n to e/n and e/n2",
        &[&|r| renames17(r, &copied)],
    )?;
    let how = if copied.get() { " (d copied to d2: rename answered EXDEV)" } else { "" };
    let want = format!("/a2, /c with b's content and mode, /d2 with d's tree, /e/n2; no /a, /b, /d{how}");
    ctx.expect_layer("st17-n1", &m1, &want)?;
    ctx.create("st17-n2", "st17-n1")?;
    ctx.expect_layer("st17-n2", &m1, &format!("read-only child: {want}"))?;
    ctx.expect_layer("st17-n0", &m0, "the lower layer, unchanged by the renames above it")?;

    round_trip(ctx, "st17-n1", "st17-n0", "st17-n1i")?;
    let via =
        format!("the diff of st17-n1 applied to a fresh child of st17-n0 ({}): {want}", engine::engine(ctx));
    ctx.expect_layer("st17-n1i", &m1, &via)?;
    Ok(())
}
