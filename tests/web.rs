//! Static files with `WEB_ROOT`, through the running binary: content types and validators,
//! HEAD and 304, no listings, traversal and symbolic-link escapes refused, other methods 405,
//! WebSocket upgrades still taking their path as the ticket, and bad settings refused at start.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PAGE: &str = "<!DOCTYPE html><title>console</title>\n";
const SCRIPT: &str = "export const answer = 42;\n";

/// A web root with a page, a script in a folder without index, a hidden file, and links:
/// one inside the root, two leading out of it. Returns the directory holding it, so that
/// the secret beside the root is there too.
fn web_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("web");
    std::fs::create_dir_all(root.join("novnc/core")).unwrap();
    std::fs::write(root.join("index.html"), PAGE).unwrap();
    std::fs::write(root.join("console.html"), PAGE).unwrap();
    std::fs::write(root.join("novnc/core/rfb.js"), SCRIPT).unwrap();
    std::fs::write(root.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside the root\n").unwrap();
    symlink(root.join("novnc/core/rfb.js"), root.join("alias.js")).unwrap();
    symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    symlink(dir.path(), root.join("up")).unwrap();
    dir
}

fn proxy_serving(root: &Path) -> ProxyProcess {
    ProxyProcess::start(&format!("WEB_ROOT={}", root.display()))
}

async fn get(proxy: &ProxyProcess, head: &str) -> String {
    raw_http(
        proxy.addr,
        &format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn files_are_served_with_types_and_validators() {
    let dir = web_root();
    let proxy = proxy_serving(&dir.path().join("web"));

    let page = get(&proxy, "GET /console.html HTTP/1.1").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert_eq!(body(&page), PAGE);
    assert_eq!(
        header(&page, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&page, "cache-control"), Some("no-cache"));
    assert!(header(&page, "content-security-policy")
        .is_some_and(|csp| csp.contains("default-src 'self'")));
    assert!(header(&page, "last-modified").is_some_and(|date| date.ends_with(" GMT")));
    let etag = header(&page, "etag").expect("an ETag").to_owned();

    let script = get(&proxy, "GET /novnc/core/rfb.js?v=1 HTTP/1.1").await;
    assert!(script.starts_with("HTTP/1.1 200"), "{script}");
    assert_eq!(body(&script), SCRIPT);
    assert_eq!(
        header(&script, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&script, "content-security-policy"), None);

    // HEAD: the same headers, no body.
    let head = get(&proxy, "HEAD /console.html HTTP/1.1").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(PAGE.len().to_string().as_str())
    );
    assert_eq!(body(&head), "");

    // Revalidation.
    let again = raw_http(
        proxy.addr,
        &format!(
            "GET /console.html HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 304"), "{again}");
    assert_eq!(body(&again), "");

    // The root stands for its index.html; a link inside the root is followed.
    let index = get(&proxy, "GET / HTTP/1.1").await;
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert_eq!(body(&index), PAGE);
    let alias = get(&proxy, "GET /alias.js HTTP/1.1").await;
    assert_eq!(body(&alias), SCRIPT);

    // A browser may keep the connection for the next file.
    let both = raw_http(
        proxy.addr,
        "GET /console.html HTTP/1.1\r\nHost: localhost\r\n\r\nGET /novnc/core/rfb.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(both.matches("HTTP/1.1 200").count(), 2, "{both}");
}

#[tokio::test]
async fn no_listings_no_traversal_no_escapes() {
    let dir = web_root();
    let proxy = proxy_serving(&dir.path().join("web"));
    for path in [
        "/novnc/",
        "/novnc",
        "/missing.html",
        "/../secret.txt",
        "/novnc/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/novnc%2f..%2f..%2fsecret.txt",
        "/.env",
        "/leak.txt",
        "/up/secret.txt",
        "/console.html/x",
    ] {
        let response = get(&proxy, &format!("GET {path} HTTP/1.1")).await;
        assert!(response.starts_with("HTTP/1.1 404"), "{path}: {response}");
        assert!(!response.contains("outside the root"), "{path}");
        assert!(!response.contains("SECRET"), "{path}");
        assert!(!response.contains("rfb.js"), "{path}: no listing");
    }
    let line = proxy.wait_for_log("leads outside WEB_ROOT");
    assert!(line.contains("leak.txt") || line.contains("up"), "{line}");
    proxy.wait_for_log("path has a \"..\" segment");
}

#[tokio::test]
async fn other_methods_get_405_and_tickets_in_plain_gets_are_not_logged() {
    let dir = web_root();
    let proxy = proxy_serving(&dir.path().join("web"));
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let response = get(&proxy, &format!("{method} /console.html HTTP/1.1")).await;
        assert!(response.starts_with("HTTP/1.1 405"), "{method}: {response}");
        assert_eq!(header(&response, "allow"), Some("GET, HEAD"));
    }
    // A ticket pasted without its '#': not a file, and not in the log.
    let echo = EchoServer::start().await;
    let ticket = ticket_for(echo.addr);
    let response = get(&proxy, &format!("GET /{ticket} HTTP/1.1")).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    proxy.wait_for_log("static files: not found");
    assert!(!proxy.logs().contains(&ticket[..64]));
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn upgrades_still_take_their_path_as_the_ticket() {
    let dir = web_root();
    let proxy = proxy_serving(&dir.path().join("web"));
    let echo = EchoServer::start().await;
    let (mut client, _) = ws_connect(proxy.addr, true, &ticket_for(echo.addr), Some("binary"))
        .await
        .unwrap();
    client
        .send(Message::Binary(b"ping".to_vec().into()))
        .await
        .unwrap();
    match client.next().await {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], b"ping"),
        other => panic!("expected the echo, got {other:?}"),
    }
    // A WebSocket to a file's path is a console request with a bad ticket, not a file.
    let refused = ws_connect(proxy.addr, true, "console.html", Some("binary")).await;
    assert_eq!(refusal_code(refused).await, 4403);
}

#[test]
fn bad_web_root_and_ca_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let config = dir.path().join("consolegate.conf");
    std::fs::write(
        &config,
        format!(
            "CERT_FOR_DATA_VERIFICATION={}\nWEB_ROOT={}\nSSL_TARGET_CA={}\nSSL_TARGET_TIMEOUT=soon\n",
            fixture("pki/engine.pem").display(),
            file.display(),
            dir.path().join("missing-ca.pem").display(),
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("SSL_TARGET_TIMEOUT: \"soon\" is not a duration"),
        "{stderr}"
    );

    std::fs::write(
        &config,
        format!(
            "CERT_FOR_DATA_VERIFICATION={}\nWEB_ROOT={}\nSSL_TARGET_CA={}\n",
            fixture("pki/engine.pem").display(),
            file.display(),
            dir.path().join("missing-ca.pem").display(),
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WEB_ROOT:") && stderr.contains("is not a directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SSL_TARGET_CA:") && stderr.contains("missing-ca.pem"),
        "{stderr}"
    );
}
