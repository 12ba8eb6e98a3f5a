//! ST-16 and ST-19: quotas, and what survives a driver restart.

use std::io::Write;
use std::path::Path;

use berth_plugin_api::storage::{CreateRequest, RemoveRequest};
use berth_plugin_api::ErrorKind;

use super::build::{file, me};
use super::oracle::Snapshot;
use crate::case::{check, describe_error, err_kind, io, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// Whether the driver's status declares quota support: `Some(false)` for a
/// `Quota` pair saying `unsupported`, `false`, `no` or `none`; `Some(true)`
/// for any other `Quota` value; `None` without the pair.
fn declared_quota(ctx: &Ctx) -> Result<Option<bool>, Stop> {
    let status = ctx.status("before asking for a quota")?;
    let Some((_, v)) = status.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case("quota")) else {
        return Ok(None);
    };
    let v = v.trim().to_ascii_lowercase();
    let off = ["unsupported", "false", "no", "none", "disabled"].iter().any(|w| v.starts_with(w));
    Ok(Some(!off))
}

/// The limit asked for, and what is written under and past it.
const LIMIT: &str = "8M";
const UNDER: usize = 2 << 20;
const PAST: usize = 16 << 20;

/// Writes `len` bytes to `path` and syncs; the error, if any.
fn write_len(path: &Path, len: usize) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

pub(super) fn st16_quota(ctx: &mut Ctx) -> CaseResult {
    let declared = declared_quota(ctx)?;
    ctx.create_rw("st16-base", "")?;
    let mut req = CreateRequest::new("st16-q", "st16-base");
    req.storage_opt.insert("size".into(), LIMIT.into());
    let step = format!("create_rw of layer \"st16-q\" with storage option size={LIMIT}");
    match ctx.storage().create_rw(req) {
        Err(e) if e.kind == ErrorKind::Unsupported => {
            check(
                declared != Some(true),
                &step,
                "success: the driver's status declares quota support",
                describe_error(&e),
            )?;
            check(
                !e.message.trim().is_empty(),
                &step,
                "an unsupported error that says why",
                "an empty message",
            )?;
            ctx.expect_exists("st16-q", false, "after create with an unsupported size was refused")?;
            Ok(())
        }
        Err(e) => Err(Failure::new(
            &step,
            "success (a quota) or error kind unsupported (no quota support)",
            describe_error(&e),
        )
        .with_kind(e.kind)
        .into()),
        Ok(()) => {
            ctx.adopt_layer("st16-q");
            check(
                declared != Some(false),
                &step,
                "error kind unsupported: the driver's status says it has no quota",
                "success",
            )?;
            let p = ctx.get("st16-q")?;
            io(format!("write {UNDER} bytes, under the {LIMIT} limit"), write_len(&p.join("under"), UNDER))?;
            let past = write_len(&p.join("past"), PAST);
            ctx.put("st16-q")?;
            match past {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => Ok(()),
                Err(e) => Err(Failure::new(
                    format!("write {PAST} bytes into layer \"st16-q\" (size={LIMIT})"),
                    "ENOSPC or EDQUOT",
                    format!("I/O error: {e}"),
                )
                .into()),
                Ok(()) => Err(Failure::new(
                    format!("write {PAST} bytes into layer \"st16-q\" (size={LIMIT})"),
                    "ENOSPC or EDQUOT past the limit",
                    "every byte written and synced",
                )
                .into()),
            }
        }
    }
}

/// The layers of ST-19: id, parent, read-write.
const LAYERS: [(&str, &str, bool); 4] = [
    ("st19-r0", "", true),
    ("st19-r1", "st19-r0", false),
    ("st19-r2", "st19-r1", true),
    ("st19-b", "", false),
];

fn fill19(r: &Path) -> std::io::Result<()> {
    file(r, "kept", b"survives a restart\n", 0o644, me())
}

fn upper19(r: &Path) -> std::io::Result<()> {
    file(r, "upper", b"in the read-write child\n", 0o600, me())
}

pub(super) fn st19_reopen(ctx: &mut Ctx) -> CaseResult {
    let mut trees: Vec<Snapshot> = Vec::new();
    for (id, parent, rw) in LAYERS {
        if rw {
            ctx.create_rw(id, parent)?;
        } else {
            ctx.create(id, parent)?;
        }
        match id {
            "st19-r0" => ctx.edit_layer(id, "fill", &[&fill19])?,
            "st19-r2" => ctx.edit_layer(id, "fill", &[&upper19])?,
            _ => {}
        }
    }
    for (id, _, _) in LAYERS {
        trees.push(ctx.layer_tree(id)?);
    }
    let layers = super::reported_layers(ctx, "before the restart")?;

    // Mount everything, then shut down as the daemon does.
    for (id, _, _) in LAYERS {
        ctx.get(id)?;
    }
    let before = io("read the mount table", ctx.mounts_left())?;
    ctx.cleanup_storage("with every layer mounted")?;
    let left = io("read the mount table", ctx.mounts_left())?;
    check(
        left.is_empty(),
        format!(
            "mount table after cleanup ({} mount(s) under the case root and the layers' paths before it)",
            before.len()
        ),
        "nothing mounted under the driver's roots",
        format!("{} left: {}", left.len(), list(&left)),
    )?;
    for i in 1..=ctx.repeat() {
        ctx.cleanup_storage(&format!("again (#{i})"))?;
    }

    ctx.reopen_storage()?;
    for (id, _, _) in LAYERS {
        ctx.expect_exists(id, true, "after the driver was reopened on the same root")?;
    }
    ctx.expect_exists("st19-never", false, "after the driver was reopened on the same root")?;
    let now = super::reported_layers(ctx, "after the restart")?;
    check(
        layers.is_none() || now == layers,
        "status after the driver was reopened on the same root",
        format!("Layers {}", layers.map(|n| n.to_string()).unwrap_or_default()),
        format!("Layers {}", now.map(|n| n.to_string()).unwrap_or_else(|| "missing".into())),
    )?;
    for ((id, _, _), want) in LAYERS.iter().zip(&trees) {
        ctx.expect_layer(id, want, "reopened driver: the tree it had before the restart")?;
    }
    err_kind(
        "remove of layer \"st19-r0\", which has children, after the restart",
        ErrorKind::Conflict,
        ctx.storage().remove(RemoveRequest::new("st19-r0")),
    )?;
    let p = ctx.get("st19-r1")?;
    let refused = std::fs::write(p.join("probe"), b"x").is_err();
    ctx.put("st19-r1")?;
    check(refused, "write into read-only layer \"st19-r1\" after the restart", "refused", "written")?;
    let p = ctx.get("st19-r2")?;
    io("write into read-write layer \"st19-r2\" after the restart", std::fs::write(p.join("probe"), b"x"))?;
    ctx.put("st19-r2")?;
    ctx.create("st19-r3", "st19-r2")?;
    let p = ctx.get("st19-r3")?;
    let seen = std::fs::read(p.join("probe")).ok();
    ctx.put("st19-r3")?;
    check(
        seen.as_deref() == Some(&b"x"[..]),
        "new read-only child \"st19-r3\" of \"st19-r2\" after the restart",
        "its parent's file /probe",
        format!("{seen:?}"),
    )?;
    for (id, _, _) in LAYERS {
        ctx.get(id)?;
    }
    ctx.cleanup_storage("of the reopened driver, with every layer mounted")?;
    let left = io("read the mount table", ctx.mounts_left())?;
    check(
        left.is_empty(),
        "mount table after cleanup of the reopened driver",
        "nothing mounted under the driver's roots",
        format!("{} left: {}", left.len(), list(&left)),
    )
}

fn list(paths: &[std::path::PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
