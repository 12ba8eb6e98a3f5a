//! `berth sandbox create | ls | inspect | rm`: network sandboxes made by
//! hand, to connect to networks until containers exist.

use serde_json::{json, Value};

use crate::client::Client;
use crate::output::{print_json, table, Format};
use crate::CliError;

/// `berth sandbox ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Make a sandbox (a network namespace) and print its id.
    Create {
        /// The name (generated when absent).
        name: Option<String>,
        /// Share the host's network namespace, for `host` networks.
        #[arg(long = "host-namespace")]
        host_namespace: bool,
        /// `table` prints the id; `json` the id and the namespace file.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls {
        /// Only ids, one a line.
        #[arg(short, long)]
        quiet: bool,
        /// `table` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show sandboxes as a JSON array.
    Inspect {
        /// Sandbox names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove sandboxes, disconnecting them from their networks first.
    #[command(visible_alias = "remove")]
    Rm {
        /// Sandbox names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Runs a sandbox command.
pub fn run(client: &Client, cmd: SandboxCommand) -> Result<(), CliError> {
    match cmd {
        SandboxCommand::Create { name, host_namespace, format } => {
            let body = json!({ "Name": name.unwrap_or_default(), "Host": host_namespace });
            let made: Value = client.post("/sandboxes/create", &body)?;
            if format == Format::Json {
                return print_json(&made);
            }
            println!("{}", made.get("Id").and_then(Value::as_str).unwrap_or(""));
            Ok(())
        }
        SandboxCommand::Ls { quiet, format } => {
            let list: Vec<Value> = client.get("/sandboxes")?;
            let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            if quiet {
                list.iter().for_each(|s| println!("{}", field(s, "Id")));
                return Ok(());
            }
            if format == Format::Json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    let nets: Vec<&str> = s
                        .get("Networks")
                        .and_then(Value::as_object)
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    vec![
                        field(s, "Id").chars().take(12).collect(),
                        field(s, "Name"),
                        field(s, "Key"),
                        nets.join(","),
                    ]
                })
                .collect();
            print!("{}", table(&["SANDBOX ID", "NAME", "KEY", "NETWORKS"], &rows));
            Ok(())
        }
        SandboxCommand::Inspect { names } => {
            super::inspect_each(client, names, |n| format!("/sandboxes/{n}"))
        }
        SandboxCommand::Rm { names } => super::remove_each(client, names, |n| format!("/sandboxes/{n}")),
    }
}
