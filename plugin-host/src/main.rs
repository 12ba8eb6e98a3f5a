//! `berth-plugin-host`: loads any berth plugin `.so` and serves its
//! drivers over Docker's v1 plugin protocol, so an operator can run an
//! in-process driver out of process (for isolation), or hand it to dockerd.
//!
//! ```text
//! berth-plugin-host --plugin target/debug/libberth_volume_local.so \
//!     --socket /run/berth/plugins/local-iso.sock --name local-iso
//! ```
//!
//! Each driver kind the plugin's manifest lists is constructed the way the
//! daemon does it (`InitRequest { name, root, run_root, options }`); one
//! that declines (`Init::Skipped`) is left out with a warning, and if none
//! is ready the host exits 1. Once listening it prints one line,
//! `serving <kinds> of <file> on <address>`, and serves until SIGTERM or
//! SIGINT, when it stops listening, removes its socket (and `.spec` file)
//! and calls `cleanup` on a storage driver.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use berth_plugin_api::remote::server::{Handlers, Listen, Server};
use berth_plugin_api::storage::CleanupRequest;
use berth_plugin_api::{Init, InitRequest, Kind};
use clap::Parser;

/// Serves a berth plugin `.so` over Docker's plugin protocol.
#[derive(Debug, Parser)]
#[command(
    name = "berth-plugin-host",
    version,
    after_help = "Examples:\n  \
        berth-plugin-host --plugin target/debug/libberth_volume_local.so --socket /run/berth/plugins/local-iso.sock\n  \
        berth-plugin-host --plugin libberth_volume_local.so --tcp 127.0.0.1:0 --spec-dir /etc/docker/plugins"
)]
struct Args {
    /// The plugin's shared object.
    #[arg(long, value_name = "PATH.so")]
    plugin: PathBuf,
    /// Listen on this unix socket (e.g. /run/docker/plugins/NAME.sock for dockerd).
    #[arg(long, value_name = "PATH", required_unless_present = "tcp", conflicts_with = "tcp")]
    socket: Option<PathBuf>,
    /// Listen on TCP instead, e.g. 127.0.0.1:0 (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<String>,
    /// The drivers' name (default: the file stem without `libberth_`).
    #[arg(long)]
    name: Option<String>,
    /// Directory for the drivers' persistent state [default: /var/lib/berth/plugin-host/NAME].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for the drivers' runtime state [default: /run/berth/plugin-host/NAME].
    #[arg(long, value_name = "DIR")]
    run_root: Option<PathBuf>,
    /// The drivers' options, as JSON (what the daemon's config would give).
    #[arg(long, value_name = "JSON")]
    options: Option<String>,
    /// Write DIR/NAME.spec holding the server's URL (removed on exit).
    #[arg(long, value_name = "DIR")]
    spec_dir: Option<PathBuf>,
}

fn main() {
    // Before any thread exists, so that every thread inherits the mask and
    // the signals wait for `sigwait` below.
    let signals = block_signals();
    let args = Args::parse();
    if let Err(e) = run(&args, &signals) {
        eprintln!("berth-plugin-host: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &Args, signals: &libc::sigset_t) -> Result<()> {
    let name = match &args.name {
        Some(n) => n.clone(),
        None => default_name(&args.plugin)?,
    };
    if name.is_empty() || name.contains('/') {
        bail!("invalid name {name:?}: give --name without '/'");
    }
    let options: serde_json::Value = match &args.options {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("--options is not valid JSON: {text}"))?
        }
        None => serde_json::Value::Null,
    };
    let root = args.root.clone().unwrap_or_else(|| Path::new("/var/lib/berth/plugin-host").join(&name));
    let run_root = args.run_root.clone().unwrap_or_else(|| Path::new("/run/berth/plugin-host").join(&name));

    if !args.plugin.exists() {
        bail!("plugin {} not found", args.plugin.display());
    }
    let library = berth_core::loader::load_library(&args.plugin).map_err(|e| anyhow!(e))?;
    for dir in [&root, &run_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut init = InitRequest::new(&name, root.display().to_string(), run_root.display().to_string());
    init.options = options;

    let (handlers, ready) = construct(&library, &init)?;
    let listen = match (&args.socket, &args.tcp) {
        (Some(path), _) => Listen::Unix(path.clone()),
        (None, Some(addr)) => {
            let url = if addr.contains("://") { addr.clone() } else { format!("tcp://{addr}") };
            url.parse().map_err(|e| anyhow!("--tcp: {e}"))?
        }
        (None, None) => bail!("give --socket PATH or --tcp HOST:PORT"),
    };
    let storage = handlers.storage.clone();
    let server = match Server::bind(&listen, handlers) {
        Ok(server) => server,
        Err(e) => {
            if let Some(storage) = &storage {
                let _ = storage.cleanup(CleanupRequest::default());
            }
            return Err(e).with_context(|| format!("cannot listen on {listen}"));
        }
    };
    let address = server.address();
    let spec = match &args.spec_dir {
        Some(dir) => Some(write_spec(dir, &name, &address)?),
        None => None,
    };
    let handle = server.spawn().context("cannot start the server")?;
    let kinds: Vec<&str> = ready.iter().map(|k| k.as_str()).collect();
    println!("serving {} of {} on {address}", kinds.join(", "), args.plugin.display());
    let _ = std::io::stdout().flush();

    let signal = wait_for_signal(signals);
    eprintln!("berth-plugin-host: {}, stopping", signal_name(signal));
    handle.shutdown();
    // Everything is attempted; every failure is reported.
    let mut failures = Vec::new();
    if let Some(spec) = spec {
        if let Err(e) = std::fs::remove_file(&spec) {
            failures.push(format!("cannot remove {}: {e}", spec.display()));
        }
    }
    if let Some(storage) = storage {
        if let Err(e) = storage.cleanup(CleanupRequest::default()) {
            failures.push(format!("storage cleanup failed ({}): {}", e.kind, e.message));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// The file stem without `libberth_` (or `lib`): `libberth_volume_local.so`
/// is `volume_local`.
fn default_name(plugin: &Path) -> Result<String> {
    let stem = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("cannot derive a name from {}: give --name", plugin.display()))?;
    let name = stem.strip_prefix("libberth_").or_else(|| stem.strip_prefix("lib")).unwrap_or(stem);
    if name.is_empty() {
        bail!("cannot derive a name from {}: give --name", plugin.display());
    }
    Ok(name.to_string())
}

/// Constructs every driver the manifest lists; answers the handlers and
/// the kinds that are ready.
fn construct(
    library: &berth_core::loader::LoadedLibrary,
    init: &InitRequest,
) -> Result<(Handlers, Vec<Kind>)> {
    let module = &library.module;
    let file = library.path.display();
    let mut handlers = Handlers::default();
    let mut ready = Vec::new();
    let mut skipped = Vec::new();
    for &kind in &library.manifest.kinds {
        let failed = |e: berth_plugin_api::DriverError| {
            anyhow!("the {kind} driver of {file} failed to start ({}): {}", e.kind, e.message)
        };
        let reason = match kind {
            Kind::Storage => {
                ready_or_reason(module.new_storage(init).map_err(failed)?, &mut handlers.storage)
            }
            Kind::Network => {
                ready_or_reason(module.new_network(init).map_err(failed)?, &mut handlers.network)
            }
            Kind::Ipam => ready_or_reason(module.new_ipam(init).map_err(failed)?, &mut handlers.ipam),
            Kind::Volume => ready_or_reason(module.new_volume(init).map_err(failed)?, &mut handlers.volume),
        };
        match reason {
            None => ready.push(kind),
            Some(reason) => {
                eprintln!("berth-plugin-host: warning: the {kind} driver of {file} is skipped: {reason}");
                skipped.push(format!("{kind}: {reason}"));
            }
        }
    }
    if ready.is_empty() {
        if skipped.is_empty() {
            bail!("{file} provides no driver (its manifest lists no kind)");
        }
        bail!("no driver of {file} is ready to serve ({})", skipped.join("; "));
    }
    Ok((handlers, ready))
}

fn ready_or_reason<T: ?Sized>(made: Init<Arc<T>>, slot: &mut Option<Arc<T>>) -> Option<String> {
    match made {
        Init::Ready(driver) => {
            *slot = Some(driver);
            None
        }
        Init::Skipped(reason) => Some(reason),
    }
}

/// Writes `<dir>/<name>.spec` holding `address`; answers its path.
fn write_spec(dir: &Path, name: &str, address: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.spec"));
    std::fs::write(&path, format!("{address}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Blocks SIGTERM and SIGINT on this thread (and so on every thread
/// spawned later); [`wait_for_signal`] then takes them synchronously.
fn block_signals() -> libc::sigset_t {
    // SAFETY: `sigset_t` is plain data that sigemptyset initialises before
    // use; pthread_sigmask only changes this thread's mask and is given a
    // valid set and a null old-set pointer, which it allows.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the signals in `set`; answers its number.
fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal: libc::c_int = 0;
    loop {
        // SAFETY: `set` was initialised by `block_signals`; `signal` is a
        // valid place for sigwait to store the number.
        if unsafe { libc::sigwait(set, &mut signal) } == 0 {
            return signal;
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_stem() {
        assert_eq!(default_name(Path::new("/x/libberth_volume_local.so")).unwrap(), "volume_local");
        assert_eq!(default_name(Path::new("libcompat10.so")).unwrap(), "compat10");
        assert_eq!(default_name(Path::new("driver.so")).unwrap(), "driver");
        assert!(default_name(Path::new("/x/libberth_.so")).is_err());
    }

    #[test]
    fn socket_or_tcp_is_required_and_not_both() {
        assert!(Args::try_parse_from(["h", "--plugin", "p.so"]).is_err());
        assert!(Args::try_parse_from(["h", "--plugin", "p.so", "--socket", "/s", "--tcp", "127.0.0.1:0"])
            .is_err());
        let a = Args::try_parse_from(["h", "--plugin", "p.so", "--tcp", "127.0.0.1:0", "--spec-dir", "/d"])
            .unwrap();
        assert_eq!((a.tcp.as_deref(), a.spec_dir.as_deref()), (Some("127.0.0.1:0"), Some(Path::new("/d"))));
    }
}
