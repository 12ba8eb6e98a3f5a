//! ST-04..ST-06: ids, parents and children, read-only layers.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_plugin_api::storage::{CreateRequest, RemoveRequest};
use berth_plugin_api::ErrorKind;

use super::tree;
use crate::case::{check, err_kind, io, CaseResult, Failure};
use crate::ctx::{ById, Ctx};

pub(super) fn st04_ids(ctx: &mut Ctx) -> CaseResult {
    ctx.create("st04-a", "")?;
    for i in 1..=ctx.repeat() {
        err_kind(
            format!("create of existing layer \"st04-a\" again (#{i})"),
            ErrorKind::AlreadyExists,
            ctx.storage().create(CreateRequest::new("st04-a", "")),
        )?;
    }
    err_kind(
        "create_rw of the id of existing read-only layer \"st04-a\"",
        ErrorKind::AlreadyExists,
        ctx.storage().create_rw(CreateRequest::new("st04-a", "")),
    )?;
    ctx.create("st04-b", "st04-a")?;
    err_kind(
        "create of existing layer \"st04-b\" again on the same parent",
        ErrorKind::AlreadyExists,
        ctx.storage().create(CreateRequest::new("st04-b", "st04-a")),
    )?;
    err_kind(
        "create of existing layer \"st04-b\" again with no parent",
        ErrorKind::AlreadyExists,
        ctx.storage().create(CreateRequest::new("st04-b", "")),
    )?;
    ctx.expect_exists("st04-a", true, "after refused re-creates")?;
    ctx.expect_exists("st04-b", true, "after refused re-creates")?;
    ctx.remove("st04-b")?;
    ctx.remove("st04-a")?;

    // Reuse: each incarnation starts empty, whatever the last one held.
    for i in 1..=ctx.repeat() {
        ctx.create_rw("st04-r", "")?;
        let p = ctx.get("st04-r")?;
        let names = io(format!("list {}", p.display()), tree::entries(&p))?;
        check(
            names.is_empty(),
            format!("layer \"st04-r\" re-created after remove (incarnation #{i})"),
            "an empty root",
            format!("leftovers {names:?}"),
        )?;
        io("write into the read-write layer", std::fs::write(p.join(format!("incarnation-{i}")), b"x"))?;
        ctx.put("st04-r")?;
        ctx.remove("st04-r")?;
        ctx.expect_exists("st04-r", false, &format!("after remove #{i}"))?;
    }
    // The id can come back as the other kind of layer, and as a parent.
    ctx.create("st04-r", "")?;
    ctx.create("st04-r2", "st04-r")?;
    ctx.remove("st04-r2")?;
    ctx.remove("st04-r")?;
    Ok(())
}

pub(super) fn st05_children(ctx: &mut Ctx) -> CaseResult {
    // a (rw, holds a marker) <- b (ro) <- c (rw);  a <- d (ro)
    ctx.create_rw("st05-a", "")?;
    let pa = ctx.get("st05-a")?;
    io("write a marker into layer \"st05-a\"", std::fs::write(pa.join("marker"), b"from a\n"))?;
    ctx.put("st05-a")?;
    ctx.create("st05-b", "st05-a")?;
    ctx.create_rw("st05-c", "st05-b")?;
    ctx.create("st05-d", "st05-a")?;

    for i in 1..=ctx.repeat() {
        err_kind(
            format!("remove of layer \"st05-a\", which has children b and d (#{i})"),
            ErrorKind::Conflict,
            ctx.storage().remove(RemoveRequest::new_id("st05-a")),
        )?;
    }
    err_kind(
        "remove of layer \"st05-b\", which has child c",
        ErrorKind::Conflict,
        ctx.storage().remove(RemoveRequest::new_id("st05-b")),
    )?;
    for id in ["st05-a", "st05-b", "st05-c", "st05-d"] {
        ctx.expect_exists(id, true, "after refused removes")?;
    }
    for id in ["st05-c", "st05-a"] {
        let p = ctx.get(id)?;
        let seen = std::fs::read(p.join("marker")).ok();
        check(
            seen.as_deref() == Some(&b"from a\n"[..]),
            format!("layer {id:?} after refused removes"),
            "the marker of layer \"st05-a\" intact",
            format!("{seen:?}"),
        )?;
        ctx.put(id)?;
    }

    // Top-down.
    ctx.remove("st05-c")?;
    err_kind(
        "remove of layer \"st05-a\" while child d remains",
        ErrorKind::Conflict,
        ctx.storage().remove(RemoveRequest::new_id("st05-a")),
    )?;
    ctx.remove("st05-b")?;
    ctx.remove("st05-d")?;
    ctx.remove("st05-a")?;
    for id in ["st05-a", "st05-b", "st05-c", "st05-d"] {
        ctx.expect_exists(id, false, "after top-down removal")?;
    }
    Ok(())
}

/// One way of writing through a path.
type Attempt = (&'static str, fn(&Path) -> std::io::Result<()>);

/// Writes that must all fail on a read-only layer, least destructive first.
const WRITES: [Attempt; 9] = [
    ("create file new-file", |p| std::fs::File::create_new(p.join("new-file")).map(drop)),
    ("mkdir new-dir", |p| std::fs::create_dir(p.join("new-dir"))),
    ("symlink new-link", |p| std::os::unix::fs::symlink("existing", p.join("new-link"))),
    ("create file dir/inner", |p| std::fs::File::create_new(p.join("dir/inner")).map(drop)),
    ("append to existing", |p| {
        let mut f = OpenOptions::new().append(true).open(p.join("existing"))?;
        f.write_all(b"written through a read-only layer\n")?;
        f.sync_all()
    }),
    ("truncate existing", |p| {
        OpenOptions::new().write(true).truncate(true).open(p.join("existing")).map(drop)
    }),
    ("chmod existing 0600", |p| {
        std::fs::set_permissions(p.join("existing"), std::fs::Permissions::from_mode(0o600))
    }),
    ("rename existing to renamed", |p| std::fs::rename(p.join("existing"), p.join("renamed"))),
    ("unlink existing", |p| std::fs::remove_file(p.join("existing"))),
];

/// Errors that mean "refused": read-only file system, or permission.
fn refused(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM))
}

pub(super) fn st06_read_only(ctx: &mut Ctx) -> CaseResult {
    const CONTENT: &[u8] = b"original\n";
    ctx.create_rw("st06-base", "")?;
    let base = ctx.get("st06-base")?;
    io("fill the read-write parent", std::fs::write(base.join("existing"), CONTENT))?;
    io("fill the read-write parent", std::fs::create_dir(base.join("dir")))?;
    ctx.put("st06-base")?;

    ctx.create("st06-ro", "st06-base")?;
    let p = ctx.get("st06-ro")?;
    // Make sure the writes below would hit real files: a wrong path would
    // make every write fail with ENOENT and prove nothing.
    let seen = std::fs::read(p.join("existing")).ok();
    check(
        seen.as_deref() == Some(CONTENT),
        format!("read-only layer \"st06-ro\" at {}", p.display()),
        "its parent's file `existing` readable with the parent's content",
        format!("{seen:?}"),
    )?;
    let mut broke = Vec::new();
    for (what, write) in WRITES {
        match write(&p) {
            Ok(()) => broke.push(format!("{what}: succeeded")),
            Err(e) if refused(&e) => {}
            Err(e) => broke.push(format!("{what}: failed with {e}, not EROFS/EACCES/EPERM")),
        }
    }

    ctx.create("st06-empty", "")?;
    let q = ctx.get("st06-empty")?;
    for (what, write) in &WRITES[..3] {
        match write(&q) {
            Ok(()) => broke.push(format!("{what} in parentless layer \"st06-empty\": succeeded")),
            Err(e) if refused(&e) => {}
            Err(e) => broke.push(format!("{what} in parentless layer \"st06-empty\": failed with {e}")),
        }
    }
    if !broke.is_empty() {
        return Err(Failure::new(
            format!(
                "write through the path `get` returned for read-only layer \"st06-ro\" ({})",
                p.display()
            ),
            "every write refused (EROFS, or EACCES/EPERM)",
            broke.join("; "),
        )
        .into());
    }
    let after = std::fs::read(p.join("existing")).ok();
    check(
        after.as_deref() == Some(CONTENT),
        "read-only layer after the refused writes",
        "content unchanged",
        format!("{after:?}"),
    )?;
    ctx.put("st06-empty")?;
    ctx.put("st06-ro")?;

    // The refusal is the layer's, not the host's: the parent still takes writes.
    let base = ctx.get("st06-base")?;
    io("write into the read-write parent afterwards", std::fs::write(base.join("later"), b"ok\n"))?;
    ctx.put("st06-base")?;
    ctx.remove("st06-empty")?;
    ctx.remove("st06-ro")?;
    ctx.remove("st06-base")?;
    Ok(())
}
