//! Scale-out: real HAProxy (Debian's package, installed by scripts/setup-ops.sh) running the
//! example configuration in packaging/haproxy/ in front of two consolegate instances. It
//! shows the real browser address reaching logs and per-client limits through PROXY protocol
//! v2, health checks on /readyz, and that stopping one instance sends new sessions to the
//! other while the other's sessions keep relaying byte for byte.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "haproxy-test-admin-token-42";

fn haproxy_binary() -> PathBuf {
    for candidate in [
        "/usr/sbin/haproxy",
        "/usr/bin/haproxy",
        "/usr/local/sbin/haproxy",
    ] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("haproxy is not installed: run scripts/setup-ops.sh (scripts/test.sh does)");
}

/// HAProxy as a child process in the foreground, stopped when dropped.
struct Haproxy {
    child: Child,
    stats: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example configuration with loopback addresses: the frontend's bind, each server's
/// address and admin port. Every option of the example stays as it is.
fn configure(frontend: u16, servers: &[(SocketAddr, SocketAddr)], stats: &Path) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/haproxy/haproxy.cfg"),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut server = 0;
    for line in example.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            // Comments name the example's documentation addresses.
        } else if trimmed == "bind :6100" {
            out.push(format!("    bind 127.0.0.1:{frontend}"));
        } else if trimmed.starts_with("log /dev/log") {
            // No syslog daemon here; HAProxy's own log is not what this test checks.
        } else if trimmed.starts_with("maxconn 40000") {
            // 40,000 connections need some 80,000 descriptors, more than this machine's
            // hard limit lets HAProxy raise itself to.
            out.push("    maxconn 4000".to_owned());
        } else if trimmed == "global" {
            out.push(line.to_owned());
            out.push(format!(
                "    stats socket {} mode 600 level admin",
                stats.display()
            ));
        } else if trimmed.starts_with("server ") {
            let name = trimmed.split_whitespace().nth(1).unwrap();
            let (addr, admin) = servers[server];
            server += 1;
            out.push(format!("    server {name} {addr} port {}", admin.port()));
        } else {
            out.push(line.to_owned());
        }
    }
    assert_eq!(server, servers.len(), "the example has {server} servers");
    let config = out.join("\n") + "\n";
    assert!(!config.contains("192.0.2."), "{config}");
    config
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Haproxy {
    fn start(frontend: u16, servers: &[(SocketAddr, SocketAddr)]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("stats.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, configure(frontend, servers, &stats)).unwrap();
        let check = Command::new(haproxy_binary())
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Haproxy {
            child,
            stats,
            _dir: dir,
        }
    }

    /// `name -> status` (UP, DOWN, ...) for the backend's servers, from the stats socket.
    async fn states(&self) -> Vec<(String, String)> {
        let Ok(mut socket) = tokio::net::UnixStream::connect(&self.stats).await else {
            return Vec::new();
        };
        socket.write_all(b"show stat\n").await.unwrap();
        let mut csv = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut csv)).await;
        csv.lines()
            .filter(|l| l.starts_with("consolegate,consolegate"))
            .filter_map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                Some((fields.get(1)?.to_string(), fields.get(17)?.to_string()))
            })
            .collect()
    }

    /// Waits (bounded) until the servers have these states.
    async fn wait_states(&self, want: &[(&str, &str)]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = self.states().await;
            let matches = want.iter().all(|(name, status)| {
                states
                    .iter()
                    .any(|(n, s)| n == name && s.starts_with(status))
            });
            if matches {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "servers are {states:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A browser at loopback address `source` opening a console through HAProxy.
async fn browser(source: &str, frontend: SocketAddr, path: &str) -> Result<Client, (u16, String)> {
    let stream = tls_over(tcp_from(source, frontend).await).await;
    match ws_over(stream, true, frontend.port(), path).await {
        Ok((mut client, response)) => {
            // A refusal is an upgrade followed at once by a 4xxx close.
            let _ = response;
            match tokio::time::timeout(
                Duration::from_millis(300),
                futures_util::StreamExt::next(&mut client),
            )
            .await
            {
                Err(_) => Ok(client),
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame))))) => {
                    Err((u16::from(frame.code), frame.reason.to_string()))
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        Err(e) => panic!("handshake through haproxy failed: {e}"),
    }
}

async fn sessions(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = admin_request(admin, "GET", "/sessions", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy() {
    let echo = EchoServer::start().await;
    let extra = format!(
        "PROXY_PROTOCOL_TRUSTED=127.0.0.1\nADMIN_LISTEN=127.0.0.1:0\nADMIN_TOKEN={TOKEN}\n\
         MAX_SESSIONS_PER_CLIENT=1\nSHUTDOWN_GRACE_PERIOD=3"
    );
    let mut one = ProxyProcess::start(&extra);
    let two = ProxyProcess::start(&extra);
    let (admin_one, admin_two) = (one.admin_addr(), two.admin_addr());
    let port = free_port();
    let frontend: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let haproxy = Haproxy::start(port, &[(one.addr, admin_one), (two.addr, admin_two)]);
    haproxy
        .wait_states(&[("consolegate1", "UP"), ("consolegate2", "UP")])
        .await;

    // Browser 127.0.0.2 opens two consoles: leastconn puts one on each instance.
    let ticket = || ticket_for(echo.addr);
    let mut a = browser("127.0.0.2", frontend, &ticket()).await.unwrap();
    echo_exact(&mut a, b"console a").await;
    let mut b = browser("127.0.0.2", frontend, &ticket()).await.unwrap();
    echo_exact(&mut b, b"console b").await;
    let (on_one, on_two) = (sessions(admin_one).await, sessions(admin_two).await);
    assert_eq!((on_one.len(), on_two.len()), (1, 1));
    for session in on_one.iter().chain(&on_two) {
        assert!(
            session["client"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.2:"),
            "{session}"
        );
    }
    // A third from the same browser meets its per-client limit on either instance...
    let Err(refused) = browser("127.0.0.2", frontend, &ticket()).await else {
        panic!("a third console from 127.0.0.2 was not refused");
    };
    assert_eq!(refused.0, 4429, "{refused:?}");
    // ...but another browser behind the same HAProxy is not limited by it.
    let mut c = browser("127.0.0.3", frontend, &ticket()).await.unwrap();
    echo_exact(&mut c, b"console c").await;
    // The close code reaches the browser before the log line is read from stderr: wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = format!("{}\n{}", one.logs(), two.logs());
        let complete = logs.contains("refused: limit") && logs.contains("client=127.0.0.3:");
        if complete || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let limit = logs
        .lines()
        .find(|l| l.contains("refused: limit"))
        .expect("a limit refusal");
    assert!(
        limit.contains("127.0.0.2 already has 1 sessions open"),
        "{limit}"
    );
    assert!(
        limit.contains("conn{client=127.0.0.2:") && limit.contains("via=127.0.0.1:"),
        "{limit}"
    );
    assert!(logs.contains("client=127.0.0.3:"));

    // Tell which handle's console is on instance one: send through a and see whose counter
    // moves. Instance one is the one stopped; the other console must not notice.
    echo_exact(&mut a, &pattern(1000, 3)).await;
    let a_on_one = sessions(admin_one).await[0]["bytes_to_target"] == 1009;
    let (mut survivor, mut victim) = if a_on_one { (b, a) } else { (a, b) };
    let survivor_id = sessions(admin_two)
        .await
        .into_iter()
        .find(|s| s["client"].as_str().unwrap().starts_with("127.0.0.2:"))
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let mut sent = sessions(admin_two)
        .await
        .iter()
        .find(|s| s["id"] == survivor_id)
        .unwrap()["bytes_to_target"]
        .as_u64()
        .unwrap();
    let before = pattern(256 * 1024, 11);
    echo_exact(&mut survivor, &before).await;
    sent += before.len() as u64;

    // Stop instance one: it drains (readyz 503), HAProxy marks it down.
    one.signal("TERM");
    haproxy
        .wait_states(&[("consolegate1", "DOWN"), ("consolegate2", "UP")])
        .await;
    // New browsers all land on instance two.
    let mut fresh = Vec::new();
    for source in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
        let mut client = browser(source, frontend, &ticket()).await.unwrap();
        echo_exact(&mut client, source.as_bytes()).await;
        fresh.push(client);
    }
    let on_two = sessions(admin_two).await;
    for source in ["127.0.0.4:", "127.0.0.5:", "127.0.0.6:"] {
        assert!(
            on_two
                .iter()
                .any(|s| s["client"].as_str().unwrap().starts_with(source)),
            "{source} not on instance two: {on_two:?}"
        );
    }
    // The console on instance one is closed when its grace period ends; one exits cleanly.
    assert_eq!(next_close(&mut victim).await.0, 1001);
    assert!(one.wait_exit(Duration::from_secs(20)).success());

    // The surviving console never noticed: more bytes, exact, and counted exactly.
    let after = pattern(512 * 1024, 12);
    echo_exact(&mut survivor, &after).await;
    sent += after.len() as u64;
    let counted = sessions(admin_two)
        .await
        .into_iter()
        .find(|s| s["id"] == survivor_id)
        .unwrap();
    assert_eq!(counted["bytes_to_target"].as_u64().unwrap(), sent);
    assert_eq!(counted["bytes_to_client"].as_u64().unwrap(), sent);
    drop(c);
}
