//! ST-18: changes(child, parent) lists exactly the added, modified and
//! deleted paths.
//!
//! The list comes from the driver's `DiffDriver::changes` when it has one,
//! else from berth-core's `layers::changes` over the mounted trees. Every
//! edited path must be there with the right kind, exactly once; a deleted
//! directory once (not its contents); an added directory and its contents
//! each as added. Besides those, only `modified` entries for directories
//! holding a change are accepted (Docker lists them; overlay copies them
//! up), nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use berth_plugin_api::storage::{Change, ChangeKind};

use super::build::{chmod, dir, file, me, remove};
use super::engine;
use crate::case::{CaseResult, Failure};
use crate::ctx::Ctx;

fn base18(r: &Path) -> io::Result<()> {
    file(r, "keep", b"keep\n", 0o644, me())?;
    file(r, "mod", b"v1\n", 0o644, me())?;
    file(r, "chm", b"mode only\n", 0o644, me())?;
    file(r, "gone", b"deleted\n", 0o644, me())?;
    dir(r, "dir", 0o755, me())?;
    file(r, "dir/inner", b"kept\n", 0o644, me())?;
    file(r, "dir/gone2", b"deleted\n", 0o644, me())?;
    dir(r, "olddir", 0o755, me())?;
    file(r, "olddir/x", b"deleted with its directory\n", 0o644, me())?;
    dir(r, "stay", 0o755, me())?;
    dir(r, "stay/deep", 0o755, me())?;
    file(r, "stay/deep/file", b"untouched\n", 0o644, me())
}

fn edit18(r: &Path) -> io::Result<()> {
    file(r, "mod", b"version two\n", 0o644, me())?;
    chmod(r, "chm", 0o600)?;
    remove(r, "gone")?;
    remove(r, "dir/gone2")?;
    remove(r, "olddir")?;
    file(r, "new", b"added\n", 0o644, me())?;
    dir(r, "newdir", 0o755, me())?;
    file(r, "newdir/f", b"added inside\n", 0o644, me())?;
    file(r, "dir/added", b"added in a lower directory\n", 0o644, me())
}

/// The edits of [`edit18`] as changes.
const EDITED: [(&str, ChangeKind); 9] = [
    ("/mod", ChangeKind::Modify),
    ("/chm", ChangeKind::Modify),
    ("/gone", ChangeKind::Delete),
    ("/dir/gone2", ChangeKind::Delete),
    ("/olddir", ChangeKind::Delete),
    ("/new", ChangeKind::Add),
    ("/newdir", ChangeKind::Add),
    ("/newdir/f", ChangeKind::Add),
    ("/dir/added", ChangeKind::Add),
];

/// Every path of [`base18`], as changes against nothing.
const BASE: [&str; 12] = [
    "/keep",
    "/mod",
    "/chm",
    "/gone",
    "/dir",
    "/dir/inner",
    "/dir/gone2",
    "/olddir",
    "/olddir/x",
    "/stay",
    "/stay/deep",
    "/stay/deep/file",
];

fn kind(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Add => "added",
        ChangeKind::Modify => "modified",
        ChangeKind::Delete => "deleted",
    }
}

fn show(changes: &[Change]) -> String {
    let items: Vec<String> = changes.iter().map(|c| format!("{} {}", kind(c.kind), c.path)).collect();
    format!("[{}]", items.join(", "))
}

/// Compares `got` with `want` exactly, except that `modified` entries for
/// the directories in `dirs` holding a change are accepted.
fn compare(got: &[Change], want: &[(&str, ChangeKind)], dirs: &BTreeSet<String>) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<&str, Vec<ChangeKind>> = BTreeMap::new();
    for c in got {
        seen.entry(c.path.as_str()).or_default().push(c.kind);
    }
    for (path, kinds) in &seen {
        if kinds.len() > 1 {
            let k: Vec<&str> = kinds.iter().map(|k| kind(*k)).collect();
            wrong.push(format!("{path} listed {} times ({})", kinds.len(), k.join(", ")));
        }
    }
    for (path, k) in want {
        match seen.get(path) {
            None => wrong.push(format!("{path} ({}) missing", kind(*k))),
            Some(ks) if !ks.contains(k) => {
                wrong.push(format!("{path}: want {}, have {}", kind(*k), kind(ks[0])))
            }
            Some(_) => {}
        }
    }
    for c in got {
        if want.iter().any(|(p, _)| *p == c.path) {
            continue;
        }
        let holder = c.kind == ChangeKind::Modify && (c.path == "/" || dirs.contains(&c.path));
        if !holder {
            wrong.push(format!("unexpected {} {}", kind(c.kind), c.path));
        }
    }
    wrong
}

/// Directories of the base holding an edited path (the root included).
fn holders(want: &[(&str, ChangeKind)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (p, _) in want {
        let mut cur = Path::new(p);
        while let Some(parent) = cur.parent() {
            out.insert(parent.display().to_string());
            cur = parent;
        }
    }
    out
}

pub(super) fn st18_changes(ctx: &mut Ctx) -> CaseResult {
    ctx.create_rw("st18-n0", "")?;
    ctx.edit_layer("st18-n0", "fill", &[&base18])?;
    ctx.create_rw("st18-n1", "st18-n0")?;
    ctx.edit_layer("st18-n1", "modify, chmod, delete, add", &[&edit18])?;
    let how = engine::engine(ctx);

    let got = engine::changes(ctx, "st18-n1", "st18-n0")?;
    let wrong = compare(&got, &EDITED, &holders(&EDITED));
    if !wrong.is_empty() {
        let want: Vec<String> = EDITED.iter().map(|(p, k)| format!("{} {p}", kind(*k))).collect();
        return Err(Failure::new(
            format!("changes of layer \"st18-n1\" against \"st18-n0\" ({how}): {}", show(&got)),
            format!("exactly [{}], plus `modified` for directories holding them", want.join(", ")),
            wrong.join("; "),
        )
        .into());
    }

    let got = engine::changes(ctx, "st18-n0", "")?;
    let want: Vec<(&str, ChangeKind)> = BASE.iter().map(|p| (*p, ChangeKind::Add)).collect();
    let wrong = compare(&got, &want, &BTreeSet::new());
    if !wrong.is_empty() {
        return Err(Failure::new(
            format!("changes of layer \"st18-n0\" against nothing ({how}): {}", show(&got)),
            "every path of the layer as added, once",
            wrong.join("; "),
        )
        .into());
    }
    Ok(())
}
