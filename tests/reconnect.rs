//! Reconnect without a new ticket: a browser whose connection is cut (by killing a TCP relay
//! between it and the proxy) re-attaches within the grace window and both streams continue
//! byte for byte; the VNC server never notices. After the window, re-attaching is refused.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use consolegate::resume::{Control, PATH, PROTOCOL};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const STREAM: usize = 3 * 1024 * 1024;

fn server_byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn client_byte(i: usize) -> u8 {
    (i * 7 % 253) as u8
}

/// A VNC stand-in: streams `STREAM` pattern bytes at a steady pace, records what it gets,
/// and counts its connections.
struct PatternServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<AtomicUsize>,
}

async fn pattern_server() -> PatternServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (sink, count) = (received.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let sink = sink.clone();
            let (mut rx, mut tx) = stream.into_split();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            tokio::spawn(async move {
                let mut sent = 0;
                while sent < STREAM {
                    let chunk: Vec<u8> = (sent..(sent + 16 * 1024).min(STREAM))
                        .map(server_byte)
                        .collect();
                    if tx.write_all(&chunk).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                // Stay open: the session is ended by the test.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    PatternServer {
        addr,
        received,
        connections,
    }
}

/// The browser side of `consolegate.v1`, as the console page implements it.
struct Browser {
    client: Client,
    secret: String,
    /// Stream bytes received from the proxy.
    received: Vec<u8>,
    /// Own stream bytes sent, from offset `acked_by_proxy` on (kept until acknowledged).
    sent: usize,
}

impl Browser {
    async fn open(addr: SocketAddr, ticket: &str) -> Browser {
        let protocols = format!("{PROTOCOL}, binary");
        let (mut client, response) = ws_connect(addr, false, ticket, Some(&protocols))
            .await
            .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], PROTOCOL);
        let secret = match client.next().await {
            Some(Ok(Message::Text(text))) => match Control::parse(&text) {
                Some(Control::Session {
                    secret,
                    grace_secs,
                    heartbeat_secs,
                }) => {
                    assert!(grace_secs > 0);
                    assert_eq!(heartbeat_secs, 20, "the default HEARTBEAT_INTERVAL");
                    secret
                }
                other => panic!("expected a session message, got {other:?}"),
            },
            other => panic!("expected a session message, got {other:?}"),
        };
        Browser {
            client,
            secret,
            received: Vec::new(),
            sent: 0,
        }
    }

    /// Reads stream bytes (acknowledging as a browser would) until `until` bytes arrived or
    /// the connection fails; sends some of its own stream along the way.
    async fn pump(&mut self, until: usize) -> bool {
        while self.received.len() < until {
            if self.sent < STREAM / 8 {
                let chunk: Vec<u8> = (self.sent..self.sent + 1000).map(client_byte).collect();
                if self
                    .client
                    .send(Message::Binary(chunk.into()))
                    .await
                    .is_err()
                {
                    return false;
                }
                self.sent += 1000;
            }
            match tokio::time::timeout(Duration::from_secs(10), self.client.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => {
                    self.received.extend_from_slice(&data);
                    let ack = Control::Ack {
                        received: self.received.len() as u64,
                    };
                    if self
                        .client
                        .send(Message::Text(ack.to_text().into()))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    assert!(
                        matches!(Control::parse(&text), Some(Control::Ack { .. })),
                        "{text}"
                    );
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
                Ok(Some(Err(_)) | None) => return false,
                Err(_) => panic!("stream stalled at {} bytes", self.received.len()),
            }
        }
        true
    }

    /// Re-attaches through `addr` and resends what the proxy did not get.
    async fn resume(&mut self, addr: SocketAddr) -> Result<(), (u16, String)> {
        let (mut client, response) = ws_connect(addr, false, PATH, Some(PROTOCOL)).await.unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], PROTOCOL);
        let hello = Control::Resume {
            secret: self.secret.clone(),
            received: self.received.len() as u64,
        };
        client
            .send(Message::Text(hello.to_text().into()))
            .await
            .unwrap();
        match client.next().await {
            Some(Ok(Message::Text(text))) => match Control::parse(&text) {
                Some(Control::Resumed { secret, received }) => {
                    let received = received as usize;
                    assert!(received <= self.sent, "proxy claims more than was sent");
                    // Resend own stream from where the target's copy ends.
                    if received < self.sent {
                        let chunk: Vec<u8> = (received..self.sent).map(client_byte).collect();
                        client.send(Message::Binary(chunk.into())).await.unwrap();
                    }
                    self.secret = secret;
                    self.client = client;
                    Ok(())
                }
                other => panic!("expected resumed, got {other:?}"),
            },
            Some(Ok(Message::Close(Some(frame)))) => {
                Err((u16::from(frame.code), frame.reason.to_string()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Every byte, in order, exactly once, both ways, and the VNC server saw one connection.
async fn assert_both_streams_exact(browser: &Browser, vnc: &PatternServer) {
    assert_eq!(browser.received.len(), STREAM);
    assert!(
        browser
            .received
            .iter()
            .enumerate()
            .all(|(i, b)| *b == server_byte(i)),
        "stream to the browser corrupted"
    );
    let expected: Vec<u8> = (0..browser.sent).map(client_byte).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while vnc.received.lock().unwrap().len() < expected.len()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        *vnc.received.lock().unwrap() == expected,
        "stream to the VNC server corrupted"
    );
    assert_eq!(
        vnc.connections.load(Ordering::SeqCst),
        1,
        "the VNC server must not notice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_notices_the_drop_first_takes_its_session_over() {
    let vnc = pattern_server().await;
    let proxy = ProxyProcess::start("RECONNECT_GRACE_PERIOD=10\nRECONNECT_BUFFER_SIZE=1048576");
    let mut browser = Browser::open(proxy.addr, &ticket_for(vnc.addr)).await;
    assert!(browser.pump(STREAM / 3).await);

    // The old connection is still open at the proxy (the browser gave up on it, or learnt of
    // the drop first): the re-attach takes the session over and the old one is let go.
    browser.resume(proxy.addr).await.unwrap();
    proxy.wait_for_log("browser re-attached before its old connection was noticed gone");
    proxy.wait_for_log("browser re-attached; session continues");
    assert!(browser.pump(STREAM).await);
    assert_both_streams_exact(&browser, &vnc).await;
    assert!(
        !proxy.logs().contains("keeping the console for a re-attach"),
        "the session never waited: {}",
        proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_reattaches_and_both_streams_continue_exactly() {
    let vnc = pattern_server().await;
    let proxy = ProxyProcess::start("RECONNECT_GRACE_PERIOD=10\nRECONNECT_BUFFER_SIZE=1048576");
    let first_path = blip(proxy.addr).await;
    let mut browser = Browser::open(first_path.addr, &ticket_for(vnc.addr)).await;
    assert!(browser.pump(STREAM / 3).await);

    first_path.cut.cancel();
    // Whatever was in flight is lost with the connection; keep reading until it fails.
    while browser.pump(STREAM).await {}
    proxy.wait_for_log("keeping the console for a re-attach");

    let second_path = blip(proxy.addr).await;
    let used_secret = browser.secret.clone();
    browser.resume(second_path.addr).await.unwrap();
    proxy.wait_for_log("browser re-attached");
    assert!(browser.pump(STREAM).await);

    assert_both_streams_exact(&browser, &vnc).await;
    // A secret is single-use: the one just used no longer works.
    browser.client.close(None).await.unwrap();
    proxy.wait_for_log("session ended");
    browser.secret = used_secret;
    assert_eq!(browser.resume(proxy.addr).await.unwrap_err().0, 4403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattaching_after_the_window_or_with_a_wrong_secret_is_refused() {
    let vnc = pattern_server().await;
    let proxy = ProxyProcess::start("RECONNECT_GRACE_PERIOD=1");
    let path = blip(proxy.addr).await;
    let mut browser = Browser::open(path.addr, &ticket_for(vnc.addr)).await;
    assert!(browser.pump(64 * 1024).await);

    let real = browser.secret.clone();
    browser.secret = "not-the-secret".into();
    let (code, reason) = browser.resume(proxy.addr).await.unwrap_err();
    assert_eq!(code, 4403);
    assert!(
        reason.starts_with("console session cannot be resumed"),
        "{reason}"
    );

    path.cut.cancel();
    while browser.pump(STREAM).await {}
    proxy.wait_for_log("keeping the console for a re-attach");
    let line = proxy.wait_for_log("session ended");
    assert!(
        line.contains("not back within RECONNECT_GRACE_PERIOD"),
        "{line}"
    );
    browser.secret = real;
    let (code, _) = browser.resume(proxy.addr).await.unwrap_err();
    assert_eq!(code, 4403);
    proxy.wait_for_log("refused: resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reconnects_the_console_page_gets_plain_binary() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    let protocols = format!("{PROTOCOL}, binary");
    let (_, response) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), Some(&protocols))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, false, PATH, Some(PROTOCOL)).await).await,
        400
    );
}
