//! `berth plugin ls`, `berth plugin inspect`.

use serde::Deserialize;
use serde_json::Value;

use crate::client::{segment, Client};
use crate::output::{print_json, table, truncate, Format};
use crate::CliError;

/// How wide the REASON column of `plugin ls` may get.
const REASON_WIDTH: usize = 60;
/// How wide the ADDRESS column of `plugin ls` may get.
const ADDRESS_WIDTH: usize = 48;

/// `berth plugin ...`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// List every plugin (configured, then discovered remote ones) with its
    /// transport, address, state (shared objects: ready, skipped, failed;
    /// remote: not_activated, active, unreachable, breaker_open), median
    /// call latency and last error.
    #[command(visible_alias = "list")]
    Ls {
        /// `table` (reasons truncated) or `json` (everything, whole).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one plugin as JSON.
    Inspect {
        /// The plugin's name.
        name: String,
    },
}

/// The fields of a plugin the table shows.
#[derive(Debug, Deserialize)]
struct PluginRow {
    name: String,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    version: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    p50_us: u64,
}

/// Runs a plugin command.
pub fn run(client: &Client, cmd: PluginCommand) -> Result<(), CliError> {
    match cmd {
        PluginCommand::Ls { format: Format::Json } => print_json(&client.get::<Value>("/plugins")?),
        PluginCommand::Ls { format: Format::Table } => {
            let plugins: Vec<PluginRow> = client.get("/plugins")?;
            let rows: Vec<Vec<String>> = plugins
                .into_iter()
                .map(|p| {
                    vec![
                        p.name,
                        if p.kinds.is_empty() { "-".into() } else { p.kinds.join(",") },
                        if p.version.is_empty() { "-".into() } else { p.version },
                        p.transport,
                        truncate(&p.address, ADDRESS_WIDTH),
                        p.status,
                        if p.p50_us == 0 { "-".into() } else { format!("{}µs", p.p50_us) },
                        truncate(p.reason.as_deref().unwrap_or(""), REASON_WIDTH),
                    ]
                })
                .collect();
            let head =
                ["NAME", "KINDS", "VERSION", "TRANSPORT", "ADDRESS", "STATUS", "P50", "REASON / LAST ERROR"];
            print!("{}", table(&head, &rows));
            Ok(())
        }
        PluginCommand::Inspect { name } => {
            let view: Value = client.get(&format!("/plugins/{}", segment(&name)))?;
            print_json(&view)
        }
    }
}
