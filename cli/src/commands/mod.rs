//! One module per verb group, and the few helpers the newer ones share.

pub mod image;
pub mod network;
pub mod plugin;
pub mod publish;
pub mod sandbox;
pub mod system;
pub mod volume;

use std::collections::BTreeMap;

use serde_json::json;

use crate::client::segment;
use crate::CliError;

/// Parses `key=value`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// Parses a label: `key=value`, or `key` for an empty value.
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// `?filters=…` for `name=value` pairs (Docker's `{"name":{"value":true}}`
/// form), or nothing when there are none.
pub fn filters_query(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut map: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k.as_str()).or_default().insert(v.as_str(), true);
    }
    format!("?filters={}", segment(&json!(map).to_string()))
}

/// `GET`s `path(name)` for every name and prints the answers as one JSON
/// array; an API error for one name is reported after the others (Docker's
/// `inspect` of several objects).
pub fn inspect_each(
    client: &crate::client::Client,
    names: Vec<String>,
    path: impl Fn(&str) -> String,
) -> Result<(), CliError> {
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for name in names {
        match client.get::<serde_json::Value>(&path(&segment(&name))) {
            Ok(v) => found.push(v),
            Err(e @ CliError::Api { .. }) => failed.push(e),
            Err(e) => return Err(e),
        }
    }
    crate::output::print_json(&found)?;
    report(failed)
}

/// `DELETE`s `path(name)` for every name, printing each name removed; an
/// API error for one name is reported after the others.
pub fn remove_each(
    client: &crate::client::Client,
    names: Vec<String>,
    path: impl Fn(&str) -> String,
) -> Result<(), CliError> {
    let mut failed = Vec::new();
    for name in names {
        match client.delete(&path(&segment(&name))) {
            Ok(()) => println!("{name}"),
            Err(e @ CliError::Api { .. }) => failed.push(e),
            Err(e) => return Err(e),
        }
    }
    report(failed)
}

/// Prints every per-operand error; one or more make the exit status 1.
pub fn report(failed: Vec<CliError>) -> Result<(), CliError> {
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.into_iter().next().unwrap_or(CliError::Reported)),
        _ => {
            failed.iter().for_each(CliError::print);
            Err(CliError::Reported)
        }
    }
}

/// Asks `question` on stderr; anything but y/yes (or end of input) is a no.
pub fn confirm(question: &str) -> Result<bool, CliError> {
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CliError::Other(format!("read answer: {e}")))?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
