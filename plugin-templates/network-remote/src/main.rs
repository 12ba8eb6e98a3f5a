//! {{driver_name}}: serves the network driver in `driver.rs` (a veth into
//! the sandbox) over Docker's network plugin protocol, so berthd and
//! dockerd can use it out of process.
//!
//! ```text
//! {{project-name}} [--socket PATH | --tcp HOST:PORT] [--root DIR]
//! ```
//!
//! Defaults: `--socket /run/docker/plugins/{{driver_name}}.sock` (where
//! berthd and dockerd discover plugins by name), `--root
//! /var/lib/{{driver_name}}` (the state file). Stop it with SIGTERM or
//! Ctrl-C; the networks and their links stay, as the daemon still has them.
//!
//! * `driver.rs` — the `NetworkDriver` trait of `berth-plugin-api`, the
//!   same code a shared object would export (see the `network-so`
//!   template): the trait is written once;
//! * `config.rs` — options, pools, link names and MAC addresses;
//! * `links.rs` — the seam to the host (the `ip` command), and a fake for
//!   the unit tests;
//! * `state.rs` — the state file.

mod config;
mod driver;
mod links;
mod state;

use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_api::remote::{Handlers, Listen, Server};
use berth_plugin_api::{Init, InitRequest};

use crate::driver::VethDriver;

const USAGE: &str = "usage: {{project-name}} [--socket PATH | --tcp HOST:PORT] [--root DIR]";

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
    let mut listen = "/run/docker/plugins/{{driver_name}}.sock".to_string();
    let mut root = "/var/lib/{{driver_name}}".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--socket" => listen = value("--socket")?,
            "--tcp" => listen = format!("tcp://{}", value("--tcp")?),
            "--root" => root = value("--root")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen: Listen = listen.parse().map_err(|e| format!("{e}"))?;
    // The same constructor a shared object would export: it may decline
    // to run on this host (`Init::Skipped`) with a reason.
    let init = InitRequest::new("{{driver_name}}", root, "");
    let driver = match VethDriver::new(init).map_err(|e| format!("{} ({})", e.message, e.kind))? {
        Init::Ready(d) => d,
        Init::Skipped(reason) => return Err(format!("not running on this host: {reason}")),
    };
    let handlers = Handlers { network: Some(Arc::new(driver)), ..Handlers::default() };
    let server = Server::bind(&listen, handlers).map_err(|e| format!("listen on {listen}: {e}"))?;
    println!("{{driver_name}}: serving NetworkDriver on {}", server.address());
    let handle = server.spawn().map_err(|e| format!("serve: {e}"))?;
    wait_for_signal();
    handle.shutdown();
    Ok(())
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for_signal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: i32) {
        STOP.store(true, Ordering::SeqCst);
    }
    extern "C" {
        fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
    }
    // SAFETY: installs an async-signal-safe handler (one atomic store) for
    // SIGINT (2) and SIGTERM (15); `signal` has no other preconditions.
    unsafe {
        signal(2, on_signal);
        signal(15, on_signal);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
