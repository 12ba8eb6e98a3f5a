//! PL-01: finding a plugin by name, in dockerd's order.

use std::path::{Path, PathBuf};

use berth_core::remote::{Discovery, Found};
use berth_plugin_api::ErrorKind;

use super::fixture::dead_socket;
use super::mentions;
use crate::case::{check, err_kind, io, ok, CaseResult, Stop};
use crate::ctx::Ctx;

const NAME: &str = "pl01";

/// How a find answer reads in messages.
fn shown(found: &Option<Found>) -> String {
    match found {
        Some(f) => format!("{} from {}", f.address, f.source.display()),
        None => "nothing".into(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), Stop> {
    io(format!("write {}", path.display()), std::fs::write(path, text))
}

fn remove(path: &Path) -> Result<(), Stop> {
    io(format!("remove {}", path.display()), std::fs::remove_file(path))
}

pub(super) fn pl01_discovery(ctx: &mut Ctx) -> CaseResult {
    let sockets = ctx.dir().join("run-plugins");
    let specs = ctx.dir().join("etc-plugins");
    for d in [sockets.join(NAME), specs.join(NAME)] {
        io(format!("make {}", d.display()), std::fs::create_dir_all(&d))?;
    }
    let d = Discovery::new(vec![sockets.clone()], vec![specs.clone()]);

    // Every form at once, in the order they must win; each removed in turn.
    let sock = sockets.join(format!("{NAME}.sock"));
    let sub_sock = sockets.join(NAME).join(format!("{NAME}.sock"));
    let spec = specs.join(format!("{NAME}.spec"));
    let sub_spec = specs.join(NAME).join(format!("{NAME}.spec"));
    let json = specs.join(format!("{NAME}.json"));
    let sub_json = specs.join(NAME).join(format!("{NAME}.json"));
    for s in [&sock, &sub_sock] {
        io(format!("make socket {}", s.display()), dead_socket(s))?;
    }
    write(&spec, "  tcp://127.0.0.1:7001 \n")?;
    write(&sub_spec, "tcp://127.0.0.1:7002\n")?;
    write(&json, r#"{"Name":"ignored","Addr":"tcp://127.0.0.1:7003"}"#)?;
    write(&sub_json, r#"{"Addr":"tcp://127.0.0.1:7004","Unknown":null}"#)?;
    // Files discovery must not take: wrong extensions, a regular file named
    // like a socket, a spec file in the socket directory, a socket-named
    // file in the spec directory.
    write(&sockets.join("x.txt"), "tcp://127.0.0.1:7100")?;
    write(&sockets.join("y.sock"), "not a socket")?;
    write(&sockets.join(format!("{NAME}.spec")), "tcp://127.0.0.1:7101")?;
    write(&specs.join(format!("{NAME}.txt")), "tcp://127.0.0.1:7102")?;
    write(&specs.join("x.sock"), "tcp://127.0.0.1:7103")?;

    let order: [(&PathBuf, String); 6] = [
        (&sock, format!("unix://{}", sock.display())),
        (&sub_sock, format!("unix://{}", sub_sock.display())),
        (&spec, "tcp://127.0.0.1:7001".into()),
        (&sub_spec, "tcp://127.0.0.1:7002".into()),
        (&json, "tcp://127.0.0.1:7003".into()),
        (&sub_json, "tcp://127.0.0.1:7004".into()),
    ];
    let mut removed: Vec<String> = Vec::new();
    for (source, address) in &order {
        let when = if removed.is_empty() {
            "with a socket, a .spec and a .json for it, flat and in its subdirectory".to_string()
        } else {
            format!("after removing {}", removed.join(", "))
        };
        let step = format!("find plugin {NAME:?} {when}");
        let found = ok(&step, d.find(NAME))?;
        check(
            found.as_ref().is_some_and(|f| &f.source == *source && &f.address == address && f.name == NAME),
            &step,
            format!("{address} from {}", source.display()),
            shown(&found),
        )?;
        remove(source)?;
        removed.push(source.strip_prefix(ctx.dir()).unwrap_or(source).display().to_string());
    }
    let found = ok(format!("find plugin {NAME:?} after removing all six"), d.find(NAME))?;
    check(
        found.is_none(),
        format!("find plugin {NAME:?} after removing all six (only unknown files left)"),
        "nothing: wrong extensions, regular files named .sock and spec files in the socket directory are ignored",
        shown(&found),
    )?;
    for other in ["x", "y"] {
        let found = ok(format!("find plugin {other:?}"), d.find(other))?;
        check(
            found.is_none(),
            format!(
                "find plugin {other:?} (only x.txt, a regular file y.sock and x.sock in the spec directory)"
            ),
            "nothing",
            shown(&found),
        )?;
    }

    // A scan lists the usable ones only, and skips a spec it cannot use.
    io(format!("make socket {}", sock.display()), dead_socket(&sock))?;
    write(&specs.join("other.spec"), "unix:///run/other.sock")?;
    write(&specs.join("noscheme.spec"), "/run/plugins/noscheme.sock\n")?;
    write(&specs.join("noscheme2.json"), r#"{"Addr":"localhost:8080"}"#)?;
    let mut names: Vec<String> = d.scan().into_iter().map(|f| f.name).collect();
    names.sort();
    check(
        names == ["other", NAME],
        "scan the directories",
        "exactly [\"other\", \"pl01\"] (unknown files ignored, unusable specs skipped)",
        format!("{names:?}"),
    )?;

    // A spec without a scheme is a clear error naming the file and the text.
    let path = specs.join("noscheme.spec");
    let e = err_kind(
        "find plugin \"noscheme\" (a .spec holding /run/plugins/noscheme.sock)",
        ErrorKind::InvalidArgument,
        d.find("noscheme"),
    )?;
    mentions(
        "the error of a .spec without a scheme",
        &e.message,
        &[&path.display().to_string(), "/run/plugins/noscheme.sock"],
    )?;
    let path = specs.join("noscheme2.json");
    let e = err_kind(
        "find plugin \"noscheme2\" (a .json whose Addr is localhost:8080)",
        ErrorKind::InvalidArgument,
        d.find("noscheme2"),
    )?;
    mentions(
        "the error of a .json Addr without a scheme",
        &e.message,
        &[&path.display().to_string(), "localhost:8080"],
    )
}
