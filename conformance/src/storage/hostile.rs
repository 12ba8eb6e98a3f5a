//! ST-15: hostile layer tars are refused with an invalid-argument error and
//! touch nothing outside the layer root.
//!
//! Beside the driver's root lies a sentinel tree (`<case>/sentinel`); the
//! base layer holds an absolute symlink `low` to it, as a lower layer of a
//! malicious image would. Each hostile tar is applied to a fresh child of
//! the base. Before and after, the suite takes a strict snapshot of the
//! sentinel (content, modes, owners, xattrs, mtimes, ctimes, link counts),
//! lists the case root, reads the base layer, and looks for any path named
//! `evil*` anywhere under the case root: every entry meant to land outside
//! has such a name, so wherever a `..` or a symlink took it, it shows. For
//! a remote plugin, whose layers live outside the case root, the directory
//! holding the base layer's path is listed too (where `..` lands).
//!
//! Device nodes are hostile only "where not allowed": the naive engine
//! (default `ApplyOptions`) refuses them; a driver's own `apply_diff` may
//! allow them, and then the node must be a device node inside the layer. A
//! character device 0/0 (overlay's whiteout) over a lower file must never
//! hide that file: refused, or shown as the device node it is.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_plugin_api::ErrorKind;

use super::build::{dir, file, me, symlink};
use super::engine;
use super::oracle::{self, Snapshot};
use super::tarball::RawTar;
use crate::case::{check, io, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// What a hostile tar may end in, besides an invalid-argument error.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// Nothing: it must be refused.
    Nothing,
    /// The device node `path` with `kind` (`c`/`b`) and number, inside the
    /// layer.
    Device(&'static str, char, (u32, u32)),
}

/// `../` repeated enough to reach `/` from any layer root, then `abs`
/// without its leading slash: the same place, reached from below.
fn climb(abs: &[u8]) -> Vec<u8> {
    let mut v = b"../".repeat(32);
    v.extend_from_slice(abs.strip_prefix(b"/").unwrap_or(abs));
    v
}

fn join(a: &[u8], b: &str) -> Vec<u8> {
    let mut v = a.to_vec();
    v.push(b'/');
    v.extend_from_slice(b.as_bytes());
    v
}

/// Every hostile tar: what it tries, the tar, and what else it may do.
fn hostile_tars(sentinel: &[u8]) -> Vec<(&'static str, Vec<u8>, Allowed)> {
    let up = climb(sentinel);
    let t = RawTar::new;
    let refused = |what, tar| (what, tar, Allowed::Nothing);
    vec![
        refused("absolute path", t().file(join(sentinel, "evil-abs"), b"x").finish()),
        refused("absolute path over a file", t().file(join(sentinel, "file"), b"overwritten").finish()),
        refused("`..` path", t().file("../evil-up", b"x").finish()),
        refused("`..` inside a path", t().file("somedir/../../evil-up2", b"x").finish()),
        refused("`..` path to the sentinel", t().file(join(&up, "evil-deep"), b"x").finish()),
        refused("`..` path over a file", t().file(join(&up, "file"), b"overwritten").finish()),
        refused("`..` directory", t().dir(join(&up, "evil-dir"), 0o755).finish()),
        refused("symlink whose relative target climbs out", t().symlink("esc", &up).finish()),
        refused("symlink to `../`", t().symlink("esc", "../evil-target").finish()),
        refused(
            "file through a symlink planted to the sentinel",
            t().symlink("esc", sentinel).file("esc/evil-through", b"x").finish(),
        ),
        refused(
            "overwrite through a planted symlink",
            t().symlink("esc", sentinel).file("esc/file", b"overwritten").finish(),
        ),
        refused(
            "directory through a planted symlink",
            t().symlink("esc", sentinel).dir("esc/evil-newdir", 0o755).finish(),
        ),
        refused("file through a symlink from a lower layer", t().file("low/evil-low", b"x").finish()),
        refused("hardlink with `..` to a file outside", t().hardlink("evil-hl", join(&up, "file")).finish()),
        refused("hardlink to an absolute path", t().hardlink("evil-hl", join(sentinel, "file")).finish()),
        refused(
            "hardlink through a planted symlink",
            t().symlink("esc", sentinel).hardlink("evil-hl", "esc/file").finish(),
        ),
        refused(
            "hardlink through a symlink from a lower layer",
            t().hardlink("evil-hl", "low/file").finish(),
        ),
        refused(
            "whiteout through a planted symlink",
            t().symlink("esc", sentinel).file("esc/.wh.file", b"").finish(),
        ),
        refused(
            "opaque marker through a planted symlink",
            t().symlink("esc", sentinel).file("esc/.wh..wh..opq", b"").finish(),
        ),
        refused("whiteout through a symlink from a lower layer", t().file("low/.wh.file", b"").finish()),
        refused("opaque marker through a lower symlink", t().file("low/.wh..wh..opq", b"").finish()),
        refused("nested whiteout through a lower symlink", t().file("low/dir/.wh.inner", b"").finish()),
        refused("whiteout with `..`", t().file(join(&up, ".wh.file"), b"").finish()),
        refused("absolute whiteout", t().file(join(sentinel, ".wh.file"), b"").finish()),
        ("character device", t().char_dev("dev/mem", 1, 1).finish(), Allowed::Device("dev/mem", 'c', (1, 1))),
        ("block device", t().block_dev("dev/sda", 8, 0).finish(), Allowed::Device("dev/sda", 'b', (8, 0))),
        (
            "character device 0/0 over a lower file",
            t().char_dev("victim", 0, 0).finish(),
            Allowed::Device("victim", 'c', (0, 0)),
        ),
    ]
}

/// Names directly in `dir`.
fn listing(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
}

/// Every path under `dir` whose name starts with `evil`, not following
/// symlinks, the sentinel left out (its snapshot shows what changed there).
fn evil_paths(dir: &Path) -> Vec<PathBuf> {
    let sentinel = dir.join("sentinel");
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with("evil") {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) && p != sentinel {
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

/// What can be seen from outside the layer.
struct Outside {
    sentinel: Snapshot,
    listing: BTreeSet<String>,
    beside: BTreeSet<String>,
    base: Snapshot,
    evil: Vec<PathBuf>,
}

/// `beside`: for a driver whose layers live outside the case root (a
/// remote plugin), the directory holding the base layer's path, where a
/// `..` from a layer root lands.
fn look(ctx: &mut Ctx, sentinel: &Path, beside: Option<&Path>) -> Result<Outside, Stop> {
    Ok(Outside {
        sentinel: io("snapshot the sentinel", oracle::snapshot_strict(sentinel))?,
        listing: io("list the case root", listing(ctx.dir()))?,
        beside: match beside {
            Some(d) => io(format!("list {}", d.display()), listing(d))?,
            None => BTreeSet::new(),
        },
        base: ctx.layer_tree("st15-base")?,
        evil: evil_paths(ctx.dir()),
    })
}

/// Checks the device node a driver allowed: `path` in layer `id` must be
/// a `kind` device numbered `major:minor`; answers what is wrong.
fn check_node(
    ctx: &mut Ctx,
    id: &str,
    path: &str,
    kind: char,
    (major, minor): (u32, u32),
) -> Result<Option<String>, Stop> {
    let p = ctx.get(id)?;
    let m = std::fs::symlink_metadata(p.join(path));
    ctx.put(id)?;
    let dev =
        |m: &std::fs::Metadata| format!("{}:{}", rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
    let shown = match &m {
        Ok(m) if m.file_type().is_char_device() => format!("char device {}", dev(m)),
        Ok(m) if m.file_type().is_block_device() => format!("block device {}", dev(m)),
        Ok(m) => format!("mode {:o}", m.mode()),
        Err(e) => format!("nothing ({e})"),
    };
    let want = format!("{} device {major}:{minor}", if kind == 'c' { "char" } else { "block" });
    Ok((shown != want).then(|| format!("accepted, but /{path} in the layer is {shown}, not a {want}")))
}

pub(super) fn st15_hostile(ctx: &mut Ctx) -> CaseResult {
    let sentinel = ctx.dir().join("sentinel");
    let fill_sentinel = |r: &Path| -> std::io::Result<()> {
        std::fs::create_dir(r)?;
        file(r, "file", b"precious\n", 0o644, me())?;
        dir(r, "dir", 0o755, me())?;
        file(r, "dir/inner", b"also precious\n", 0o600, me())
    };
    io(format!("make the sentinel {}", sentinel.display()), fill_sentinel(&sentinel))?;
    let abs = super::build::bytes(&sentinel);
    let base = |r: &Path| -> std::io::Result<()> {
        file(r, "file", b"base\n", 0o644, me())?;
        dir(r, "somedir", 0o755, me())?;
        file(r, "victim", b"a lower file\n", 0o644, me())?;
        symlink(r, "low", std::ffi::OsStr::new(&sentinel))
    };
    ctx.create_rw("st15-base", "")?;
    ctx.edit_layer("st15-base", "fill, with symlink low to the sentinel", &[&base])?;
    let how = engine::engine(ctx);
    let beside = if ctx.shared_driver() {
        let p = ctx.get("st15-base")?;
        ctx.put("st15-base")?;
        p.parent().filter(|d| !d.starts_with(ctx.dir())).map(Path::to_path_buf)
    } else {
        None
    };

    // A harmless tar applies: the refusals below are not blanket ones.
    let good = RawTar::new()
        .file("ok-file", b"fine\n")
        .dir("okdir", 0o755)
        .symlink("okdir/up", "../ok-file")
        .symlink("abs-ok", "/etc/hostname")
        .finish();
    engine::import_ok(ctx, "st15-ok", "st15-base", &good, "a harmless tar")?;
    let p = ctx.get("st15-ok")?;
    let seen = std::fs::read(p.join("okdir/up")).ok();
    ctx.put("st15-ok")?;
    check(
        seen.as_deref() == Some(&b"fine\n"[..]),
        format!("layer \"st15-ok\" (a harmless tar applied, {how})"),
        "/okdir/up a symlink to the new /ok-file",
        format!("{seen:?}"),
    )?;
    ctx.remove("st15-ok")?;

    let mut wrong = Vec::new();
    for (n, (what, tar, allowed)) in hostile_tars(&abs).into_iter().enumerate() {
        let id = format!("st15-h{n:02}");
        let before = look(ctx, &sentinel, beside.as_deref())?;
        let res = engine::import(ctx, &id, "st15-base", &tar)?;
        let mut inside = None;
        if let (Ok(_), Allowed::Device(path, kind, dev)) = (&res, allowed) {
            inside = check_node(ctx, &id, path, kind, dev)?;
        }
        // Removing the layer takes what it holds away; what is left was
        // made outside it.
        ctx.remove(&id)?;
        let after = look(ctx, &sentinel, beside.as_deref())?;
        let mut outside = before.sentinel.differences(&after.sentinel);
        outside.extend(before.base.differences(&after.base).into_iter().map(|d| format!("base layer {d}")));
        for name in after.listing.symmetric_difference(&before.listing) {
            outside.push(format!("case root entry {name:?} appeared or vanished"));
        }
        for name in after.beside.symmetric_difference(&before.beside) {
            let d = beside.as_deref().unwrap_or(Path::new("?")).display().to_string();
            outside.push(format!("entry {name:?} beside the layers, in {d}, appeared or vanished"));
        }
        let new = after.evil.iter().filter(|p| !before.evil.contains(p));
        outside.extend(new.map(|p| format!("{} created", p.display())));
        let verdict = match (res, allowed) {
            (Err(e), _) if e.kind == ErrorKind::InvalidArgument => None,
            (Err(e), _) => Some(engine::describe(&e)),
            (Ok(_), Allowed::Nothing) => Some("applied without error".to_string()),
            (Ok(_), Allowed::Device(..)) => inside,
        };
        match (verdict, outside.is_empty()) {
            (None, true) => {}
            (Some(v), true) => wrong.push(format!("{what}: {v}")),
            (v, false) => wrong.push(format!(
                "{what}: {}changed outside the layer: {}",
                v.map(|v| format!("{v}, and ")).unwrap_or_default(),
                outside.join(", ")
            )),
        }
    }
    if !wrong.is_empty() {
        return Err(Failure::new(
            format!("apply hostile tars to fresh children of \"st15-base\" ({how}), sentinel at {}", sentinel.display()),
            "each refused with error kind invalid_argument, nothing outside the layer root created, changed or deleted",
            wrong.join("; "),
        )
        .into());
    }
    Ok(())
}
