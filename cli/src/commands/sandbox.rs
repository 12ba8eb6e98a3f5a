//! `berth sandbox create | ls | inspect | rm`: network sandboxes made by
//! hand, to connect to networks until containers exist. `create -p`
//! publishes ports as `docker run -p` does (parsed in [`super::publish`]);
//! `ls` shows them in a PORTS column as `docker ps` does.

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
        /// The name, as a flag (`docker run --name`).
        #[arg(long = "name", value_name = "NAME", conflicts_with = "name")]
        name_flag: Option<String>,
        /// Share the host's network namespace, for `host` networks.
        #[arg(long = "host-namespace")]
        host_namespace: bool,
        /// Publish a port: `[ip:][hostPort:]containerPort[/proto]` as
        /// `docker run -p` takes it (`8080:80`, `127.0.0.1::80`,
        /// `8000-8010:80`, `53/udp`); repeatable. Published when the
        /// sandbox is connected to a network that publishes ports (bridge).
        #[arg(short = 'p', long = "publish", value_name = "SPEC")]
        publish: Vec<String>,
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
        SandboxCommand::Create { name, name_flag, host_namespace, publish, format } => {
            let mut bindings = Vec::new();
            for spec in &publish {
                let parsed = super::publish::parse(spec)
                    .map_err(|why| CliError::Usage(format!("invalid -p/--publish {spec:?}: {why}")))?;
                bindings.extend(parsed);
            }
            let mut body = json!({ "Name": name.or(name_flag).unwrap_or_default(), "Host": host_namespace });
            if !bindings.is_empty() {
                let (port_bindings, exposed) = super::publish::body(&bindings);
                body["PortBindings"] = port_bindings;
                body["ExposedPorts"] = exposed;
            }
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
                        super::publish::column(s.get("Ports")),
                    ]
                })
                .collect();
            print!("{}", table(&["SANDBOX ID", "NAME", "KEY", "NETWORKS", "PORTS"], &rows));
            Ok(())
        }
        SandboxCommand::Inspect { names } => {
            super::inspect_each(client, names, |n| format!("/sandboxes/{n}"))
        }
        SandboxCommand::Rm { names } => super::remove_each(client, names, |n| format!("/sandboxes/{n}")),
    }
}
