//! `serve` and `check-config` as an operator runs them: errors listed at once before any port
//! is bound, the merged configuration printed, TLS variants of upstream's settings, and the
//! demo configuration's loud warning.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::*;

fn run(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn serve_lists_every_error_and_exits_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // A port that is free now: if serve bound it, the second bind below would fail.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let main = write(
        dir.path(),
        "proxy.conf",
        &format!("PROXY_HOST=127.0.0.1\nPROXY_PORT={port}\nSSL_ONLY=True\n"),
    );
    write(
        dir.path(),
        "proxy.conf.d/10-setup.conf",
        "PROXY_PORT =1\nHANDSHAKE_TIMEOUT=soon\n",
    );
    write(
        dir.path(),
        "proxy.conf.d/20-more.conf",
        "CERT_FOR_DATA_VERIFICATION=/nonexistent/engine.cer\nSSL_CIPHERS=\"HIGH\n",
    );
    let (status, _, stderr) = run(&["serve", "--config", &main], dir.path());
    assert_eq!(status, 64, "{stderr}");
    for expected in [
        "10-setup.conf:1",
        "10-setup.conf:2: HANDSHAKE_TIMEOUT",
        "20-more.conf:2",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "serve must not have bound its port"
    );

    // With the syntax fixed, the remaining errors (files, cross-field) are all listed too.
    write(
        dir.path(),
        "proxy.conf.d/10-setup.conf",
        "HANDSHAKE_TIMEOUT=soon\n",
    );
    write(
        dir.path(),
        "proxy.conf.d/20-more.conf",
        "CERT_FOR_DATA_VERIFICATION=/nonexistent/engine.cer\n",
    );
    let (status, _, stderr) = run(&["serve", "--config", &main], dir.path());
    assert_eq!(status, 64);
    assert!(
        stderr.contains("10-setup.conf:1: HANDSHAKE_TIMEOUT"),
        "{stderr}"
    );
    assert!(stderr.contains("SSL_ONLY"), "{stderr}");

    write(dir.path(), "proxy.conf.d/10-setup.conf", "SSL_ONLY=False\n");
    let (status, _, stderr) = run(&["serve", "--config", &main], dir.path());
    assert_eq!(status, 64);
    assert!(
        stderr.contains(
            "20-more.conf:1: CERT_FOR_DATA_VERIFICATION: cannot read /nonexistent/engine.cer"
        ),
        "{stderr}"
    );
}

#[test]
fn serve_without_engine_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run(&["serve"], dir.path());
    assert_eq!(status, 64);
    assert!(stderr.contains("CERT_FOR_DATA_VERIFICATION"), "{stderr}");
}

#[test]
fn check_config_prints_the_merged_keys_in_order_and_validates_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = fixture("pki");
    let main = write(
        dir.path(),
        "proxy.conf",
        &format!(
            "PKI_DIR={}\nZ_HELPER=1\nPROXY_PORT=6101\nSSL_CERTIFICATE=${{PKI_DIR}}/proxy-combined.pem\n\
             CERT_FOR_DATA_VALIDATION=${{PKI_DIR}}/engine.pem\nREDIS_PASSWORD=hunter2\n",
            pki.display()
        ),
    );
    let (status, stdout, stderr) = run(&["check-config", "--config", &main], dir.path());
    assert_eq!(status, 0, "{stderr}");
    assert!(stderr.contains("configuration OK"));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "PROXY_HOST=*");
    assert_eq!(lines[1], "PROXY_PORT=6101");
    assert!(
        lines
            .contains(&format!("CERT_FOR_DATA_VERIFICATION={}/engine.pem", pki.display()).as_str()),
        "{stdout}"
    );
    assert!(!stdout.contains("CERT_FOR_DATA_VALIDATION"));
    // Unknown keys last, alphabetically, secrets masked.
    let tail: Vec<&str> = lines[lines.len() - 3..].to_vec();
    assert_eq!(tail[0], format!("PKI_DIR={}", pki.display()));
    assert_eq!(tail[1], "REDIS_PASSWORD=********");
    assert_eq!(tail[2], "Z_HELPER=1");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"));
    assert!(stderr.contains("unknown key"), "{stderr}");

    // A certificate that is not a certificate: reported with the key and where it was set.
    let bogus = write(dir.path(), "bogus.pem", "not a certificate\n");
    let broken = write(
        dir.path(),
        "broken.conf",
        &format!("SSL_CERTIFICATE={bogus}\nCERT_FOR_DATA_VERIFICATION={bogus}\n"),
    );
    let (status, _, stderr) = run(&["check-config", "--config", &broken], dir.path());
    assert_eq!(status, 64);
    assert!(
        stderr.contains("broken.conf:1: SSL_CERTIFICATE"),
        "{stderr}"
    );
    assert!(
        stderr.contains("broken.conf:2: CERT_FOR_DATA_VERIFICATION"),
        "{stderr}"
    );
}

#[test]
fn demo_configuration_checks_and_warns_loudly() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (status, stdout, stderr) = run(
        &["check-config", "--config", "conf.d"],
        std::path::Path::new(root),
    );
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("CERT_FOR_DATA_VERIFICATION=certs/engine.pem"));
    assert!(stderr.contains("DEMO certificate"), "{stderr}");
}

#[tokio::test]
async fn key_inside_the_certificate_file_and_tls13_minimum() {
    let echo = EchoServer::start().await;
    let combined = fixture("pki/proxy-combined.pem");
    let proxy = ProxyProcess::start(&format!(
        "SSL_CERTIFICATE={}\nSSL_KEY=\nSSL_MIN_VERSION=TLSv1.3",
        combined.display()
    ));
    let (_client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();

    // A TLS 1.2-only client cannot connect.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::fs::read(fixture("pki/ca.pem")).unwrap().as_slice())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let result = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(
        result.is_err(),
        "TLS 1.2 must be refused with SSL_MIN_VERSION=TLSv1.3"
    );
    proxy.wait_for_log("TLS handshake failed");
}

#[tokio::test]
async fn plain_only_proxy_without_certificate() {
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("SSL_CERTIFICATE=\nSSL_KEY=");
    let (mut client, _) = ws_connect(proxy.addr, false, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    client
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            b"ping"[..].into(),
        ))
        .await
        .unwrap();
    let echoed = client.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), b"ping");
    // A TLS client hello is closed with a log line saying why.
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(tls_connector().connect(name, tcp).await.is_err());
    proxy.wait_for_log("no SSL_CERTIFICATE is configured");
}

#[tokio::test]
async fn every_resolved_address_is_tried() {
    // "localhost" resolves to ::1 and 127.0.0.1 here; the echo server listens on IPv4 only,
    // so whichever comes first, the session must reach it.
    let echo = EchoServer::start().await;
    let proxy = ProxyProcess::start("");
    let target = consolegate::target::Target {
        host: "localhost".into(),
        port: echo.addr.port(),
        ssl_target: false,
    };
    let ticket = signer("engine").sign(&target, chrono::Utc::now(), chrono::TimeDelta::seconds(60));
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket, Some("binary"))
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    client
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            b"hello"[..].into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap().into_data().as_ref(),
        b"hello"
    );
}
