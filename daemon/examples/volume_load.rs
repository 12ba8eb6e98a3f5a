//! Load generator for the volume API of any Docker-API daemon on a unix
//! socket (berthd or dockerd): creates, inspects, lists and removes N
//! volumes over C keep-alive connections and prints one JSON line per
//! phase with the rate and latency percentiles.
//!
//! ```text
//! cargo run --release -p berth-daemon --example volume_load -- SOCKET [N] [CONNECTIONS]
//! ```
//!
//! `daemon/bench/volume_api.sh` runs it against berthd and dockerd side by
//! side and prints the ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

type Conn = SendRequest<Full<Bytes>>;

async fn connect(socket: &Path) -> anyhow::Result<Conn> {
    let stream = UnixStream::connect(socket).await?;
    let (sender, conn) = handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn send(conn: &mut Conn, method: Method, path: &str, body: &str) -> anyhow::Result<(u16, Bytes)> {
    conn.ready().await?;
    let req = Request::builder()
        .method(method)
        .uri(format!("/v1.41{path}"))
        .header("Host", "bench")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = conn.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}

#[derive(Clone, Copy)]
enum Phase {
    Create,
    Inspect,
    Remove,
}

/// Runs `n` operations of `phase` over `conns`, each connection taking
/// every `conns.len()`-th index; answers per-op latencies.
async fn run(socket: &Path, phase: Phase, n: usize, c: usize, prefix: &str) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for k in 0..c {
        let socket = socket.to_path_buf();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&socket).await?;
            let mut lat = Vec::with_capacity(n / c + 1);
            for i in (k..n).step_by(c) {
                let name = format!("{prefix}{i}");
                let t = Instant::now();
                let (status, body) = match phase {
                    Phase::Create => {
                        send(&mut conn, Method::POST, "/volumes/create", &format!("{{\"Name\":\"{name}\"}}"))
                            .await?
                    }
                    Phase::Inspect => send(&mut conn, Method::GET, &format!("/volumes/{name}"), "").await?,
                    Phase::Remove => send(&mut conn, Method::DELETE, &format!("/volumes/{name}"), "").await?,
                };
                lat.push(t.elapsed());
                if !(200..300).contains(&status) {
                    anyhow::bail!("{name}: HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn report(phase: &str, n: usize, c: usize, wall: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    let us = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1e6).unwrap_or(0.0);
    println!(
        "{{\"phase\":\"{phase}\",\"n\":{n},\"connections\":{c},\"secs\":{:.3},\"per_sec\":{:.0},\"p50_us\":{:.0},\"p99_us\":{:.0}}}",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        us(pct(0.5)),
        us(pct(0.99))
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let socket = PathBuf::from(
        args.next().ok_or_else(|| anyhow::anyhow!("usage: volume_load SOCKET [N] [CONNECTIONS]"))?,
    );
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let c: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16).max(1);
    let prefix = format!("bench{}-", std::process::id());
    for (name, phase) in [("create", Phase::Create), ("inspect", Phase::Inspect)] {
        let t = Instant::now();
        let lat = run(&socket, phase, n, c, &prefix).await?;
        report(name, n, c, t.elapsed(), lat);
    }
    // Listing all N volumes, a few times over one connection.
    let mut conn = connect(&socket).await?;
    let mut lat = Vec::new();
    let t = Instant::now();
    for _ in 0..5 {
        let t1 = Instant::now();
        let (status, body) = send(&mut conn, Method::GET, "/volumes", "").await?;
        lat.push(t1.elapsed());
        anyhow::ensure!(status == 200, "list: HTTP {status}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let listed = v["Volumes"].as_array().map_or(0, |a| a.len());
        anyhow::ensure!(listed >= n, "list answered {listed} volumes, expected at least {n}");
    }
    report("list", 5, 1, t.elapsed(), lat);
    let t = Instant::now();
    let lat = run(&socket, Phase::Remove, n, c, &prefix).await?;
    report("remove", n, c, t.elapsed(), lat);
    Ok(())
}
