//! The files-outside-the-case-root check for in-process drivers (a shared
//! object or a linked driver): the top-level entries of a few well-known
//! directories ([`WATCHED`], and the temp dir) before the case, compared
//! with those after teardown, once the driver is dropped.
//!
//! Cheap and deliberately simple: only names directly in those directories
//! count (a driver that writes inside an existing directory, say
//! `/var/lib/x/`, is not seen); an entry counts when it is new, is still
//! there 100 ms later (a re-check, so short-lived files of other processes
//! drop out), and is not the suite's own — the case root or the workdir (or
//! a directory holding them), another case root (`berth-conformance-…`),
//! or a `tempfile` scratch directory (`.tmpXXXXXX`, what test harnesses
//! running the suite in parallel threads make all the time).
//!
//! As root, an fanotify watch (`attribution.rs`) also says who made each
//! entry: one made only by processes that are neither this one nor its
//! descendants (a compiler's `/tmp/cc*.s`, another build's `rustc*`
//! directory) is left out. Without it (not root, no fanotify), another
//! process making a lasting top-level entry there during a case shows as a
//! leak: run on a quiet host, or turn the check off
//! ([`crate::Options::check_files`], `--no-file-leak-check`).

mod attribution;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directories whose top level is watched.
pub const WATCHED: [&str; 6] = ["/tmp", "/var/tmp", "/run", "/var/lib", "/etc", "/dev/shm"];

/// How long a new entry must last to count.
pub const RECHECK: Duration = Duration::from_millis(100);

/// The watched directories' entries at the start of a case, and who makes
/// new ones while it runs.
#[derive(Debug)]
pub struct FileWatch {
    dirs: Vec<(PathBuf, BTreeSet<OsString>)>,
    makers: Option<attribution::Makers>,
}

impl FileWatch {
    /// Snapshots the watched directories (and the temp dir) that exist.
    pub fn start() -> FileWatch {
        let mut paths: Vec<PathBuf> = WATCHED
            .iter()
            .map(PathBuf::from)
            .chain([std::env::temp_dir()])
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        paths.sort();
        paths.dedup();
        // Watch first, then list: nothing made in between goes unseen.
        let makers = attribution::Makers::start(&paths);
        FileWatch { dirs: paths.into_iter().map(|p| (p.clone(), names(&p))).collect(), makers }
    }

    /// Whether the watch knows who makes entries (root, fanotify).
    pub fn attributes(&self) -> bool {
        self.makers.is_some()
    }

    /// Entries that appeared since [`FileWatch::start`] and last, leaving
    /// out the suite's own, those at or above `ours` (the case root, the
    /// workdir) and those only other processes made. Full paths, sorted.
    pub fn leaks(mut self, ours: &[&Path]) -> Vec<PathBuf> {
        let fresh = || -> Vec<PathBuf> {
            self.dirs
                .iter()
                .flat_map(|(dir, before)| {
                    names(dir).into_iter().filter(|n| !before.contains(n)).map(|n| dir.join(n))
                })
                .filter(|p| !suites_own(p, ours))
                .collect()
        };
        let first = fresh();
        if first.is_empty() {
            return first;
        }
        std::thread::sleep(RECHECK);
        let again: BTreeSet<PathBuf> = fresh().into_iter().collect();
        let lasting = first.into_iter().filter(|p| again.contains(p));
        match self.makers.as_mut() {
            Some(m) => {
                let foreign_only = m.finish();
                lasting
                    .filter(|p| p.file_name().map_or(true, |n| foreign_only(&n.to_os_string()) != Some(true)))
                    .collect()
            }
            None => lasting.collect(),
        }
    }
}

/// How a leaked entry reads in a failure: its path and what it is.
pub fn describe(p: &Path) -> String {
    let kind = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => "directory",
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.is_file() => "file",
        Ok(_) => "special file",
        Err(_) => "gone by now",
    };
    format!("{} ({kind})", p.display())
}

fn names(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default()
}

fn suites_own(p: &Path, ours: &[&Path]) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    ours.iter().any(|o| o.starts_with(p))
        || name.starts_with("berth-conformance-")
        || (name.len() == 10
            && name.starts_with(".tmp")
            && name[4..].bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lasting_entries_are_found_and_the_suites_own_are_not() {
        let (w, w2) = (FileWatch::start(), FileWatch::start());
        let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        let leak = tmp.join(format!("berth-leak-unit-{}", std::process::id()));
        let own = tmp.join(format!("berth-conformance-unit-{}", std::process::id()));
        std::fs::write(&leak, b"x").unwrap();
        std::fs::create_dir(&own).unwrap();
        let found = w.leaks(&[]);
        std::fs::remove_file(&leak).unwrap();
        std::fs::remove_dir(&own).unwrap();
        assert!(found.contains(&leak), "{found:?}");
        assert!(!found.contains(&own), "{found:?}");
        assert!(!w2.leaks(&[]).contains(&leak));
        assert!(describe(&leak).ends_with("(gone by now)"));
    }

    #[test]
    fn an_entry_only_another_process_made_is_not_the_cases() {
        let w = FileWatch::start();
        if !w.attributes() {
            eprintln!("skipped: no fanotify here (needs root)");
            return;
        }
        let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        let other = tmp.join(format!("berth-leak-other-{}", std::process::id()));
        // A grandchild whose parent exits at once is re-parented: it is no
        // longer a descendant of this process when it makes the file.
        let script = format!("(sleep 0.3; touch {}) >/dev/null 2>&1 &", other.display());
        assert!(std::process::Command::new("sh").arg("-c").arg(script).status().unwrap().success());
        let t = std::time::Instant::now();
        while !other.exists() && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let found = w.leaks(&[]);
        std::fs::remove_file(&other).unwrap();
        assert!(!found.contains(&other), "{found:?}");
    }
}
