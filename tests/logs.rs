//! Log output of the running binary: JSON lines, the local syslog socket (this test binds it),
//! and no ticket, token or key in any line of a run with sessions, refusals and admin calls.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;
use consolegate::target::Target;

const TOKEN: &str = "log-test-admin-token-9a8b7c6d";
const WRONG_TOKEN: &str = "log-test-wrong-token-1f2e3d4c";

/// A syslog socket in a temporary directory, collecting what arrives.
struct SyslogSink {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl SyslogSink {
    fn new() -> SyslogSink {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        SyslogSink {
            socket,
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// Every datagram until none arrives for half a second (bounded to 10,000).
    fn drain(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 65536];
        while lines.len() < 10_000 {
            match self.socket.recv(&mut buf) {
                Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        lines
    }
}

/// A session, a forged, an expired and a policy-refused ticket, and admin calls with a good
/// and a wrong token: everything a log line could leak.
async fn exercise(proxy: &ProxyProcess) -> Vec<String> {
    let echo = EchoServer::start().await;
    let good = ticket_for(echo.addr);
    let (mut client, _) = ws_connect(proxy.addr, true, &good, Some("binary"))
        .await
        .unwrap();
    echo_exact(&mut client, b"secret keystrokes").await;
    drop(client);
    let other = signer("other-engine").sign(
        &Target {
            host: "127.0.0.1".into(),
            port: echo.addr.port(),
            ssl_target: false,
        },
        chrono::Utc::now(),
        chrono::TimeDelta::seconds(120),
    );
    let expired = signer("engine").sign(
        &Target {
            host: "127.0.0.1".into(),
            port: echo.addr.port(),
            ssl_target: false,
        },
        chrono::Utc::now() - chrono::TimeDelta::hours(2),
        chrono::TimeDelta::seconds(120),
    );
    let policy = signer("engine").sign(
        &Target {
            host: "127.0.0.1".into(),
            port: 22,
            ssl_target: false,
        },
        chrono::Utc::now(),
        chrono::TimeDelta::seconds(120),
    );
    for ticket in [&other, &expired, &policy] {
        refusal_code(ws_connect(proxy.addr, true, ticket, Some("binary")).await).await;
    }
    let admin = proxy.admin_addr();
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some(WRONG_TOKEN))
            .await
            .0,
        401
    );
    assert_eq!(
        admin_request(admin, "GET", "/sessions", Some(TOKEN))
            .await
            .0,
        200
    );
    proxy.wait_for_lines("refused: ", 3);
    proxy.wait_for_log("session ended");
    proxy.wait_for_log("admin request refused: wrong bearer token");
    vec![good, other, expired, policy]
}

fn key_material() -> Vec<String> {
    let mut lines = Vec::new();
    for key in ["proxy.key", "engine.key"] {
        let pem = std::fs::read_to_string(fixture(&format!("pki/{key}"))).unwrap();
        lines.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_owned),
        );
    }
    assert!(lines.len() > 20);
    lines
}

fn assert_nothing_secret(output: &str, tickets: &[String]) {
    for ticket in tickets {
        assert!(!output.contains(ticket.as_str()), "a ticket is in the logs");
        // Any 24-character piece of a ticket (its signature, its payload).
        for start in (0..ticket.len().saturating_sub(24)).step_by(24) {
            assert!(
                !output.contains(&ticket[start..start + 24]),
                "a piece of a ticket is in the logs: {}",
                &ticket[start..start + 24]
            );
        }
    }
    for secret in [TOKEN, WRONG_TOKEN] {
        assert!(!output.contains(secret), "an admin token is in the logs");
    }
    for line in key_material() {
        assert!(
            !output.contains(&line),
            "private key material is in the logs"
        );
    }
}

#[tokio::test]
async fn json_lines_with_syslog_and_no_secrets_anywhere() {
    let syslog = SyslogSink::new();
    let proxy = ProxyProcess::start(&format!(
        "LOG_FORMAT=json\nLOG_TARGET=both\nLOG_SYSLOG_SOCKET={}\nLOG_SYSLOG_FACILITY=local0\nADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}",
        syslog.path
    ));
    let tickets = exercise(&proxy).await;
    let stderr = proxy.logs();
    let mut ended = None;
    for line in stderr.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if value["message"] == "session ended" {
            ended = Some(value);
        }
    }
    let ended = ended.expect("a session ended line");
    assert_eq!(ended["bytes_to_target"], 17);
    assert_eq!(ended["spans"][0]["name"], "session");
    let refused = stderr
        .lines()
        .find(|l| l.contains("\"kind\":\"bad_signature\""))
        .expect("a refusal line with its kind");
    assert!(refused.contains("\"level\":\"WARN\""), "{refused}");

    let datagrams = syslog.drain();
    let prefix = format!(" consolegate[{}]: {{", proxy.pid());
    assert!(datagrams.len() >= 5, "{datagrams:?}");
    for datagram in &datagrams {
        assert!(
            datagram.starts_with('<') && datagram.contains(&prefix),
            "{datagram}"
        );
    }
    // local0 (16) * 8 + info (6) and + warning (4).
    assert!(datagrams
        .iter()
        .any(|d| d.starts_with("<134>") && d.contains("session ended")));
    assert!(datagrams
        .iter()
        .any(|d| d.starts_with("<132>") && d.contains("bad_signature")));
    assert_nothing_secret(&stderr, &tickets);
    assert_nothing_secret(&datagrams.join("\n"), &tickets);
}

#[tokio::test]
async fn text_lines_to_syslog_and_no_secrets_anywhere() {
    let syslog = SyslogSink::new();
    let proxy = ProxyProcess::start(&format!(
        "LOG_TARGET=both\nLOG_SYSLOG_SOCKET={}\nADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}",
        syslog.path
    ));
    let tickets = exercise(&proxy).await;
    let datagrams = syslog.drain();
    assert!(
        datagrams.iter().any(|d| d.starts_with("<30>")
            && d.contains("session ended")
            && d.contains("bytes_to_target=17")),
        "{datagrams:#?}"
    );
    assert!(datagrams
        .iter()
        .any(|d| d.starts_with("<28>") && d.contains("refused: ticket")));
    assert_nothing_secret(&proxy.logs(), &tickets);
    assert_nothing_secret(&datagrams.join("\n"), &tickets);
}

#[test]
fn syslog_only_leaves_standard_error_empty() {
    let syslog = SyslogSink::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.conf");
    std::fs::write(
        &config,
        format!(
            "PROXY_HOST=127.0.0.1\nPROXY_PORT=0\nCERT_FOR_DATA_VERIFICATION={}\nLOG_TARGET=syslog\nLOG_SYSLOG_SOCKET={}\n",
            fixture("pki/engine.pem").display(),
            syslog.path
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    syslog
        .socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let mut first = String::new();
    for _ in 0..20 {
        let n = syslog
            .socket
            .recv(&mut buf)
            .expect("no syslog line within 20 s");
        first = String::from_utf8_lossy(&buf[..n]).into_owned();
        if first.contains("listening on 127.0.0.1:") {
            break;
        }
    }
    assert!(
        first.starts_with("<30>") && first.contains("listening on 127.0.0.1:"),
        "{first}"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}
