//! Measures what a daemon adds to a remote volume driver's `Get`: the
//! plugin called directly (`POST /VolumeDriver.Get` on its socket), then
//! `GET /volumes/{name}` on the daemon for a volume of that remote driver
//! and for a volume of an in-process driver. Each is N sequential requests
//! on one kept-alive connection; prints one JSON line per measurement with
//! p50/p90 in microseconds, then the added cost:
//! `remote inspect − in-process inspect` (what going out of process costs
//! through the daemon) and that minus the direct call (the daemon's own
//! share).
//!
//! ```text
//! cargo run --release -p berth-daemon --example remote_get -- \
//!     PLUGIN_SOCKET DAEMON_SOCKET REMOTE_VOLUME LOCAL_VOLUME [N] [LABEL]
//! ```
//!
//! `daemon/bench/remote_get.sh` runs it for berthd and dockerd side by side.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// One kept-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn open(socket: &str) -> std::io::Result<Conn> {
        let s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { writer: s.try_clone()?, reader: BufReader::new(s) })
    }

    /// Sends one request and reads the whole answer (Content-Length or
    /// chunked); answers the status.
    fn round_trip(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<u16> {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.trim().eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut buf = vec![0u8; size + 2];
                self.reader.read_exact(&mut buf)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut buf = vec![0u8; length];
            self.reader.read_exact(&mut buf)?;
        }
        Ok(status)
    }
}

fn measure(socket: &str, method: &str, path: &str, body: &str, n: usize) -> anyhow::Result<(u64, u64)> {
    let mut conn = Conn::open(socket)?;
    for _ in 0..n / 10 {
        let status = conn.round_trip(method, path, body)?;
        anyhow::ensure!(status == 200, "{method} {path} on {socket} answered {status}");
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.round_trip(method, path, body)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    Ok((lat[n / 2] / 1000, lat[n * 9 / 10] / 1000))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: remote_get PLUGIN_SOCKET DAEMON_SOCKET REMOTE_VOLUME LOCAL_VOLUME [N] [LABEL]"
    );
    let (plugin, daemon, remote, local) = (&args[0], &args[1], &args[2], &args[3]);
    let n: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let label = args.get(5).cloned().unwrap_or_else(|| "daemon".into());
    let direct = measure(plugin, "POST", "/VolumeDriver.Get", &format!("{{\"Name\":\"{remote}\"}}\n"), n)?;
    let via_remote = measure(daemon, "GET", &format!("/v1.41/volumes/{remote}"), "", n)?;
    let via_local = measure(daemon, "GET", &format!("/v1.41/volumes/{local}"), "", n)?;
    for (what, (p50, p90)) in
        [("plugin_direct", direct), ("inspect_remote", via_remote), ("inspect_in_process", via_local)]
    {
        println!(
            "{{\"daemon\":\"{label}\",\"what\":\"{what}\",\"n\":{n},\"p50_us\":{p50},\"p90_us\":{p90}}}"
        );
    }
    let added = via_remote.0 as i64 - via_local.0 as i64;
    println!(
        "{{\"daemon\":\"{label}\",\"what\":\"added_by_remote\",\"p50_us\":{added},\"daemon_share_p50_us\":{}}}",
        added - direct.0 as i64
    );
    Ok(())
}
