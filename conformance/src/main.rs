//! `berth-conformance`: runs the conformance cases black-box against a
//! plugin shared object or a remote plugin, the protocol cases against
//! scripted fixture plugins, and the loader cases against fixture plugins.
//!
//! Exit status: 0 when no case failed, 1 when one did, 2 on a usage or
//! load error (one line on stderr).

use std::path::PathBuf;
use std::process::ExitCode;

use berth_conformance::{catalog, lifecycle, remote, run, select, Options, Subject, Suite};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs berth's driver conformance cases and reports pass, fail or skip for
/// each, citing the plugin (name, version, plugin-api, SHA-256), this
/// suite's version and the kernel.
#[derive(Debug, Parser)]
#[command(name = "berth-conformance", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run cases and report. Driver suites run against --plugin (the suites
    /// of the kinds its manifest declares) or --remote (the kinds its
    /// /Plugin.Activate answer implements). The plugin protocol cases
    /// (PL-01..PL-08) test this build's remote-plugin client against
    /// scripted fixture plugins (and the --remote plugin, if given); the
    /// loader cases (PL-09, PL-10) test its loader with the fixture plugins
    /// of --fixtures. The plugin suite runs when no --plugin is given (with
    /// --remote: PL-01..PL-08, and PL-09, PL-10 only with --fixtures), when
    /// fixtures are given, or when asked for with --kind plugin or --only.
    #[command(after_help = "Examples:\n  \
        berth-conformance run --plugin target/debug/libberth_storage_vfs.so\n  \
        berth-conformance run --plugin target/debug/libberth_volume_local.so --kind volume\n  \
        berth-conformance run --plugin target/debug/libberth_ipam_default.so\n  \
        berth-conformance run --plugin target/debug/libberth_network_bridge.so\n  \
        berth-conformance run --plugin libx.so --only ST-01,ST-06 --format junit --output report.xml\n  \
        berth-conformance run --remote unix:///run/docker/plugins/local.sock\n  \
        berth-conformance run --remote tcp://127.0.0.1:8080 --name mine --kind volume\n  \
        berth-conformance run --kind plugin --only PL-01,PL-02,PL-03,PL-04,PL-05,PL-06,PL-07,PL-08\n  \
        berth-conformance run --fixtures \"$(plugin-api/tests/compat/build.sh)\"\n\n\
        Exit status: 0 no case failed, 1 a case failed, 2 usage, load or connection error.")]
    Run(RunArgs),
    /// List every implemented case with its one line.
    List(ListArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The plugin to test: a shared object exporting a berth root module.
    #[arg(long, value_name = "PATH.so")]
    plugin: Option<PathBuf>,
    /// The plugin to test: a remote plugin speaking Docker's v1 plugin
    /// protocol at unix:///path.sock (or a bare absolute socket path),
    /// tcp://host:port, http://host:port or https://host:port.
    #[arg(long, value_name = "ADDR")]
    remote: Option<String>,
    /// The name the --remote plugin goes by [default: its socket's file
    /// stem, else `remote`].
    #[arg(long, value_name = "NAME", requires = "remote")]
    name: Option<String>,
    /// Directory holding libcompat10.so, libcompat20.so and libcompatbad.so
    /// (printed by plugin-api/tests/compat/build.sh), for PL-09 and PL-10.
    #[arg(long, value_name = "DIR", env = lifecycle::FIXTURES_ENV)]
    fixtures: Option<PathBuf>,
    /// Run only these suites (comma-separated or repeated).
    #[arg(long = "kind", value_name = "K", value_enum, value_delimiter = ',')]
    kinds: Vec<SuiteArg>,
    /// Run only these case IDs, e.g. ST-01,ST-06.
    #[arg(long, value_name = "ID,..", value_delimiter = ',')]
    only: Vec<String>,
    /// Leave out these case IDs.
    #[arg(long, value_name = "ID,..", value_delimiter = ',')]
    skip: Vec<String>,
    /// How often calls that must be idempotent are repeated.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report to FILE (the table still goes to stdout).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Where case roots are made (default: the system temp dir). Choose a
    /// filesystem the driver supports.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Do not check a --plugin driver's cases for new entries in /tmp,
    /// /var/tmp, /run, /var/lib, /etc and /dev/shm (for a busy host where
    /// other processes make lasting entries there during a run).
    #[arg(long)]
    no_file_leak_check: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// List only these suites.
    #[arg(long = "kind", value_name = "K", value_enum, value_delimiter = ',')]
    kinds: Vec<SuiteArg>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Human)]
    format: ListFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SuiteArg {
    Storage,
    Network,
    Ipam,
    Volume,
    Plugin,
}

impl From<SuiteArg> for Suite {
    fn from(s: SuiteArg) -> Suite {
        match s {
            SuiteArg::Storage => Suite::Storage,
            SuiteArg::Network => Suite::Network,
            SuiteArg::Ipam => Suite::Ipam,
            SuiteArg::Volume => Suite::Volume,
            SuiteArg::Plugin => Suite::Plugin,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run_cmd(a),
        Command::List(a) => list_cmd(a).map(|()| false),
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(message) => {
            eprintln!("berth-conformance: error: {}", message.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// Runs the selected cases; `Ok(true)` when any failed.
fn run_cmd(a: RunArgs) -> Result<bool, String> {
    let subject = match (&a.plugin, &a.remote) {
        (Some(_), Some(_)) => {
            return Err("give either --plugin PATH.so or --remote ADDR, not both".into());
        }
        (Some(p), None) => Some(Subject::load(p).map_err(|e| e.to_string())?),
        (None, Some(addr)) => {
            Some(Subject::remote(addr, a.name.as_deref(), remote::default_options()).map_err(|e| {
                format!(
                    "remote plugin at {} cannot be used: {}: {}",
                    remote::normalize(addr),
                    e.kind,
                    e.message
                )
            })?)
        }
        (None, None) => None,
    };
    let is_remote = subject.as_ref().is_some_and(|s| s.remote_target().is_some());
    let suites: Vec<Suite> = if !a.kinds.is_empty() {
        a.kinds.iter().map(|k| Suite::from(*k)).collect()
    } else if !a.only.is_empty() {
        Vec::new()
    } else {
        let mut s: Vec<Suite> = subject
            .as_ref()
            .map(|s| s.identity().kinds.iter().map(|k| Suite::of_kind(*k)).collect())
            .unwrap_or_default();
        if a.fixtures.is_some() || subject.is_none() || is_remote {
            s.push(Suite::Plugin);
        }
        s
    };
    let mut cases = select(&catalog(), &suites, &a.only, &a.skip)?;
    if is_remote && a.kinds.is_empty() && a.only.is_empty() && a.fixtures.is_none() {
        // A remote run's own plugin cases are the protocol ones; the loader
        // cases need --fixtures.
        let loader: Vec<&str> = lifecycle::cases().iter().map(|c| c.id).collect();
        cases.retain(|c| !loader.contains(&c.id));
    }
    if cases.is_empty() {
        let wanted: Vec<&str> = suites.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "no implemented case matches (suites: {}; implemented: {}); `berth-conformance list` shows them",
            if wanted.is_empty() { "any".into() } else { wanted.join(", ") },
            implemented_suites()
        ));
    }
    if subject.is_none() {
        let need: Vec<&str> =
            cases.iter().filter(|c| c.suite.driver_kind().is_some()).map(|c| c.id).collect();
        if !need.is_empty() {
            return Err(format!(
                "{} need a driver under test: give --plugin PATH.so or --remote ADDR",
                need.join(", ")
            ));
        }
    }
    let opts = Options {
        repeat: a.repeat as usize,
        workdir: a.workdir.clone(),
        fixtures: a.fixtures.clone(),
        check_files: !a.no_file_leak_check,
    };
    let report = run(&cases, subject.as_ref(), &opts);
    let rendered = match a.format {
        Format::Human => report.to_human(),
        Format::Json => report.to_json(),
        Format::Junit => report.to_junit(),
    };
    match &a.output {
        Some(file) => {
            std::fs::write(file, rendered).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            print!("{}", report.to_human());
        }
        None => print!("{rendered}"),
    }
    Ok(report.any_failed())
}

fn implemented_suites() -> String {
    let mut s: Vec<&str> = catalog().iter().map(|c| c.suite.as_str()).collect();
    s.dedup();
    s.join(", ")
}

fn list_cmd(a: ListArgs) -> Result<(), String> {
    let suites: Vec<Suite> = a.kinds.iter().map(|k| Suite::from(*k)).collect();
    let cases = select(&catalog(), &suites, &[], &[])?;
    match a.format {
        ListFormat::Human => {
            for c in &cases {
                println!("{:<6} {:<8} {}", c.id, c.suite.as_str(), c.description);
            }
        }
        ListFormat::Json => {
            let items: Vec<serde_json::Value> = cases
                .iter()
                .map(|c| serde_json::json!({ "id": c.id, "suite": c.suite, "description": c.description }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).expect("lists serialize"));
        }
    }
    Ok(())
}
