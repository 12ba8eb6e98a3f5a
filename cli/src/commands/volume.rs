//! `berth volume create | ls | inspect | rm`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, table, Format};
use crate::CliError;

/// `berth volume ...`.
#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume and print its name.
    Create {
        /// The name (generated when absent).
        name: Option<String>,
        /// The volume driver (default: the daemon's default).
        #[arg(short, long, value_name = "DRIVER")]
        driver: Option<String>,
        /// A driver option, key=value (repeatable).
        #[arg(short, long = "opt", value_name = "KEY=VALUE", value_parser = key_value)]
        opt: Vec<(String, String)>,
        /// A label, key=value (repeatable).
        #[arg(long, value_name = "KEY=VALUE", value_parser = label)]
        label: Vec<(String, String)>,
    },
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls {
        /// `table` or `json` (the volumes as a JSON array).
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Only names, one a line.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as a JSON array.
    Inspect {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    #[command(visible_alias = "remove")]
    Rm {
        /// Remove the daemon's record even when the driver refuses.
        #[arg(short, long)]
        force: bool,
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeList {
    #[serde(default)]
    volumes: Vec<Value>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

/// Runs a volume command.
pub fn run(client: &Client, cmd: VolumeCommand) -> Result<(), CliError> {
    match cmd {
        VolumeCommand::Create { name, driver, opt, label } => {
            let body = json!({
                "Name": name.unwrap_or_default(),
                "Driver": driver.unwrap_or_default(),
                "DriverOpts": opt.into_iter().collect::<BTreeMap<_, _>>(),
                "Labels": label.into_iter().collect::<BTreeMap<_, _>>(),
            });
            let vol: Value = client.post("/volumes/create", &body)?;
            println!("{}", vol.get("Name").and_then(Value::as_str).unwrap_or(""));
            Ok(())
        }
        VolumeCommand::Ls { format, quiet } => {
            let list: VolumeList = client.get("/volumes")?;
            for w in list.warnings.iter().flatten() {
                eprintln!("Warning: {w}");
            }
            let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            if quiet {
                for v in &list.volumes {
                    println!("{}", field(v, "Name"));
                }
                return Ok(());
            }
            match format {
                Format::Json => print_json(&list.volumes),
                Format::Table => {
                    let rows: Vec<Vec<String>> =
                        list.volumes.iter().map(|v| vec![field(v, "Driver"), field(v, "Name")]).collect();
                    print!("{}", table(&["DRIVER", "VOLUME NAME"], &rows));
                    Ok(())
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut found = Vec::new();
            let mut failed = Vec::new();
            for name in names {
                match client.get::<Value>(&format!("/volumes/{}", segment(&name))) {
                    Ok(v) => found.push(v),
                    Err(e @ CliError::Api { .. }) => failed.push(e),
                    Err(e) => return Err(e),
                }
            }
            print_json(&found)?;
            report(failed)
        }
        VolumeCommand::Rm { force, names } => {
            let mut failed = Vec::new();
            for name in names {
                let path = format!("/volumes/{}{}", segment(&name), if force { "?force=1" } else { "" });
                match client.delete(&path) {
                    Ok(()) => println!("{name}"),
                    Err(e @ CliError::Api { .. }) => failed.push(e),
                    Err(e) => return Err(e),
                }
            }
            report(failed)
        }
    }
}

/// Prints every per-operand error; one or more make the exit status 1.
fn report(failed: Vec<CliError>) -> Result<(), CliError> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.into_iter().next().unwrap_or(CliError::Reported)),
        _ => {
            failed.iter().for_each(CliError::print);
            Err(CliError::Reported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_need_key_value_and_labels_may_omit_the_value() {
        assert_eq!(key_value("size=10G").unwrap(), ("size".into(), "10G".into()));
        assert_eq!(key_value("o=a=b").unwrap(), ("o".into(), "a=b".into()));
        assert!(key_value("size").is_err());
        assert!(key_value("=x").is_err());
        assert_eq!(label("team").unwrap(), ("team".into(), String::new()));
        assert_eq!(label("team=db").unwrap(), ("team".into(), "db".into()));
    }
}
