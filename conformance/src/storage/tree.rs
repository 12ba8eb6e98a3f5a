//! File-tree helpers for the storage cases: what a path looks like (type,
//! mode with the special bits, owner), and the specimen tree of ST-02.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::case::{Failure, Stop};

/// The facts about one path that layers must preserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `d` directory, `f` regular file, `l` symlink, `?` other.
    pub kind: char,
    /// Permission bits including setuid (04000), setgid (02000) and sticky
    /// (01000). Not compared for symlinks.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Facts {
    /// `file mode 4755 owner 1001:1002`.
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            'd' => "directory",
            'f' => "file",
            'l' => "symlink",
            _ => "special file",
        };
        if self.kind == 'l' {
            format!("{kind} owner {}:{}", self.uid, self.gid)
        } else {
            format!("{kind} mode {:04o} owner {}:{}", self.mode, self.uid, self.gid)
        }
    }

    /// Equal where it matters (mode is ignored for symlinks).
    pub fn matches(&self, other: &Facts) -> bool {
        self.kind == other.kind
            && self.uid == other.uid
            && self.gid == other.gid
            && (self.kind == 'l' || self.mode == other.mode)
    }
}

/// `lstat` of `path`.
pub fn facts(path: &Path) -> std::io::Result<Facts> {
    let m = std::fs::symlink_metadata(path)?;
    let t = m.file_type();
    let kind = if t.is_dir() {
        'd'
    } else if t.is_file() {
        'f'
    } else if t.is_symlink() {
        'l'
    } else {
        '?'
    };
    Ok(Facts { kind, mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid() })
}

/// Like [`facts`], failing the case at `step` on error.
pub fn facts_at(path: &Path, step: &str) -> Result<Facts, Stop> {
    facts(path).map_err(|e| {
        Failure::new(step, format!("{} to exist", path.display()), format!("lstat failed: {e}")).into()
    })
}

/// Names of the entries of directory `path`, sorted.
pub fn entries(path: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// One specimen of ST-02.
#[derive(Debug, Clone, Copy)]
pub struct Specimen {
    /// Path relative to the layer root.
    pub path: &'static str,
    /// What it must look like.
    pub want: Facts,
    /// The symlink target, for symlinks.
    pub target: &'static str,
}

const fn spec(path: &'static str, kind: char, mode: u32, uid: u32, gid: u32) -> Specimen {
    Specimen { path, want: Facts { kind, mode, uid, gid }, target: "" }
}

/// Setuid, setgid and sticky bits on files and directories, odd owners,
/// and an owned symlink — parents before children.
pub const SPECIMENS: [Specimen; 8] = [
    spec("suid", 'f', 0o4755, 1001, 1002),
    spec("sgid", 'f', 0o2711, 1003, 1004),
    spec("suid-sgid", 'f', 0o6750, 1005, 1006),
    spec("sgid-dir", 'd', 0o2775, 0, 1007),
    spec("sgid-dir/plain-dir", 'd', 0o0750, 1012, 1013),
    spec("sticky-dir", 'd', 0o1777, 1008, 1009),
    spec("sticky-dir/owned", 'f', 0o0640, 1010, 1011),
    Specimen {
        path: "link-to-suid",
        want: Facts { kind: 'l', mode: 0, uid: 1014, gid: 1015 },
        target: "suid",
    },
];

/// Makes the specimens under `root`: owner first, then mode (a `chown`
/// clears setuid/setgid, so the order matters).
pub fn make_specimens(root: &Path) -> std::io::Result<()> {
    for s in SPECIMENS {
        let p = root.join(s.path);
        match s.want.kind {
            'd' => std::fs::create_dir(&p)?,
            'f' => std::fs::write(&p, format!("specimen {}\n", s.path))?,
            _ => std::os::unix::fs::symlink(s.target, &p)?,
        }
        std::os::unix::fs::lchown(&p, Some(s.want.uid), Some(s.want.gid))?;
        if s.want.kind != 'l' {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(s.want.mode))?;
        }
    }
    Ok(())
}

/// Every way the specimens under `root` differ from what they must be.
pub fn specimen_mismatches(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for s in SPECIMENS {
        let p = root.join(s.path);
        match facts(&p) {
            Err(e) => out.push(format!("{}: missing ({e})", s.path)),
            Ok(got) if !got.matches(&s.want) => {
                out.push(format!("{}: want {}, have {}", s.path, s.want.describe(), got.describe()))
            }
            Ok(_) => {}
        }
        if s.want.kind == 'l' {
            match std::fs::read_link(&p) {
                Ok(t) if t == Path::new(s.target) => {}
                Ok(t) => out.push(format!("{}: want target {:?}, have {:?}", s.path, s.target, t)),
                Err(_) => {}
            }
        }
    }
    out
}
