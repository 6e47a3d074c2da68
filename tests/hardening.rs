//! Target policy, limits, timeouts, origin checks and live reload, against the running binary.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use consolegate::target::Target;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn ticket_to(host: &str, port: u16) -> String {
    let target = Target {
        host: host.into(),
        port,
        ssl_target: false,
    };
    signer("engine").sign(&target, chrono::Utc::now(), chrono::TimeDelta::seconds(120))
}

async fn echo_once(client: &mut Client, payload: &[u8]) {
    client
        .send(Message::Binary(payload.to_vec().into()))
        .await
        .unwrap();
    let mut received = Vec::new();
    while received.len() < payload.len() {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("echo stalled")
        {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, payload);
}

async fn close_frame(client: &mut Client) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("no close")
        {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn target_policy_refuses_before_any_connection() {
    let echo = EchoServer::start().await;
    let port = echo.addr.port();
    let proxy = ProxyProcess::start(&format!(
        "TARGET_ALLOW_HOSTS=127.0.0.0/8 *.allowed.test\nTARGET_DENY_HOSTS=127.0.0.9\nTARGET_ALLOW_PORTS=5900-5999,{port}"
    ));
    // Allowed: the network contains the address.
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_to("127.0.0.1", port), None)
        .await
        .unwrap();
    echo_once(&mut client, b"allowed").await;

    let refused = [
        (
            ticket_to("127.0.0.1", 22),
            "port 22 is not in TARGET_ALLOW_PORTS",
        ),
        (
            ticket_to("127.0.0.9", port),
            "resolves only to addresses that are not allowed (127.0.0.9)",
        ),
        (ticket_to("169.254.169.254", port), "169.254.169.254"),
        (ticket_to("0.0.0.0", port), "0.0.0.0"),
        (ticket_to("::1", port), "::1"),
    ];
    for (ticket, reason) in &refused {
        assert_eq!(
            refusal_code(ws_connect(proxy.addr, true, ticket, None).await).await,
            4403,
            "{reason}"
        );
        let line = proxy.wait_for_log(reason);
        assert!(
            line.contains("refused: target policy") && line.contains("kind=target_"),
            "{line}"
        );
    }
    echo.wait_connections(1).await;
}

#[tokio::test]
async fn default_policy_keeps_ssh_and_http_out() {
    let proxy = ProxyProcess::start("");
    for port in [22, 80, 443, 3306] {
        assert_eq!(
            refusal_code(ws_connect(proxy.addr, false, &ticket_to("127.0.0.1", port), None).await)
                .await,
            4403
        );
    }
    assert_eq!(
        proxy
            .wait_for_lines("kind=target_port_not_allowed", 4)
            .len(),
        4
    );
}

async fn connect_from(source: &str, proxy: SocketAddr, ticket: &str) -> Result<Client, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream: Box<dyn Io> = Box::new(socket.connect(proxy).await.unwrap());
    let request = format!("ws://localhost:{}/{ticket}", proxy.port())
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((client, _)) => Ok(client),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn session_limits_total_and_per_client() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start(
        "MAX_SESSIONS=3\nMAX_SESSIONS_PER_CLIENT=2\nREFUSE_WITH_HTTP_STATUS=True",
    );
    let ticket = ticket_for(echo.addr);
    let mut first = connect_from("127.0.0.1", proxy.addr, &ticket)
        .await
        .unwrap();
    let _second = connect_from("127.0.0.1", proxy.addr, &ticket)
        .await
        .unwrap();
    assert_eq!(
        connect_from("127.0.0.1", proxy.addr, &ticket).await.err(),
        Some(429)
    );
    let _third = connect_from("127.0.0.2", proxy.addr, &ticket)
        .await
        .unwrap();
    assert_eq!(
        connect_from("127.0.0.3", proxy.addr, &ticket).await.err(),
        Some(503)
    );
    proxy.wait_for_log("kind=limit_sessions_per_client");
    proxy.wait_for_log("the MAX_SESSIONS limit");
    // The open sessions are unaffected, and a closed one frees its slot.
    echo_once(&mut first, b"still here").await;
    first.close(None).await.unwrap();
    proxy.wait_for_log("session ended");
    let mut again = connect_from("127.0.0.3", proxy.addr, &ticket)
        .await
        .unwrap();
    echo_once(&mut again, b"slot reused").await;
    assert_eq!(
        echo.connections(),
        4,
        "refused sessions opened no target connection"
    );
}

#[tokio::test]
async fn handshake_flood_is_shed_without_hurting_sessions() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("MAX_HANDSHAKES=4\nHANDSHAKE_TIMEOUT=3");
    let (mut session, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    assert_eq!(proxy.wait_for_lines("connection accepted", 5).len(), 5);
    // The fifth is closed at once.
    let mut extra = TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("excess connection kept open");
    assert!(matches!(read, Ok(0) | Err(_)));
    echo_once(&mut session, b"unaffected").await;
    // Once the idle ones time out, new sessions get in again.
    for mut stream in idle {
        let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf))
            .await
            .expect("idle connection kept");
        assert!(matches!(read, Ok(0) | Err(_)));
    }
    let (mut later, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    echo_once(&mut later, b"back").await;
}

#[tokio::test]
async fn one_address_holding_its_share_of_handshakes_does_not_lock_out_others() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start(
        "MAX_HANDSHAKES=16\nMAX_HANDSHAKES_PER_CLIENT=3\nHANDSHAKE_TIMEOUT=3\nADMIN_LISTEN=127.0.0.1:0",
    );
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tcp_from("127.0.0.3", proxy.addr).await);
    }
    assert_eq!(proxy.wait_for_lines("connection accepted", 3).len(), 3);
    // The same address's fourth is closed at once ...
    let mut extra = tcp_from("127.0.0.3", proxy.addr).await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("excess connection kept open");
    assert!(matches!(read, Ok(0) | Err(_)));
    // ... while another address gets its session.
    let stream = Box::new(tcp_from("127.0.0.4", proxy.addr).await);
    let (mut other, _) = ws_over(stream, false, proxy.addr.port(), &ticket_for(echo.addr))
        .await
        .unwrap();
    echo_once(&mut other, b"not locked out").await;
    let (_, text) = admin_request(proxy.admin_addr(), "GET", "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            "consolegate_connections_dropped_total{reason=\"max_handshakes_per_client\"}"
        ),
        1.0
    );
    // Once its idle connections are gone, the address gets in again.
    drop(idle);
    let (mut again, _) = {
        let mut tries = 0;
        loop {
            let stream = Box::new(tcp_from("127.0.0.3", proxy.addr).await);
            match ws_over(stream, false, proxy.addr.port(), &ticket_for(echo.addr)).await {
                Ok(pair) => break pair,
                Err(e) if tries < 20 => {
                    tries += 1;
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the address stayed locked out: {e}"),
            }
        }
    };
    echo_once(&mut again, b"back").await;
}

#[tokio::test]
async fn idle_and_maximum_duration_timeouts() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("SESSION_IDLE_TIMEOUT=1500ms");
    let (mut busy, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    let (mut quiet, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    // Traffic every 400 ms for 3 s keeps one alive; the other idles out.
    for _ in 0..8 {
        echo_once(&mut busy, b"tick").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        close_frame(&mut quiet).await,
        (CloseCode::Away, "Idle timeout".to_owned())
    );
    echo_once(&mut busy, b"still alive").await;
    proxy.wait_for_log("closed_by=proxy (SESSION_IDLE_TIMEOUT)");

    let capped = ProxyProcess::start("SESSION_MAX_DURATION=1");
    let (mut client, _) = ws_connect(capped.addr, false, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    echo_once(&mut client, b"x").await;
    assert_eq!(
        close_frame(&mut client).await,
        (CloseCode::Away, "Session time limit reached".to_owned())
    );
}

#[tokio::test]
async fn origin_allow_list() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("ALLOWED_ORIGINS=https://portal.example.com");
    let attempt = |origin: Option<&'static str>| {
        let ticket = ticket_for(echo.addr);
        async move {
            let mut request = format!("wss://localhost:{}/{ticket}", proxy.addr.port())
                .into_client_request()
                .unwrap();
            if let Some(origin) = origin {
                request
                    .headers_mut()
                    .insert("Origin", origin.parse().unwrap());
            }
            tokio_tungstenite::client_async(request, open(proxy.addr, true).await).await
        }
    };
    for good in ["https://portal.example.com", "https://PORTAL.example.com"] {
        let (mut client, _) = attempt(Some(good)).await.unwrap();
        echo_once(&mut client, good.as_bytes()).await;
    }
    for bad in [Some("https://evil.example.com"), None] {
        let (code, reason) = refusal(attempt(bad).await).await;
        assert_eq!(code, 4403, "{bad:?}");
        assert!(
            reason.starts_with("consoles cannot be opened from this page"),
            "{reason}"
        );
    }
    proxy.wait_for_log("kind=origin_not_allowed");
    echo.wait_connections(2).await;
}

#[tokio::test]
async fn oversized_requests_and_frames() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start(
        "MAX_REQUEST_HEADER_SIZE=8192\nWS_MAX_FRAME_SIZE=4096\nWS_MAX_MESSAGE_SIZE=8192",
    );
    let big = "x".repeat(20_000);
    let response = raw_http(
        proxy.addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(80)]
    );

    let (mut client, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    echo_once(&mut client, &[7u8; 4000]).await;
    client
        .send(Message::Binary(vec![1u8; 5000].into()))
        .await
        .unwrap();
    assert_eq!(close_frame(&mut client).await.0, CloseCode::Size);
    proxy.wait_for_log("close 1009");
}

#[tokio::test]
async fn sighup_reloads_certificates_and_keeps_sessions() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    let (mut old_session, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    let other = |echo: SocketAddr| {
        let target = Target {
            host: "127.0.0.1".into(),
            port: echo.port(),
            ssl_target: false,
        };
        signer("other-engine").sign(&target, chrono::Utc::now(), chrono::TimeDelta::seconds(120))
    };
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, true, &other(echo.addr), None).await).await,
        4403
    );

    // Rotate both: the TLS certificate and the engine certificate.
    proxy.rewrite_config("SSL_CERTIFICATE=${PKI}/proxy-rotated.pem\nSSL_KEY=${PKI}/proxy-rotated.key\nCERT_FOR_DATA_VERIFICATION=${PKI}/other-engine.pem");
    proxy.signal("HUP");
    proxy.wait_for_log("configuration reloaded");

    let (mut new_session, _) = ws_connect(proxy.addr, true, &other(echo.addr), None)
        .await
        .unwrap();
    echo_once(&mut new_session, b"new keys").await;
    assert_eq!(
        refusal_code(ws_connect(proxy.addr, true, &ticket_for(echo.addr), None).await).await,
        4403
    );
    assert_eq!(
        presented_certificate(proxy.addr).await,
        pem_der("pki/proxy-rotated.pem")
    );
    echo_once(&mut old_session, b"old session untouched").await;

    // A broken configuration is refused whole; the one in force stays.
    proxy.rewrite_config("CERT_FOR_DATA_VERIFICATION=/nonexistent.pem\nPROXY_PORT=seventy");
    proxy.signal("HUP");
    let refused = proxy.wait_for_lines("reload refused", 3);
    assert!(
        refused.iter().any(|l| l.contains("PROXY_PORT")),
        "{refused:?}"
    );
    let (mut still, _) = ws_connect(proxy.addr, true, &other(echo.addr), None)
        .await
        .unwrap();
    echo_once(&mut still, b"still the rotated config").await;
    echo_once(&mut old_session, b"and the first session").await;
}

fn pem_der(path: &str) -> Vec<u8> {
    let pem = std::fs::read(fixture(path)).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    der
}

async fn presented_certificate(proxy: SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tls_connector().connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn exhausted_descriptors_end_only_what_cannot_be_served() {
    let echo = EchoServer::start().await;
    // Room for the runtime, the listener and a handful of connections only.
    let proxy = ProxyProcess::start_with("HANDSHAKE_TIMEOUT=2", Some(32));
    let (mut session, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), None)
        .await
        .unwrap();
    // Far more connections than descriptors: the kernel queues them, accept fails with
    // EMFILE, and the accept loop must pause and go on rather than die or spin.
    let mut flood = Vec::new();
    for _ in 0..60 {
        if let Ok(stream) = TcpStream::connect(proxy.addr).await {
            flood.push(stream);
        }
    }
    proxy.wait_for_log("accept failed; pausing");
    echo_once(&mut session, b"the open session keeps relaying").await;
    drop(flood);
    // Once the flood is gone (closed by us, or timed out by the proxy), service resumes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((mut client, _)) =
            ws_connect(proxy.addr, true, &ticket_for(echo.addr), None).await
        {
            echo_once(&mut client, b"served again").await;
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    echo_once(&mut session, b"and still relaying").await;
}

#[tokio::test]
async fn a_full_log_disk_loses_no_session() {
    let echo = EchoServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.conf");
    std::fs::write(
        &config,
        format!(
            "PROXY_HOST=127.0.0.1\nPROXY_PORT={port}\nCERT_FOR_DATA_VERIFICATION={}\n",
            fixture("pki/engine.pem").display()
        ),
    )
    .unwrap();
    // Every log write fails with ENOSPC.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "consolegate=debug")
        .stderr(full)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "proxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let (mut client, _) = ws_connect(addr, false, &ticket_for(echo.addr), None)
            .await
            .unwrap();
        echo_once(&mut client, b"logs are failing, consoles are not").await;
        assert_eq!(
            refusal_code(ws_connect(addr, false, "forged", None).await).await,
            4403
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "the proxy died");
    let _ = child.kill();
    let _ = child.wait();
}
