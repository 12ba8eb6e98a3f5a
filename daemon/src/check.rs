//! `berthd --check-config`: validate the configuration and show what the
//! daemon would load, without touching its real root: the registry is
//! built with root and exec root redirected to a temporary directory that is
//! removed afterwards.

use std::path::PathBuf;

use anyhow::Context;
use berth_core::registry::PluginView;
use berth_core::{Config, Kind, Registry};
use serde_json::json;

/// Output format of `--check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Text,
    /// One JSON document for scripts.
    Json,
}

/// Exit code: valid, every plugin ready or skipped.
pub const OK: u8 = 0;
/// Exit code: some plugin failed to load.
pub const PLUGIN_FAILED: u8 = 3;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("berthd-check-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("create scratch directory {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("berthd: warning: cannot remove scratch directory {}: {e}", self.0.display());
        }
    }
}

/// How long `--check-config` waits for each remote plugin's handshake.
const REMOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Builds the registry in a scratch root and prints every plugin with the
/// status it would have. Answers the exit code.
pub fn check(mut config: Config, format: Format) -> anyhow::Result<u8> {
    let scratch = Scratch::new()?;
    config.daemon.root = scratch.0.join("root");
    config.daemon.exec_root = scratch.0.join("run");
    let views = {
        let registry = Registry::build(&config).map_err(|e| anyhow::anyhow!("{}: {e}", config.source))?;
        // Remote plugins are asked for their handshake, briefly: one that
        // is down shows `unreachable` (not a configuration failure).
        registry.activate_remotes(REMOTE_WAIT);
        registry.views()
    };
    drop(scratch);
    let failed = views.iter().filter(|v| v.status == "failed").count();
    let selected = [
        ("storage driver", Kind::Storage, &config.storage.driver),
        ("default network driver", Kind::Network, &config.network.default),
        ("ipam driver", Kind::Ipam, &config.network.ipam),
        ("default volume driver", Kind::Volume, &config.volume.default),
    ]
    .map(|(what, kind, name)| (what, kind, name.clone(), selected_status(&views, kind, name)));
    match format {
        Format::Json => {
            let doc = json!({
                "config": config.source,
                "valid": true,
                "ok": failed == 0,
                "plugins": views,
                "selected": selected.iter().map(|(_, kind, name, status)| {
                    json!({"kind": kind, "name": name, "status": status})
                }).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Format::Text => print_text(&config, &views, &selected),
    }
    Ok(if failed > 0 { PLUGIN_FAILED } else { OK })
}

fn selected_status(views: &[PluginView], kind: Kind, name: &str) -> String {
    if name.is_empty() {
        return "none selected".into();
    }
    match views.iter().find(|v| v.name == name) {
        None => "not configured: no [[plugin]] has this name".into(),
        Some(v) if v.status == "failed" => "failed".into(),
        Some(v) => match v.drivers.iter().find(|d| d.kind == kind) {
            Some(d) => d.status.clone(),
            None => format!("plugin {name:?} provides no {kind} driver"),
        },
    }
}

fn print_text(config: &Config, views: &[PluginView], selected: &[(&str, Kind, String, String)]) {
    println!("{}: valid", config.source);
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            let kinds: Vec<&str> = v.kinds.iter().map(|k| k.as_str()).collect();
            [
                v.name.clone(),
                if kinds.is_empty() { "-".into() } else { kinds.join(",") },
                v.transport.clone(),
                v.status.clone(),
                v.address.clone(),
                v.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["NAME", "KINDS", "TRANSPORT", "STATUS", "ADDRESS", "REASON"].map(String::from);
    let mut width = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i < 5 {
                line.push_str(&format!("{cell:<w$}  ", w = width[i]));
            } else {
                line.push_str(cell);
            }
        }
        println!("{}", line.trim_end());
    }
    let count = |s: &str| views.iter().filter(|v| v.status == s).count();
    println!(
        "{} plugins: {} ready, {} skipped, {} failed",
        views.len(),
        count("ready"),
        count("skipped"),
        count("failed")
    );
    for (what, _, name, status) in selected {
        if !name.is_empty() || status != "none selected" {
            println!("{what} {name:?}: {status}");
        }
    }
}
