//! {{driver_name}}: serves the IPAM driver in `driver.rs` over Docker's
//! plugin protocol, so berthd (and dockerd) can use it out of process.
//!
//! ```text
//! {{project-name}} [--socket PATH | --tcp HOST:PORT] [--state DIR]
//!     [--default-pool base=CIDR,size=N]... [--fsync]
//! ```
//!
//! Defaults: `--socket /run/docker/plugins/{{driver_name}}.sock` (where
//! berthd and dockerd discover plugins by name), `--state
//! /var/lib/{{driver_name}}` (the state file `ipam-state.json`, so pools and
//! addresses survive a restart of this process). `--default-pool`, as
//! dockerd's `--default-address-pool`, replaces the default address pools
//! (IPv4 and IPv6 in one list, tried in order); `--fsync` flushes every
//! change to the disk before answering. Stop it with SIGTERM or Ctrl-C.
//!
//! The driver's rules, and which conformance case checks each, are in
//! `driver.rs`; the allocator is in `pool.rs`, CIDR arithmetic in
//! `prefix.rs`.

mod driver;
mod pool;
mod prefix;

use std::process::ExitCode;
use std::sync::Arc;

use berth_plugin_api::remote::{Handlers, Listen, Server};
use berth_plugin_api::{Init, InitRequest};

use crate::driver::{DefaultPool, Options, SimpleIpam};

const USAGE: &str = "usage: {{project-name}} [--socket PATH | --tcp HOST:PORT] [--state DIR] \
                     [--default-pool base=CIDR,size=N]... [--fsync]";

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
    let mut state = "/var/lib/{{driver_name}}".to_string();
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--socket" => listen = value("--socket")?,
            "--tcp" => listen = format!("tcp://{}", value("--tcp")?),
            "--state" => state = value("--state")?,
            "--default-pool" => {
                let pool = default_pool(&value("--default-pool")?)?;
                opts.default_address_pools.get_or_insert_with(Vec::new).push(pool);
            }
            "--fsync" => opts.fsync = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let listen: Listen = listen.parse().map_err(|e| format!("{e}"))?;
    // The same constructor a shared object exports, with the same options
    // (the remote binary takes them as flags).
    let mut init = InitRequest::new("{{driver_name}}", state, "");
    init.options = serde_json::to_value(&opts).map_err(|e| format!("options: {e}"))?;
    let driver = match SimpleIpam::new(init).map_err(|e| format!("{} ({})", e.message, e.kind))? {
        Init::Ready(d) => d,
        Init::Skipped(reason) => return Err(format!("not running on this host: {reason}")),
    };
    let handlers = Handlers { ipam: Some(Arc::new(driver)), ..Handlers::default() };
    let server = Server::bind(&listen, handlers).map_err(|e| format!("listen on {listen}: {e}"))?;
    println!("{{driver_name}}: serving IpamDriver on {}", server.address());
    let handle = server.spawn().map_err(|e| format!("serve: {e}"))?;
    wait_for_signal();
    handle.shutdown();
    Ok(())
}

/// Parses `base=10.200.0.0/16,size=24` (dockerd's `--default-address-pool`
/// syntax); the driver checks the values.
fn default_pool(text: &str) -> Result<DefaultPool, String> {
    let (mut base, mut size) = (None, None);
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("base", v)) => base = Some(v.to_string()),
            Some(("size", v)) => {
                size = Some(v.parse().map_err(|_| format!("--default-pool: bad size {v:?}"))?)
            }
            _ => return Err(format!("--default-pool {text:?}: expected base=CIDR,size=N")),
        }
    }
    match (base, size) {
        (Some(base), Some(size)) => Ok(DefaultPool { base, size }),
        _ => Err(format!("--default-pool {text:?}: expected base=CIDR,size=N")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pool_flags_read_like_dockerd() {
        let p = default_pool("base=10.200.0.0/16,size=24").unwrap();
        assert_eq!((p.base.as_str(), p.size), ("10.200.0.0/16", 24));
        assert!(default_pool("size=24,base=fd00:1::/48").is_ok());
        for bad in ["10.200.0.0/16", "base=10.200.0.0/16", "base=10.200.0.0/16,size=x", "base=a,size=1,x=2"] {
            assert!(default_pool(bad).is_err(), "{bad}");
        }
    }
}
