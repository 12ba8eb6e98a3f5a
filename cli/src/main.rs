//! `berth`: the command-line client of berthd.
//!
//! One file per verb group under `commands/`; the HTTP client is
//! [`client`]; tables and JSON output helpers are in [`output`].

mod client;
mod commands;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::commands::{image, network, plugin, sandbox, system, volume};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  berthd answered an error (printed as `Error: <message> (<kind>)`)
  2  usage error (unknown command or flag, bad --host)
  3  cannot reach berthd (the message names the socket): start berthd, or
     point --host / BERTH_HOST at its socket";

/// berth: the command-line client of the berth container engine.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// Daemon socket to talk to.
    #[arg(
        short = 'H',
        long,
        env = "BERTH_HOST",
        default_value = "unix:///run/berth/berth.sock",
        global = true,
        value_name = "unix:///PATH"
    )]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the client's and the daemon's versions.
    Version(system::VersionArgs),
    /// Show system-wide information.
    Info(system::InfoArgs),
    /// Inspect the daemon's plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage networks: create, ls, inspect, rm, connect, disconnect, prune.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage sandboxes (network namespaces to connect until containers exist).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// Manage images: load, save, ls, inspect, rm.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List images (`berth image ls`).
    Images(image::LsArgs),
    /// Load images from an archive (`berth image load`).
    Load(image::LoadArgs),
    /// Write images to an archive (`berth image save`).
    Save(image::SaveArgs),
    /// Remove images (`berth image rm`).
    Rmi(image::RmArgs),
}

/// Why a command failed; each maps to one exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad usage found after parsing (exit 2).
    Usage(String),
    /// berthd answered an error (exit 1).
    Api {
        /// HTTP status.
        status: u16,
        /// The error kind, when berthd sent one.
        kind: Option<String>,
        /// Its message.
        message: String,
    },
    /// berthd cannot be reached, or the connection broke (exit 3).
    Unreachable {
        /// What happened, naming the socket.
        message: String,
    },
    /// Anything else, e.g. an answer that does not decode (exit 1).
    Other(String),
    /// Errors already printed, one per failed operand (exit 1).
    Reported,
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
            CliError::Api { .. } | CliError::Other(_) | CliError::Reported => 1,
        }
    }

    /// Prints the one `Error: ...` line (nothing for [`CliError::Reported`]).
    pub fn print(&self) {
        match self {
            CliError::Usage(m) | CliError::Other(m) | CliError::Unreachable { message: m } => {
                eprintln!("Error: {m}")
            }
            CliError::Api { kind: Some(kind), message, .. } => eprintln!("Error: {message} ({kind})"),
            CliError::Api { kind: None, message, status } => eprintln!("Error: {message} (HTTP {status})"),
            CliError::Reported => {}
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Client::new(&cli.host).and_then(|client| match cli.command {
        Command::Version(args) => system::version(&client, args),
        Command::Info(args) => system::info(&client, args),
        Command::Plugin(cmd) => plugin::run(&client, cmd),
        Command::Volume(cmd) => volume::run(&client, cmd),
        Command::Network(cmd) => network::run(&client, cmd),
        Command::Sandbox(cmd) => sandbox::run(&client, cmd),
        Command::Image(cmd) => image::run(&client, cmd),
        Command::Images(args) => image::ls(&client, args),
        Command::Load(args) => image::load(&client, args),
        Command::Save(args) => image::save(&client, args),
        Command::Rmi(args) => image::rm(&client, args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
