//! The mount table as drivers (and the conformance suite) read it.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The mount points of `/proc/self/mountinfo`, in table order.
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    Ok(parse_mountinfo(&std::fs::read("/proc/self/mountinfo")?))
}

/// Mount points strictly below `dir`, in table order.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(mount_points()?.into_iter().filter(|m| m != dir && m.starts_with(dir)).collect())
}

/// The mount points (fifth field) of a mountinfo table.
pub fn parse_mountinfo(table: &[u8]) -> Vec<PathBuf> {
    table
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\012` for a
/// newline, `\134` for a backslash, ...) in a mountinfo field.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_unescaped() {
        let table = b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
            95 22 8:1 /var/lib/x /run/berth/mnt/a\\040b\\012c\\134d rw - ext4 /dev/sda1 rw\n\
            96 22 8:1 / /tmp/end\\040 rw - tmpfs tmpfs rw\n";
        let points = parse_mountinfo(table);
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/run/berth/mnt/a b\nc\\d"), PathBuf::from("/tmp/end ")]
        );
    }

    #[test]
    fn unescape_leaves_malformed_escapes_alone() {
        assert_eq!(unescape(b"a\\9b"), b"a\\9b");
        assert_eq!(unescape(b"tail\\04"), b"tail\\04");
        assert_eq!(unescape(b"\\011"), b"\t");
    }

    #[test]
    fn the_root_mount_is_listed() {
        assert!(mount_points().unwrap().iter().any(|m| m == Path::new("/")));
    }
}
