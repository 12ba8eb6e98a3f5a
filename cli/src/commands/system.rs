//! `berth version`, `berth info`.

use serde_json::{json, Value};

use crate::client::{Client, API_VERSION};
use crate::output::{print_json, Format};
use crate::CliError;

/// `berth version`.
#[derive(Debug, clap::Args)]
pub struct VersionArgs {
    /// `json` for both versions as one JSON document.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `berth info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// `json` for the daemon's answer as is.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Prints the client's version, then the daemon's.
pub fn version(client: &Client, args: VersionArgs) -> Result<(), CliError> {
    let client_info = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": go_arch(),
    });
    if args.format == Format::Json {
        let server: Value = client.get("/version")?;
        return print_json(&json!({ "Client": client_info, "Server": server }));
    }
    println!("Client:");
    println!(" Version:      {}", env!("CARGO_PKG_VERSION"));
    println!(" API version:  {API_VERSION}");
    println!(" OS/Arch:      {}/{}", std::env::consts::OS, go_arch());
    println!();
    let server: Value = client.get("/version")?;
    let s = |k: &str| server.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    println!("Server: berth");
    println!(" Engine:");
    println!("  Version:      {}", s("Version"));
    println!("  API version:  {} (minimum version {})", s("ApiVersion"), s("MinAPIVersion"));
    println!("  Plugin API:   {}", s("PluginApiVersion"));
    println!("  Built:        {}", s("BuildTime"));
    println!("  OS/Arch:      {}/{}", s("Os"), s("Arch"));
    println!("  Kernel:       {}", s("KernelVersion"));
    Ok(())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_str).unwrap_or("")
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    path.iter().try_fold(v, |v, k| v.get(*k)).and_then(Value::as_u64).unwrap_or(0)
}

fn names_at(v: &Value, path: &[&str]) -> String {
    let names: Vec<&str> = path
        .iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(" ")
    }
}

fn bytes(n: u64) -> String {
    let gib = n as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2}GiB")
    } else {
        format!("{:.1}MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// Prints a summary of `/info` (or the whole answer as JSON).
pub fn info(client: &Client, args: InfoArgs) -> Result<(), CliError> {
    let info: Value = client.get("/info")?;
    if args.format == Format::Json {
        return print_json(&info);
    }
    let b = |k: &str| info.get("Berth").and_then(|b| b.get(k));
    println!("Server:");
    println!(" Server Version: {}", str_at(&info, &["ServerVersion"]));
    println!(" Storage Driver: {}", str_at(&info, &["Driver"]));
    if let Some(status) = info.get("DriverStatus").and_then(Value::as_array) {
        for pair in status {
            if let (Some(k), Some(v)) =
                (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str))
            {
                println!("  {k}: {v}");
            }
        }
    }
    println!(" Plugins:");
    println!("  Storage: {}", names_at(&info, &["Berth", "Drivers", "Storage"]));
    println!("  Network: {}", names_at(&info, &["Plugins", "Network"]));
    println!("  IPAM:    {}", names_at(&info, &["Berth", "Drivers", "Ipam"]));
    println!("  Volume:  {}", names_at(&info, &["Plugins", "Volume"]));
    println!(
        "  ({} ready, {} skipped, {} failed: see `berth plugin ls`)",
        u64_at(&info, &["Berth", "Plugins", "Ready"]),
        u64_at(&info, &["Berth", "Plugins", "Skipped"]),
        u64_at(&info, &["Berth", "Plugins", "Failed"]),
    );
    println!(" Default Network Driver: {}", str_at(&info, &["Berth", "DefaultNetworkDriver"]));
    println!(" Default IPAM Driver: {}", str_at(&info, &["Berth", "IpamDriver"]));
    println!(" Default Volume Driver: {}", str_at(&info, &["Berth", "DefaultVolumeDriver"]));
    println!(" Volumes: {}", u64_at(&info, &["Berth", "Volumes"]));
    println!(" Plugin API Version: {}", str_at(&info, &["Berth", "ApiVersion"]));
    println!(" Kernel Version: {}", str_at(&info, &["KernelVersion"]));
    println!(" Operating System: {}", str_at(&info, &["OperatingSystem"]));
    println!(" OSType: {}", str_at(&info, &["OSType"]));
    println!(" Architecture: {}", str_at(&info, &["Architecture"]));
    println!(" CPUs: {}", u64_at(&info, &["NCPU"]));
    println!(" Total Memory: {}", bytes(u64_at(&info, &["MemTotal"])));
    println!(" Name: {}", str_at(&info, &["Name"]));
    println!(" ID: {}", str_at(&info, &["ID"]));
    println!(" Root Dir: {}", str_at(&info, &["DockerRootDir"]));
    println!(" Exec Root: {}", str_at(&info, &["Berth", "ExecRoot"]));
    println!(" Config: {}", str_at(&info, &["Berth", "ConfigSource"]));
    let ms = |k: &str| b(k).and_then(Value::as_u64).map(|us| format!("{:.1} ms", us as f64 / 1000.0));
    println!(
        " Start-up: {} to listening (engine {})",
        ms("ListenUs").unwrap_or_else(|| "-".into()),
        ms("StartupUs").unwrap_or_else(|| "-".into())
    );
    for (label, key) in [("Reconciled", "Resolved"), ("Unresolved", "Unresolved")] {
        let lines = b("Reconcile").and_then(|r| r.get(key)).and_then(Value::as_array);
        if let Some(lines) = lines.filter(|l| !l.is_empty()) {
            println!(" {label} at start-up:");
            for l in lines.iter().filter_map(Value::as_str) {
                println!("  {l}");
            }
        }
    }
    Ok(())
}
