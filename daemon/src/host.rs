//! Facts about the host for `/version` and `/info`, read from `/proc` and
//! `/etc` (no unsafe, no shelling out).

use std::path::Path;

/// Host facts that do not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub operating_system: String,
    /// CPUs available to the daemon.
    pub ncpu: usize,
    /// Physical memory in bytes.
    pub mem_total: u64,
    /// When the berthd binary was built (its modification time), RFC 3339.
    pub build_time: String,
}

impl HostFacts {
    /// Reads them.
    pub fn read() -> HostFacts {
        HostFacts {
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
            operating_system: os_release(Path::new("/etc/os-release"))
                .or_else(|| os_release(Path::new("/usr/lib/os-release")))
                .unwrap_or_else(|| "Linux".into()),
            ncpu: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            mem_total: std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m)).unwrap_or(0),
            build_time: build_time(),
        }
    }
}

/// The host name (read on each request: it can change).
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into())
}

/// Docker's (Go's) name for the machine architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The engine's ID, kept in `<root>/engine-id` (as Docker does) and made
/// on first start.
pub fn engine_id(root: &Path) -> std::io::Result<String> {
    let path = root.join("engine-id");
    if let Some(id) = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_string()) {
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let mut b = [0u8; 16];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let id = format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]);
    let tmp = root.join(".engine-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn os_release(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn build_time() -> String {
    let built = std::env::current_exe().and_then(std::fs::metadata).and_then(|m| m.modified());
    built.map(berth_plugin_api::util::rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_bytes() {
        assert_eq!(mem_total("MemFree: 5 kB\nMemTotal:       2048 kB\n"), Some(2048 * 1024));
        assert_eq!(mem_total("nothing"), None);
    }

    #[test]
    fn the_engine_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = engine_id(dir.path()).unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(engine_id(dir.path()).unwrap(), a);
    }
}
