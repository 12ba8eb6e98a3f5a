//! The command lines the driver runs (`dmsetup`, `mkfs.*`, `mount`, ...),
//! the parsers of what `dmsetup` prints, and the mapping of failures to
//! error kinds. Everything here is a pure function, tested in
//! `dmsetup_tests.rs` against recorded outputs.
//!
//! Pool messages are the thin-pool target's (the kernel's
//! `Documentation/admin-guide/device-mapper/thin-provisioning.rst`):
//! `create_thin <id>`, `create_snap <id> <origin id>`, `delete <id>` and
//! `set_transaction_id <current> <new>`, sent to sector 0 of the pool.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use berth_plugin_api::{DriverError, ErrorKind};

use crate::runner::{Cmd, Output};

/// The thin-pool metadata block size: fixed at 4 KiB by the kernel.
pub(crate) const METADATA_BLOCK_BYTES: u64 = 4096;

/// A filesystem the driver puts on base devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fs {
    /// ext4 (`mkfs.ext4`, grown online with `resize2fs`).
    Ext4,
    /// xfs (`mkfs.xfs`, grown with `xfs_growfs`; mounted `nouuid`, since
    /// every snapshot of a device shares its UUID).
    Xfs,
}

impl Fs {
    /// Its name, as `mount -t` and the metadata spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
        }
    }

    /// The filesystem called `name`.
    pub(crate) fn parse(name: &str) -> Option<Fs> {
        match name {
            "ext4" => Some(Fs::Ext4),
            "xfs" => Some(Fs::Xfs),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- commands

/// `dmsetup status` of one device (no name prefix in the answer).
pub(crate) fn status(name: &str) -> Cmd {
    Cmd::new(["dmsetup", "status", name])
}

/// `dmsetup table` of one device.
pub(crate) fn table(name: &str) -> Cmd {
    Cmd::new(["dmsetup", "table", name])
}

/// `dmsetup targets`: the target types the kernel has loaded.
pub(crate) fn targets() -> Cmd {
    Cmd::new(["dmsetup", "targets"])
}

/// `dmsetup info -c` of every device: name, attributes, open count,
/// segments and event number, `:`-separated (the default separator).
pub(crate) fn info_all() -> Cmd {
    Cmd::new(["dmsetup", "info", "-c", "--noheadings", "-o", "name,attr,open,segments,events"])
}

/// `dmsetup message` to sector 0 of the pool.
pub(crate) fn message(pool: &str, msg: &str) -> Cmd {
    Cmd::new(["dmsetup", "message", pool, "0", msg])
}

/// The pool message that makes thin device `id`.
pub(crate) fn create_thin(id: u32) -> String {
    format!("create_thin {id}")
}

/// The pool message that snapshots device `origin` as new device `id`.
pub(crate) fn create_snap(id: u32, origin: u32) -> String {
    format!("create_snap {id} {origin}")
}

/// The pool message that deletes device `id`.
pub(crate) fn delete(id: u32) -> String {
    format!("delete {id}")
}

/// The pool message that moves the transaction id from `current` to `new`.
pub(crate) fn set_transaction_id(current: u64, new: u64) -> String {
    format!("set_transaction_id {current} {new}")
}

/// The table of thin device `id` of `pool`, `size` bytes long.
pub(crate) fn thin_table(pool: &str, id: u32, size: u64) -> String {
    format!("0 {} thin /dev/mapper/{pool} {id}", size / 512)
}

/// `dmsetup create`: activates thin device `id` as `/dev/mapper/<name>`.
pub(crate) fn activate(name: &str, pool: &str, id: u32, size: u64, read_only: bool) -> Cmd {
    let mut argv = vec!["dmsetup".to_string(), "create".to_string(), name.to_string()];
    if read_only {
        argv.push("--readonly".into());
    }
    argv.extend(["--table".to_string(), thin_table(pool, id, size)]);
    Cmd::new(argv)
}

/// `dmsetup remove`: deactivates a device.
pub(crate) fn deactivate(name: &str) -> Cmd {
    Cmd::new(["dmsetup", "remove", name])
}

/// `dmsetup suspend` (of an origin while it is snapshotted).
pub(crate) fn suspend(name: &str) -> Cmd {
    Cmd::new(["dmsetup", "suspend", name])
}

/// `dmsetup resume`.
pub(crate) fn resume(name: &str) -> Cmd {
    Cmd::new(["dmsetup", "resume", name])
}

/// `mkfs` of a new base device, with the operator's extra arguments
/// (ext4 as moby makes it: no discard, inode tables and journal written
/// now rather than lazily in the background of a container).
pub(crate) fn mkfs(fs: Fs, dev: &str, extra: &[String]) -> Cmd {
    let mut argv: Vec<String> = match fs {
        Fs::Ext4 => {
            ["mkfs.ext4", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"].map(String::from).into()
        }
        Fs::Xfs => vec!["mkfs.xfs".to_string()],
    };
    argv.extend(extra.iter().cloned());
    argv.push(dev.to_string());
    let mut cmd = Cmd::new(argv);
    cmd.timeout = Duration::from_secs(600);
    cmd
}

/// `tune2fs` after `mkfs.ext4`: no fsck by mount count or interval.
pub(crate) fn tune2fs(dev: &str) -> Cmd {
    Cmd::new(["tune2fs", "-c", "-1", "-i", "0", dev])
}

/// The mount options of a layer device.
pub(crate) fn mount_options(fs: Fs, read_only: bool, extra: &[String]) -> String {
    let mut opts = vec![if read_only { "ro" } else { "rw" }.to_string()];
    if fs == Fs::Xfs {
        opts.push("nouuid".into());
    }
    opts.extend(extra.iter().cloned());
    opts.join(",")
}

/// `mount` of a layer device at `target`.
pub(crate) fn mount(fs: Fs, dev: &str, target: &Path, read_only: bool, extra: &[String]) -> Cmd {
    let opts = mount_options(fs, read_only, extra);
    let target = target.to_string_lossy();
    Cmd::new(["mount", "-t", fs.name(), "-o", &opts, dev, &target])
}

/// `umount` of a layer's mount point.
pub(crate) fn umount(target: &Path) -> Cmd {
    Cmd::new(["umount".to_string(), target.to_string_lossy().into_owned()])
}

/// Grows the mounted filesystem of `dev` (mounted at `mnt`) to its device.
pub(crate) fn grow(fs: Fs, dev: &str, mnt: &Path) -> Cmd {
    let mut cmd = match fs {
        Fs::Ext4 => Cmd::new(["resize2fs", dev]),
        Fs::Xfs => Cmd::new(["xfs_growfs".to_string(), mnt.to_string_lossy().into_owned()]),
    };
    cmd.timeout = Duration::from_secs(600);
    cmd
}

// ---------------------------------------------------------------- parsing

/// An output the driver cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// A line too short for its target type.
    Fields {
        /// The line.
        line: String,
        /// Fields expected at least.
        expected: usize,
    },
    /// A field that should be a number.
    Number {
        /// What the field is.
        field: &'static str,
        /// What was there.
        value: String,
    },
    /// A field with a value outside its known set.
    Value {
        /// What the field is.
        field: &'static str,
        /// What was there.
        value: String,
    },
    /// The device is not of the expected target type.
    Target {
        /// The type expected.
        expected: &'static str,
        /// The line found.
        line: String,
    },
    /// The pool target reports itself failed (`Fail`) or in error.
    PoolFailed(String),
    /// Something the output must contain is missing.
    Missing(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Fields { line, expected } => {
                write!(f, "line {line:?} has fewer than {expected} fields")
            }
            ParseError::Number { field, value } => write!(f, "{field} is {value:?}, not a number"),
            ParseError::Value { field, value } => write!(f, "{field} has the unknown value {value:?}"),
            ParseError::Target { expected, line } => write!(f, "expected a {expected} target, got {line:?}"),
            ParseError::PoolFailed(line) => write!(f, "the thin pool reports failure: {line:?}"),
            ParseError::Missing(what) => write!(f, "{what} is missing"),
        }
    }
}

impl ParseError {
    /// The driver error for this output of `cmd`: a failed pool is
    /// unavailable; an output the driver cannot read is internal.
    pub(crate) fn into_error(self, cmd: &Cmd) -> DriverError {
        match self {
            ParseError::PoolFailed(_) => DriverError::unavailable(format!(
                "`{cmd}`: {self}; repair the pool (thin_check, lvconvert --repair) before using it"
            )),
            _ => DriverError::internal(format!("cannot read the output of `{cmd}`: {self}")),
        }
    }
}

fn number<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, ParseError> {
    value.parse().map_err(|_| ParseError::Number { field, value: value.into() })
}

/// The fields of the one line of a single-device `dmsetup status` or
/// `dmsetup table` that follow `<start> <length> <target>`, and the
/// length. Also takes the `<name>: ` prefix `dmsetup` prints when listing
/// every device (names may hold `:`).
fn target_line<'a>(out: &'a str, target: &'static str) -> Result<(u64, Vec<&'a str>), ParseError> {
    let line = out.lines().find(|l| !l.trim().is_empty()).ok_or(ParseError::Missing("the status line"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == target).filter(|at| *at >= 2) else {
        return Err(ParseError::Target { expected: target, line: line.trim().to_string() });
    };
    let length = number("length", words[at - 1])?;
    Ok((length, words[at + 1..].to_vec()))
}

/// `<used>/<total>`.
fn fraction(field: &'static str, value: &str) -> Result<(u64, u64), ParseError> {
    let (used, total) = value.split_once('/').ok_or(ParseError::Value { field, value: value.into() })?;
    Ok((number(field, used)?, number(field, total)?))
}

/// The mode of a thin pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolMode {
    /// `rw`: working.
    ReadWrite,
    /// `ro`: metadata problems or no metadata space; no changes possible.
    ReadOnly,
    /// `out_of_data_space`: writes wait or fail until the pool grows.
    OutOfDataSpace,
}

/// What `dmsetup status <pool>` says of a thin pool: the thin-pool target's
/// status line, `<transaction id> <used metadata blocks>/<total metadata
/// blocks> <used data blocks>/<total data blocks> <held metadata root>
/// ro|rw|out_of_data_space [no_]discard_passdown [error|queue]_if_no_space
/// needs_check|- [metadata_low_watermark]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolStatus {
    /// The pool's length in 512-byte sectors.
    pub(crate) sectors: u64,
    /// The transaction id berth last set.
    pub(crate) transaction_id: u64,
    /// Metadata blocks (4 KiB) used and total.
    pub(crate) metadata: (u64, u64),
    /// Data blocks used and total.
    pub(crate) data: (u64, u64),
    /// Its mode.
    pub(crate) mode: PoolMode,
    /// Whether the metadata needs `thin_check` before use.
    pub(crate) needs_check: bool,
}

/// Parses the answer of [`status`] for a thin pool.
pub(crate) fn parse_pool_status(out: &str) -> Result<PoolStatus, ParseError> {
    let (sectors, f) = target_line(out, "thin-pool")?;
    if matches!(f.first(), Some(&"Fail") | Some(&"Error")) {
        return Err(ParseError::PoolFailed(out.trim().to_string()));
    }
    if f.len() < 7 {
        return Err(ParseError::Fields { line: out.trim().to_string(), expected: 7 });
    }
    let mode = match f[4] {
        "rw" => PoolMode::ReadWrite,
        "ro" => PoolMode::ReadOnly,
        "out_of_data_space" => PoolMode::OutOfDataSpace,
        other => return Err(ParseError::Value { field: "pool mode", value: other.into() }),
    };
    Ok(PoolStatus {
        sectors,
        transaction_id: number("transaction id", f[0])?,
        metadata: fraction("metadata blocks", f[1])?,
        data: fraction("data blocks", f[2])?,
        mode,
        // Kernels before 4.x print no needs_check field at all.
        needs_check: f.get(7) == Some(&"needs_check"),
    })
}

/// What `dmsetup table <pool>` says of a thin pool: `<metadata dev> <data
/// dev> <data block size in sectors> <low water mark> [features]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolTable {
    /// The data block size in 512-byte sectors.
    pub(crate) block_sectors: u64,
}

/// Parses the answer of [`table`] for a thin pool.
pub(crate) fn parse_pool_table(out: &str) -> Result<PoolTable, ParseError> {
    let (_, f) = target_line(out, "thin-pool")?;
    let raw = f.get(2).ok_or(ParseError::Fields { line: out.trim().to_string(), expected: 7 })?;
    let block_sectors: u64 = number("data block size", raw)?;
    if block_sectors == 0 {
        return Err(ParseError::Value { field: "data block size", value: raw.to_string() });
    }
    Ok(PoolTable { block_sectors })
}

/// One device of [`info_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevInfo {
    /// Its name.
    pub(crate) name: String,
    /// Attributes: (L)ive, (I)nactive, (s)uspended, (r)ead-only, read-(w)rite.
    pub(crate) attr: String,
    /// How many openers it has (a mount counts).
    pub(crate) open: u32,
    /// Segments in its live table.
    pub(crate) segments: u32,
    /// Its event number.
    pub(crate) events: u32,
}

/// Parses the answer of [`info_all`]. Names may hold `:`, the other four
/// fields cannot, so each line is split from the right.
pub(crate) fn parse_info(out: &str) -> Result<Vec<DevInfo>, ParseError> {
    let mut devices = Vec::new();
    for line in out.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if line == "No devices found" {
            continue;
        }
        let f: Vec<&str> = line.rsplitn(5, ':').collect();
        let [events, segments, open, attr, name] = f.as_slice() else {
            return Err(ParseError::Fields { line: line.into(), expected: 5 });
        };
        if attr.len() != 4 || !attr.chars().all(|c| "LIsrw-".contains(c)) {
            return Err(ParseError::Value { field: "attr", value: attr.to_string() });
        }
        devices.push(DevInfo {
            name: name.to_string(),
            attr: attr.to_string(),
            open: number("open count", open)?,
            segments: number("segments", segments)?,
            events: number("events", events)?,
        });
    }
    Ok(devices)
}

/// Whether an answer of [`targets`] lists target type `name`.
pub(crate) fn has_target(out: &str, name: &str) -> bool {
    out.lines().any(|l| l.split_whitespace().next() == Some(name))
}

// ---------------------------------------------------------------- errors

/// The error for `cmd`, which ran and failed with `out`: the kind read
/// from the `strerror` text the tool printed.
pub(crate) fn failure(cmd: &Cmd, out: &Output) -> DriverError {
    let stderr = out.stderr.trim();
    let has = |s: &str| stderr.contains(s);
    let kind = if has("/dev/mapper/control") || has("Failure to communicate with kernel device-mapper") {
        ErrorKind::Unavailable
    } else if has("File exists") {
        ErrorKind::AlreadyExists
    } else if has("Device does not exist") || has("No such device or address") || has("No data available") {
        ErrorKind::NotFound
    } else if has("Device or resource busy") || has("target is busy") {
        ErrorKind::Conflict
    } else if has("No space left on device") {
        ErrorKind::ResourceExhausted
    } else if has("Permission denied") || has("Operation not permitted") {
        ErrorKind::PermissionDenied
    } else if has("Invalid argument") {
        ErrorKind::InvalidArgument
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
        std::io::ErrorKind::NotFound => {
            let package = match cmd.program() {
                "dmsetup" => "dmsetup (lvm2)",
                "mkfs.ext4" | "tune2fs" | "resize2fs" => "e2fsprogs",
                "mkfs.xfs" | "xfs_growfs" => "xfsprogs",
                "mount" | "umount" | "blkid" => "util-linux",
                _ => "lvm2",
            };
            DriverError::unavailable(format!(
                "cannot run `{cmd}`: {} is not installed ({package})",
                cmd.program()
            ))
        }
        std::io::ErrorKind::TimedOut => DriverError::timeout(err.to_string()),
        _ => DriverError::io(format_args!("run `{cmd}`"), err),
    }
}

/// Whether `umount` failed only because nothing was mounted there.
pub(crate) fn not_mounted(out: &Output) -> bool {
    out.stderr.contains("not mounted")
}

#[cfg(test)]
#[path = "dmsetup_tests.rs"]
mod tests;
