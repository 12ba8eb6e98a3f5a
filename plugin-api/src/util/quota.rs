//! Project quotas: a size limit on one directory tree.
//!
//! ext4 and xfs charge every block and inode to the *project id* of the
//! inode, besides its owner and group. A driver that wants to cap a
//! directory (a volume's data, a container's writable layer) gives the
//! directory a project id of its own with `FS_XFLAG_PROJINHERIT`
//! (`FS_IOC_FSSETXATTR`), so everything created beneath it inherits the id,
//! and sets a block limit on that id with `quotactl(2)`: `Q_SETQUOTA` with
//! `PRJQUOTA` in general (ext4), `Q_XSETQLIM` on xfs. Writes past the limit
//! then fail with `EDQUOT`.
//!
//! # What the host needs
//!
//! * **ext4**: the `quota` and `project` features (`mkfs.ext4 -O
//!   quota,project`, or `tune2fs -O quota,project` while unmounted), mounted
//!   with `-o prjquota`, on a kernel built with `CONFIG_QUOTA` and
//!   `CONFIG_QFMT_V2`.
//! * **xfs**: mounted with `-o prjquota` (or `pquota`), on a kernel built with
//!   `CONFIG_XFS_QUOTA`.
//! * Linux 5.14 or later (`quotactl_fd(2)`, so no block device node is
//!   needed) and `CAP_SYS_ADMIN`.
//!
//! [`ProjectQuota::open`] checks all of this up front and answers
//! [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) naming the
//! filesystem and what it lacks; tmpfs, btrfs, overlay and the like have no
//! project quotas at all.
//!
//! # Project ids
//!
//! Ids are per filesystem, and the admin (or another engine) may use some.
//! Each [`ProjectQuota`] allocates from a JSON file its owner names (one per
//! driver, beside the directories it limits), mapping a caller's key (a
//! volume name, a layer id) to its id. An id is never handed out while it is
//! recorded there, nor while the filesystem reports blocks, inodes or
//! limits charged to it; ids start above the project id of the directory
//! given to [`ProjectQuota::open`], so giving a driver's root project id 999
//! (as Docker documents for its own root) keeps the driver at 1000 and up.
//! [`ProjectQuota::release`] clears the limit and frees the id.
//!
//! ```no_run
//! # use std::path::Path;
//! # use berth_plugin_api::util::quota::ProjectQuota;
//! # fn main() -> berth_plugin_api::DriverResult<()> {
//! let root = Path::new("/var/lib/berth/volumes");
//! let quota = ProjectQuota::open(root, root.join(".berth-quota.json"))?;
//! let id = quota.limit("web", &root.join("web/_data"), 10 << 20)?; // 10 MiB
//! assert_eq!(quota.project("web"), Some(id));
//! quota.release("web")?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::{DriverError, DriverResult};

// Kernel ABI of `linux/fs.h`, `linux/quota.h` and `linux/dqblk_xfs.h`,
// spelled out here because libc lacks most of it.
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f; // _IOR('X', 31, struct fsxattr)
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820; // _IOW('X', 32, struct fsxattr)
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const PRJQUOTA: libc::c_int = 2;
const Q_XSETQLIM: libc::c_int = ((b'X' as libc::c_int) << 8) | 4;
const Q_XGETQSTAT: libc::c_int = ((b'X' as libc::c_int) << 8) | 5;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_DQUOT_VERSION: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
/// `QIF_DQBLKSIZE`: `struct if_dqblk` counts blocks of 1 KiB.
const QIF_BLOCK: u64 = 1024;
/// xfs's `struct fs_disk_quota` counts basic blocks of 512 bytes.
const XFS_BBSIZE: u64 = 512;

const EXT4_SUPER_MAGIC: u32 = 0xef53;
const XFS_SUPER_MAGIC: u32 = 0x5846_5342;

/// How many candidate ids [`ProjectQuota::limit`] looks at before giving up.
const MAX_PROBES: u32 = 1 << 16;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct fs_qfilestat`.
#[repr(C)]
#[derive(Debug, Default)]
struct FsQfilestat {
    ino: u64,
    nblks: u64,
    nextents: u32,
}

/// `struct fs_quota_stat` (answer of `Q_XGETQSTAT`).
#[repr(C)]
#[derive(Debug, Default)]
struct FsQuotaStat {
    version: i8,
    flags: u16,
    pad: i8,
    uquota: FsQfilestat,
    gquota: FsQfilestat,
    incoredqs: u32,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
}

/// `struct fs_disk_quota` (argument of `Q_XSETQLIM`).
#[repr(C)]
#[derive(Debug, Default)]
struct FsDiskQuota {
    version: i8,
    flags: i8,
    fieldmask: u16,
    id: u32,
    blk_hardlimit: u64,
    blk_softlimit: u64,
    ino_hardlimit: u64,
    ino_softlimit: u64,
    bcount: u64,
    icount: u64,
    itimer: i32,
    btimer: i32,
    iwarns: u16,
    bwarns: u16,
    itimer_hi: i8,
    btimer_hi: i8,
    rtbtimer_hi: i8,
    padding2: i8,
    rtb_hardlimit: u64,
    rtb_softlimit: u64,
    rtbcount: u64,
    rtbtimer: i32,
    rtbwarns: u16,
    padding3: i16,
    padding4: [u8; 8],
}

/// `struct if_dqblk` (argument of `Q_GETQUOTA` and `Q_SETQUOTA`).
fn empty_dqblk() -> libc::dqblk {
    libc::dqblk {
        dqb_bhardlimit: 0,
        dqb_bsoftlimit: 0,
        dqb_curspace: 0,
        dqb_ihardlimit: 0,
        dqb_isoftlimit: 0,
        dqb_curinodes: 0,
        dqb_btime: 0,
        dqb_itime: 0,
        dqb_valid: 0,
    }
}

fn open_dir(dir: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn get_xattr(dir: &File) -> io::Result<FsXattr> {
    let mut fsx = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes exactly one `struct fsxattr`, which
    // `FsXattr` mirrors (`repr(C)`, 28 bytes), into the live `fsx`; the fd
    // stays open for the call.
    let ret = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR as libc::Ioctl, &mut fsx) };
    check(ret.into()).map(|()| fsx)
}

/// The project id of `dir` (0 when it has none).
pub fn project_id(dir: &Path) -> io::Result<u32> {
    Ok(get_xattr(&open_dir(dir)?)?.projid)
}

/// Gives `dir` project id `id` and `FS_XFLAG_PROJINHERIT`, so what is
/// created beneath it from now on is charged to `id`. Fails with
/// `EOPNOTSUPP` or `ENOTTY` where the filesystem has no project ids.
pub fn set_project_id(dir: &Path, id: u32) -> io::Result<()> {
    let f = open_dir(dir)?;
    let mut fsx = get_xattr(&f)?;
    fsx.projid = id;
    fsx.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr` from the live,
    // fully initialised `fsx`; the fd stays open for the call.
    let ret = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR as libc::Ioctl, &fsx) };
    check(ret.into())
}

/// `quotactl_fd(2)`: a quota command on the filesystem `fd` lives on.
///
/// # Safety
///
/// `addr` must be null or point to a live value of the type `cmd` reads or
/// writes.
unsafe fn quotactl_fd(fd: &File, cmd: libc::c_int, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: the fd is open for the call; the caller vouches for `addr`.
    let ret = unsafe { libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd as libc::c_uint, id, addr) };
    check(ret)
}

/// The filesystem `dir` lives on, by the magic number of `statfs(2)`:
/// `ext4` (also ext2/ext3), `xfs`, `tmpfs`, `btrfs`, ... or
/// `filesystem 0x…` for one this module does not know.
pub fn filesystem_name(dir: &Path) -> io::Result<String> {
    Ok(fs_name(fs_magic(&open_dir(dir)?)?))
}

fn fs_magic(f: &File) -> io::Result<u32> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open and `st` is a live, writable statfs.
    check(unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) }.into())?;
    // Magic numbers are 32-bit; `f_type` is wider on some targets.
    Ok(st.f_type as u32)
}

fn fs_name(magic: u32) -> String {
    let name = match magic {
        EXT4_SUPER_MAGIC => "ext4",
        XFS_SUPER_MAGIC => "xfs",
        0x0102_1994 => "tmpfs",
        0x9123_683e => "btrfs",
        0x794c_7630 => "overlay",
        0x6969 => "nfs",
        0xf2f5_2010 => "f2fs",
        0x2fc1_2fc1 => "zfs",
        0x6573_5546 => "fuse",
        _ => return format!("filesystem 0x{magic:x}"),
    };
    name.to_owned()
}

/// What a filesystem needs for project quotas, as advice.
fn needs(fs: &str) -> &'static str {
    match fs {
        "ext4" => {
            "ext4 needs the quota and project features (mkfs.ext4 -O quota,project, or tune2fs -O \
             quota,project while unmounted), the mount option prjquota, and a kernel with CONFIG_QUOTA \
             and CONFIG_QFMT_V2"
        }
        "xfs" => "xfs needs the mount option prjquota (pquota) and a kernel with CONFIG_XFS_QUOTA",
        _ => "keep the directory on ext4 or xfs mounted with prjquota",
    }
}

/// Whether the running kernel is at least `major.minor` (by `uname -r`);
/// an unreadable release counts as new enough.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: an all-zero `utsname` is a valid value of this plain C struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a live, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return true;
    }
    // SAFETY: uname NUL-terminates `release` within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Rounds `bytes` up to whole blocks of `block` bytes.
fn blocks(bytes: u64, block: u64) -> u64 {
    bytes.div_ceil(block)
}

/// The allocation file: which key holds which project id, and where the
/// search for the next one starts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Projects {
    #[serde(default)]
    next: u32,
    #[serde(default)]
    ids: BTreeMap<String, u32>,
}

impl Projects {
    fn load(path: &Path) -> DriverResult<Projects> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DriverError::internal(format!(
                    "corrupt project quota file {}: {e}; repair it, or delete it if no directory uses a quota",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Projects::default()),
            Err(e) => Err(DriverError::io(format_args!("read {}", path.display()), &e)),
        }
    }

    fn save(&self, path: &Path) -> DriverResult<()> {
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| DriverError::internal(format!("encode {}: {e}", path.display())))?;
        super::write_atomic(path, &bytes)
    }

    /// Picks a free id at or above `min`, starting where the last search
    /// ended: not recorded here, and not `busy` (charged on the
    /// filesystem). The caller records it.
    fn pick(&self, min: u32, mut busy: impl FnMut(u32) -> io::Result<bool>) -> DriverResult<u32> {
        let taken: BTreeSet<u32> = self.ids.values().copied().collect();
        let mut id = self.next.max(min);
        for _ in 0..MAX_PROBES {
            if !taken.contains(&id) {
                let charged = busy(id)
                    .map_err(|e| DriverError::io(format_args!("read the quota of project id {id}"), &e))?;
                if !charged {
                    return Ok(id);
                }
            }
            id = id.checked_add(1).unwrap_or(min);
        }
        Err(DriverError::resource_exhausted(format!(
            "no free project id among {MAX_PROBES} tried from {}; release unused quotas",
            self.next.max(min)
        )))
    }
}

/// Project quotas for directories below one directory. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct ProjectQuota {
    /// Any open file on the filesystem, for `quotactl_fd`.
    fs: File,
    fs_name: String,
    xfs: bool,
    min_id: u32,
    state: PathBuf,
    projects: Mutex<Projects>,
}

impl ProjectQuota {
    /// Checks that the filesystem of `dir` enforces project quotas and
    /// loads the allocation file `state` (created on first use; its
    /// directory must exist). A filesystem without them is
    /// [`Unsupported`](crate::ErrorKind::Unsupported), naming it and what it
    /// needs; a missing `CAP_SYS_ADMIN` is
    /// [`PermissionDenied`](crate::ErrorKind::PermissionDenied).
    pub fn open(dir: &Path, state: PathBuf) -> DriverResult<ProjectQuota> {
        let f = open_dir(dir).map_err(|e| DriverError::io(format_args!("open {}", dir.display()), &e))?;
        let magic =
            fs_magic(&f).map_err(|e| DriverError::io(format_args!("statfs {}", dir.display()), &e))?;
        let fs_name = fs_name(magic);
        let unsupported = |why: String| {
            DriverError::unsupported(format!(
                "size limits need project quotas, but {} is on {fs_name}, {why}; {}",
                dir.display(),
                needs(&fs_name)
            ))
        };
        let base = match get_xattr(&f) {
            Ok(fsx) => fsx.projid,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP | libc::EINVAL)) => {
                return Err(unsupported(format!("which has no project ids ({e})")))
            }
            Err(e) => {
                return Err(DriverError::io(format_args!("read the project id of {}", dir.display()), &e))
            }
        };
        let mut stat = FsQuotaStat::default();
        // SAFETY: Q_XGETQSTAT writes one `struct fs_quota_stat`, which
        // `FsQuotaStat` mirrors, into the live `stat`.
        let probed = unsafe {
            quotactl_fd(&f, libc::QCMD(Q_XGETQSTAT, PRJQUOTA), 0, (&mut stat as *mut FsQuotaStat).cast())
        };
        match probed {
            Ok(()) if stat.flags & FS_QUOTA_PDQ_ACCT == 0 => {
                return Err(unsupported("mounted without project quota accounting".into()))
            }
            Ok(()) if stat.flags & FS_QUOTA_PDQ_ENFD == 0 => {
                return Err(unsupported("mounted with project quotas accounted but not enforced".into()))
            }
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                return Err(DriverError::permission_denied(format!(
                    "read the quota state of {}: {e}; project quotas need CAP_SYS_ADMIN",
                    dir.display()
                )))
            }
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) if !kernel_at_least(5, 14) => {
                        "and this kernel predates quotactl_fd (Linux 5.14)".to_owned()
                    }
                    Some(libc::ENOSYS) if matches!(fs_name.as_str(), "ext4" | "xfs" | "f2fs") => {
                        "which has no quotas enabled".to_owned()
                    }
                    Some(libc::ENOSYS) => "which has no project quotas".to_owned(),
                    _ => format!("whose quota state cannot be read ({e})"),
                };
                return Err(unsupported(why));
            }
        }
        let projects = Projects::load(&state)?;
        Ok(ProjectQuota {
            fs: f,
            fs_name,
            xfs: magic == XFS_SUPER_MAGIC,
            min_id: base.saturating_add(1).max(1),
            state,
            projects: Mutex::new(projects),
        })
    }

    /// The filesystem's name: `ext4`, `xfs`, ...
    pub fn filesystem(&self) -> &str {
        &self.fs_name
    }

    fn lock(&self) -> DriverResult<MutexGuard<'_, Projects>> {
        self.projects.lock().map_err(|_| {
            DriverError::internal(
                "project quota state is unusable after an earlier panic; restart the daemon",
            )
        })
    }

    /// The project id held by `key`, if any.
    pub fn project(&self, key: &str) -> Option<u32> {
        self.projects.lock().ok()?.ids.get(key).copied()
    }

    /// Limits the directory `dir` to `bytes` (rounded up to the
    /// filesystem's quota block) under `key`: the key's project id, or a
    /// newly allocated one, is given to `dir` with inheritance and the limit
    /// set on it. Answers the project id. On failure a newly allocated id is
    /// released again.
    pub fn limit(&self, key: &str, dir: &Path, bytes: u64) -> DriverResult<u32> {
        let mut projects = self.lock()?;
        let (id, fresh) = match projects.ids.get(key) {
            Some(id) => (*id, false),
            None => {
                let id = projects.pick(self.min_id, |id| self.charged(id))?;
                projects.ids.insert(key.to_owned(), id);
                projects.next = id.checked_add(1).unwrap_or(self.min_id);
                if let Err(e) = projects.save(&self.state) {
                    projects.ids.remove(key);
                    return Err(e);
                }
                (id, true)
            }
        };
        let applied = set_project_id(dir, id)
            .map_err(|e| DriverError::io(format_args!("set project id {id} on {}", dir.display()), &e))
            .and_then(|()| {
                self.set_limit(id, bytes).map_err(|e| {
                    DriverError::io(
                        format_args!("set a limit of {bytes} bytes on project id {id} ({})", dir.display()),
                        &e,
                    )
                })
            });
        if let Err(e) = applied {
            if fresh {
                projects.ids.remove(key);
                let _ = projects.save(&self.state);
            }
            return Err(e);
        }
        Ok(id)
    }

    /// Clears the limit of `key`'s project id and frees the id. A key
    /// without one succeeds. The id stays recorded when its limit cannot be
    /// cleared.
    pub fn release(&self, key: &str) -> DriverResult<()> {
        let mut projects = self.lock()?;
        let Some(id) = projects.ids.get(key).copied() else { return Ok(()) };
        self.set_limit(id, 0)
            .map_err(|e| DriverError::io(format_args!("clear the limit of project id {id} ({key})"), &e))?;
        projects.ids.remove(key);
        projects.save(&self.state)
    }

    /// Sets the block limit (soft and hard) of project `id`; 0 removes it.
    fn set_limit(&self, id: u32, bytes: u64) -> io::Result<()> {
        if self.xfs {
            let mut d = FsDiskQuota {
                version: FS_DQUOT_VERSION,
                flags: FS_PROJ_QUOTA,
                fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD,
                id,
                blk_hardlimit: blocks(bytes, XFS_BBSIZE),
                blk_softlimit: blocks(bytes, XFS_BBSIZE),
                ..FsDiskQuota::default()
            };
            // SAFETY: Q_XSETQLIM reads one `struct fs_disk_quota`, which
            // `FsDiskQuota` mirrors, from the live `d`.
            unsafe {
                quotactl_fd(
                    &self.fs,
                    libc::QCMD(Q_XSETQLIM, PRJQUOTA),
                    id,
                    (&mut d as *mut FsDiskQuota).cast(),
                )
            }
        } else {
            let mut q = empty_dqblk();
            q.dqb_bhardlimit = blocks(bytes, QIF_BLOCK);
            q.dqb_bsoftlimit = q.dqb_bhardlimit;
            q.dqb_valid = libc::QIF_BLIMITS;
            // SAFETY: Q_SETQUOTA reads one `struct if_dqblk` (libc's
            // `dqblk`) from the live `q`.
            unsafe {
                quotactl_fd(
                    &self.fs,
                    libc::QCMD(libc::Q_SETQUOTA, PRJQUOTA),
                    id,
                    (&mut q as *mut libc::dqblk).cast(),
                )
            }
        }
    }

    /// Whether the filesystem charges anything to project `id`, or has a
    /// limit on it: such an id belongs to someone else.
    fn charged(&self, id: u32) -> io::Result<bool> {
        let mut q = empty_dqblk();
        // SAFETY: Q_GETQUOTA writes one `struct if_dqblk` (libc's `dqblk`)
        // into the live `q`.
        let got = unsafe {
            quotactl_fd(
                &self.fs,
                libc::QCMD(libc::Q_GETQUOTA, PRJQUOTA),
                id,
                (&mut q as *mut libc::dqblk).cast(),
            )
        };
        match got {
            Ok(()) => Ok([
                q.dqb_curspace,
                q.dqb_curinodes,
                q.dqb_bhardlimit,
                q.dqb_bsoftlimit,
                q.dqb_ihardlimit,
                q.dqb_isoftlimit,
            ]
            .iter()
            .any(|v| *v != 0)),
            // xfs: no quota record for this id at all.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structs_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
        assert_eq!(std::mem::size_of::<libc::dqblk>(), 72);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<FsQuotaStat>(), 80);
        assert_eq!(libc::QCMD(Q_XGETQSTAT, PRJQUOTA), 0x0058_0502);
        assert_eq!(libc::QCMD(libc::Q_SETQUOTA, PRJQUOTA) as u32, 0x8000_0802);
    }

    #[test]
    fn this_kernel_is_newer_than_linux_2_6() {
        assert!(kernel_at_least(2, 6));
        assert!(!kernel_at_least(999, 0));
    }

    #[test]
    fn ids_are_never_handed_out_twice_or_while_charged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projects.json");
        let mut p = Projects::load(&path).unwrap();
        // Ids 1 and 3 are charged on the filesystem (someone else's).
        let busy = |id: u32| Ok(id == 1 || id == 3);
        let a = p.pick(1, busy).unwrap();
        assert_eq!(a, 2);
        p.ids.insert("a".into(), a);
        p.next = a + 1;
        let b = p.pick(1, busy).unwrap();
        assert_eq!(b, 4);
        p.ids.insert("b".into(), b);
        p.next = b + 1;
        p.save(&path).unwrap();

        // Reloaded, freed ids are not reused at once: the search goes on.
        let mut p = Projects::load(&path).unwrap();
        assert_eq!(p.ids.len(), 2);
        p.ids.remove("a");
        assert_eq!(p.pick(1, busy).unwrap(), 5);
        // At the top it wraps around to the minimum, skipping live ids.
        p.next = u32::MAX;
        p.ids.insert("top".into(), u32::MAX);
        assert_eq!(p.pick(4, busy).unwrap(), 5);
        p.ids.insert("c".into(), 5);
        assert_eq!(p.pick(4, busy).unwrap(), 6);
        // A failing probe is an error naming the id.
        let e = p.pick(4, |_| Err(io::Error::from_raw_os_error(libc::EIO))).unwrap_err();
        assert!(e.message.contains("project id 6"), "{}", e.message);
        // Nothing free is resource-exhausted.
        let e = p.pick(4, |_| Ok(true)).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ResourceExhausted);
    }

    #[test]
    fn a_corrupt_allocation_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("projects.json");
        std::fs::write(&path, "{ nope").unwrap();
        let e = Projects::load(&path).unwrap_err();
        assert!(e.message.contains(path.to_str().unwrap()), "{}", e.message);
    }

    #[test]
    fn a_filesystem_without_project_quotas_is_unsupported_naming_it() {
        // The working directory's filesystem: whatever it is, this test
        // machine has no quota-enforcing mount there, or the message names
        // it properly.
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem_name(dir.path()).unwrap();
        match ProjectQuota::open(dir.path(), dir.path().join("q.json")) {
            Ok(q) => assert_eq!(q.filesystem(), fs),
            Err(e) => {
                assert_eq!(e.kind, crate::ErrorKind::Unsupported, "{}", e.message);
                assert!(e.message.contains(&fs) && e.message.contains("prjquota"), "{}", e.message);
                assert!(e.message.contains(dir.path().to_str().unwrap()), "{}", e.message);
            }
        }
        assert!(!dir.path().join("q.json").exists());
    }
}
