//! Hostile clients against the running binary, each while a good session relays in parallel
//! and is checked byte for byte: garbage, TLS garbage, truncated and oversized handshakes,
//! slowloris crowds, malformed WebSocket frames written by hand (unmasked, oversized, reserved
//! bits, text, pings, fragments that never end, a browser vanishing mid-frame), and thousands
//! of refused tickets. Afterwards the proxy's descriptors are back near their baseline and
//! its memory under a generous ceiling (read from /proc; no timing is asserted).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use common::*;
use consolegate::target::Target;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Ceiling for the proxy's resident memory after an attack; its baseline is about 10 MiB.
const RSS_CEILING_KIB: u64 = 256 * 1024;

/// Descriptors the proxy may hold above its baseline once an attack is over (a few may be
/// in the middle of closing).
const FD_SLACK: usize = 8;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The proxy's soft limit on open files.
fn fd_limit(pid: u32) -> usize {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}

/// Waits (bounded) until the proxy is back within [`FD_SLACK`] of `baseline` descriptors.
async fn assert_fds_return(proxy: &ProxyProcess, baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = fd_count(proxy.pid());
    while now > baseline + FD_SLACK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = fd_count(proxy.pid());
    }
    assert!(
        now <= baseline + FD_SLACK,
        "proxy holds {now} descriptors, baseline {baseline}"
    );
}

fn assert_rss_bounded(proxy: &ProxyProcess, what: &str) {
    let rss = rss_kib(proxy.pid());
    eprintln!("{what}: proxy RSS {rss} KiB");
    assert!(
        rss < RSS_CEILING_KIB,
        "{what}: proxy RSS {rss} KiB over {RSS_CEILING_KIB} KiB"
    );
}

/// A console session that keeps relaying to an echo server while the attacks run, checking
/// every byte that comes back. Stop it to learn how much it relayed.
struct GoodSession {
    stop: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
    task: JoinHandle<Client>,
}

impl GoodSession {
    async fn start(proxy: SocketAddr, echo: SocketAddr) -> GoodSession {
        let (mut client, _) = ws_connect(proxy, true, &ticket_for(echo), Some("binary"))
            .await
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let (flag, counter) = (stop.clone(), relayed.clone());
        let task = tokio::spawn(async move {
            // Bounded: at most this many round trips even if nobody says stop.
            for round in 0..200_000u64 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let size = [1, 17, 1024, 40_000][(round % 4) as usize];
                let payload: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + round) as u8).collect();
                client
                    .send(Message::Binary(payload.clone().into()))
                    .await
                    .expect("good session: send failed");
                let mut echoed = Vec::with_capacity(size);
                while echoed.len() < size {
                    match tokio::time::timeout(Duration::from_secs(30), client.next())
                        .await
                        .expect("good session: echo stalled for 30 s")
                    {
                        Some(Ok(Message::Binary(data))) => echoed.extend_from_slice(&data),
                        other => panic!("good session: unexpected {other:?}"),
                    }
                }
                assert!(
                    echoed == payload,
                    "good session: bytes changed in round {round}"
                );
                counter.fetch_add(size as u64, Ordering::SeqCst);
                // Leave the cores to the attack between rounds.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client
        });
        GoodSession {
            stop,
            relayed,
            task,
        }
    }

    /// Stops the session, checks it relayed throughout, and closes it cleanly.
    async fn finish(self) -> u64 {
        let before = self.relayed.load(Ordering::SeqCst);
        // Still relaying after the attack.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.relayed.load(Ordering::SeqCst) < before + 100_000 {
            assert!(Instant::now() < deadline, "good session stopped relaying");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let mut client = self.task.await.expect("good session failed");
        client.close(None).await.unwrap();
        self.relayed.load(Ordering::SeqCst)
    }
}

/// Reads whatever the proxy answers until it closes (bounded); a reset counts as a close.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the proxy kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_line(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Deterministic junk (xorshift), never starting with a TLS record byte unless asked.
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET /{path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: binary\r\n{extra_headers}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_slow_connections_leave_a_relaying_session_intact() {
    let echo = EchoServer::start().await;
    // HTTP statuses for refusals, so each answer can be read as a status line. Every
    // connection here comes from 127.0.0.1, standing for many clients: the per-address share
    // of handshakes is raised so the slowloris crowd meets the global defences
    // (`tests/hardening.rs` checks the per-address one).
    let proxy = ProxyProcess::start(
        "HANDSHAKE_TIMEOUT=3\nREFUSE_WITH_HTTP_STATUS=True\nMAX_HANDSHAKES_PER_CLIENT=1024",
    );
    let good = GoodSession::start(proxy.addr, echo.addr).await;
    let baseline = fd_count(proxy.pid());

    // Garbage bytes instead of HTTP: 400 or closed, never served.
    for seed in 1..=20u64 {
        let mut bytes = junk(512 + seed as usize * 97, seed);
        if bytes[0] == 0x16 {
            bytes[0] = b'x';
        }
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let response = read_until_closed(&mut stream).await;
        let status = status_line(&response);
        assert!(
            response.is_empty() || status.starts_with("HTTP/1.1 400"),
            "garbage got {status:?}"
        );
    }

    // TLS garbage: a handshake record header followed by junk; closed, logged.
    for seed in 1..=20u64 {
        let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00];
        bytes.extend(junk(512, seed));
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let response = read_until_closed(&mut stream).await;
        assert!(
            !response.starts_with(b"HTTP"),
            "TLS garbage got an HTTP answer"
        );
    }
    proxy.wait_for_log("TLS handshake failed");

    // Oversized head: a 256 KiB header, and a 200 KiB path, both over MAX_REQUEST_HEADER_SIZE.
    let huge_header = format!(
        "GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let giant_path = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "A".repeat(200 * 1024)
    );
    for (name, request) in [("huge header", huge_header), ("giant path", giant_path)] {
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut rx, mut tx) = stream.into_split();
        let writer = tokio::spawn(async move {
            let _ = tx.write_all(request.as_bytes()).await;
            tx
        });
        let response = read_until_closed(&mut rx).await;
        let _ = writer.await;
        let status = status_line(&response);
        eprintln!("{name}: {status:?}");
        assert!(
            status.starts_with("HTTP/1.1 431") || status.starts_with("HTTP/1.1 414"),
            "{name} got {status:?}"
        );
    }

    // A path under the head limit but over the ticket limit: refused as a ticket, 403.
    let long_ticket = "A".repeat(20 * 1024);
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(upgrade_request(&long_ticket, "").as_bytes())
        .await
        .unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 403"));
    proxy.wait_for_log("more than the 16384 allowed");

    // 20 KiB of subprotocols, none of them "binary": 400, and a log line of bounded size.
    let protocols: Vec<String> = (0..3000).map(|i| format!("p{i}")).collect();
    let header = format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(","));
    let request = upgrade_request(&ticket_for(echo.addr), &header)
        .replace("Sec-WebSocket-Protocol: binary\r\n", "");
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(status_line(&response).starts_with("HTTP/1.1 400"));
    let line = proxy.wait_for_log("not offered");
    assert!(line.len() < 2048, "a {} byte log line", line.len());

    // Slowloris: a crowd of connections that never finish, plain and inside TLS, plus one
    // that trickles a byte at a time. All are dropped after HANDSHAKE_TIMEOUT.
    let crowd = 400.min(fd_limit(proxy.pid()) / 4);
    let mut idle = Vec::with_capacity(crowd);
    for i in 0..crowd {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        match i % 4 {
            0 => {}
            1 => stream
                .write_all(b"GET /abc HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap(),
            2 => stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap(),
            _ => stream
                .write_all(upgrade_request("x", "X-Slow: 1").trim_end().as_bytes())
                .await
                .unwrap(),
        }
        idle.push(stream);
    }
    let trickler = tokio::spawn({
        let addr = proxy.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request = upgrade_request("abc", "X-Trickle: 1");
            let started = Instant::now();
            // Bounded: the request is ~250 bytes, one every 100 ms, at most 60 s.
            for byte in request.as_bytes() {
                if stream.write_all(&[*byte]).await.is_err()
                    || started.elapsed() > Duration::from_secs(60)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            read_until_closed(&mut stream).await
        }
    });
    // The proxy accepts them asynchronously: wait (bounded) until most are in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count(proxy.pid()) < baseline + crowd * 3 / 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = fd_count(proxy.pid());
    eprintln!("slowloris: {crowd} idle connections; proxy fds {baseline} -> {during}");
    assert_rss_bounded(&proxy, "slowloris crowd");
    // New sessions are still served while the crowd waits.
    let (mut fresh, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    fresh
        .send(Message::Binary(vec![7u8; 3000].into()))
        .await
        .unwrap();
    // The target's bytes may come back in several messages (the relay's reads start small).
    let mut echoed = Vec::new();
    while echoed.len() < 3000 {
        match fresh.next().await {
            Some(Ok(Message::Binary(data))) => echoed.extend_from_slice(&data),
            other => panic!("fresh session during slowloris: {other:?}"),
        }
    }
    assert_eq!(&echoed[..], &[7u8; 3000][..]);
    fresh.close(None).await.unwrap();
    for mut stream in idle {
        let response = read_until_closed(&mut stream).await;
        assert!(
            !status_line(&response).contains("101"),
            "a slow connection was upgraded"
        );
    }
    let trickled = trickler.await.unwrap();
    assert!(
        !status_line(&trickled).contains("101"),
        "the trickler was upgraded"
    );

    let relayed = good.finish().await;
    eprintln!("good session relayed {relayed} bytes intact during the attacks");
    assert_fds_return(&proxy, baseline).await;
    assert_rss_bounded(&proxy, "after malformed connections");
    assert_eq!(
        echo.connections(),
        2,
        "only the good sessions reached the target"
    );
}

/// A WebSocket session opened by hand, so that frames can be written byte by byte.
struct RawSession {
    stream: Box<dyn Io>,
    buffered: Vec<u8>,
}

/// A frame as the proxy sent it.
#[derive(Debug)]
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// One client frame: `mask` `None` writes an unmasked frame, which clients must not send.
fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(true, 0, 0x2, MASK, payload)
}

impl RawSession {
    /// Upgrades by hand; `early` is written in the same packet as the request.
    async fn open(proxy: SocketAddr, tls: bool, ticket: &str, early: &[u8]) -> RawSession {
        let mut stream = open(proxy, tls).await;
        let mut request = upgrade_request(ticket, "").into_bytes();
        request.extend_from_slice(early);
        stream.write_all(&request).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
                .await
                .expect("no upgrade answer")
                .unwrap();
            assert_eq!(
                n,
                1,
                "closed during the upgrade: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        RawSession {
            stream,
            buffered: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn fill(&mut self, n: usize) -> bool {
        let mut buf = vec![0u8; 64 * 1024];
        while self.buffered.len() < n {
            match tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut buf))
                .await
                .expect("the proxy sent nothing for 20 s")
            {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buffered.extend_from_slice(&buf[..k]),
            }
        }
        true
    }

    /// The next frame from the proxy, or `None` once the connection is closed.
    async fn next(&mut self) -> Option<Frame> {
        if !self.fill(2).await {
            return None;
        }
        let (b0, b1) = (self.buffered[0], self.buffered[1]);
        assert_eq!(b1 & 0x80, 0, "the proxy masked a frame");
        let (len, header) = match b1 & 0x7f {
            126 => {
                assert!(self.fill(4).await);
                (
                    u16::from_be_bytes([self.buffered[2], self.buffered[3]]) as usize,
                    4,
                )
            }
            127 => {
                assert!(self.fill(10).await);
                let mut n = [0u8; 8];
                n.copy_from_slice(&self.buffered[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        assert!(self.fill(header + len).await, "connection closed mid-frame");
        let payload = self.buffered[header..header + len].to_vec();
        self.buffered.drain(..header + len);
        Some(Frame {
            opcode: b0 & 0x0f,
            payload,
        })
    }

    /// Frames until a close frame, which is returned; pongs and data are skipped.
    async fn close_frame(&mut self) -> Frame {
        loop {
            match self.next().await {
                Some(frame) if frame.opcode == 0x8 => return frame,
                Some(_) => {}
                None => panic!("closed without a close frame"),
            }
        }
    }

    /// Binary payload until `n` bytes arrived (pongs skipped).
    async fn binary(&mut self, n: usize) -> Vec<u8> {
        let mut data = Vec::new();
        while data.len() < n {
            let frame = self.next().await.expect("closed before the echo");
            match frame.opcode {
                0x2 | 0x0 => data.extend_from_slice(&frame.payload),
                0x9 | 0xA => {}
                other => panic!("unexpected opcode {other} ({:?})", frame.close_code()),
            }
        }
        data
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_abuse_gets_its_close_code_and_disturbs_nobody() {
    let echo = EchoServer::start().await;
    let limit = 1024 * 1024;
    let proxy = ProxyProcess::start(&format!("WS_MAX_MESSAGE_SIZE={limit}"));
    let good = GoodSession::start(proxy.addr, echo.addr).await;
    let baseline = fd_count(proxy.pid());
    let ticket = || ticket_for(echo.addr);

    // Frames written in the same packet as the upgrade request arrive intact.
    let mut early = RawSession::open(proxy.addr, false, &ticket(), &binary(b"early bird")).await;
    assert_eq!(early.binary(10).await, b"early bird");
    // A message of exactly WS_MAX_MESSAGE_SIZE passes, byte-exact.
    let big: Vec<u8> = junk(limit, 99);
    early.send(&binary(&big)).await;
    assert!(
        early.binary(limit).await == big,
        "a maximal message changed"
    );
    drop(early);

    // Each violation gets its close code, then the connection ends.
    let oversized_header = {
        // A binary frame announcing 1 GiB; its payload never comes.
        let mut f = vec![0x82, 0x80 | 127];
        f.extend_from_slice(&(1u64 << 30).to_be_bytes());
        f.extend_from_slice(&[1, 2, 3, 4]);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("oversized frame", oversized_header, 1009),
        (
            "unmasked frame",
            frame(true, 0, 0x2, None, b"unmasked"),
            1002,
        ),
        (
            "reserved bits",
            frame(true, 0b100, 0x2, MASK, b"rsv1"),
            1002,
        ),
        ("unknown opcode", frame(true, 0, 0x3, MASK, b"op3"), 1002),
        ("fragmented ping", frame(false, 0, 0x9, MASK, b"ping"), 1002),
        (
            "control frame over 125 bytes",
            frame(true, 0, 0x9, MASK, &[0u8; 126]),
            1002,
        ),
        (
            "continuation without a start",
            frame(true, 0, 0x0, MASK, b"cont"),
            1002,
        ),
        ("text frame", frame(true, 0, 0x1, MASK, b"hello"), 1003),
        (
            "text frame that is not UTF-8",
            frame(true, 0, 0x1, MASK, &[0xff, 0xfe]),
            1003,
        ),
        (
            "close with a forbidden code",
            frame(true, 0, 0x8, MASK, &999u16.to_be_bytes()),
            1002,
        ),
    ];
    for (name, bytes, code) in &cases {
        for tls in [false, true] {
            let mut session = RawSession::open(proxy.addr, tls, &ticket(), &[]).await;
            session.send(bytes).await;
            let close = session.close_frame().await;
            assert_eq!(close.close_code(), Some(*code), "{name}: {close:?}");
            // The proxy then closes the connection (bounded by its close linger).
            while session.next().await.is_some() {}
        }
    }
    proxy.wait_for_log("client protocol error");
    proxy.wait_for_log("close 1009)");

    // A message fragmented forever: refused with 1009 once it passes WS_MAX_MESSAGE_SIZE,
    // never buffered beyond it.
    let mut endless = RawSession::open(proxy.addr, false, &ticket(), &[]).await;
    let chunk = vec![0xabu8; 64 * 1024];
    endless.send(&frame(false, 0, 0x2, MASK, &chunk)).await;
    let mut sent = chunk.len();
    // Bounded: at most 32 MiB, far past the 1 MiB limit.
    while sent < 32 * 1024 * 1024 {
        if endless
            .stream
            .write_all(&frame(false, 0, 0x0, MASK, &chunk))
            .await
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let close = endless.close_frame().await;
    assert_eq!(close.close_code(), Some(1009), "{close:?}");
    drop(endless);
    eprintln!("endless fragments: closed after {sent} bytes written");
    assert!(sent < 32 * 1024 * 1024, "the proxy kept reading fragments");

    // A ping flood nobody reads the pongs of: the session survives and still relays.
    let mut flooder = RawSession::open(proxy.addr, true, &ticket(), &[]).await;
    let ping = frame(true, 0, 0x9, MASK, &[0x5a; 125]);
    let pings = 20_000;
    let mut burst = Vec::with_capacity(ping.len() * 500);
    for _ in 0..500 {
        burst.extend_from_slice(&ping);
    }
    for _ in 0..pings / 500 {
        flooder.send(&burst).await;
    }
    assert_rss_bounded(&proxy, "ping flood");
    flooder.send(&binary(b"after the flood")).await;
    assert_eq!(flooder.binary(15).await, b"after the flood");
    drop(flooder);

    // A browser that vanishes mid-frame: its session ends with a summary line.
    let mut vanishing = RawSession::open(proxy.addr, false, &ticket(), &[]).await;
    let whole = binary(&[9u8; 1000]);
    vanishing.send(&whole[..50]).await;
    drop(vanishing);
    proxy.wait_for_log("closed_by=client gone");

    // A browser that half-closes without a close frame: the proxy ends the session and
    // closes the connection rather than keeping a half-open socket.
    let mut half_closed = RawSession::open(proxy.addr, true, &ticket(), &[]).await;
    half_closed.send(&binary(b"last words")).await;
    half_closed.stream.shutdown().await.unwrap();
    while let Some(frame) = half_closed.next().await {
        assert!(matches!(frame.opcode, 0x2 | 0x8), "{frame:?}");
    }
    drop(half_closed);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Three sessions ended without a close frame: the ping flooder, the vanished browser and
    // the half-closed one.
    while proxy.logs().matches("closed_by=client gone").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "no summary for the half-closed session"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let relayed = good.finish().await;
    eprintln!("good session relayed {relayed} bytes intact during the attacks");
    assert_fds_return(&proxy, baseline).await;
    assert_rss_bounded(&proxy, "after websocket abuse");
}

/// One refused console request, answered as the proxy is configured: with an HTTP status
/// (`REFUSE_WITH_HTTP_STATUS=True`, returns e.g. `"403"`) or upgraded and closed with a
/// 4xxx code (returns e.g. `"4403"`). Like a browser that gives up, it hangs up as soon as it
/// has the answer, without answering the close frame.
async fn refused_once(addr: SocketAddr, ticket: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request(ticket, "").as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = status_line(&received);
            if !status.starts_with("HTTP/1.1 101") {
                return status.split(' ').nth(1).unwrap_or("").to_owned();
            }
            // A close frame: 0x88, a length under 126, then the code.
            let frame = &received[end + 4..];
            if frame.len() >= 4 && frame.len() >= 2 + usize::from(frame[1] & 0x7f) {
                assert_eq!(frame[0], 0x88, "expected a close frame, got {frame:?}");
                return u16::from_be_bytes([frame[2], frame[3]]).to_string();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("no answer to a refused request within 20 s")
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
    }
}

/// Floods the proxy with `total` refused tickets over a few parallel clients while a good
/// session relays; every answer must be one of `expected`.
async fn refused_ticket_flood(extra_config: &str, expected: &[&str]) {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start(extra_config);
    let good = GoodSession::start(proxy.addr, echo.addr).await;
    let baseline = fd_count(proxy.pid());

    let valid = ticket_for(echo.addr);
    let forged = {
        let mut bytes = valid.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let target = Target {
        host: echo.addr.ip().to_string(),
        port: echo.addr.port(),
        ssl_target: false,
    };
    let expired = signer("engine").sign(
        &target,
        Utc::now() - TimeDelta::hours(2),
        TimeDelta::seconds(60),
    );
    let wrong_signer = signer("other-engine").sign(&target, Utc::now(), TimeDelta::seconds(60));
    let bad: Arc<Vec<String>> = Arc::new(vec![
        forged,
        expired,
        wrong_signer,
        valid[..valid.len() / 2].to_owned(),
        "garbage!!".to_owned(),
        "eyJzYWx0IjoiIn0".to_owned(),
    ]);

    let total = 3_000;
    let workers = 6;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let bad = bad.clone();
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for i in (worker..total).step_by(workers) {
                answers.push(refused_once(addr, &bad[i % bad.len()]).await);
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(
            tokio::time::timeout(Duration::from_secs(300), task)
                .await
                .expect("refused-ticket flood did not finish in 300 s")
                .unwrap(),
        );
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{total} refused tickets ({extra_config:?}) over {workers} parallel clients in {elapsed:?} ({:.0}/s)",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(answers.len(), total);
    for answer in &answers {
        assert!(expected.contains(&answer.as_str()), "answered {answer}");
    }
    assert_rss_bounded(&proxy, "after the refused-ticket flood");

    let relayed = good.finish().await;
    eprintln!("good session relayed {relayed} bytes intact during the flood");
    // Every refusal was logged (bounded wait), and none opened a target connection.
    let deadline = Instant::now() + Duration::from_secs(20);
    let count = || proxy.logs().matches("refused: ticket").count();
    while count() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(), total);
    assert_eq!(echo.connections(), 1, "a refused ticket reached the target");
    assert_fds_return(&proxy, baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_refused_tickets_get_close_codes_open_nothing_and_disturb_nobody() {
    refused_ticket_flood("", &["4401", "4403"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_refused_tickets_get_403_open_nothing_and_disturb_nobody() {
    refused_ticket_flood("REFUSE_WITH_HTTP_STATUS=True", &["403"]).await;
}
