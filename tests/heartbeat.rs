//! Heartbeats: idle consoles stay up behind load balancers, vanished browsers are noticed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_idle_console_is_pinged_and_stays_up() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("HEARTBEAT_INTERVAL=300ms\nHEARTBEAT_TIMEOUT=1s");
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    // No user activity for well over several intervals; the client library answers pings.
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), client.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
    }
    assert!(
        pings >= 5,
        "only {pings} pings in 2.5 s at a 300 ms interval"
    );
    client
        .send(Message::Binary(b"still here"[..].into()))
        .await
        .unwrap();
    loop {
        match client.next().await {
            Some(Ok(Message::Binary(data))) => break assert_eq!(&data[..], b"still here"),
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_browser_that_stops_answering_is_ended_with_a_summary() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("HEARTBEAT_INTERVAL=300ms\nHEARTBEAT_TIMEOUT=1s");
    // The client never reads again, so it never answers a ping.
    let (_silent, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    let started = Instant::now();
    let line = proxy.wait_for_log("session ended");
    assert!(
        line.contains("closed_by=proxy (client stopped answering heartbeats)"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn heartbeats_can_be_turned_off() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("HEARTBEAT_INTERVAL=0");
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1500), client.next()).await;
    assert!(
        quiet.is_err(),
        "no frame expected without heartbeats: {quiet:?}"
    );
}
