//! The admin listener against the running binary: health, readiness, Prometheus metrics,
//! and listing and closing sessions with a bearer token.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-admin-token-6c1f0a9e2b7d";

fn admin_config(extra: &str) -> String {
    format!("ADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}\n{extra}")
}

#[tokio::test]
async fn the_admin_listener_is_off_by_default() {
    let proxy = ProxyProcess::start("");
    let echo = EchoServer::start().await;
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    echo_exact(&mut client, b"hello").await;
    assert!(
        !proxy.logs().contains("admin endpoints"),
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn health_metrics_and_session_admin() {
    let proxy = ProxyProcess::start(&admin_config(""));
    let admin = proxy.admin_addr();
    assert_eq!(admin.ip().to_string(), "127.0.0.1");
    assert_eq!(
        admin_request(admin, "GET", "/livez", None).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        admin_request(admin, "GET", "/readyz", None).await,
        (200, "ready\n".into())
    );

    let echo = EchoServer::start().await;
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    let payload = pattern(100_000, 7);
    echo_exact(&mut client, &payload).await;
    let refused =
        refusal_code(ws_connect(proxy.addr, true, "not-a-ticket", Some("binary")).await).await;
    assert_eq!(refused, 4403);

    let (status, text) = admin_request(admin, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(metric(&text, "consolegate_sessions_open"), 1.0);
    assert_eq!(metric(&text, "consolegate_sessions_total"), 1.0);
    assert_eq!(
        metric(&text, "consolegate_refusals_total{kind=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "consolegate_refusals_total{kind=\"expired\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "consolegate_relayed_bytes_total{direction=\"to_target\"}"
        ),
        100_000.0
    );
    assert_eq!(
        metric(
            &text,
            "consolegate_relayed_bytes_total{direction=\"to_client\"}"
        ),
        100_000.0
    );
    assert!(metric(&text, "consolegate_tls_handshake_duration_seconds_count") >= 2.0);
    assert_eq!(
        metric(&text, "consolegate_target_connect_duration_seconds_count"),
        1.0
    );
    assert_eq!(metric(&text, "consolegate_log_lines_dropped_total"), 0.0);
    assert_eq!(metric(&text, "consolegate_ready"), 1.0);
    assert_eq!(metric(&text, "consolegate_sessions_max"), 10_000.0);
    for (key, file) in [
        ("SSL_CERTIFICATE", "pki/proxy.pem"),
        ("CERT_FOR_DATA_VERIFICATION", "pki/engine.pem"),
    ] {
        let summary = &consolegate::tls::summarize_pem(&std::fs::read(fixture(file)).unwrap())[0];
        let name = format!(
            "consolegate_certificate_expiry_timestamp_seconds{{key=\"{key}\",subject=\"{}\"}}",
            summary.subject
        );
        assert_eq!(
            metric(&text, &name),
            summary.not_after.timestamp() as f64,
            "{key}"
        );
    }

    // Session endpoints need the token.
    assert_eq!(admin_request(admin, "GET", "/sessions", None).await.0, 401);
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some("wrong-token-0123456789"))
            .await
            .0,
        401
    );
    let (status, body) = admin_request(admin, "GET", "/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    let session = &sessions.as_array().unwrap()[0];
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(session["target"], echo.addr.to_string());
    assert!(session["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(session["bytes_to_target"], 100_000);
    assert_eq!(session["bytes_to_client"], 100_000);
    assert_eq!(session["request_id"].as_str().unwrap().len(), 8);
    assert!(session["started"].as_str().unwrap().ends_with('Z'));
    let id = session["id"].as_u64().unwrap();

    assert_eq!(
        admin_request(admin, "DELETE", "/sessions/999", Some(TOKEN))
            .await
            .0,
        404
    );
    assert_eq!(
        admin_request(admin, "DELETE", "/sessions/abc", Some(TOKEN))
            .await
            .0,
        400
    );
    let (status, body) =
        admin_request(admin, "POST", &format!("/sessions/{id}/close"), Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        next_close(&mut client).await,
        (1001, "Session closed by an administrator".into())
    );
    let ended = proxy.wait_for_log("session ended");
    assert!(ended.contains("closed_by=administrator"), "{ended}");
    proxy.wait_for_log("session closed by an administrator");

    let (_, text) = admin_request(admin, "GET", "/metrics", None).await;
    assert_eq!(metric(&text, "consolegate_sessions_open"), 0.0);
    assert_eq!(
        metric(&text, "consolegate_session_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "consolegate_relayed_bytes_total{direction=\"to_client\"}"
        ),
        100_000.0
    );
    assert_eq!(admin_request(admin, "GET", "/nowhere", None).await.0, 404);
    assert_eq!(admin_request(admin, "POST", "/readyz", None).await.0, 405);
    assert!(!proxy.logs().contains(TOKEN));
    assert!(!proxy.logs().contains("wrong-token-0123456789"));
}

#[tokio::test]
async fn readiness_fails_while_draining_and_when_full() {
    let mut proxy = ProxyProcess::start(&admin_config("MAX_SESSIONS=1\nSHUTDOWN_GRACE_PERIOD=10"));
    let admin = proxy.admin_addr();
    let echo = EchoServer::start().await;
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    echo_exact(&mut client, b"one").await;
    let (status, body) = admin_request(admin, "GET", "/readyz", None).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: MAX_SESSIONS reached (1 sessions open)\n")
    );

    proxy.signal("TERM");
    proxy.wait_for_log("shutting down");
    let (status, body) = admin_request(admin, "GET", "/readyz", None).await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(admin_request(admin, "GET", "/livez", None).await.0, 200);
    let (_, text) = admin_request(admin, "GET", "/metrics", None).await;
    assert_eq!(metric(&text, "consolegate_ready"), 0.0);
    // The open session still relays while the instance drains.
    echo_exact(&mut client, b"still relaying").await;
    client.send(Message::Close(None)).await.unwrap();
    assert!(proxy.wait_exit(Duration::from_secs(15)).success());
}

/// A self-signed certificate for localhost that expired yesterday, and its key.
fn expired_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509NameBuilder, X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_subject_name(&name).unwrap();
    cert.set_issuer_name(&name).unwrap();
    cert.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    cert.set_not_before(&Asn1Time::from_unix(now - 30 * 86400).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::from_unix(now - 86400).unwrap())
        .unwrap();
    cert.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert_path, key_path) = (dir.join("expired.pem"), dir.join("expired.key"));
    std::fs::write(&cert_path, cert.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

#[tokio::test]
async fn an_expired_certificate_makes_the_instance_unready() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = expired_certificate(dir.path());
    let proxy = ProxyProcess::start(&admin_config(&format!(
        "SSL_CERTIFICATE={}\nSSL_KEY={}",
        cert.display(),
        key.display()
    )));
    let admin = proxy.admin_addr();
    let (status, body) = admin_request(admin, "GET", "/readyz", None).await;
    assert_eq!(status, 503);
    assert!(
        body.contains("SSL_CERTIFICATE CN=localhost expired on"),
        "{body}"
    );
    let (_, text) = admin_request(admin, "GET", "/metrics", None).await;
    let expiry = metric(
        &text,
        "consolegate_certificate_expiry_timestamp_seconds{key=\"SSL_CERTIFICATE\",subject=\"CN=localhost\"}",
    );
    assert!(expiry < chrono::Utc::now().timestamp() as f64);
}

#[tokio::test]
async fn token_file_protected_metrics_and_rotation_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        "ADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN_FILE={}\nADMIN_METRICS_REQUIRE_TOKEN=yes",
        token_file.display()
    );
    let proxy = ProxyProcess::start(&extra);
    let admin = proxy.admin_addr();
    assert_eq!(admin_request(admin, "GET", "/metrics", None).await.0, 401);
    assert_eq!(
        admin_request(admin, "GET", "/metrics", Some(TOKEN)).await.0,
        200
    );
    assert_eq!(admin_request(admin, "GET", "/readyz", None).await.0, 200);
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some(TOKEN)).await,
        (200, "[]\n".into())
    );

    let rotated = "rotated-admin-token-5d2c8e1f";
    std::fs::write(&token_file, rotated).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some(TOKEN))
            .await
            .0,
        401
    );
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some(rotated))
            .await
            .0,
        200
    );
    let (_, text) = admin_request(admin, "GET", "/metrics", Some(rotated)).await;
    assert_eq!(
        metric(
            &text,
            "consolegate_config_reloads_total{result=\"applied\"}"
        ),
        1.0
    );
    let logs = proxy.logs();
    assert!(!logs.contains(TOKEN) && !logs.contains(rotated), "{logs}");
}

#[tokio::test]
async fn without_a_token_the_session_endpoints_are_disabled() {
    let proxy = ProxyProcess::start("ADMIN_LISTEN=127.0.0.1:0");
    let admin = proxy.admin_addr();
    let (status, body) =
        admin_request(admin, "GET", "/sessions", Some("anything-0123456789")).await;
    assert_eq!(status, 403);
    assert!(body.contains("set ADMIN_TOKEN"), "{body}");
    assert_eq!(admin_request(admin, "GET", "/metrics", None).await.0, 200);
}

#[test]
fn check_config_masks_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.conf");
    std::fs::write(
        &config,
        format!(
            "CERT_FOR_DATA_VERIFICATION={}\nADMIN_LISTEN=6101\nADMIN_TOKEN={TOKEN}\n",
            fixture("pki/engine.pem").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("ADMIN_TOKEN=********"), "{stdout}");
    assert!(stdout.contains("ADMIN_LISTEN=6101"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));

    std::fs::write(
        &config,
        format!("CERT_FOR_DATA_VERIFICATION=x\nADMIN_TOKEN=short{TOKEN}\"x y\"\n"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr.contains("ADMIN_TOKEN: must be printable ASCII without blanks"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN));
}
