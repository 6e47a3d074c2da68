//! `ssl_target` sessions through the running binary to TigerVNC's Xvnc: the proxy negotiates
//! VeNCrypt X509Vnc and TLS with the real server (GnuTLS), the VNC authentication challenge
//! reaches the WebSocket client, certificate verification refuses a foreign CA with 1011, and
//! servers that do not insist on VeNCrypt are passed through untouched.

mod common;

use std::time::Duration;

use common::xvnc::Xvnc;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const RFB_3_8: &[u8] = b"RFB 003.008\n";

/// A WebSocket client speaking RFB byte by byte over the proxy's binary messages.
struct Browser {
    ws: Client,
    pending: Vec<u8>,
}

impl Browser {
    async fn open(proxy: &ProxyProcess, ticket: &str) -> Browser {
        let (ws, _) = ws_connect(proxy.addr, true, ticket, Some("binary"))
            .await
            .unwrap();
        Browser {
            ws,
            pending: Vec::new(),
        }
    }

    /// Exactly `n` bytes, however the proxy cut its messages.
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("the proxy answered in time")
            {
                Some(Ok(Message::Binary(data))) => self.pending.extend_from_slice(&data),
                other => panic!(
                    "expected binary data after {:?}, got {other:?}",
                    self.pending
                ),
            }
        }
        self.pending.drain(..n).collect()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .unwrap();
    }

    /// An RFB 3.8 reason: a length, then the text.
    async fn reason(&mut self) -> String {
        let len = self.read(4).await;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        String::from_utf8(self.read(len).await).unwrap()
    }

    /// The next message, which must be a close frame, after all data was read.
    async fn close_frame(&mut self) -> (CloseCode, String) {
        assert!(self.pending.is_empty(), "unread: {:?}", self.pending);
        match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
            .await
            .expect("the proxy closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => (frame.code, frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn xvnc_with_x509vnc_the_proxy_speaks_tls_and_the_challenge_reaches_the_browser() {
    let vnc = Xvnc::start("X509Vnc", Some("vnc"));
    let proxy = ProxyProcess::start("");
    let ticket = ticket_for_target(vnc.addr, true);
    let mut browser = Browser::open(&proxy, &ticket).await;

    assert_eq!(browser.read(12).await, RFB_3_8);
    browser.send(RFB_3_8).await;
    assert_eq!(
        browser.read(2).await,
        [1, 2],
        "the browser is offered VNC authentication only"
    );
    browser.send(&[2]).await;
    let challenge = browser.read(16).await;
    assert_ne!(challenge, [0u8; 16], "Xvnc's random challenge, through TLS");
    // No DES here: a wrong answer, which Xvnc must judge, proves the exchange is end to end.
    browser.send(&[0u8; 16]).await;
    assert_eq!(browser.read(4).await, [0, 0, 0, 1], "failed");
    let reason = browser.reason().await;
    assert!(reason.contains("Authentication failure"), "{reason}");

    let line = proxy.wait_for_log("VeNCrypt X509VNC negotiated");
    assert!(line.contains("verification=off"), "{line}");
    assert!(vnc.log().contains("Connections: accepted: 127.0.0.1"));
    assert!(!proxy.logs().contains(&ticket[..64]));
}

#[tokio::test]
async fn with_ssl_target_ca_a_foreign_certificate_is_refused_with_1011() {
    let foreign = Xvnc::start("X509Vnc", Some("vnc-other-ca"));
    let trusted = Xvnc::start("X509Vnc", Some("vnc"));
    let proxy = ProxyProcess::start(&format!(
        "SSL_TARGET_CA={}\nADMIN_LISTEN=127.0.0.1:0",
        fixture("pki/ca.pem").display()
    ));
    let outcome = |text: &str, outcome: &str| {
        metric(
            text,
            &format!("consolegate_vencrypt_negotiations_total{{outcome=\"{outcome}\"}}"),
        )
    };
    let (_, before) = admin_request(proxy.admin_addr(), "GET", "/metrics", None).await;
    assert_eq!(outcome(&before, "tls_handshake"), 0.0, "present at zero");

    let mut browser = Browser::open(&proxy, &ticket_for_target(foreign.addr, true)).await;
    assert_eq!(browser.read(12).await, RFB_3_8);
    browser.send(RFB_3_8).await;
    assert_eq!(browser.read(1).await, [0], "no security types");
    let reason = browser.reason().await;
    assert!(reason.contains("could not set up encryption"), "{reason}");
    let (code, reason) = browser.close_frame().await;
    assert_eq!(code, CloseCode::Error);
    let reference = reason
        .strip_prefix("VNC encryption negotiation failed (ref ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("reason {reason:?}"));
    let line = proxy.wait_for_log("VeNCrypt negotiation failed");
    assert!(line.contains(&format!("request_id={reference}")), "{line}");
    assert!(line.contains("tls_handshake"), "{line}");
    assert!(line.contains("TLS handshake with the VNC server"), "{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    let ended = proxy.wait_for_log("session ended");
    assert!(
        ended.contains("VeNCrypt negotiation failed at tls_handshake, close 1011"),
        "{ended}"
    );

    // The same proxy reaches a server its CA certified.
    let mut browser = Browser::open(&proxy, &ticket_for_target(trusted.addr, true)).await;
    browser.read(12).await;
    browser.send(RFB_3_8).await;
    assert_eq!(browser.read(2).await, [1, 2]);
    browser.send(&[2]).await;
    browser.read(16).await;
    let line = proxy.wait_for_log("VeNCrypt X509VNC negotiated");
    assert!(line.contains("and name the host"), "{line}");

    let (_, after) = admin_request(proxy.admin_addr(), "GET", "/metrics", None).await;
    assert_eq!(outcome(&after, "tls_handshake"), 1.0);
    assert_eq!(outcome(&after, "encrypted"), 1.0);
    assert_eq!(outcome(&after, "passthrough"), 0.0);
}

#[tokio::test]
async fn servers_not_insisting_on_vencrypt_are_passed_through() {
    // An ssl_target ticket for a server offering VNC authentication: the server's own offer.
    let plain = Xvnc::start("VncAuth", None);
    let proxy = ProxyProcess::start("");
    let mut browser = Browser::open(&proxy, &ticket_for_target(plain.addr, true)).await;
    assert_eq!(browser.read(12).await, RFB_3_8);
    browser.send(RFB_3_8).await;
    assert_eq!(browser.read(2).await, [1, 2]);
    browser.send(&[2]).await;
    browser.read(16).await;
    let line = proxy.wait_for_log("relayed as is");
    assert!(
        line.contains("the VNC server offers security types [2]"),
        "{line}"
    );

    // A ticket without ssl_target to a VeNCrypt server: the proxy does not touch the stream,
    // so the browser sees VeNCrypt offered.
    let x509 = Xvnc::start("X509Vnc", Some("vnc"));
    let mut browser = Browser::open(&proxy, &ticket_for_target(x509.addr, false)).await;
    assert_eq!(browser.read(12).await, RFB_3_8);
    browser.send(RFB_3_8).await;
    assert_eq!(browser.read(2).await, [1, 19]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_session_continues_through_the_tls_session_after_a_cut() {
    use consolegate::resume::{Control, PATH, PROTOCOL};

    let vnc = Xvnc::start("X509Vnc", Some("vnc"));
    let proxy = ProxyProcess::start("RECONNECT_GRACE_PERIOD=10");
    let first_path = blip(proxy.addr).await;
    let (ws, _) = ws_connect(
        first_path.addr,
        false,
        &ticket_for_target(vnc.addr, true),
        Some(&format!("{PROTOCOL}, binary")),
    )
    .await
    .unwrap();
    let mut browser = Browser {
        ws,
        pending: Vec::new(),
    };
    let secret = match browser.ws.next().await {
        Some(Ok(Message::Text(text))) => match Control::parse(&text) {
            Some(Control::Session { secret, .. }) => secret,
            other => panic!("expected the session message, got {other:?}"),
        },
        other => panic!("expected the session message, got {other:?}"),
    };
    assert_eq!(browser.read(12).await, RFB_3_8);
    browser.send(RFB_3_8).await;
    assert_eq!(browser.read(2).await, [1, 2]);
    browser.send(&[2]).await;
    browser.read(16).await;
    proxy.wait_for_log("VeNCrypt X509VNC negotiated");

    first_path.cut.cancel();
    proxy.wait_for_log("keeping the console for a re-attach");
    let second_path = blip(proxy.addr).await;
    let (mut ws, _) = ws_connect(second_path.addr, false, PATH, Some(PROTOCOL))
        .await
        .unwrap();
    // The browser has received the greeting, the types and the challenge.
    let hello = Control::Resume {
        secret,
        received: 12 + 2 + 16,
    };
    ws.send(Message::Text(hello.to_text().into()))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Text(text))) => match Control::parse(&text) {
            Some(Control::Resumed { received, .. }) => assert_eq!(
                received,
                12 + 1,
                "the proxy counts the browser's version and choice as received"
            ),
            other => panic!("expected resumed, got {other:?}"),
        },
        other => panic!("expected resumed, got {other:?}"),
    }
    let mut browser = Browser {
        ws,
        pending: Vec::new(),
    };
    // The authentication continues on the same TLS session with Xvnc.
    browser.send(&[0u8; 16]).await;
    assert_eq!(browser.read(4).await, [0, 0, 0, 1]);
    let reason = browser.reason().await;
    assert!(reason.contains("Authentication failure"), "{reason}");
    assert_eq!(vnc.accepted(), 1, "the VNC server did not notice the cut");
}
