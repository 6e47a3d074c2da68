//! The VeNCrypt/RFB negotiation of `ssl_target` consoles, with the fuzz input as everything
//! the VNC server sends (then it hangs up its side), a browser that answers like noVNC
//! (`RFB 003.008`, then security type 2), all over in-memory streams on tokio's paused
//! clock, so the negotiation's deadline costs no real time.
//! Seeds: the server sides of the module's scripted servers (plain VNC, VeNCrypt with and
//! without X509VNC, old VeNCrypt, other RFB versions, refusals, truncations).
//! Oracle: no panic; the negotiation returns before its deadline; the browser gets no more
//! than the server sent plus the few bytes the proxy makes up, and the proxy consumes no
//! more than the browser sent.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use consolegate::target_tls::TargetTls;
use consolegate::vencrypt::{negotiate, Tally, RFB_3_8, SECURITY_VNC_AUTH};
use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::protocol::Role;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::WebSocketStream;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The negotiation's deadline (`SSL_TARGET_TIMEOUT`), in paused, virtual time.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the browser sends at most: its version answer and its security type.
const BROWSER_BYTES: u64 = 12 + 1;

/// Room for what the proxy makes up: the security types it offers the browser, or an RFB
/// failure with its generic reason.
const MADE_UP_BYTES: usize = 256;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}

/// No CA: the proxy does not verify the server (the default without `SSL_TARGET_CA`).
fn tls() -> &'static TargetTls {
    static TLS: OnceLock<TargetTls> = OnceLock::new();
    TLS.get_or_init(|| TargetTls::load(None, false).expect("a TLS client configuration"))
}

fuzz_target!(|server_bytes: &[u8]| {
    runtime().block_on(async {
        let (proxy_ws, browser_ws) = tokio::io::duplex(64 * 1024);
        let (target, mut server) = tokio::io::duplex(64 * 1024);
        let mut proxy_ws = WebSocketStream::from_raw_socket(proxy_ws, Role::Server, None).await;
        let mut browser = WebSocketStream::from_raw_socket(browser_ws, Role::Client, None).await;
        let mut tally = Tally::default();

        let server_side = async move {
            let _ = server.write_all(server_bytes).await;
            let _ = server.shutdown().await;
            let mut ignored = [0u8; 4096];
            while matches!(server.read(&mut ignored).await, Ok(n) if n > 0) {}
        };
        let browser_side = async move {
            while let Some(Ok(message)) = browser.next().await {
                let Message::Binary(data) = message else {
                    continue;
                };
                let answer: &[u8] = if data.as_ref() == RFB_3_8 {
                    RFB_3_8
                } else if data.as_ref() == [1, SECURITY_VNC_AUTH] {
                    &[SECURITY_VNC_AUTH]
                } else {
                    continue;
                };
                if browser
                    .send(Message::Binary(answer.to_vec().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        let negotiation = negotiate(
            &mut proxy_ws,
            target,
            tls(),
            "vnc.example",
            DEADLINE,
            &mut tally,
        );
        let peers = async {
            tokio::join!(server_side, browser_side);
            std::future::pending::<()>().await
        };
        let finished = tokio::time::timeout(DEADLINE * 2, async {
            tokio::select! {
                result = negotiation => result.map(|_| ()),
                () = peers => unreachable!("pending never completes"),
            }
        })
        .await;
        assert!(finished.is_ok(), "the negotiation outlived its deadline");
        assert!(
            tally.to_browser() <= (server_bytes.len() + MADE_UP_BYTES) as u64,
            "{} bytes to the browser from {} server bytes",
            tally.to_browser(),
            server_bytes.len()
        );
        assert!(tally.from_browser <= BROWSER_BYTES);
    });
});
