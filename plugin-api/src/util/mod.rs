//! Small helpers every driver needs and none should write again.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{DriverError, DriverResult};

pub mod command;
pub mod driver;
pub mod mounts;
pub mod quota;
pub mod size;
pub mod time;
pub use size::parse_size;
pub use time::{is_rfc3339, rfc3339};

/// Writes `bytes` to `path` so that a crash leaves either the old or the
/// new content: a temporary file beside it, fsync, rename over, fsync the
/// directory. The error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> DriverResult<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    result.map_err(|e: io::Error| {
        let _ = fs::remove_file(&tmp);
        DriverError::io(format_args!("write {}", path.display()), &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_not_found_naming_the_path() {
        let e = write_atomic(Path::new("/nonexistent-berth-dir/x.json"), b"x").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::NotFound);
        assert!(e.message.contains("/nonexistent-berth-dir/x.json"), "{}", e.message);
    }
}
