//! Layer tars the storage cases write by hand (including hostile ones the
//! `tar` crate's builder refuses to make) and read back (what a driver's
//! exported diff holds).

use std::collections::BTreeMap;
use std::io::Read;

/// A tar written header by header. Names and link targets longer than a
/// ustar header holds go into a PAX record, as GNU tar does.
#[derive(Debug, Default, Clone)]
pub struct RawTar(Vec<u8>);

/// The mtime of every hand-made entry.
const MTIME: u64 = 1_600_000_000;

impl RawTar {
    /// An empty archive.
    pub fn new() -> Self {
        RawTar::default()
    }

    /// Appends one entry of tar type `kind` (`b'0'` file, `b'1'` hardlink,
    /// `b'2'` symlink, `b'3'` char device, `b'4'` block device, `b'5'`
    /// directory, `b'6'` fifo), owned by root, with `mode` and, for device
    /// nodes, device number `dev`.
    pub fn entry(
        mut self,
        name: &[u8],
        kind: u8,
        link: &[u8],
        data: &[u8],
        mode: u32,
        dev: (u32, u32),
    ) -> Self {
        let mut pax = Vec::new();
        if name.len() > 100 {
            pax_record(&mut pax, b"path", name);
        }
        if link.len() > 100 {
            pax_record(&mut pax, b"linkpath", link);
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            set_bytes(&mut h.as_old_mut().name, b"././@PaxHeader");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_mtime(MTIME);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.push(h.as_bytes(), &pax);
        }
        let mut h = tar::Header::new_ustar();
        set_bytes(&mut h.as_old_mut().name, &name[..name.len().min(100)]);
        set_bytes(&mut h.as_old_mut().linkname, &link[..link.len().min(100)]);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        if matches!(kind, b'3' | b'4') {
            // Always representable: both fit the octal fields.
            let _ = h.set_device_major(dev.0);
            let _ = h.set_device_minor(dev.1);
        }
        h.set_cksum();
        self.push(h.as_bytes(), data);
        self
    }

    fn push(&mut self, header: &[u8], data: &[u8]) {
        self.0.extend_from_slice(header);
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.resize(self.0.len() + pad, 0);
    }

    /// A regular file of mode 0644.
    pub fn file(self, name: impl AsRef<[u8]>, data: &[u8]) -> Self {
        self.entry(name.as_ref(), b'0', b"", data, 0o644, (0, 0))
    }

    /// A directory (`name` without the trailing slash) of `mode`.
    pub fn dir(self, name: impl AsRef<[u8]>, mode: u32) -> Self {
        let mut n = name.as_ref().to_vec();
        n.push(b'/');
        self.entry(&n, b'5', b"", b"", mode, (0, 0))
    }

    /// A symlink to `target`.
    pub fn symlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.entry(name.as_ref(), b'2', target.as_ref(), b"", 0o777, (0, 0))
    }

    /// A hardlink to `target`.
    pub fn hardlink(self, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        self.entry(name.as_ref(), b'1', target.as_ref(), b"", 0o644, (0, 0))
    }

    /// A character device `major:minor`.
    pub fn char_dev(self, name: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.entry(name.as_ref(), b'3', b"", b"", 0o600, (major, minor))
    }

    /// A block device `major:minor`.
    pub fn block_dev(self, name: impl AsRef<[u8]>, major: u32, minor: u32) -> Self {
        self.entry(name.as_ref(), b'4', b"", b"", 0o600, (major, minor))
    }

    /// The finished archive (two zero blocks appended).
    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn set_bytes(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// One entry of a tar as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The path, without a leading `./` or a trailing `/`.
    pub path: String,
    /// The tar type byte (`b'0'` file, `b'1'` hardlink, …).
    pub kind: u8,
    /// Content bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// A link's target.
    pub link: Option<String>,
    /// Xattrs from PAX `SCHILY.xattr.*` records.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The content of a regular file (empty for every other type).
    pub data: Vec<u8>,
}

impl TarEntry {
    /// The last path component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    /// Whether this is a regular file (the type whiteouts have).
    pub fn is_regular(&self) -> bool {
        matches!(self.kind, b'0' | b'\0' | b'7')
    }
}

/// Reads every entry of an uncompressed tar.
pub fn list(tar_bytes: &[u8]) -> std::io::Result<Vec<TarEntry>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries()? {
        let mut e = e?;
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = raw.trim_start_matches("./").trim_end_matches('/').to_string();
        let h = e.header();
        let kind = h.entry_type().as_byte();
        let mode = h.mode().unwrap_or(0);
        let size = h.size().unwrap_or(0);
        let link = e.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.insert(String::from_utf8_lossy(name).into_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        (&mut e).take(size).read_to_end(&mut data)?;
        out.push(TarEntry { path, kind, size, mode, link, xattrs, data });
    }
    Ok(out)
}

/// `path (type)` of every entry, for messages.
pub fn summary(entries: &[TarEntry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| match &e.link {
            Some(l) => format!("{} ({} → {l})", e.path, e.kind as char),
            None => format!("{} ({})", e.path, e.kind as char),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_go_through_pax_and_read_back() {
        let long = format!("{}/file", "d".repeat(150));
        let tar = RawTar::new().file(&long, b"abc").symlink("l", "x".repeat(120)).finish();
        let got = list(&tar).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, long);
        assert_eq!(got[0].size, 3);
        assert_eq!(got[1].link.as_deref(), Some("x".repeat(120).as_str()));
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        let mut v = Vec::new();
        pax_record(&mut v, b"path", b"a");
        assert_eq!(v, b"9 path=a\n");
        let mut v = Vec::new();
        pax_record(&mut v, b"path", &[b'x'; 92]);
        assert_eq!(v.len(), 102);
        assert!(v.starts_with(b"102 path="));
    }
}
