//! The storage suite (`ST-*`), exactly as `CONFORMANCE.md` words each case.
//!
//! ST-01..ST-03 live here, ST-04..ST-06 in `rules.rs`, deletions and
//! whiteouts (ST-07, ST-08, ST-13) in `deletions.rs`, hardlinks and renames
//! (ST-09, ST-17) in `links.rs`, diff round trips (ST-10, ST-12, ST-14) in
//! `roundtrip.rs`, the 128-layer chain (ST-11) in `chain.rs`, hostile tars
//! (ST-15) in `hostile.rs`, changes (ST-18) in `changes.rs`, quotas and
//! restarts (ST-16, ST-19) in `state.rs`. Layer ids are prefixed with the
//! case id so a leftover names its case.
//!
//! Trees are compared with the flat-directory [`oracle`]; diffs and applies
//! go through the driver's `DiffDriver` or berth-core's naive engine as the
//! daemon would ([`engine`]).

pub mod build;
mod chain;
mod changes;
mod deletions;
pub mod engine;
mod hostile;
mod links;
pub mod oracle;
mod roundtrip;
mod rules;
mod state;
pub mod tarball;
pub mod tree;

use berth_plugin_api::storage::{CleanupRequest, GetRequest, PutRequest, RemoveRequest};
use berth_plugin_api::ErrorKind;

use crate::case::{check, err_kind, io, ok, Case, CaseResult, Stop, Suite};
use crate::ctx::{ById, Ctx};
use crate::sys;

/// Every implemented storage case, in ID order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "ST-01",
            description: "a new empty layer's root is 0755 root:root and empty",
            suite: Suite::Storage,
            run: st01_empty_layer_root,
        },
        Case {
            id: "ST-02",
            description:
                "setuid/setgid/sticky bits and ownership survive get/put and show unchanged in children",
            suite: Suite::Storage,
            run: st02_special_bits_and_owners,
        },
        Case {
            id: "ST-03",
            description:
                "lifecycle: create → get → put → remove; `exists` and `status` tell the truth at each step",
            suite: Suite::Storage,
            run: st03_lifecycle,
        },
        Case {
            id: "ST-04",
            description:
                "creating an id that exists is an already-exists error; an id is reusable after remove",
            suite: Suite::Storage,
            run: rules::st04_ids,
        },
        Case {
            id: "ST-05",
            description: "a layer with children cannot be removed; top-down removal works",
            suite: Suite::Storage,
            run: rules::st05_children,
        },
        Case {
            id: "ST-06",
            description: "a read-only layer mounted by `get` refuses writes, checked by really writing",
            suite: Suite::Storage,
            run: rules::st06_read_only,
        },
        Case {
            id: "ST-07",
            description:
                "a file deleted in layer N is gone in N and all descendants and still present in N-1",
            suite: Suite::Storage,
            run: deletions::st07_deletion,
        },
        Case {
            id: "ST-08",
            description:
                "opaque directory: delete a directory and recreate it above; nothing from below leaks through",
            suite: Suite::Storage,
            run: deletions::st08_opaque,
        },
        Case {
            id: "ST-09",
            description: "hardlinks made in an upper layer to lower files survive removal of the original name and round-trip through diff/apply",
            suite: Suite::Storage,
            run: links::st09_hardlinks,
        },
        Case {
            id: "ST-10",
            description:
                "same-size content change plus mode change within one second is captured by diff (repeat 5×)",
            suite: Suite::Storage,
            run: roundtrip::st10_racy_edits,
        },
        Case {
            id: "ST-11",
            description: "a 128-layer chain mounts, and every level equals the flat replay",
            suite: Suite::Storage,
            run: chain::st11_deep_chain,
        },
        Case {
            id: "ST-12",
            description: "diff(child, parent) applied to a fresh child of parent gives the identical tree; applied size equals diff_size",
            suite: Suite::Storage,
            run: roundtrip::st12_round_trip,
        },
        Case {
            id: "ST-13",
            description: "exported diffs encode deletions as `.wh.<name>` and opaque dirs as `.wh..wh..opq`; importing such a tar gives the right tree",
            suite: Suite::Storage,
            run: deletions::st13_whiteout_format,
        },
        Case {
            id: "ST-14",
            description: "`user.*` xattrs and `security.capability` survive commit, diff and apply",
            suite: Suite::Storage,
            run: roundtrip::st14_xattrs,
        },
        Case {
            id: "ST-15",
            description: "applying a hostile tar (absolute or `..` paths, escaping symlinks and hardlinks, whiteouts through symlinks, device nodes where not allowed) never creates, changes or deletes anything outside the layer root, and fails with an invalid-argument error",
            suite: Suite::Storage,
            run: hostile::st15_hostile,
        },
        Case {
            id: "ST-16",
            description: "quota (`size=` option), where the driver declares it: writes past the limit fail with ENOSPC/EDQUOT; otherwise a typed unsupported error",
            suite: Suite::Storage,
            run: state::st16_quota,
        },
        Case {
            id: "ST-17",
            description: "renames inside a layer: overwrite by rename, plain rename, rename of a lower directory (or a declared exception)",
            suite: Suite::Storage,
            run: links::st17_renames,
        },
        Case {
            id: "ST-18",
            description: "changes(child, parent) lists exactly the added, modified and deleted paths",
            suite: Suite::Storage,
            run: changes::st18_changes,
        },
        Case {
            id: "ST-19",
            description: "a driver reopened on the same root lists the same layers; cleanup unmounts everything it mounted",
            suite: Suite::Storage,
            run: state::st19_reopen,
        },
    ]
}

/// The owner a fresh layer root must have: `root:root` for a daemon running
/// as root; an unprivileged daemon cannot make root-owned files, so there
/// it is the suite's own uid:gid.
fn expected_owner() -> (u32, u32) {
    if sys::euid() == 0 {
        (0, 0)
    } else {
        (sys::euid(), sys::egid())
    }
}

fn st01_empty_layer_root(ctx: &mut Ctx) -> CaseResult {
    let (uid, gid) = expected_owner();
    for (id, rw) in [("st01-ro", false), ("st01-rw", true)] {
        if rw {
            ctx.create_rw(id, "")?;
        } else {
            ctx.create(id, "")?;
        }
        let path = ctx.get(id)?;
        let step = format!(
            "root of new empty {} layer {id:?} at {}",
            if rw { "read-write" } else { "read-only" },
            path.display()
        );
        let f = tree::facts_at(&path, &step)?;
        check(f.kind == 'd', &step, "a directory", f.describe())?;
        check(f.mode == 0o755, &step, "mode 0755", format!("mode {:04o}", f.mode))?;
        check(
            (f.uid, f.gid) == (uid, gid),
            &step,
            format!("owner {uid}:{gid}"),
            format!("owner {}:{}", f.uid, f.gid),
        )?;
        let names = io(format!("list {}", path.display()), tree::entries(&path))?;
        check(names.is_empty(), &step, "an empty directory", format!("entries {names:?}"))?;
        ctx.put(id)?;
    }
    Ok(())
}

fn st02_special_bits_and_owners(ctx: &mut Ctx) -> CaseResult {
    if sys::euid() != 0 {
        return Err(Stop::Skip(
            "needs root: giving files other owners (chown) and keeping setuid bits on them needs CAP_CHOWN and CAP_FSETID"
                .into(),
        ));
    }
    ctx.create_rw("st02-base", "")?;
    let base = ctx.get("st02-base")?;
    io(format!("make setuid/setgid/sticky specimens in {}", base.display()), tree::make_specimens(&base))?;
    compare("st02-base", "right after they were made", &base)?;
    ctx.put("st02-base")?;

    let base = ctx.get("st02-base")?;
    compare("st02-base", "after put and a new get", &base)?;
    ctx.put("st02-base")?;

    ctx.create_rw("st02-child", "st02-base")?;
    let child = ctx.get("st02-child")?;
    compare("st02-child", "(read-write child of st02-base)", &child)?;
    ctx.put("st02-child")?;

    ctx.create("st02-grandchild", "st02-child")?;
    let grandchild = ctx.get("st02-grandchild")?;
    compare("st02-grandchild", "(read-only child of st02-child)", &grandchild)?;
    ctx.put("st02-grandchild")?;

    ctx.remove("st02-grandchild")?;
    ctx.remove("st02-child")?;
    ctx.remove("st02-base")?;
    Ok(())
}

/// Fails unless the ST-02 specimens under `root` (layer `id`) are intact.
fn compare(id: &str, when: &str, root: &std::path::Path) -> CaseResult {
    let bad = tree::specimen_mismatches(root);
    check(
        bad.is_empty(),
        format!("specimens in layer {id:?} {when} ({})", root.display()),
        "every mode bit, owner and symlink exactly as set",
        bad.join("; "),
    )
}

/// The layer count the driver's status reports, if it reports one
/// (a `Layers` pair, any letter case).
fn reported_layers(ctx: &Ctx, when: &str) -> Result<Option<usize>, Stop> {
    let status = ctx.status(when)?;
    let Some((_, v)) = status.iter().find(|(k, _)| k.trim().eq_ignore_ascii_case("layers")) else {
        return Ok(None);
    };
    match v.trim().parse::<usize>() {
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(crate::case::Failure::new(
            format!("status {when}"),
            "`Layers` to be a number",
            format!("{v:?}"),
        )
        .into()),
    }
}

fn expect_layers(ctx: &Ctx, want: Option<usize>, when: &str) -> CaseResult {
    let Some(want) = want else { return Ok(()) };
    let got = reported_layers(ctx, when)?;
    check(
        got == Some(want),
        format!("status {when}"),
        format!("Layers {want}"),
        match got {
            Some(n) => format!("Layers {n}"),
            None => "no Layers pair (it was reported before)".into(),
        },
    )
}

fn st03_lifecycle(ctx: &mut Ctx) -> CaseResult {
    for (id, rw) in [("st03-ro", false), ("st03-rw", true)] {
        ctx.expect_exists(id, false, "before create")?;
        let before = reported_layers(ctx, "before create")?;
        if rw {
            ctx.create_rw(id, "")?;
        } else {
            ctx.create(id, "")?;
        }
        ctx.expect_exists(id, true, "after create")?;
        expect_layers(ctx, before.map(|n| n + 1), &format!("after create of {id:?}"))?;

        let first = ctx.get(id)?;
        ctx.expect_exists(id, true, "while mounted")?;
        let second = ctx.get(id)?;
        check(
            first == second,
            format!("second get of mounted layer {id:?}"),
            format!("the same path {}", first.display()),
            second.display(),
        )?;
        if rw {
            io(
                "write a probe file into the read-write layer",
                std::fs::write(first.join("probe"), b"probe\n"),
            )?;
        }
        reported_layers(ctx, "while mounted twice")?;
        ctx.put(id)?;
        check(
            first.is_dir(),
            format!("layer {id:?} after one of two puts"),
            "its path still a directory",
            "gone",
        )?;
        if rw {
            let seen = std::fs::read(first.join("probe")).ok();
            check(
                seen.as_deref() == Some(&b"probe\n"[..]),
                format!("layer {id:?} after one of two puts"),
                "the probe file still readable (one reference is left)",
                format!("{seen:?}"),
            )?;
        }
        ctx.put(id)?;
        ctx.expect_exists(id, true, "after the last put")?;
        for i in 1..=ctx.repeat() {
            err_kind(
                format!("put of layer {id:?} with no reference left (#{i})"),
                ErrorKind::FailedPrecondition,
                ctx.storage().put(PutRequest::new_id(id)),
            )?;
        }
        ctx.expect_exists(id, true, "after puts with no reference left")?;
        expect_layers(ctx, before.map(|n| n + 1), "after the last put")?;

        ctx.remove(id)?;
        ctx.expect_exists(id, false, "after remove")?;
        expect_layers(ctx, before, &format!("after remove of {id:?}"))?;
        for i in 1..=ctx.repeat() {
            err_kind(
                format!("remove of already removed layer {id:?} (#{i})"),
                ErrorKind::NotFound,
                ctx.storage().remove(RemoveRequest::new_id(id)),
            )?;
            ctx.expect_exists(id, false, &format!("after repeated remove #{i}"))?;
        }
        err_kind(
            format!("get of removed layer {id:?}"),
            ErrorKind::NotFound,
            ctx.storage().get(GetRequest::new_id(id)),
        )?;
        expect_layers(ctx, before, "at the end")?;
    }
    ctx.expect_exists("st03-never-created", false, "for an id never created")?;
    // `cleanup` (daemon shutdown) must be idempotent too, and leave the
    // driver answering.
    ctx.create("st03-after", "")?;
    for i in 1..=ctx.repeat() {
        ok(format!("cleanup (#{i})"), ctx.storage().cleanup(CleanupRequest::default()))?;
    }
    ctx.expect_exists("st03-after", true, "after repeated cleanup")?;
    ctx.remove("st03-after")?;
    Ok(())
}
