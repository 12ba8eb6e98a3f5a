//! `berth volume create | ls | inspect | rm | prune | mount | unmount`.

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
        /// `table` prints the name; `json` the whole volume.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
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
        /// Filter: dangling=true|false, driver=NAME, label=KEY[=VALUE],
        /// name=REGEX (repeatable; values of one name are alternatives).
        #[arg(short, long = "filter", value_name = "NAME=VALUE", value_parser = key_value)]
        filter: Vec<(String, String)>,
    },
    /// Remove every volume no one has mounted.
    Prune {
        /// Named volumes too, not only anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE] (repeatable).
        #[arg(long = "filter", value_name = "NAME=VALUE", value_parser = key_value)]
        filter: Vec<(String, String)>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
        /// `table` prints names and a total; `json` the daemon's answer.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Take one mount reference on a volume (what a container does when it
    /// starts) and print its id and host path.
    Mount {
        /// The volume.
        name: String,
        /// The mount id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        /// Who holds the mount, shown by inspect.
        #[arg(long, default_value = "cli")]
        user: String,
        /// `table` or `json`.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Release one mount reference taken by `berth volume mount`.
    Unmount {
        /// The volume.
        name: String,
        /// The mount id `berth volume mount` printed.
        id: String,
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
        /// Ignore volumes that do not exist, and drop the daemon's record
        /// even when the driver refuses or is gone. A volume that is
        /// mounted is never removed, force or not.
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
        VolumeCommand::Create { name, driver, opt, label, format } => {
            let body = json!({
                "Name": name.unwrap_or_default(),
                "Driver": driver.unwrap_or_default(),
                "DriverOpts": opt.into_iter().collect::<BTreeMap<_, _>>(),
                "Labels": label.into_iter().collect::<BTreeMap<_, _>>(),
            });
            let vol: Value = client.post("/volumes/create", &body)?;
            if format == Format::Json {
                return print_json(&vol);
            }
            println!("{}", vol.get("Name").and_then(Value::as_str).unwrap_or(""));
            Ok(())
        }
        VolumeCommand::Ls { format, quiet, filter } => {
            let list: VolumeList = client.get(&format!("/volumes{}", filters_query(&filter)))?;
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
        VolumeCommand::Inspect { names } => super::inspect_each(client, names, |n| format!("/volumes/{n}")),
        VolumeCommand::Prune { all, mut filter, force, format } => {
            if !force && !confirm(all)? {
                println!("Total reclaimed space: 0B");
                return Ok(());
            }
            if all {
                filter.push(("all".into(), "true".into()));
            }
            let path = format!("/volumes/prune{}", filters_query(&filter));
            let report: Value = client.post(&path, &json!({}))?;
            if format == Format::Json {
                return print_json(&report);
            }
            let deleted: Vec<&str> = report
                .get("VolumesDeleted")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
                deleted.iter().for_each(|n| println!("{n}"));
                println!();
            }
            let bytes = report.get("SpaceReclaimed").and_then(Value::as_u64).unwrap_or(0);
            println!("Total reclaimed space: {}", human_bytes(bytes));
            Ok(())
        }
        VolumeCommand::Mount { name, id, user, format } => {
            let body = json!({ "ID": id.unwrap_or_default(), "User": user });
            let r: Value = client.post(&format!("/volumes/{}/mount", segment(&name)), &body)?;
            if format == Format::Json {
                return print_json(&r);
            }
            let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            print!("{}", table(&["ID", "MOUNTPOINT"], &[vec![field("ID"), field("Mountpoint")]]));
            Ok(())
        }
        VolumeCommand::Unmount { name, id } => {
            let path = format!("/volumes/{}/unmount", segment(&name));
            client.call(hyper::Method::POST, &path, Some(&json!({ "ID": id })))?;
            println!("{id}");
            Ok(())
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

/// `?filters=…` for `name=value` pairs (Docker's `{"name":{"value":true}}`
/// form), or nothing when there are none.
fn filters_query(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut map: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k.as_str()).or_default().insert(v.as_str(), true);
    }
    format!("?filters={}", segment(&json!(map).to_string()))
}

/// Asks before pruning; anything but y/yes (or end of input) is a no.
fn confirm(all: bool) -> Result<bool, CliError> {
    let what = if all { "all volumes" } else { "all anonymous volumes" };
    eprint!("WARNING! This will remove {what} not used by at least one mount.\nAre you sure you want to continue? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CliError::Other(format!("read answer: {e}")))?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// `1.5kB`-style sizes, as Docker prints them (powers of 1000).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    // Four significant digits, trailing zeros dropped (Go's `%.4g`).
    let decimals = if v < 10.0 {
        3
    } else if v < 100.0 {
        2
    } else {
        1
    };
    let mut text = format!("{v:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
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
    fn filters_go_out_in_dockers_map_form() {
        assert_eq!(filters_query(&[]), "");
        let q = filters_query(&[("label".into(), "a=b".into()), ("label".into(), "c".into())]);
        let json = q.strip_prefix("?filters=").unwrap();
        assert!(!json.contains('{'), "percent-encoded: {q}");
        assert!(json.starts_with("%7B%22label%22"), "{q}");
    }

    #[test]
    fn sizes_print_like_dockers() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(999), "999B");
        assert_eq!(human_bytes(1500), "1.5kB");
        assert_eq!(human_bytes(123_456_789), "123.5MB");
        assert_eq!(human_bytes(2_000_000), "2MB");
    }

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
