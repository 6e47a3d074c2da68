//! The running binary, driven as a process: tickets from our signer through ws:// and wss://
//! to a real TCP echo server on loopback, refusals, close codes, limits and shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Sends `total` bytes in `chunk`-sized binary messages while reading the echo back, and
/// checks every byte came back in order.
async fn echo_roundtrip(client: &mut Client, total: usize, chunk: usize) {
    let payload: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    let (mut tx, mut rx) = client.split();
    let send = async {
        for piece in payload.chunks(chunk) {
            tx.send(Message::Binary(piece.to_vec().into()))
                .await
                .unwrap();
        }
        tx
    };
    let receive = async {
        let mut received = Vec::with_capacity(total);
        while received.len() < total {
            match tokio::time::timeout(Duration::from_secs(20), rx.next())
                .await
                .expect("echo stalled")
            {
                Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
                other => panic!("unexpected {other:?}"),
            }
        }
        received
    };
    let (_, received) = tokio::join!(send, receive);
    assert!(received == payload, "echoed bytes differ");
}

async fn next_close(client: &mut Client) -> CloseFrame {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), client.next())
            .await
            .expect("no close frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn ws_and_wss_relay_small_and_large_messages_both_ways() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    for tls in [false, true] {
        let (mut client, response) =
            ws_connect(proxy.addr, tls, &ticket_for(echo.addr), Some("binary"))
                .await
                .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
        echo_roundtrip(&mut client, 10, 10).await;
        echo_roundtrip(&mut client, 6 * 1024 * 1024, 64 * 1024).await;
        client.close(None).await.unwrap();
    }
    let line = proxy.wait_for_log("session ended");
    assert!(
        line.contains("bytes_to_target=6291466") && line.contains("bytes_to_client=6291466"),
        "{line}"
    );
    assert!(
        line.contains("closed_by=client (close 1005)") || line.contains("closed_by=client"),
        "{line}"
    );
    echo.wait_connections(2).await;
}

#[tokio::test]
async fn subprotocol_rules() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    let (_, response) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    let (_, response) = ws_connect(
        proxy.addr,
        true,
        &ticket_for(echo.addr),
        Some("base64, binary"),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "binary");
    echo.wait_connections(2).await;
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("base64")).await)
            .await,
        400
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        echo.connections(),
        2,
        "no target connection for a refused request"
    );
}

#[tokio::test]
async fn refused_tickets_get_a_4xxx_close_a_log_line_and_no_target_connection() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    let good = ticket_for(echo.addr);
    let forged = {
        let mut bytes = good.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let expired = {
        use consolegate::target::Target;
        let target = Target {
            host: "127.0.0.1".into(),
            port: echo.addr.port(),
            ssl_target: false,
        };
        signer("engine").sign(
            &target,
            chrono::Utc::now() - chrono::TimeDelta::hours(1),
            chrono::TimeDelta::seconds(120),
        )
    };
    let wrong_signer = {
        use consolegate::target::Target;
        let target = Target {
            host: "127.0.0.1".into(),
            port: echo.addr.port(),
            ssl_target: false,
        };
        signer("other-engine").sign(&target, chrono::Utc::now(), chrono::TimeDelta::seconds(120))
    };
    let cases = [
        (forged.as_str(), "kind=", 4403),
        (expired.as_str(), "ticket expired", 4401),
        (wrong_signer.as_str(), "does not verify", 4403),
        (&good[..good.len() / 2], "kind=", 4403),
        ("garbage!!", "not base64", 4403),
        ("", "ticket is empty", 4403),
    ];
    for (ticket, reason, code) in cases {
        for tls in [false, true] {
            assert_eq!(
                refusal_code(ws_connect(proxy.addr, tls, ticket, Some("binary")).await).await,
                code,
                "{reason}"
            );
        }
        proxy.wait_for_log(reason);
    }
    assert_eq!(
        echo.connections(),
        0,
        "a refused ticket must not open any target connection"
    );

    let refusals = proxy.wait_for_lines("refused: ticket", cases.len() * 2);
    let logs = proxy.logs();
    assert_eq!(refusals.len(), cases.len() * 2, "{logs}");
    for line in &refusals {
        assert!(
            line.contains("request_id=")
                && line.contains("client=127.0.0.1")
                && line.contains("ticket="),
            "{line}"
        );
    }
    for ticket in [&good, &forged, &expired, &wrong_signer] {
        assert!(
            !logs.contains(&ticket[..32]),
            "a ticket leaked into the logs"
        );
    }

    // The close reason says what to do and names the request id the log line carries.
    let (code, reason) =
        refusal(ws_connect(proxy.addr, true, &expired, Some("binary")).await).await;
    assert_eq!(code, 4401);
    assert!(
        reason.starts_with("console link expired - open the console again from the portal (ref "),
        "{reason}"
    );
    let id = reason
        .rsplit("(ref ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    assert!(proxy
        .wait_for_log(&format!("request_id={id}"))
        .contains("ticket expired"));
    let (code, reason) = refusal(ws_connect(proxy.addr, true, &forged, Some("binary")).await).await;
    assert_eq!(code, 4403);
    assert!(reason.starts_with("console link is not valid"), "{reason}");

    // And a good ticket still works afterwards.
    let (mut client, _) = ws_connect(proxy.addr, true, &good, Some("binary"))
        .await
        .unwrap();
    echo_roundtrip(&mut client, 1000, 100).await;
}

#[tokio::test]
async fn plain_get_gets_405() {
    let proxy = ProxyProcess::start("");
    let response = raw_http(proxy.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    let response = raw_http(proxy.addr, "HEAD /abc HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
}

#[tokio::test]
async fn ssl_only_refuses_plain_connections() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("SSL_ONLY=True");
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, false, &ticket_for(echo.addr), Some("binary")).await)
            .await,
        400
    );
    proxy.wait_for_log("plain connection refused");
    assert_eq!(echo.connections(), 0);
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    echo_roundtrip(&mut client, 4096, 1024).await;
}

#[tokio::test]
async fn unreachable_target_gets_4502_and_a_reason() {
    let proxy = ProxyProcess::start("TARGET_CONNECT_TIMEOUT=3");
    let dead = closed_port();
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, true, &ticket_for(dead), Some("binary")).await).await,
        4502
    );
    let line = proxy.wait_for_log("refused: target unreachable");
    assert!(
        line.contains(&dead.to_string()) && line.contains("refused"),
        "{line}"
    );
}

#[tokio::test]
async fn close_codes_follow_the_contract() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");

    // Text frames: 1003.
    let (mut client, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    client.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next_close(&mut client).await.code, CloseCode::Unsupported);

    // The client's close is answered with the same code and reason.
    let (mut client, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Library(4321),
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    let frame = next_close(&mut client).await;
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Library(4321), "bye")
    );

    // The target closing: its last bytes arrive, then 1000 "Target closed".
    let closing = closing_server(b"RFB 003.008\n").await;
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(closing), Some("binary"))
        .await
        .unwrap();
    match client.next().await {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], b"RFB 003.008\n"),
        other => panic!("expected the greeting, got {other:?}"),
    }
    let frame = next_close(&mut client).await;
    assert_eq!(
        (frame.code, frame.reason.as_str()),
        (CloseCode::Normal, "Target closed")
    );
    proxy.wait_for_log("closed_by=target");
}

#[tokio::test]
async fn a_silent_client_does_not_block_others() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("HANDSHAKE_TIMEOUT=2");
    // Slowloris: one connection that never speaks, one that stops inside the TLS handshake.
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut half_tls = TcpStream::connect(proxy.addr).await.unwrap();
    half_tls.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    echo_roundtrip(&mut client, 1000, 100).await;
    // Both are dropped by the proxy once HANDSHAKE_TIMEOUT passes.
    let mut buf = [0u8; 16];
    for stream in [&mut silent, &mut half_tls] {
        let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf))
            .await
            .expect("not closed by the proxy");
        assert!(matches!(read, Ok(0) | Err(_)));
    }
}

#[tokio::test]
async fn sigterm_lets_sessions_finish_within_the_grace_period_then_exits_zero() {
    let echo = EchoServer::start().await;
    let mut proxy = ProxyProcess::start("SHUTDOWN_GRACE_PERIOD=2");
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    echo_roundtrip(&mut client, 1000, 100).await;
    proxy.signal("TERM");
    proxy.wait_for_log("shutting down");
    // New connections are no longer accepted, the open session still relays...
    assert!(
        TcpStream::connect(proxy.addr).await.is_err() || {
            let result = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary")).await;
            result.is_err()
        }
    );
    echo_roundtrip(&mut client, 1000, 100).await;
    // ...until the grace period ends: then 1001 and a clean exit.
    assert_eq!(next_close(&mut client).await.code, CloseCode::Away);
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigint_with_no_sessions_exits_at_once() {
    let mut proxy = ProxyProcess::start("");
    proxy.signal("INT");
    let status = tokio::task::spawn_blocking(move || proxy.wait_exit(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_browser_that_stops_reading_stalls_the_target_not_memory() {
    // wss:// copies through user space; ws:// splices bursts through a pipe.
    for tls in [true, false] {
        stalls_the_target_not_memory(tls).await;
    }
}

async fn stalls_the_target_not_memory(tls: bool) {
    let (flood, written) = flood_server().await;
    let proxy = ProxyProcess::start("");
    let (mut client, _) = ws_connect(proxy.addr, tls, &ticket_for(flood), Some("binary"))
        .await
        .unwrap();
    // Read a little so the session is flowing, then stop reading for a while.
    let mut received = 0;
    while received < 1024 * 1024 {
        match client.next().await {
            Some(Ok(Message::Binary(data))) => received += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    let rss_before = rss_kib(proxy.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_at = written.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = written.load(std::sync::atomic::Ordering::SeqCst);
    let rss_after = rss_kib(proxy.pid());
    eprintln!("tls={tls}: stalled after {later} bytes from the target; proxy RSS {rss_before} KiB -> {rss_after} KiB");
    // Only kernel socket buffers and one message in flight sit between the two sides.
    assert_eq!(
        stalled_at, later,
        "the target kept writing into a session nobody reads"
    );
    assert!(
        later < 48 * 1024 * 1024,
        "{later} bytes accepted from the target"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "proxy memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Reading again resumes the flow.
    let mut more = 0;
    while more < 4 * 1024 * 1024 {
        match client.next().await {
            Some(Ok(Message::Binary(data))) => more += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_target_that_stops_reading_stalls_the_browser_not_memory() {
    // Both read bulk uploads ahead and batch them (up to 1 MiB each): ws:// for tungstenite,
    // wss:// for rustls.
    for tls in [false, true] {
        stalls_the_browser_not_memory(tls).await;
    }
}

async fn stalls_the_browser_not_memory(tls: bool) {
    const MESSAGE: usize = 32 * 1024;
    let (target, received, resume) = stalling_reader(1024 * 1024).await;
    let proxy = ProxyProcess::start("");
    let (mut client, _) = ws_connect(proxy.addr, tls, &ticket_for(target), Some("binary"))
        .await
        .unwrap();
    let payload = vec![0xa5u8; MESSAGE];
    let rss_before = rss_kib(proxy.pid());
    // Bounded: at most 256 MiB offered; a send that waits 2 s means the flow has stalled.
    let mut sent = 0usize;
    for _ in 0..8 * 1024 {
        let send = client.send(Message::Binary(payload.clone().into()));
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(result) => result.unwrap(),
            Err(_) => break,
        }
        sent += MESSAGE;
    }
    let rss_after = rss_kib(proxy.pid());
    let at_target = received.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "tls={tls}: browser stalled after {sent} bytes, target read {at_target}; proxy RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        sent < 64 * 1024 * 1024,
        "{sent} bytes taken from a browser whose target stopped reading"
    );
    // Kernel buffers on both sockets, one read-ahead and one batch at most.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "proxy memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    // The target reads again: everything the browser sent arrives.
    resume.notify_one();
    for _ in 0..200 {
        if received.load(std::sync::atomic::Ordering::SeqCst) >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        received.load(std::sync::atomic::Ordering::SeqCst) >= sent,
        "the target got {} of the {sent} bytes sent once it read again",
        received.load(std::sync::atomic::Ordering::SeqCst)
    );
}

#[tokio::test]
async fn refusals_before_the_upgrade_on_request() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("REFUSE_WITH_HTTP_STATUS=True");
    let (status, body) =
        refusal(ws_connect(proxy.addr, true, "forged", Some("binary")).await).await;
    assert_eq!(status, 403);
    let id = body
        .split("request id ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_owned();
    proxy.wait_for_log(&format!("request_id={id}"));
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, true, &ticket_for(closed_port()), None).await).await,
        502
    );
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn a_browser_close_reaches_the_target_as_end_of_stream() {
    let proxy = ProxyProcess::start("");
    for tls in [false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let (mut client, _) = ws_connect(proxy.addr, tls, &ticket_for(target), Some("binary"))
            .await
            .unwrap();
        let (mut vnc, _) = listener.accept().await.unwrap();
        client
            .send(Message::Binary(b"last keys".to_vec().into()))
            .await
            .unwrap();
        client.send(Message::Close(None)).await.unwrap();
        // Everything sent before the close, then a clean end of stream (a reset would be an
        // error here).
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), vnc.read_to_end(&mut got))
            .await
            .expect("the target connection stayed open after the browser closed");
        assert!(read.is_ok(), "tls={tls}: {read:?}");
        assert_eq!(got, b"last keys", "tls={tls}");
    }
}

/// A target that sends `data` as fast as the proxy takes it, then keeps the connection open.
async fn source_server(data: Vec<u8>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        for chunk in data.chunks(64 * 1024) {
            if stream.write_all(chunk).await.is_err() {
                return;
            }
        }
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    addr
}

#[tokio::test]
async fn ws_bursts_go_through_the_kernel_intact_while_pings_cross_them() {
    const TOTAL: usize = 48 * 1024 * 1024;
    let screen = pattern(TOTAL, 0x5eed);
    let target = source_server(screen.clone()).await;
    let proxy = ProxyProcess::start("ADMIN_LISTEN=127.0.0.1:0");
    let (client, _) = ws_connect(proxy.addr, false, &ticket_for(target), Some("binary"))
        .await
        .unwrap();
    let (mut tx, mut rx) = client.split();
    let mut received = Vec::with_capacity(TOTAL);
    let (mut pings, mut pongs, mut messages) = (0u32, 0u32, 0u32);
    while received.len() < TOTAL {
        match tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .expect("the burst stalled")
        {
            Some(Ok(Message::Binary(data))) => {
                received.extend_from_slice(&data);
                messages += 1;
                // Pongs must come back between spliced frames, never inside one.
                if messages % 4 == 0 && pings < 200 {
                    tx.send(Message::Ping(pings.to_be_bytes().to_vec().into()))
                        .await
                        .unwrap();
                    pings += 1;
                }
            }
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], &pongs.to_be_bytes(), "pongs out of order");
                pongs += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(received == screen, "the burst arrived altered");
    assert!(pings > 10, "only {pings} pings crossed the burst");
    let (_, text) = admin_request(proxy.admin_addr(), "GET", "/metrics", None).await;
    let spliced = metric(&text, "consolegate_spliced_bytes_total");
    eprintln!("{messages} messages, {pings} pings, {pongs} pongs seen; {spliced} bytes spliced");
    assert!(
        spliced > (TOTAL / 2) as f64,
        "only {spliced} of {TOTAL} bytes were spliced"
    );
    // The session still speaks WebSocket after the burst.
    tx.send(Message::Close(None)).await.unwrap();
    let line = proxy.wait_for_log("session ended");
    assert!(line.contains(&format!("bytes_to_client={TOTAL}")), "{line}");
}

#[tokio::test]
async fn an_admin_close_during_a_spliced_burst_finishes_the_frame_then_sends_its_close() {
    const TOTAL: usize = 64 * 1024 * 1024;
    const TOKEN: &str = "test-admin-token-5d2e8c1b7a90";
    let screen = pattern(TOTAL, 0xc105e);
    let target = source_server(screen.clone()).await;
    let proxy = ProxyProcess::start(&format!("ADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}"));
    let admin = proxy.admin_addr();
    let (mut client, _) = ws_connect(proxy.addr, false, &ticket_for(target), Some("binary"))
        .await
        .unwrap();
    let mut received = Vec::with_capacity(TOTAL);
    while received.len() < 4 * 1024 * 1024 {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
        match message.expect("the burst stalled") {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (_, text) = admin_request(admin, "GET", "/metrics", None).await;
    assert!(metric(&text, "consolegate_spliced_bytes_total") > 0.0);

    // The browser stops reading: the proxy's writes stall, most likely inside a frame.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = admin_request(admin, "GET", "/sessions", Some(TOKEN)).await;
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = sessions[0]["id"].as_u64().unwrap();
    let (status, body) =
        admin_request(admin, "POST", &format!("/sessions/{id}/close"), Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");

    // Reading again, the browser gets whole frames, then the close frame.
    let close = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
        match message.expect("the proxy went quiet") {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
    assert!(
        received.len() < TOTAL,
        "the close came only after the burst"
    );
    assert!(
        received[..] == screen[..received.len()],
        "the bytes before the close were altered"
    );
    let ended = proxy.wait_for_log("session ended");
    assert!(ended.contains("closed_by=administrator"), "{ended}");
    // Every byte taken from the target reached the browser: no frame was cut off.
    assert!(
        ended.contains(&format!("bytes_to_client={} ", received.len())),
        "{} received; {ended}",
        received.len()
    );
}
