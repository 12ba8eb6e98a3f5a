//! A remote volume `Get` round trip on a unix socket, against its floor.
//!
//! * `client_get`: `RemoteVolume::get` through berth's client (pool
//!   checkout with a liveness peek, request, `httparse`, tolerant JSON
//!   decoding, breaker and counters);
//! * `client_get_wrapped`: the same through core's call wrapper (deadline,
//!   worker thread, metrics), as the daemon calls it;
//! * `raw_get`: a hand-written request on a kept-alive `UnixStream`, read
//!   back by `Content-Length` and not decoded: the floor.
//!
//! All three talk to the same minimal in-bench plugin (one thread per
//! connection, no JSON parsing). Budget: `client_get` ≤ 60 µs p50.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use berth_core::remote::{RemoteOptions, RemotePlugin};
use berth_core::{Driver, Kind, Metrics};
use berth_plugin_api::volume::VolumeGetRequest;
use berth_plugin_api::VolumeDriver;

const GET_ANSWER: &str = r#"{"Volume":{"Name":"v1","Mountpoint":"/var/lib/berth/volumes/v1"},"Err":""}"#;
const ACTIVATE_ANSWER: &str = r#"{"Implements":["VolumeDriver"]}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    volume: Arc<dyn VolumeDriver>,
    wrapped: Driver<dyn VolumeDriver>,
    raw: Mutex<UnixStream>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn main() {
    divan::main();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The plugin: reads a request (head + `Content-Length` body) and writes a
/// canned answer, for as long as the connection lives.
fn serve(mut s: UnixStream) {
    let mut buf = vec![0u8; 16 << 10];
    let mut have = 0;
    let get = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{GET_ANSWER}", GET_ANSWER.len());
    let act =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{ACTIVATE_ANSWER}", ACTIVATE_ANSWER.len());
    loop {
        if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            let total = end + 4 + content_length(&buf[..end]);
            if have >= total {
                let answer = if buf.starts_with(b"POST /Plugin.Activate") { &act } else { &get };
                if s.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                buf.copy_within(total..have, 0);
                have -= total;
                continue;
            }
        }
        match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || serve(s));
            }
        });
        let plugin =
            RemotePlugin::new("bench", &format!("unix://{}", path.display()), RemoteOptions::default())
                .unwrap();
        let volume = plugin.volume();
        let wrapped = Driver::new(
            plugin.volume(),
            "bench",
            Kind::Volume,
            plugin.max_timeout(),
            Arc::new(Metrics::default()),
        );
        let raw = Mutex::new(UnixStream::connect(&path).unwrap());
        Fixture { _dir: dir, path, volume, wrapped, raw }
    })
}

/// The floor: the same request written by hand, the answer read back
/// whole by its length.
fn raw_round_trip(s: &mut UnixStream, buf: &mut [u8]) -> usize {
    const BODY: &str = "{\"Name\":\"v1\"}\n";
    let req = format!(
        "POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin.moby.localhost\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut have = 0;
    loop {
        let n = s.read(&mut buf[have..]).unwrap();
        assert!(n > 0, "the bench plugin closed");
        have += n;
        if let Some(end) = find(&buf[..have], b"\r\n\r\n") {
            if have >= end + 4 + content_length(&buf[..end]) {
                return have;
            }
        }
    }
}

#[divan::bench]
fn client_get(bencher: divan::Bencher) {
    let f = fixture();
    f.volume.get(VolumeGetRequest::new("v1")).unwrap();
    bencher.bench(|| f.volume.get(divan::black_box(VolumeGetRequest::new("v1"))).unwrap());
}

#[divan::bench]
fn client_get_wrapped(bencher: divan::Bencher) {
    let f = fixture();
    f.wrapped.call("get", |d| d.get(VolumeGetRequest::new("v1"))).unwrap();
    bencher.bench(|| f.wrapped.call("get", |d| d.get(VolumeGetRequest::new("v1"))).unwrap());
}

#[divan::bench]
fn raw_get(bencher: divan::Bencher) {
    let f = fixture();
    let mut s = f.raw.lock().unwrap();
    let mut buf = vec![0u8; 16 << 10];
    assert!(f.path.exists());
    bencher.bench_local(|| raw_round_trip(&mut s, &mut buf));
}
