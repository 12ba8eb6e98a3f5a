//! Running host commands (`zfs`, `dmsetup`, `mkfs.*`, …): the one seam
//! between a driver that drives a command-line tool and the host.
//!
//! A driver builds every command line with pure functions and hands it to
//! a [`Runner`]. [`HostRunner`] runs it for real (`LC_ALL=C`, no stdin, a
//! deadline after which the process is killed); a driver's unit tests use
//! [`script::Script`], which checks each command line against a script and
//! answers with recorded outputs.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The directories searched after `PATH`: daemons often run with a `PATH`
/// that lacks the sbin directories where tools like `zfs` or `dmsetup` live.
const SBIN_DIRS: [&str; 4] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"];

/// One command line: the program and its arguments, exactly as built, and
/// how long it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program name (looked up in `PATH`, then the sbin directories),
    /// then its arguments.
    pub argv: Vec<String>,
    /// How long the command may run before it is killed.
    pub timeout: Duration,
}

impl Cmd {
    /// A command line with the default timeout of two minutes.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd { argv: argv.into_iter().map(Into::into).collect(), timeout: Duration::from_secs(120) }
    }

    /// The program's name.
    pub fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }
}

impl fmt::Display for Cmd {
    /// The command line as a shell would take it (arguments with spaces
    /// or quotes single-quoted), for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
                    a.clone()
                } else {
                    format!("'{}'", a.replace('\'', r"'\''"))
                }
            })
            .collect();
        f.write_str(&quoted.join(" "))
    }
}

/// What a finished command said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// Whether the command exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs commands. An `Err` means the command could not run or did not
/// finish in time; a command that ran and failed is an `Ok` whose
/// [`Output::code`] is not 0.
pub trait Runner: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion or until its timeout.
    fn run(&self, cmd: &Cmd) -> io::Result<Output>;
}

/// Runs commands on the host with [`std::process::Command`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HostRunner;

impl Runner for HostRunner {
    fn run(&self, cmd: &Cmd) -> io::Result<Output> {
        let program = find_program(cmd.program()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("command {:?} not found in PATH", cmd.program()))
        })?;
        let mut child = Command::new(program)
            .args(cmd.argv.iter().skip(1))
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Both pipes are drained by threads, so a chatty command never
        // blocks on a full pipe while we wait for it.
        let (tx, rx) = mpsc::channel();
        for (is_err, pipe) in [
            (false, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
            (true, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                let _ = tx.send((is_err, buf));
            });
        }
        drop(tx);
        let deadline = Instant::now() + cmd.timeout;
        let exited = ExitWatch::new(child.id());
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("`{cmd}` did not finish within {}s and was killed", cmd.timeout.as_secs()),
                ));
            }
            // Sleep until the child exits (a pidfd wakes us the moment it
            // does), or poll with a short back-off where there is none.
            if !exited.wait(left) {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        };
        let mut out = Output { code: status.code(), ..Output::default() };
        // A grandchild may keep a pipe open after the command exits: wait
        // for the readers a little, never forever.
        for _ in 0..2 {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok((false, b)) => out.stdout = String::from_utf8_lossy(&b).into_owned(),
                Ok((true, b)) => out.stderr = String::from_utf8_lossy(&b).into_owned(),
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

/// The path of program `name`: itself when it contains a `/`, else the
/// first executable of that name in `PATH` or the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

pub mod script {
    //! A [`Runner`] that answers from a script of recorded outputs and
    //! records every command line it was given.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The expected command lines, in order, each with its answer.
    #[derive(Debug, Default)]
    pub struct Script {
        steps: Mutex<VecDeque<(Vec<String>, io::Result<Output>)>>,
        calls: Mutex<Vec<String>>,
    }

    impl Script {
        /// An empty script.
        pub fn new() -> Arc<Script> {
            Arc::new(Script::default())
        }

        fn push(&self, argv: &[&str], answer: io::Result<Output>) -> &Self {
            let argv = argv.iter().map(|s| s.to_string()).collect();
            self.steps.lock().unwrap().push_back((argv, answer));
            self
        }

        /// Expects `argv`, which succeeds printing `stdout`.
        pub fn ok(&self, argv: &[&str], stdout: &str) -> &Self {
            self.push(argv, Ok(Output { code: Some(0), stdout: stdout.into(), stderr: String::new() }))
        }

        /// Expects `argv`, which fails with exit `code` printing `stderr`.
        pub fn fail(&self, argv: &[&str], code: i32, stderr: &str) -> &Self {
            self.push(argv, Ok(Output { code: Some(code), stdout: String::new(), stderr: stderr.into() }))
        }

        /// Expects `argv`, which cannot be run at all.
        pub fn error(&self, argv: &[&str], kind: io::ErrorKind) -> &Self {
            self.push(argv, Err(io::Error::new(kind, "scripted error")))
        }

        /// Every command line run so far, as text.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        /// Panics unless every scripted command ran.
        #[track_caller]
        pub fn assert_done(&self) {
            let left: Vec<String> = self.steps.lock().unwrap().iter().map(|(a, _)| a.join(" ")).collect();
            assert!(left.is_empty(), "scripted commands never ran: {left:#?}\nran: {:#?}", self.calls());
        }
    }

    impl Runner for Script {
        fn run(&self, cmd: &Cmd) -> io::Result<Output> {
            self.calls.lock().unwrap().push(cmd.argv.join(" "));
            let step = self.steps.lock().unwrap().pop_front();
            let Some((argv, answer)) = step else {
                panic!("unscripted command: {}\nran: {:#?}", cmd, self.calls());
            };
            assert_eq!(cmd.argv, argv, "command line differs from the script");
            answer
        }
    }
}

/// Wakes a waiter the moment a child process exits: a pidfd (Linux 5.3+)
/// polled with the time left, so a command's end is seen at once instead
/// of after a sleep (a polling loop added up to tens of ms per `nft` call).
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(pid: u32) -> ExitWatch {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or
        // -1; the child is not reaped yet, so the pid is still ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        // SAFETY: a non-negative answer is a fresh fd we own.
        ExitWatch((fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits up to `left` for the exit; false when there is no pidfd (the
    /// caller sleeps instead).
    fn wait(&self, left: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.0 else { return false };
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_runner_captures_output_and_exit_code() {
        let out = HostRunner.run(&Cmd::new(["sh", "-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!((out.code, out.stdout.as_str(), out.stderr.as_str()), (Some(3), "out\n", "err\n"));
        assert!(!out.success());
        assert!(HostRunner.run(&Cmd::new(["true"])).unwrap().success());
    }

    #[test]
    fn the_host_runner_kills_a_command_past_its_deadline() {
        let mut cmd = Cmd::new(["sleep", "30"]);
        cmd.timeout = Duration::from_millis(100);
        let t = Instant::now();
        let e = HostRunner.run(&cmd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("sleep 30"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let e = HostRunner.run(&Cmd::new(["berth-no-such-program"])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(find_program("sh").is_some());
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let cmd = Cmd::new(["dmsetup", "message", "pool", "0", "create_thin 7", "it's"]);
        assert_eq!(cmd.to_string(), r"dmsetup message pool 0 'create_thin 7' 'it'\''s'");
    }
}
