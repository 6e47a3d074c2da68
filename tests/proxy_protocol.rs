//! The PROXY protocol against the running binary: from a trusted load balancer the header's
//! address is the client everywhere (logs, per-client limits, admin listing); from anyone
//! else a header is not honoured.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "proxy-protocol-test-token-01";

fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let addresses = IPv4::new(
        *source.ip(),
        *destination.ip(),
        source.port(),
        destination.port(),
    );
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses)
        .build()
        .unwrap()
}

/// A connection from the trusted load balancer (127.0.0.1) that announces `client`.
async fn via_balancer(proxy: &ProxyProcess, header: &[u8], tls: bool, path: &str) -> Client {
    let mut tcp = tcp_from("127.0.0.1", proxy.addr).await;
    tcp.write_all(header).await.unwrap();
    let stream: Box<dyn Io> = if tls {
        tls_over(tcp).await
    } else {
        Box::new(tcp)
    };
    ws_over(stream, tls, proxy.addr.port(), path)
        .await
        .unwrap()
        .0
}

fn trusted(extra: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        "PROXY_PROTOCOL_TRUSTED=127.0.0.1\nADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}\n{extra}"
    ))
}

#[tokio::test]
async fn the_header_names_the_client_in_logs_limits_and_the_registry() {
    let proxy = trusted("MAX_SESSIONS_PER_CLIENT=1");
    let echo = EchoServer::start().await;
    let browser: SocketAddr = "203.0.113.7:51234".parse().unwrap();

    let mut first = via_balancer(
        &proxy,
        &v2_header(browser, proxy.addr),
        true,
        &ticket_for(echo.addr),
    )
    .await;
    echo_exact(&mut first, &pattern(50_000, 1)).await;
    let started = proxy.wait_for_log("session started");
    assert!(started.contains("client=203.0.113.7:51234"), "{started}");
    let accepted = proxy.wait_for_log("client named by the PROXY protocol header");
    assert!(
        accepted.contains("conn{client=203.0.113.7:51234 via=127.0.0.1:"),
        "{accepted}"
    );

    let (status, body) = admin_request(proxy.admin_addr(), "GET", "/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sessions[0]["client"], "203.0.113.7:51234");

    // The same browser again, through the same balancer: its own limit applies.
    let same = "PROXY TCP4 203.0.113.7 127.0.0.1 51235 6100\r\n";
    let mut tcp = tcp_from("127.0.0.1", proxy.addr).await;
    tcp.write_all(same.as_bytes()).await.unwrap();
    let refused = ws_over(
        tls_over(tcp).await,
        true,
        proxy.addr.port(),
        &ticket_for(echo.addr),
    )
    .await;
    assert_eq!(refusal_code(refused).await, 4429);
    let line = proxy.wait_for_log("refused: limit");
    assert!(
        line.contains("203.0.113.7 already has 1 sessions open"),
        "{line}"
    );

    // Another browser behind the same balancer is not limited by the first one (v1, ws://).
    let other = "PROXY TCP4 203.0.113.8 127.0.0.1 40000 6100\r\n";
    let mut second = via_balancer(&proxy, other.as_bytes(), false, &ticket_for(echo.addr)).await;
    echo_exact(&mut second, b"second browser").await;
    let lines = proxy.wait_for_lines("session started", 2);
    assert!(lines[1].contains("client=203.0.113.8:40000"), "{lines:?}");
    assert_eq!(echo.connections(), 2);
}

#[tokio::test]
async fn a_trusted_peer_must_send_a_header_in_time() {
    let proxy = trusted("HANDSHAKE_TIMEOUT=1");
    let echo = EchoServer::start().await;
    // No header: the TLS handshake is not taken for one.
    let tcp = tcp_from("127.0.0.1", proxy.addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(tls_connector().connect(name, tcp).await.is_err());
    let line = proxy.wait_for_log("no PROXY protocol header");
    assert!(line.contains("starts with a TLS handshake"), "{line}");

    // A header that never ends is cut off by HANDSHAKE_TIMEOUT.
    let mut slow = tcp_from("127.0.0.1", proxy.addr).await;
    slow.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "not closed after HANDSHAKE_TIMEOUT");
    proxy.wait_for_log("no PROXY protocol header within HANDSHAKE_TIMEOUT");

    let (_, text) = admin_request(proxy.admin_addr(), "GET", "/metrics", None).await;
    assert_eq!(
        metric(
            &text,
            "consolegate_connections_dropped_total{reason=\"proxy_protocol\"}"
        ),
        2.0
    );
    assert_eq!(echo.connections(), 0);

    // A LOCAL command (a balancer's own check) leaves the balancer as the client.
    let local = Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Stream,
        ppp::v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    let mut client = via_balancer(&proxy, &local, true, &ticket_for(echo.addr)).await;
    echo_exact(&mut client, b"local").await;
    let started = proxy.wait_for_log("session started");
    assert!(started.contains("client=127.0.0.1:"), "{started}");
}

#[tokio::test]
async fn an_untrusted_peer_cannot_claim_an_address() {
    let proxy = trusted("");
    let echo = EchoServer::start().await;
    // 127.0.0.2 is not in PROXY_PROTOCOL_TRUSTED: its header is just bad HTTP.
    let mut tcp = tcp_from("127.0.0.2", proxy.addr).await;
    let request = format!(
        "PROXY TCP4 198.51.100.9 127.0.0.1 40000 6100\r\nGET /{} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ticket_for(echo.addr)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    // A v2 header from an untrusted peer fails the same way.
    let mut tcp = tcp_from("127.0.0.2", proxy.addr).await;
    tcp.write_all(&v2_header(
        "198.51.100.9:40000".parse().unwrap(),
        proxy.addr,
    ))
    .await
    .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response)).await;
    assert!(!String::from_utf8_lossy(&response).contains("101"));

    // A browser on that address without a header is served as itself.
    let (mut client, _) = ws_over(
        tls_over(tcp_from("127.0.0.2", proxy.addr).await).await,
        true,
        proxy.addr.port(),
        &ticket_for(echo.addr),
    )
    .await
    .unwrap();
    echo_exact(&mut client, b"direct").await;
    let started = proxy.wait_for_log("session started");
    assert!(started.contains("client=127.0.0.2:"), "{started}");
    assert_eq!(echo.connections(), 1);
    assert!(!proxy.logs().contains("198.51.100.9"), "{}", proxy.logs());
}
