//! Measures what each way of naming a console costs: the time from TCP connect to the first
//! echoed byte of a session, for every `TARGET_RESOLVER` mode and store, through the real
//! server on loopback; and the time and memory to load a large token file.
//!
//! `cargo run --release --example resolver_latency [SESSIONS]` (default 300 sessions per
//! mode). Needs `redis-server` (scripts/setup-redis.sh) for the Redis line; without it that
//! line says so. Figures are medians and 99th percentiles on this machine, not assertions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use consolegate::config::{RawConfig, Settings};
use consolegate::proxy::{Proxy, Shared};
use consolegate::target::{Target, TokenFile};
use consolegate::ticket::TicketSigner;
use consolegate::workers::Workers;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rx, mut tx) = stream.split();
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
            });
        }
    });
    addr
}

/// A token authority answering every token with the echo server.
async fn authority(echo: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::<Bytes>::from(format!(
                        r#"{{"host":"127.0.0.1","port":{}}}"#,
                        echo.port()
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Starts the server in this process with `pairs` on top of the defaults.
async fn proxy(pairs: &[(&str, &str)]) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let raw = RawConfig::from_pairs(pairs);
    let (settings, _) = Settings::from_raw(&raw).expect("valid settings");
    let (proxy, _) = Proxy::build(settings, &raw).expect("proxy builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = Workers::start(Some(1)).expect("a worker thread");
    tokio::spawn(consolegate::server::run(
        consolegate::server::Listener::new(listener).expect("the listener on this runtime"),
        Shared::new(proxy),
        workers,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Connect, upgrade, send one byte, read it back, close: the latency of one session start.
async fn session(proxy: SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    let stream = TcpStream::connect(proxy).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/{path}", proxy.port());
    let (mut client, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    client
        .send(Message::Binary(vec![1u8].into()))
        .await
        .unwrap();
    match client.next().await {
        Some(Ok(Message::Binary(_))) => {}
        other => panic!("no echo: {other:?}"),
    }
    let elapsed = started.elapsed();
    let _ = client.close(None).await;
    elapsed
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "| {name} | {} | {:.0} | {:.0} |",
        samples.len(),
        at(0.5).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn start_redis(dir: &Path) -> Option<(Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sessions: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let echo = echo_server().await;
    let dir = tempfile::tempdir().unwrap();

    // Token file: load time and memory for 100,000 tokens.
    let tokens = dir.path().join("tokens");
    let text: String = (0..100_000)
        .map(|i| format!("{i:032x}: 127.0.0.1:{}\n", echo.port()))
        .collect();
    std::fs::write(&tokens, &text).unwrap();
    let before = rss_kib();
    let started = Instant::now();
    let (table, _) = TokenFile::open(&tokens).unwrap();
    let load = started.elapsed();
    let grown = rss_kib().saturating_sub(before);
    println!(
        "token file: {} tokens ({} KiB of text) loaded in {:.1} ms, resident memory +{} KiB",
        table.size().0,
        text.len() / 1024,
        load.as_secs_f64() * 1e3,
        grown
    );
    drop(table);

    let signer = TicketSigner::from_pem(
        &std::fs::read(fixture("pki/engine.key")).unwrap(),
        &std::fs::read(fixture("pki/engine.pem")).unwrap(),
    )
    .unwrap();
    let target = Target {
        host: "127.0.0.1".into(),
        port: echo.port(),
        ssl_target: false,
    };
    let tickets = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                signer.sign(
                    &target,
                    Utc::now() - TimeDelta::seconds(5),
                    TimeDelta::minutes(10),
                )
            })
            .collect()
    };
    let engine = fixture("pki/engine.pem").display().to_string();
    let token_file = tokens.display().to_string();
    let auth = authority(echo).await;
    let auth_url = format!("http://{auth}/check");

    println!("\n| mode | sessions | median µs | p99 µs |\n|---|---|---|---|");
    {
        let (addr, _stop) = proxy(&[("CERT_FOR_DATA_VERIFICATION", &engine)]).await;
        let mut samples = Vec::new();
        for ticket in tickets(sessions) {
            samples.push(session(addr, &ticket).await);
        }
        report("signed-ticket", samples);
    }
    {
        let (addr, _stop) = proxy(&[
            ("CERT_FOR_DATA_VERIFICATION", &engine),
            ("TICKET_SINGLE_USE", "True"),
        ])
        .await;
        let mut samples = Vec::new();
        for ticket in tickets(sessions) {
            samples.push(session(addr, &ticket).await);
        }
        report("signed-ticket, single-use, memory store", samples);
    }
    let redis_dir = tempfile::tempdir().unwrap();
    match start_redis(redis_dir.path()) {
        Some((mut child, port)) => {
            let url = format!("redis://127.0.0.1:{port}");
            let (addr, _stop) = proxy(&[
                ("CERT_FOR_DATA_VERIFICATION", &engine),
                ("TICKET_SINGLE_USE", "True"),
                ("REPLAY_STORE", "redis"),
                ("REDIS_URL", &url),
            ])
            .await;
            let mut samples = Vec::new();
            for ticket in tickets(sessions) {
                samples.push(session(addr, &ticket).await);
            }
            report("signed-ticket, single-use, redis store", samples);
            let _ = child.kill();
            let _ = child.wait();
        }
        None => {
            println!("| signed-ticket, single-use, redis store | redis-server not available | | |")
        }
    }
    {
        let (addr, _stop) = proxy(&[
            ("TARGET_RESOLVER", "token-file"),
            ("TOKEN_FILE", &token_file),
        ])
        .await;
        let mut samples = Vec::new();
        for i in 0..sessions {
            samples.push(
                session(
                    addr,
                    &format!("websockify?token={:032x}", i * 331 % 100_000),
                )
                .await,
            );
        }
        report("token-file (100,000 tokens)", samples);
    }
    {
        let (addr, _stop) = proxy(&[
            ("TARGET_RESOLVER", "token-authority"),
            ("TOKEN_AUTHORITY_URL", &auth_url),
        ])
        .await;
        let mut samples = Vec::new();
        for i in 0..sessions {
            samples.push(session(addr, &format!("websockify?token=fresh-{i}")).await);
        }
        report("token-authority, not cached", samples);
        let mut samples = Vec::new();
        for _ in 0..sessions {
            samples.push(session(addr, "websockify?token=fresh-0").await);
        }
        report("token-authority, cached answer", samples);
    }
}
