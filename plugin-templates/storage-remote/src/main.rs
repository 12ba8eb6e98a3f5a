//! {{driver_name}}: serves the storage driver in `driver.rs` over Docker's
//! plugin protocol (`GraphDriver.*`), so berthd can use it out of process.
//!
//! ```text
//! {{project-name}} [--socket PATH | --tcp HOST:PORT] [--root DIR] [--run-root DIR]
//! ```
//!
//! Defaults: `--socket /run/berth/plugins/{{driver_name}}.sock` (where
//! berthd discovers plugins by name), `--root /var/lib/{{driver_name}}`
//! (the layers), `--run-root /run/{{driver_name}}` (mount points). Stop it
//! with SIGTERM or Ctrl-C: it stops serving, then unmounts every layer it
//! mounted (the driver's `cleanup`).

mod copy;
mod driver;
mod layout;
mod sys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_api::remote::{Handlers, Listen, Server};
use berth_plugin_api::storage::CleanupRequest;
use berth_plugin_api::{Init, InitRequest, StorageDriver};

use crate::driver::CopyDriver;

const USAGE: &str = "\
usage: {{project-name}} [--socket PATH | --tcp HOST:PORT] [--root DIR] [--run-root DIR]";

/// The command line.
#[derive(Debug, PartialEq)]
struct Args {
    listen: Listen,
    root: PathBuf,
    run_root: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{{project-name}}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let root = args.root.display().to_string();
    let run_root = args.run_root.display().to_string();
    // The same constructor a shared object would export: it may decline
    // to run on this host (`Init::Skipped`), with a reason.
    let init = InitRequest::new("{{driver_name}}", root, run_root);
    let driver = match CopyDriver::new(init).map_err(|e| format!("{} ({})", e.message, e.kind))? {
        Init::Ready(d) => Arc::new(d),
        Init::Skipped(reason) => return Err(format!("not running on this host: {reason}")),
    };
    let handlers = Handlers { storage: Some(driver.clone()), ..Handlers::default() };
    let server =
        Server::bind(&args.listen, handlers).map_err(|e| format!("listen on {}: {e}", args.listen))?;
    println!("{{driver_name}}: serving GraphDriver on {}", server.address());
    let handle = server.spawn().map_err(|e| format!("serve: {e}"))?;
    wait_for_signal();
    handle.shutdown();
    // What the daemon would do at shutdown: unmount everything.
    driver.cleanup(CleanupRequest::default()).map_err(|e| format!("cleanup: {}", e.message))
}

/// Parses the arguments after the program name; `None` for `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: Listen::Unix("/run/berth/plugins/{{driver_name}}.sock".into()),
        root: "/var/lib/{{driver_name}}".into(),
        run_root: "/run/{{driver_name}}".into(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--socket" => parsed.listen = Listen::Unix(absolute(value("--socket")?)?),
            "--tcp" => {
                let addr = value("--tcp")?;
                parsed.listen = format!("tcp://{addr}").parse().map_err(|e| format!("--tcp {addr}: {e}"))?;
            }
            "--root" => parsed.root = absolute(value("--root")?)?,
            "--run-root" => parsed.run_root = absolute(value("--run-root")?)?,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Some(parsed))
}

/// `path` made absolute against the working directory.
fn absolute(path: String) -> Result<PathBuf, String> {
    std::path::absolute(&path).map_err(|e| format!("{path}: {e}"))
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: installs an async-signal-safe handler (one atomic store) for
    // SIGINT and SIGTERM; `signal` has no other preconditions.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_are_parsed_and_checked() {
        let a = parse(&["--tcp", "127.0.0.1:9500", "--root", "/srv/layers"]).unwrap().unwrap();
        assert_eq!(a.listen, "tcp://127.0.0.1:9500".parse().unwrap());
        assert_eq!(a.root, PathBuf::from("/srv/layers"));
        assert_eq!(a.run_root, PathBuf::from("/run/{{driver_name}}"));
        let a = parse(&["--socket", "/tmp/s.sock"]).unwrap().unwrap();
        assert_eq!(a.listen, Listen::Unix("/tmp/s.sock".into()));
        assert_eq!(parse(&["--help"]).unwrap(), None);
        assert!(parse(&["--root"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown argument"));
    }

    #[test]
    fn the_handshake_names_the_graph_driver() {
        if sys::geteuid() != 0 {
            return eprintln!("skipped: the driver needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let driver = CopyDriver::open(&dir.path().join("root"), &dir.path().join("run")).unwrap();
        let socket = dir.path().join("d.sock");
        let handlers = Handlers { storage: Some(Arc::new(driver)), ..Handlers::default() };
        let handle = Server::bind(&Listen::Unix(socket.clone()), handlers).unwrap().spawn().unwrap();
        let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let request =
            "POST /Plugin.Activate HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        handle.shutdown();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""Implements":["GraphDriver"]"#), "{answer}");
    }
}
