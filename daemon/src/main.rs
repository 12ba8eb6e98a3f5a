//! `berthd`: the berth daemon. Loads the drivers the configuration names and
//! serves a subset of Docker's Engine API on a unix socket.
//!
//! This file holds the command line, start-up, and the signal-driven
//! shutdown; the listener is in [`server`], request parsing in [`routes`],
//! the handlers in [`api`] and the one error → status function in [`error`].

mod api;
mod check;
mod error;
mod host;
mod routes;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_core::{Config, Engine};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::AppState;
use crate::host::HostFacts;

/// How long in-flight requests may take to finish after SIGTERM/SIGINT.
const GRACE: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
Exit status:
  0  stopped cleanly on SIGTERM or SIGINT; with --check-config: the
     configuration is valid and every plugin is ready or skipped
  1  the configuration is invalid (the message reads file:line:column: ...)
     or the daemon could not start (socket in use, state store locked, ...)
  2  usage error on the command line
  3  with --check-config: the configuration is valid but a plugin failed
     to load (it is listed with its reason)

Without --config the embedded default configuration is used: the built-in
plugins (vfs, none, host, bridge, macvlan, default, null, local), loaded as shared objects from plugin_dirs or the directory
of berthd. --root, --exec-root and --socket override the configuration, so
several daemons can run side by side.";

/// berthd: the berth container engine daemon.
#[derive(Debug, Parser)]
#[command(name = "berthd", version, about, after_help = AFTER_HELP)]
struct Args {
    /// Configuration file (TOML); without it the embedded default is used.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, show what would load, and exit.
    #[arg(long)]
    check_config: bool,
    /// Output of --check-config.
    #[arg(long, value_enum, default_value = "text", requires = "check_config")]
    format: check::Format,
    /// Persistent state directory (overrides `[daemon] root`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides `[daemon] exec_root`).
    #[arg(long, value_name = "DIR")]
    exec_root: Option<PathBuf>,
    /// API socket path (overrides `[daemon] socket`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// list (default: $RUST_LOG, else info).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let t0 = Instant::now();
    let args = Args::parse();
    let default_level = if args.check_config { "warn" } else { "info" };
    if let Err(e) = init_logging(args.log_level.as_deref(), default_level) {
        eprintln!("berthd: {e:#}");
        return ExitCode::from(2);
    }
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            // The line editors and people read: file:line:column: message.
            eprintln!("{e}");
            eprintln!("berthd: the configuration is invalid");
            return ExitCode::from(1);
        }
    };
    let code =
        if args.check_config { check::check(config, args.format) } else { run(config, t0).map(|()| 0) };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("berthd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(flag: Option<&str>, default: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match flag {
        Some(level) => EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn load_config(args: &Args) -> Result<Config, berth_core::ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(),
    };
    if let Some(root) = &args.root {
        config.daemon.root = absolute(root);
    }
    if let Some(exec_root) = &args.exec_root {
        config.daemon.exec_root = absolute(exec_root);
    }
    if let Some(socket) = &args.socket {
        config.daemon.socket = absolute(socket);
    }
    Ok(config)
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn run(config: Config, t0: Instant) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism().map(|n| n.get().min(4)).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("berthd")
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = rt.block_on(serve(config, t0));
    // A request still parked in a hung driver call must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(config: Config, t0: Instant) -> anyhow::Result<()> {
    // Signals first, so a SIGTERM during start-up is a clean stop too.
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;

    let socket = config.daemon.socket.clone();
    server::prepare_socket(&socket)?;
    let listener = server::bind(&socket)?;
    let guard = server::SocketGuard(socket.clone());

    tracing::info!(config = %config.source, root = %config.daemon.root.display(), "starting engine");
    let engine = tokio::task::spawn_blocking(move || Engine::start(config))
        .await
        .context("engine start-up panicked")?
        .map_err(|e| anyhow::anyhow!("cannot start the engine: {e} ({})", e.kind))?;
    let engine = Arc::new(engine);
    let engine_id = host::engine_id(&engine.config().daemon.root)
        .with_context(|| format!("engine id under {}", engine.config().daemon.root.display()))?;
    let state = Arc::new(AppState { engine, host: HostFacts::read(), engine_id, listen_us: OnceLock::new() });
    let listen = t0.elapsed();
    let _ = state.listen_us.set(api::micros(listen));
    let info = state.engine.info();
    tracing::info!(
        socket = %socket.display(),
        plugins_ready = info.plugin_counts.0,
        plugins_skipped = info.plugin_counts.1,
        plugins_failed = info.plugin_counts.2,
        engine_start_us = info.startup_us,
        "berthd listening; start-up took {:.1} ms",
        listen.as_secs_f64() * 1000.0
    );
    for line in &info.reconcile.unresolved {
        tracing::warn!("ledger still has an unresolved operation: {line}");
    }

    let stop = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    server::serve(listener, Arc::clone(&state), stop, GRACE).await;

    let engine = Arc::clone(&state.engine);
    let errors = tokio::task::spawn_blocking(move || engine.shutdown()).await.unwrap_or_else(|e| {
        vec![berth_plugin_api::DriverError::internal(format!("engine shutdown panicked: {e}"))]
    });
    for e in &errors {
        tracing::error!(kind = %e.kind, "shutdown: {}", e.message);
    }
    drop(guard);
    tracing::info!(failures = errors.len(), "berthd stopped");
    Ok(())
}
