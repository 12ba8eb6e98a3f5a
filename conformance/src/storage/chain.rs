//! ST-11: a 128-layer chain mounts, and every level equals the flat replay.
//!
//! Each layer is imported from a small hand-made tar (one new file; every
//! tenth layer also deletes an earlier file with a whiteout, every
//! sixteenth rewrites `top`), the way image layers arrive. The same edits
//! run one after another on a plain directory give the expected tree at
//! every level. On top of the chain sit a read-only and a read-write layer
//! (129 layers below the read-only one's own, 128 below the other's).

use std::path::Path;

use super::build::{file, remove};
use super::engine;
use super::oracle::{self, Snapshot};
use super::tarball::RawTar;
use crate::case::{io, CaseResult, Stop};
use crate::ctx::Ctx;

/// Layers in the chain.
pub const DEPTH: usize = 128;

/// What layer `i` does.
struct Level {
    add: String,
    delete: Option<String>,
    top: Option<Vec<u8>>,
}

fn level(i: usize) -> Level {
    Level {
        add: format!("f{i:03}"),
        delete: (i % 10 == 9).then(|| format!("f{:03}", i - 5)),
        top: (i == 0 || i % 16 == 15).then(|| format!("top as of layer {i}\n").into_bytes()),
    }
}

fn tar_of(i: usize, l: &Level) -> Vec<u8> {
    let mut t = RawTar::new().file(&l.add, format!("layer {i}\n").as_bytes());
    if let Some(d) = &l.delete {
        t = t.file(format!(".wh.{d}"), b"");
    }
    if let Some(top) = &l.top {
        t = t.file("top", top);
    }
    t.finish()
}

fn replay(model: &Path, i: usize, l: &Level) -> std::io::Result<()> {
    file(model, &l.add, format!("layer {i}\n").as_bytes(), 0o644, (0, 0))?;
    if let Some(d) = &l.delete {
        remove(model, d)?;
    }
    if let Some(top) = &l.top {
        file(model, "top", top, 0o644, (0, 0))?;
    }
    Ok(())
}

fn id(i: usize) -> String {
    format!("st11-{i:03}")
}

pub(super) fn st11_deep_chain(ctx: &mut Ctx) -> CaseResult {
    super::build::need_root("tar entries are owned by root, and the flat replay must be too")?;
    ctx.model("flat", &[])?;
    let flat = ctx.model_dir("flat");
    let mut want: Vec<Snapshot> = Vec::with_capacity(DEPTH);
    for i in 0..DEPTH {
        let l = level(i);
        let parent = if i == 0 { String::new() } else { id(i - 1) };
        engine::import_ok(ctx, &id(i), &parent, &tar_of(i, &l), &format!("the tar of level {i}"))?;
        io(format!("replay level {i} on the flat model"), replay(&flat, i, &l))?;
        want.push(io("read the flat model", oracle::snapshot(&flat))?);
    }
    for (i, w) in want.iter().enumerate() {
        let what = format!("level {i} of {DEPTH}: the flat replay of levels 0..={i}");
        ctx.expect_layer(&id(i), w, &what)?;
    }
    let top = want.last().ok_or_else(|| Stop::Skip("no levels".into()))?;
    ctx.create("st11-ro", &id(DEPTH - 1))?;
    ctx.expect_layer("st11-ro", top, "a read-only layer on the 128-layer chain")?;
    ctx.create_rw("st11-rw", &id(DEPTH - 1))?;
    let container = |r: &Path| -> std::io::Result<()> {
        file(r, "container", b"ok\n", 0o644, (0, 0))?;
        remove(r, "f000")
    };
    ctx.edit_layer("st11-rw", "write /container and delete /f000 of level 0", &[&container])?;
    io("replay the read-write layer's edits on the flat model", container(&flat))?;
    let rw = io("read the flat model", oracle::snapshot(&flat))?;
    ctx.expect_layer(
        "st11-rw",
        &rw,
        "read-write on the 128-layer chain: its tree, /container added, /f000 deleted",
    )?;
    ctx.expect_layer(&id(0), &want[0], "level 0 after the read-write layer on top deleted /f000")?;
    Ok(())
}
