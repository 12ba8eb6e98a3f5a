//! The `zfs`, `zpool`, `mount` and `umount` command lines the driver runs,
//! the parsers of their outputs, and the mapping of their failures to
//! error kinds. Everything here is a pure function, tested against
//! recorded outputs.
//!
//! Every listing uses `-H` (no header, one tab between fields) and `-p`
//! (exact numbers instead of `1.5G`), per zfs-list(8), zfs-get(8) and
//! zpool-list(8), so a line is split on tabs and numbers parse as `u64`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use berth_plugin_api::{DriverError, ErrorKind};

use crate::runner::{Cmd, Output};

/// The user property that marks a snapshot as made by berth for the clone
/// named in its value: only such snapshots are ever swept as debris.
pub(crate) const CHILD_PROPERTY: &str = "berth:child";

/// The properties of `zfs list` that describe a layer, in column order.
const LAYER_COLUMNS: &str = "name,origin,readonly,quota";

/// What the driver knows of one layer, read back from the dataset itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Layer {
    /// The parent layer (from the dataset's `origin`); empty for a base.
    pub(crate) parent: String,
    /// Whether it was made read-write (`readonly=off`).
    pub(crate) read_write: bool,
    /// Its `quota` in bytes; 0 for none.
    pub(crate) quota: u64,
    /// The `origin` snapshot as zfs reports it; empty for none.
    pub(crate) origin: String,
}

// ---------------------------------------------------------------- commands

/// `zfs list` of the parent dataset and the layers directly below it.
pub(crate) fn list_layers(fsname: &str) -> Cmd {
    Cmd::new(["zfs", "list", "-Hp", "-r", "-d", "1", "-t", "filesystem", "-o", LAYER_COLUMNS, fsname])
}

/// `zfs list` of the snapshots of the layers, with the berth marker.
pub(crate) fn list_snapshots(fsname: &str) -> Cmd {
    let columns = format!("name,{CHILD_PROPERTY}");
    Cmd::new(["zfs", "list", "-Hp", "-r", "-d", "2", "-t", "snapshot", "-o", &columns, fsname])
}

/// The `-o property=value` options of a new layer dataset.
fn layer_properties(read_write: bool, quota: Option<u64>) -> Vec<String> {
    let mut args = vec!["-o".to_string(), "mountpoint=legacy".to_string()];
    if !read_write {
        args.extend(["-o".to_string(), "readonly=on".to_string()]);
    }
    if let Some(bytes) = quota {
        args.extend(["-o".to_string(), format!("quota={bytes}")]);
    }
    args
}

/// `zfs create` of a base layer.
pub(crate) fn create(dataset: &str, read_write: bool, quota: Option<u64>) -> Cmd {
    let mut argv = vec!["zfs".to_string(), "create".to_string()];
    argv.extend(layer_properties(read_write, quota));
    argv.push(dataset.to_string());
    Cmd::new(argv)
}

/// `zfs snapshot` of a parent, marked with the child it is made for.
pub(crate) fn snapshot(snapshot: &str, child: &str) -> Cmd {
    let mark = format!("{CHILD_PROPERTY}={child}");
    Cmd::new(["zfs", "snapshot", "-o", &mark, snapshot])
}

/// `zfs clone` of a snapshot into a child layer.
pub(crate) fn clone(snapshot: &str, dataset: &str, read_write: bool, quota: Option<u64>) -> Cmd {
    let mut argv = vec!["zfs".to_string(), "clone".to_string()];
    argv.extend(layer_properties(read_write, quota));
    argv.extend([snapshot.to_string(), dataset.to_string()]);
    Cmd::new(argv)
}

/// `zfs destroy -r` of a layer and its snapshots.
pub(crate) fn destroy_recursive(dataset: &str) -> Cmd {
    Cmd::new(["zfs", "destroy", "-r", dataset])
}

/// `zfs destroy` of one snapshot.
pub(crate) fn destroy(snapshot: &str) -> Cmd {
    Cmd::new(["zfs", "destroy", snapshot])
}

/// `mount -t zfs` of a layer (`mountpoint=legacy`) at `target`.
pub(crate) fn mount(dataset: &str, target: &Path, read_write: bool) -> Cmd {
    let mut argv = vec!["mount", "-t", "zfs"];
    if !read_write {
        argv.extend(["-o", "ro"]);
    }
    let target = target.to_string_lossy();
    argv.extend([dataset, &target]);
    Cmd::new(argv)
}

/// `umount` of a layer's mount point.
pub(crate) fn umount(target: &Path) -> Cmd {
    Cmd::new(["umount".to_string(), target.to_string_lossy().into_owned()])
}

/// `zfs get` of the parent dataset's space figures.
pub(crate) fn dataset_usage(fsname: &str) -> Cmd {
    Cmd::new(["zfs", "get", "-Hp", "-o", "property,value", "used,available,quota,compression", fsname])
}

/// `zpool list` of the pool holding the parent dataset.
pub(crate) fn pool_list(pool: &str) -> Cmd {
    Cmd::new(["zpool", "list", "-Hp", "-o", "name,health,size,allocated,free", pool])
}

// ---------------------------------------------------------------- parsing

/// An output the driver cannot read: a command changed its format, or the
/// wrong program answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// A line with the wrong number of tab-separated fields.
    Fields {
        /// The line.
        line: String,
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// A field that should be an exact number of bytes.
    Number {
        /// The property.
        field: String,
        /// What was there.
        value: String,
    },
    /// A field with a value outside its known set.
    Value {
        /// The property.
        field: String,
        /// What was there.
        value: String,
    },
    /// Something the output must contain is missing.
    Missing(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Fields { line, expected, found } => {
                write!(f, "line {line:?} has {found} tab-separated fields, expected {expected}")
            }
            ParseError::Number { field, value } => {
                write!(f, "{field} is {value:?}, not an exact number (was -p ignored?)")
            }
            ParseError::Value { field, value } => write!(f, "{field} has the unknown value {value:?}"),
            ParseError::Missing(what) => write!(f, "{what} is missing"),
        }
    }
}

impl ParseError {
    /// The driver error for this output of `cmd`.
    pub(crate) fn into_error(self, cmd: &Cmd) -> DriverError {
        DriverError::internal(format!("cannot read the output of `{cmd}`: {self}"))
    }
}

/// The non-empty lines of `out`, each split on tabs into `n` fields.
fn rows(out: &str, n: usize) -> Result<Vec<Vec<&str>>, ParseError> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() == n {
                Ok(fields)
            } else {
                Err(ParseError::Fields { line: line.to_string(), expected: n, found: fields.len() })
            }
        })
        .collect()
}

/// An exact number; `-` (none) reads as 0.
fn number(field: &str, value: &str) -> Result<u64, ParseError> {
    if value == "-" {
        return Ok(0);
    }
    value.parse().map_err(|_| ParseError::Number { field: field.into(), value: value.into() })
}

/// The layers in an output of [`list_layers`]: the datasets directly below
/// `fsname`, keyed by layer id. The first line must be `fsname` itself.
pub(crate) fn parse_layers(out: &str, fsname: &str) -> Result<BTreeMap<String, Layer>, ParseError> {
    let rows = rows(out, 4)?;
    match rows.first() {
        Some(r) if r[0] == fsname => {}
        _ => return Err(ParseError::Missing(format!("the parent dataset {fsname:?} as the first line"))),
    }
    let prefix = format!("{fsname}/");
    let mut layers = BTreeMap::new();
    for r in &rows[1..] {
        let Some(id) = r[0].strip_prefix(&prefix).filter(|id| !id.contains('/')) else { continue };
        let read_write = match r[2] {
            "off" => true,
            "on" => false,
            other => return Err(ParseError::Value { field: "readonly".into(), value: other.into() }),
        };
        let origin = if r[1] == "-" { String::new() } else { r[1].to_string() };
        let parent = parent_of(&origin, fsname, id).unwrap_or_default();
        layers.insert(id.to_string(), Layer { parent, read_write, quota: number("quota", r[3])?, origin });
    }
    Ok(layers)
}

/// The parent layer of layer `id` whose origin is `origin`, when the origin
/// is the snapshot berth makes: `<fsname>/<parent>@<id>`.
pub(crate) fn parent_of(origin: &str, fsname: &str, id: &str) -> Option<String> {
    let rest = origin.strip_prefix(fsname)?.strip_prefix('/')?;
    let (parent, snap) = rest.split_once('@')?;
    (snap == id && !parent.is_empty() && !parent.contains('/')).then(|| parent.to_string())
}

/// The snapshots in an output of [`list_snapshots`] that are debris: made
/// by berth for a child (`berth:child` set) that is not a layer cloned
/// from exactly that snapshot. A crash between `zfs snapshot` and
/// `zfs clone`, or between destroying a layer and its origin, leaves them.
pub(crate) fn debris_snapshots(
    out: &str,
    layers: &BTreeMap<String, Layer>,
) -> Result<Vec<String>, ParseError> {
    let mut debris = Vec::new();
    for r in rows(out, 2)? {
        let (name, child) = (r[0], r[1]);
        if child == "-" || !name.contains('@') {
            continue;
        }
        if !layers.get(child).is_some_and(|l| l.origin == name) {
            debris.push(name.to_string());
        }
    }
    Ok(debris)
}

/// The space figures of the parent dataset, from [`dataset_usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes used by the dataset and everything below it.
    pub(crate) used: u64,
    /// Bytes still available to it.
    pub(crate) available: u64,
    /// Its quota in bytes; 0 for none.
    pub(crate) quota: u64,
    /// Its compression algorithm, e.g. `lz4` or `off`.
    pub(crate) compression: String,
}

/// Parses an output of [`dataset_usage`] (`property<TAB>value` lines).
pub(crate) fn parse_usage(out: &str) -> Result<Usage, ParseError> {
    let props: BTreeMap<&str, &str> = rows(out, 2)?.into_iter().map(|r| (r[0], r[1])).collect();
    let get = |p: &str| props.get(p).copied().ok_or_else(|| ParseError::Missing(format!("property {p}")));
    Ok(Usage {
        used: number("used", get("used")?)?,
        available: number("available", get("available")?)?,
        quota: number("quota", get("quota")?)?,
        compression: get("compression")?.to_string(),
    })
}

/// A pool, from [`pool_list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    /// Its name.
    pub(crate) name: String,
    /// `ONLINE`, `DEGRADED`, `FAULTED`, `OFFLINE`, `REMOVED`, `UNAVAIL` or
    /// `SUSPENDED`.
    pub(crate) health: String,
    /// Total bytes.
    pub(crate) size: u64,
    /// Allocated bytes.
    pub(crate) allocated: u64,
    /// Free bytes.
    pub(crate) free: u64,
}

/// Parses an output of [`pool_list`]: exactly one line.
pub(crate) fn parse_pool(out: &str) -> Result<Pool, ParseError> {
    let rows = rows(out, 5)?;
    let [r] = rows.as_slice() else { return Err(ParseError::Missing("exactly one pool line".into())) };
    const HEALTH: [&str; 7] = ["ONLINE", "DEGRADED", "FAULTED", "OFFLINE", "REMOVED", "UNAVAIL", "SUSPENDED"];
    if !HEALTH.contains(&r[1]) {
        return Err(ParseError::Value { field: "health".into(), value: r[1].into() });
    }
    Ok(Pool {
        name: r[0].to_string(),
        health: r[1].to_string(),
        size: number("size", r[2])?,
        allocated: number("allocated", r[3])?,
        free: number("free", r[4])?,
    })
}

/// One line of `/proc/self/mountinfo` (proc(5)): where, what type, from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The mount point.
    pub(crate) mount_point: PathBuf,
    /// The filesystem type, e.g. `zfs`.
    pub(crate) fstype: String,
    /// The mount source; for zfs, the dataset.
    pub(crate) source: String,
}

/// Parses one mountinfo line; `None` when it is malformed.
pub(crate) fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let (fstype, source) = (after.next()?, after.next()?);
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fstype: unescape(fstype),
        source: unescape(source),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::try_from(d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'))).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` is on: the entry of `mountinfo` with the longest mount
/// point containing `path` (the last one mounted, when several tie).
pub(crate) fn mount_of(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for entry in mountinfo.lines().filter_map(parse_mountinfo_line) {
        let longer = best
            .as_ref()
            .map_or(true, |b| entry.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if path.starts_with(&entry.mount_point) && longer {
            best = Some(entry);
        }
    }
    best
}

// ---------------------------------------------------------------- errors

/// The error for `cmd`, which ran and failed with `out`: the kind read
/// from the message the tool printed, the message naming the command.
pub(crate) fn failure(cmd: &Cmd, out: &Output) -> DriverError {
    let stderr = out.stderr.trim();
    let lower = stderr.to_ascii_lowercase();
    let kind = if lower.contains("does not exist") {
        ErrorKind::NotFound
    } else if lower.contains("already exists") {
        ErrorKind::AlreadyExists
    } else if lower.contains("out of space") || lower.contains("quota exceeded") {
        ErrorKind::ResourceExhausted
    } else if lower.contains("permission denied") || lower.contains("must be superuser") {
        ErrorKind::PermissionDenied
    } else if lower.contains("busy") || lower.contains("has children") || lower.contains("dependent clones") {
        ErrorKind::Conflict
    } else if lower.contains("invalid") || lower.contains("bad property") {
        ErrorKind::InvalidArgument
    } else if lower.contains("/dev/zfs") || lower.contains("modules are not loaded") {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Internal
    };
    let code = out.code.map_or("a signal".to_string(), |c| format!("exit {c}"));
    let said = if stderr.is_empty() { "no message".to_string() } else { stderr.replace('\n', " / ") };
    DriverError::new(kind, format!("`{cmd}` failed ({code}): {said}"))
}

/// The error for `cmd`, which could not run or did not finish.
pub(crate) fn not_run(cmd: &Cmd, err: &std::io::Error) -> DriverError {
    match err.kind() {
        std::io::ErrorKind::NotFound => DriverError::unavailable(format!(
            "cannot run `{cmd}`: {} is not installed (OpenZFS userland, e.g. zfsutils-linux)",
            cmd.program()
        )),
        std::io::ErrorKind::TimedOut => DriverError::timeout(err.to_string()),
        _ => DriverError::io(format_args!("run `{cmd}`"), err),
    }
}

/// Whether `umount` failed only because nothing was mounted there
/// (util-linux: `umount: /x: not mounted.`).
pub(crate) fn not_mounted(out: &Output) -> bool {
    out.stderr.contains("not mounted")
}

#[cfg(test)]
#[path = "cmd_tests.rs"]
mod tests;
