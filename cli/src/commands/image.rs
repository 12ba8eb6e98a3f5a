//! `berth image load | save | ls | inspect | rm`, and the top-level
//! shortcuts `berth load`, `berth save`, `berth images`, `berth rmi`.
//!
//! Archives stream both ways (never whole in memory). On a terminal, load
//! shows a bar for the upload (bytes sent of the file's size) and then one
//! per layer from berthd's progress messages; elsewhere it prints one line
//! per layer. The `Loaded image: …` lines go to stdout, as Docker's do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use crate::client::{segment, Client};
use crate::output::{print_json, table, Format};
use crate::CliError;

/// `berth image ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Load images from an archive (`docker save` or OCI layout; plain,
    /// gzip or zstd) and print what was loaded.
    Load(LoadArgs),
    /// Write images to a `docker save` archive.
    Save(SaveArgs),
    /// List images.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show images as a JSON array.
    Inspect(InspectArgs),
    /// Remove images (untag a reference; delete an image with no tag left).
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
}

/// `berth image load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The archive to load (default: standard input).
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// No progress, only the `Loaded image` lines.
    #[arg(short, long)]
    quiet: bool,
}

/// `berth image save`.
#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Write the archive here (default: standard output, which must not be
    /// a terminal).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Images: references (`name:tag`) or IDs.
    #[arg(required = true, value_name = "IMAGE")]
    names: Vec<String>,
}

/// `berth image ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only images matching this reference (`name`, `name:tag`, with `*`
    /// wildcards).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Intermediate images too.
    #[arg(short, long)]
    all: bool,
    /// Only image IDs, one a line.
    #[arg(short, long)]
    quiet: bool,
    /// Full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Filter: dangling=true|false, label=KEY[=VALUE], reference=PATTERN,
    /// before=IMAGE, since=IMAGE (repeatable).
    #[arg(short, long = "filter", value_name = "NAME=VALUE", value_parser = key_value)]
    filter: Vec<(String, String)>,
    /// `table` or `json` (berthd's list as a JSON array).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// `berth image inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Images: references or IDs.
    #[arg(required = true, value_name = "IMAGE")]
    names: Vec<String>,
}

/// `berth image rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Remove an image by ID even when several references name it (all of
    /// them are untagged).
    #[arg(short, long)]
    force: bool,
    /// Accepted for Docker compatibility; berth keeps no parent images.
    #[arg(long)]
    no_prune: bool,
    /// Images: references or IDs.
    #[arg(required = true, value_name = "IMAGE")]
    names: Vec<String>,
}

/// Runs an image command.
pub fn run(client: &Client, cmd: ImageCommand) -> Result<(), CliError> {
    match cmd {
        ImageCommand::Load(args) => load(client, args),
        ImageCommand::Save(args) => save(client, args),
        ImageCommand::Ls(args) => ls(client, args),
        ImageCommand::Inspect(args) => inspect(client, args),
        ImageCommand::Rm(args) => rm(client, args),
    }
}

/// `berth image load`.
pub fn load(client: &Client, args: LoadArgs) -> Result<(), CliError> {
    let (source, size): (Box<dyn Read + Send>, Option<u64>) = match &args.input {
        Some(path) => {
            let file = File::open(path)
                .map_err(|e| CliError::Other(format!("cannot open {}: {e}", path.display())))?;
            let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(file), size)
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::Usage(
                    "no archive to load: give -i FILE or pipe the archive to standard input".into(),
                ));
            }
            let fd =
                stdin.as_fd().try_clone_to_owned().map_err(|e| CliError::Other(format!("stdin: {e}")))?;
            let file = File::from(fd);
            let size = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
            (Box::new(file), size)
        }
    };
    let mut view = LoadView::new(std::io::stderr().is_terminal(), args.quiet);
    let upload = view.upload_bar(size);
    let sent = Box::new(move |n| upload.inc(n));
    let path = format!("/images/load?quiet={}", u8::from(args.quiet));
    let result = client.post_stream(&path, "application/x-tar", source, size, sent, &mut |m| view.message(m));
    view.finish(result.is_ok());
    result
}

/// What `berth image load` shows while berthd works.
struct LoadView {
    terminal: bool,
    quiet: bool,
    bars: MultiProgress,
    upload: Option<ProgressBar>,
    layer: Option<(String, ProgressBar)>,
    /// Layers already reported in plain mode.
    seen: BTreeSet<String>,
}

impl LoadView {
    fn new(terminal: bool, quiet: bool) -> LoadView {
        let target = if terminal { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        LoadView {
            terminal,
            quiet,
            bars: MultiProgress::with_draw_target(target),
            upload: None,
            layer: None,
            seen: BTreeSet::new(),
        }
    }

    /// The bar of the upload (hidden off a terminal).
    fn upload_bar(&mut self, size: Option<u64>) -> ProgressBar {
        let bar = match size {
            Some(size) => ProgressBar::new(size).with_style(style(
                "Sending archive [{bar:40.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )),
            None => ProgressBar::new_spinner()
                .with_style(style("{spinner} Sending archive {bytes} {bytes_per_sec}")),
        };
        let bar = self.bars.add(bar);
        if size.is_none() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.upload = Some(bar.clone());
        bar
    }

    /// One message of berthd's stream.
    fn message(&mut self, m: Value) -> Result<(), CliError> {
        if let Some(upload) = self.upload.take() {
            upload.finish();
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(error) = m
            .pointer("/errorDetail/message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| text("error"))
        {
            return Err(CliError::Other(error));
        }
        if let Some(stream) = text("stream") {
            self.end_layer();
            self.bars.suspend(|| {
                print!("{stream}");
                let _ = std::io::stdout().flush();
            });
            return Ok(());
        }
        let (Some(status), Some(id)) = (text("status"), text("id")) else { return Ok(()) };
        if self.quiet {
            return Ok(());
        }
        let current = m.pointer("/progressDetail/current").and_then(Value::as_u64).unwrap_or(0);
        let total = m.pointer("/progressDetail/total").and_then(Value::as_u64).unwrap_or(0);
        if !self.terminal {
            if self.seen.insert(id.clone()) {
                match total {
                    0 => eprintln!("{id}: {status}"),
                    t => eprintln!("{id}: {status} ({})", human_size(t)),
                }
            }
            return Ok(());
        }
        if status != "Loading layer" {
            self.end_layer();
            self.bars.println(format!("{id}: {status}")).ok();
            return Ok(());
        }
        if !matches!(&self.layer, Some((shown, _)) if *shown == id) {
            self.end_layer();
            let bar = self.bars.add(
                ProgressBar::new(total)
                    .with_style(style("{prefix}: {msg} [{bar:40.cyan/blue}] {bytes}/{total_bytes}"))
                    .with_prefix(id.clone())
                    .with_message("Loading layer"),
            );
            self.layer = Some((id, bar));
        }
        if let Some((_, bar)) = &self.layer {
            bar.set_length(total);
            bar.set_position(current);
        }
        Ok(())
    }

    fn end_layer(&mut self) {
        if let Some((_, bar)) = self.layer.take() {
            bar.finish_with_message("Loaded layer");
        }
    }

    fn finish(&mut self, ok: bool) {
        if let Some(upload) = self.upload.take() {
            if ok {
                upload.finish();
            } else {
                upload.abandon();
            }
        }
        if let Some((_, bar)) = self.layer.take() {
            if ok {
                bar.finish_with_message("Loaded layer");
            } else {
                bar.abandon();
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// `berth image save`.
pub fn save(client: &Client, args: SaveArgs) -> Result<(), CliError> {
    let query: Vec<String> = args.names.iter().map(|n| format!("names={}", segment(n))).collect();
    let path = format!("/images/get?{}", query.join("&"));
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new_spinner()
            .with_style(style("{spinner} Receiving archive {bytes} {bytes_per_sec}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut received = |n| bar.inc(n);
    let result = match &args.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(CliError::Usage(
                    "refusing to write an image archive to a terminal: use -o FILE or redirect standard output"
                        .into(),
                ));
            }
            let mut out = stdout.lock();
            client.get_stream(&path, &mut out, &mut received).and_then(|()| {
                out.flush().map_err(|e| CliError::Other(format!("write standard output: {e}")))
            })
        }
        Some(file) => save_to_file(client, &path, file, &mut received),
    };
    if result.is_ok() {
        bar.finish_and_clear();
    } else {
        bar.abandon();
    }
    result
}

/// Writes the archive to a temporary file beside `file`, renamed into
/// place once whole; removed on failure.
fn save_to_file(
    client: &Client,
    path: &str,
    file: &Path,
    received: &mut dyn FnMut(u64),
) -> Result<(), CliError> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        file.file_name().ok_or_else(|| CliError::Usage(format!("{} is not a file name", file.display())))?;
    let partial = dir.join(format!(".{}.berth-partial-{}", name.to_string_lossy(), std::process::id()));
    let result = write_archive(client, path, &partial, received).and_then(|()| {
        std::fs::rename(&partial, file).map_err(|e| {
            CliError::Other(format!("cannot rename {} to {}: {e}", partial.display(), file.display()))
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Writes the answer of `GET path` to a new file `to`, synced.
fn write_archive(
    client: &Client,
    path: &str,
    to: &Path,
    received: &mut dyn FnMut(u64),
) -> Result<(), CliError> {
    let failed = |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", to.display()));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(to).map_err(failed)?);
    client.get_stream(path, &mut out, received)?;
    let out = out.into_inner().map_err(|e| failed(e.into_error()))?;
    out.sync_all().map_err(failed)
}

/// `berth image ls`.
pub fn ls(client: &Client, args: LsArgs) -> Result<(), CliError> {
    let mut filter = args.filter;
    if let Some(reference) = args.reference {
        filter.push(("reference".into(), reference));
    }
    let path = format!("/images/json?all={}{}", u8::from(args.all), filters_query(&filter, "&"));
    let images: Vec<Value> = client.get(&path)?;
    let id = |v: &Value| {
        let full = v.get("Id").and_then(Value::as_str).unwrap_or("");
        if args.no_trunc {
            full.to_string()
        } else {
            short_id(full)
        }
    };
    if args.quiet {
        let mut shown = BTreeSet::new();
        for image in &images {
            let id = id(image);
            if shown.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    if args.format == Format::Json {
        return print_json(&images);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut rows = Vec::new();
    for image in &images {
        let created = image.get("Created").and_then(Value::as_i64).unwrap_or(0);
        let created =
            if created <= 0 { "N/A".to_string() } else { format!("{} ago", human_duration(now - created)) };
        let size = human_size_3(image.get("Size").and_then(Value::as_u64).unwrap_or(0));
        let tags: Vec<&str> = image
            .get("RepoTags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).filter(|t| *t != "<none>:<none>").collect())
            .unwrap_or_default();
        if tags.is_empty() {
            rows.push(vec!["<none>".into(), "<none>".into(), id(image), created.clone(), size.clone()]);
        }
        for tag in tags {
            let (repo, tag) = split_reference(tag);
            rows.push(vec![repo.into(), tag.into(), id(image), created.clone(), size.clone()]);
        }
    }
    print!("{}", table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows));
    Ok(())
}

/// `berth image inspect`.
pub fn inspect(client: &Client, args: InspectArgs) -> Result<(), CliError> {
    super::inspect_each(client, args.names, |n| format!("/images/{n}/json"))
}

/// `berth image rm`.
pub fn rm(client: &Client, args: RmArgs) -> Result<(), CliError> {
    let mut failed = Vec::new();
    for name in args.names {
        let path = format!(
            "/images/{}?force={}&noprune={}",
            segment(&name),
            u8::from(args.force),
            u8::from(args.no_prune)
        );
        match client.call(hyper::Method::DELETE, &path, None) {
            Ok(body) => {
                let items: Vec<BTreeMap<String, String>> = serde_json::from_slice(&body)
                    .map_err(|e| CliError::Other(format!("cannot decode berthd's answer: {e}")))?;
                for item in items {
                    for (what, value) in item {
                        println!("{what}: {value}");
                    }
                }
            }
            Err(e @ CliError::Api { .. }) => failed.push(e),
            Err(e) => return Err(e),
        }
    }
    report(failed)
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// `<sep>filters=…` for `name=value` pairs (Docker's map form), or nothing.
fn filters_query(pairs: &[(String, String)], sep: &str) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut map: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k.as_str()).or_default().insert(v.as_str(), true);
    }
    format!("{sep}filters={}", segment(&json!(map).to_string()))
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

/// `name:tag` → (`name`, `tag`); the colon of a registry port is not a
/// tag's; a digest reference (`name@sha256:…`) has tag `<none>`.
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((name, _)) = reference.split_once('@') {
        return (name, "<none>");
    }
    match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "<none>"),
    }
}

/// The 12 hex digits Docker shows for an ID.
fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// Docker's `units.HumanDuration`.
fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (minutes, hours) = (s / 60, s / 3600);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

/// Sizes in powers of 1000 with `digits` significant digits (Go's `%.Ng`).
fn human_size_digits(n: u64, digits: usize) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let int_digits = if v < 10.0 {
        1
    } else if v < 100.0 {
        2
    } else {
        3
    };
    let decimals = digits.saturating_sub(int_digits);
    let mut text = format!("{v:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// `docker images`' SIZE (three significant digits).
fn human_size_3(n: u64) -> String {
    human_size_digits(n, 3)
}

/// Docker's progress sizes (four significant digits).
fn human_size(n: u64) -> String {
    human_size_digits(n, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(split_reference("library/busybox:latest"), ("library/busybox", "latest"));
        assert_eq!(split_reference("reg.example:5000/a/b"), ("reg.example:5000/a/b", "<none>"));
        assert_eq!(split_reference("reg.example:5000/a/b:t"), ("reg.example:5000/a/b", "t"));
        assert_eq!(split_reference("a@sha256:abcd"), ("a", "<none>"));
    }

    #[test]
    fn durations_and_sizes_print_like_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(800 * 86400), "2 years");
        assert_eq!(human_size_3(4_261_234), "4.26MB");
        assert_eq!(human_size_3(1_234_567_890), "1.23GB");
        assert_eq!(human_size_3(512), "512B");
        assert_eq!(human_size(12_345_678), "12.35MB");
    }

    #[test]
    fn ids_are_cut_to_twelve_hex_digits() {
        assert_eq!(short_id(&format!("sha256:{}", "0123456789ab".repeat(5))), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn filters_join_the_query() {
        assert_eq!(filters_query(&[], "&"), "");
        let q = filters_query(&[("dangling".into(), "true".into())], "&");
        assert!(q.starts_with("&filters=%7B%22dangling%22"), "{q}");
    }
}
