//! Who made a new entry: an fanotify group (root only) watching the
//! directories for creates and moves-in, read by a thread while the case
//! runs, so each event's process is looked up while it still exists. An
//! entry made by this process (any thread) or a process descending from it
//! is the case's; one made by any other process is not. A process gone
//! before its event is read is unknown, and counts as the case's.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Names made in the watched directories, each with whether every maker
/// seen was another process (`true`: foreign only).
#[derive(Debug, Default)]
struct Seen {
    foreign_only: BTreeMap<OsString, bool>,
    overflowed: bool,
}

/// A running watch; [`Makers::finish`] stops it.
#[derive(Debug)]
pub(super) struct Makers {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
}

impl Makers {
    /// Starts watching `dirs` for new entries; `None` when fanotify is not
    /// available (not root, an old kernel, a filesystem without file
    /// handles).
    pub(super) fn start(dirs: &[PathBuf]) -> Option<Makers> {
        let flags =
            libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_DFID_NAME | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC;
        // SAFETY: fanotify_init takes flags only and returns a new fd or -1.
        let raw = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ONDIR;
        for d in dirs {
            let c = CString::new(d.as_os_str().as_bytes()).ok()?;
            // SAFETY: `raw` is a valid fanotify fd (owned by `fd`, alive);
            // `c` is a NUL-terminated path that outlives the call.
            let rc =
                unsafe { libc::fanotify_mark(raw, libc::FAN_MARK_ADD, mask, libc::AT_FDCWD, c.as_ptr()) };
            if rc != 0 {
                return None;
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, v) = (Arc::clone(&stop), Arc::clone(&seen));
        let reader = std::thread::Builder::new()
            .name("berth-conformance-files".into())
            .spawn(move || read_events(File::from(fd), &s, &v))
            .ok()?;
        Some(Makers { stop, seen, reader: Some(reader) })
    }

    /// Stops the watch (reading what is queued first) and answers whether
    /// `name` was made by other processes only. `None` when unknown: no
    /// event for it, or events were lost.
    pub(super) fn finish(&mut self) -> impl Fn(&OsString) -> Option<bool> + '_ {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let overflowed = seen.overflowed;
        let map = seen.foreign_only.clone();
        move |name| if overflowed { None } else { map.get(name).copied() }
    }
}

impl Drop for Makers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_events(mut f: File, stop: &AtomicBool, seen: &Mutex<Seen>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Read what is queued; after `stop`, once more, then end.
        let stopping = stop.load(Ordering::SeqCst);
        loop {
            match f.read(&mut buf) {
                Ok(n) if n > 0 => parse(&buf[..n], seen),
                _ => break,
            }
        }
        if stopping {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Records the events in `buf` (`fanotify_event_metadata` records, each
/// followed by a `DFID_NAME` info record: header, fsid, file handle, name).
fn parse(buf: &[u8], seen: &Mutex<Seen>) {
    let mut off = 0;
    while let (Some(len), Some(meta_len), Some(mask), Some(pid)) =
        (u32_at(buf, off), u16_at(buf, off + 6), u64_at(buf, off + 8), u32_at(buf, off + 20))
    {
        let len = len as usize;
        if len == 0 || off + len > buf.len() {
            break;
        }
        let event = &buf[off..off + len];
        off += len;
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            s.overflowed = true;
            continue;
        }
        let mut info = usize::from(meta_len);
        while let (Some(&kind), Some(info_len)) = (event.get(info), u16_at(event, info + 2)) {
            let info_len = usize::from(info_len);
            if info_len == 0 {
                break;
            }
            if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME {
                // header 4, fsid 8, handle_bytes 4, handle_type 4, handle, name.
                if let Some(hb) = u32_at(event, info + 12) {
                    let start = info + 20 + hb as usize;
                    let end = (info + info_len).min(event.len());
                    if let Some(raw) = event.get(start..end) {
                        let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                        if !name.is_empty() {
                            let foreign = !ours(pid as i32);
                            let e = s.foreign_only.entry(OsString::from_vec(name.to_vec())).or_insert(true);
                            *e &= foreign;
                        }
                    }
                }
            }
            info += info_len;
        }
    }
}

/// Whether `pid` is this process or descends from it; a process already
/// gone counts as ours (it cannot be told apart).
fn ours(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let mut p = pid;
    for _ in 0..64 {
        if p == me {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { return true };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) else {
            return true;
        };
        match ppid.parse() {
            Ok(pp) => p = pp,
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_its_children_are_ours_and_init_is_not() {
        assert!(ours(std::process::id() as i32));
        assert!(!ours(1));
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(ours(child.id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
