//! The other ways to name a console, through the running binary: websockify token files
//! (rewritten by a concurrent writer while sessions open), a real HTTP(S) token authority
//! started here (valid, unknown, refused, slow, broken, down), and single-use tickets with
//! the memory store and with a real Redis server shared by two proxy instances. Every mode
//! reaches a real TCP echo server and is held to the target policy; every refusal opens no
//! target connection and logs the credential's fingerprint, never the credential.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::*;
use consolegate::ticket;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Configuration lines for a token mode: no engine certificate, as an operator coming from
/// websockify or OpenStack would write it.
fn token_mode(mode: &str, lines: &str) -> String {
    format!("TARGET_RESOLVER={mode}\nCERT_FOR_DATA_VERIFICATION=\n{lines}")
}

/// Opens a console at `path` (ws://), checks a byte-exact echo, and closes it. A refusal
/// (an HTTP status, or a close frame at once) is an error naming its code.
async fn open_console(proxy: SocketAddr, path: &str) -> Result<(), String> {
    let (mut client, _) = ws_connect(proxy, false, path, Some("binary"))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                format!("refused with HTTP {}", response.status())
            }
            other => other.to_string(),
        })?;
    let payload: Vec<u8> = (0..64u8).collect();
    client
        .send(Message::Binary(payload.clone().into()))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
        Ok(Some(Ok(Message::Binary(data)))) if data[..] == payload[..] => {}
        Ok(Some(Ok(Message::Close(Some(frame))))) => {
            return Err(format!(
                "refused with close {}: {}",
                frame.code, frame.reason
            ))
        }
        other => return Err(format!("no echo: {other:?}")),
    }
    let _ = client.close(None).await;
    Ok(())
}

/// The close code (or HTTP status) of a refused console at `path`, the same over ws:// and
/// wss://.
async fn refused(proxy: SocketAddr, path: &str) -> u16 {
    let plain = refusal_code(ws_connect(proxy, false, path, Some("binary")).await).await;
    let tls = refusal_code(ws_connect(proxy, true, path, Some("binary")).await).await;
    assert_eq!(plain, tls, "{path}");
    plain
}

/// Log lines of refusals.
fn refusal_lines(proxy: &ProxyProcess) -> Vec<String> {
    proxy
        .logs()
        .lines()
        .filter(|line| line.contains("refused: "))
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) for `n` refusal lines: the browser sees its close code before the proxy's
/// log line has been read from its stderr.
fn wait_for_refusals(proxy: &ProxyProcess, n: usize) -> Vec<String> {
    proxy.wait_for_lines("refused: ", n)
}

// ---------------------------------------------------------------------------------------
// Token files

#[tokio::test]
async fn token_file_tokens_from_query_or_path_reach_ipv4_and_ipv6_targets() {
    let echo = EchoServer::start().await;
    let echo6 = EchoServer::start_on("[::1]:0").await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "# written by the engine\n\
             vm-1: 127.0.0.1:{}\n\
             not a valid line\n\
             vm-6: [::1]:{}\n\
             vm-dead: 127.0.0.1:{}\n",
            echo.addr.port(),
            echo6.addr.port(),
            closed_port().port()
        ),
    )
    .unwrap();
    let proxy = ProxyProcess::start(&token_mode(
        "token-file",
        &format!("TOKEN_FILE={}", tokens.display()),
    ));
    proxy.wait_for_log(&format!(
        "{}:3: expected `TOKEN: host:port`",
        tokens.display()
    ));

    open_console(proxy.addr, "websockify?token=vm-1")
        .await
        .unwrap();
    open_console(proxy.addr, "vm-1").await.unwrap();
    open_console(proxy.addr, "?token=vm-6").await.unwrap();
    echo.wait_connections(2).await;
    echo6.wait_connections(1).await;
    let started = proxy.wait_for_log("session started");
    assert!(
        started.contains(&format!("ticket={}", ticket::fingerprint("vm-1"))),
        "sessions name the token's fingerprint: {started}"
    );

    assert_eq!(refused(proxy.addr, "websockify?token=vm-404").await, 4403);
    assert_eq!(refused(proxy.addr, "").await, 4403);
    assert_eq!(refused(proxy.addr, "websockify?token=vm-dead").await, 4502);
    let lines = wait_for_refusals(&proxy, 6);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(
        lines[0].contains("refused: token")
            && lines[0].contains("kind=unknown_token")
            && lines[0].contains(&format!("ticket={}", ticket::fingerprint("vm-404")))
            && lines[0].contains("unknown token: not in token file")
    );
    assert!(lines[2].contains("kind=no_token") && lines[2].contains("ticket=none"));
    assert!(lines[4].contains("refused: target unreachable"));
    assert_eq!(
        echo.connections(),
        2,
        "refused tokens open no target connection"
    );
    let logs = proxy.logs();
    assert!(!logs.contains("vm-404") && !logs.contains("vm-1:") && !logs.contains("vm-6"));
}

#[tokio::test]
async fn check_config_reads_the_token_file_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.d");
    std::fs::create_dir(&tokens).unwrap();
    std::fs::write(tokens.join("a"), "t1: 10.0.0.1:5900\nt2 10.0.0.2:5900\n").unwrap();
    std::fs::write(tokens.join("b"), "t3: 10.0.0.3:99999\n").unwrap();
    let config = dir.path().join("consolegate.conf");
    std::fs::write(
        &config,
        format!(
            "TARGET_RESOLVER=token-file\nTOKEN_FILE={}\n",
            tokens.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("TOKEN_FILE={}", tokens.display())),
        "{stdout}"
    );
    assert!(stdout.contains("TARGET_RESOLVER=token-file"), "{stdout}");
    assert!(
        stderr.contains("/a:2: expected `TOKEN: host:port`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/b:1: the target's port is not a number"),
        "{stderr}"
    );
    assert!(stderr.contains("configuration OK"), "{stderr}");

    // A missing token file stops the proxy before it listens, naming the key.
    std::fs::write(
        &config,
        format!(
            "TARGET_RESOLVER=token-file\nTOKEN_FILE={}\n",
            dir.path().join("missing").display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("TOKEN_FILE: cannot read"), "{stderr}");
}

/// How the writer replaces the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rewrite {
    /// Write a temporary file next to it, then rename it over the table.
    AtomicRename,
    /// Truncate the table and write it again in small pieces, as `>` in a cron script does.
    InPlace,
    /// A directory: one big file rewritten in place, the stable tokens replaced by rename
    /// through a temporary file in the directory itself, one new file per version.
    Directory,
}

const STABLE_TOKENS: usize = 8;
const VERSIONS: usize = 10;

/// Version `k` of the table: many filler tokens leading to a closed port, the fresh tokens of
/// the last three versions, and the stable tokens last, where a half-written file cuts.
fn table(k: usize, echo: SocketAddr, decoy: SocketAddr) -> (String, String, String) {
    let mut filler = format!("# version {k}\n");
    for i in 0..1500 {
        filler.push_str(&format!("filler-{k}-{i:04}: 127.0.0.1:{}\n", decoy.port()));
    }
    let fresh: String = (k.saturating_sub(2)..=k)
        .map(|v| format!("fresh-{v}: 127.0.0.1:{}\n", echo.port()))
        .collect();
    let stable: String = (0..STABLE_TOKENS)
        .map(|i| format!("stable-{i}: 127.0.0.1:{}\n", echo.port()))
        .collect();
    (filler, fresh, stable)
}

/// Writes `text` in place: truncate, then 4 KiB pieces with a pause between them.
fn write_in_place(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    for piece in text.as_bytes().chunks(4096) {
        file.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn write_atomically(path: &Path, temporary: &Path, text: &str) {
    write_in_place(temporary, text);
    std::fs::rename(temporary, path).unwrap();
}

fn write_version(rewrite: Rewrite, source: &Path, k: usize, echo: SocketAddr, decoy: SocketAddr) {
    let (filler, fresh, stable) = table(k, echo, decoy);
    match rewrite {
        Rewrite::AtomicRename => write_atomically(
            source,
            &source.with_extension("new"),
            &[filler, fresh, stable].concat(),
        ),
        Rewrite::InPlace => write_in_place(source, &[filler, fresh, stable].concat()),
        Rewrite::Directory => {
            write_in_place(&source.join("10-filler"), &filler);
            write_atomically(
                &source.join("20-stable"),
                &source.join("tmp.stable"),
                &stable,
            );
            std::fs::write(source.join(format!("30-fresh-{k:03}")), &fresh).unwrap();
            if k >= 3 {
                let _ = std::fs::remove_file(source.join(format!("30-fresh-{:03}", k - 3)));
            }
        }
    }
}

/// Sessions open continuously with tokens valid in every version while a writer replaces
/// the table; right after each version, a session uses that version's new token. None may
/// be refused, and every session must reach the echo server (a half-written line would
/// point at another port).
async fn rewritten_token_file_never_refuses_a_valid_token(rewrite: Rewrite) {
    let echo = EchoServer::start().await;
    let decoy = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let source = match rewrite {
        Rewrite::Directory => {
            let source = dir.path().join("tokens.d");
            std::fs::create_dir(&source).unwrap();
            source
        }
        _ => dir.path().join("tokens"),
    };
    write_version(rewrite, &source, 0, echo.addr, decoy);
    let proxy = ProxyProcess::start(&token_mode(
        "token-file",
        &format!("TOKEN_FILE={}", source.display()),
    ));

    let (published, mut versions) = tokio::sync::watch::channel(0usize);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (source, echo, done) = (source.clone(), echo.addr, done.clone());
        std::thread::spawn(move || {
            for k in 1..=VERSIONS {
                write_version(rewrite, &source, k, echo, decoy);
                let _ = published.send(k);
                std::thread::sleep(Duration::from_millis(300));
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..3 {
        let (done, failures, proxy_addr) = (done.clone(), failures.clone(), proxy.addr);
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut opened = 0usize;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline && opened < 500 {
                let token = format!("stable-{}", (client + opened) % STABLE_TOKENS);
                let path = if opened % 2 == 0 {
                    format!("websockify?token={token}")
                } else {
                    token.clone()
                };
                if let Err(e) = open_console(proxy_addr, &path).await {
                    failures.lock().unwrap().push(format!("{token}: {e}"));
                }
                opened += 1;
            }
            opened
        }));
    }
    let fresh = {
        let (failures, proxy_addr) = (failures.clone(), proxy.addr);
        tokio::spawn(async move {
            let mut opened = 0;
            while opened < VERSIONS {
                let changed =
                    tokio::time::timeout(Duration::from_secs(30), versions.changed()).await;
                if !matches!(changed, Ok(Ok(()))) {
                    break;
                }
                let k = *versions.borrow_and_update();
                let token = format!("fresh-{k}");
                if let Err(e) = open_console(proxy_addr, &format!("websockify?token={token}")).await
                {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{token} right after it was written: {e}"));
                }
                opened += 1;
            }
            opened
        })
    };

    let mut stable_sessions = 0;
    for client in clients {
        stable_sessions += client.await.unwrap();
    }
    let fresh_sessions = fresh.await.unwrap();
    writer.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{rewrite:?}: {failures:#?}\n{}",
        proxy.logs()
    );
    assert!(
        stable_sessions >= 20,
        "{rewrite:?}: only {stable_sessions} sessions"
    );
    assert!(
        fresh_sessions >= VERSIONS - 1,
        "{rewrite:?}: {fresh_sessions} fresh sessions"
    );
    echo.wait_connections(stable_sessions + fresh_sessions)
        .await;
    assert!(
        refusal_lines(&proxy).is_empty(),
        "{:#?}",
        refusal_lines(&proxy)
    );
    let reloads = proxy.logs().matches("token file reloaded").count();
    assert!(reloads >= VERSIONS / 2, "{rewrite:?}: {reloads} reloads");
    assert!(!proxy.logs().contains("keeps changing"), "{}", proxy.logs());

    // Tokens dropped from the table are refused once the last version is loaded.
    assert_eq!(refused(proxy.addr, "websockify?token=fresh-1").await, 4403);
    assert_eq!(
        refused(proxy.addr, "websockify?token=filler-0-0001").await,
        4403
    );
    open_console(proxy.addr, "websockify?token=stable-0")
        .await
        .unwrap();
}

#[tokio::test]
async fn token_file_replaced_atomically_while_sessions_open() {
    rewritten_token_file_never_refuses_a_valid_token(Rewrite::AtomicRename).await;
}

#[tokio::test]
async fn token_file_rewritten_in_place_while_sessions_open() {
    rewritten_token_file_never_refuses_a_valid_token(Rewrite::InPlace).await;
}

#[tokio::test]
async fn token_directory_changing_while_sessions_open() {
    rewritten_token_file_never_refuses_a_valid_token(Rewrite::Directory).await;
}

#[tokio::test]
async fn a_vanished_token_file_keeps_the_last_table() {
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("kept: 127.0.0.1:{}\n", echo.addr.port())).unwrap();
    let proxy = ProxyProcess::start(&token_mode(
        "token-file",
        &format!("TOKEN_FILE={}", tokens.display()),
    ));
    std::fs::remove_file(&tokens).unwrap();
    open_console(proxy.addr, "websockify?token=kept")
        .await
        .unwrap();
    open_console(proxy.addr, "kept").await.unwrap();
    let line = proxy.wait_for_log("token file cannot be read: keeping the previous table");
    assert!(line.contains("tokens=1"), "{line}");
    assert_eq!(
        proxy.logs().matches("token file cannot be read").count(),
        1,
        "the failure is logged once, not per request"
    );
    std::fs::write(&tokens, format!("back: 127.0.0.1:{}\n", echo.addr.port())).unwrap();
    open_console(proxy.addr, "back").await.unwrap();
    proxy.wait_for_log("token file readable again");
    assert_eq!(refused(proxy.addr, "kept").await, 4403);
}

// ---------------------------------------------------------------------------------------
// Token authority

/// A token authority on loopback: `good*` tokens lead to `echo`, `unknown` gets 404,
/// `refused` 403, `slow` answers after 3 s, `broken` 500, `garbage` a 200 that is not JSON.
/// It records every question: token, X-Forwarded-For and Authorization.
struct Authority {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<(String, String, String)>>>,
}

impl Authority {
    async fn start(echo: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Authority {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (record, tls) = (record.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(answer(&request, echo, &record).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Authority { addr, asked }
    }

    fn questions_about(&self, token: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == token)
            .count()
    }
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    echo: SocketAddr,
    asked: &Mutex<Vec<(String, String, String)>>,
) -> Response<Full<Bytes>> {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let token = query.get("token").cloned().unwrap_or_default();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    asked.lock().unwrap().push((
        token.clone(),
        header("x-forwarded-for"),
        header("authorization"),
    ));
    let respond = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::from(body));
        *response.status_mut() = status;
        response
    };
    match token.as_str() {
        t if t.starts_with("good") => respond(
            StatusCode::OK,
            format!(
                r#"{{"host": "127.0.0.1", "port": {}, "note": "ignored"}}"#,
                echo.port()
            ),
        ),
        "unknown" => respond(StatusCode::NOT_FOUND, String::new()),
        "refused" => respond(StatusCode::FORBIDDEN, String::new()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            respond(
                StatusCode::OK,
                format!(r#"{{"host": "127.0.0.1", "port": {}}}"#, echo.port()),
            )
        }
        "garbage" => respond(StatusCode::OK, "<html>hello</html>".into()),
        _ => respond(StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
    }
}

#[tokio::test]
async fn token_authority_valid_unknown_refused_slow_and_broken() {
    let echo = EchoServer::start().await;
    let authority = Authority::start(echo.addr, None).await;
    let proxy = ProxyProcess::start(&token_mode(
        "token-authority",
        &format!(
            "TOKEN_AUTHORITY_URL=http://console:pa%40ss@127.0.0.1:{}/console?realm=test\nTOKEN_AUTHORITY_TIMEOUT=500ms",
            authority.addr.port()
        ),
    ));

    // Valid: twice, one question (a positive answer is cached).
    open_console(proxy.addr, "websockify?token=good-1")
        .await
        .unwrap();
    open_console(proxy.addr, "good-1").await.unwrap();
    assert_eq!(authority.questions_about("good-1"), 1);
    // Each question names the browser, and carries the URL's credentials ("console:pa@ss").
    assert!(authority
        .asked
        .lock()
        .unwrap()
        .iter()
        .all(|(_, forwarded, authorization)| forwarded == "127.0.0.1"
            && authorization == "Basic Y29uc29sZTpwYUBzcw=="));

    // Unknown: refused each time, asked each time (refusals are never cached).
    let cases = [
        ("unknown", 4403, "kind=unknown_token", "answered 404"),
        ("refused", 4403, "kind=authority_refused", "answered 403"),
        (
            "slow",
            4503,
            "kind=authority_timeout",
            "did not answer within 500ms",
        ),
        (
            "broken",
            4503,
            "kind=authority_bad_answer",
            "HTTP status 500",
        ),
        ("garbage", 4503, "kind=authority_bad_answer", "not JSON"),
    ];
    for (case, (token, status, kind, reason)) in cases.into_iter().enumerate() {
        assert_eq!(
            refused(proxy.addr, &format!("websockify?token={token}")).await,
            status,
            "{token}"
        );
        let lines = wait_for_refusals(&proxy, 2 * (case + 1));
        let line = lines
            .iter()
            .rev()
            .find(|line| line.contains(kind))
            .unwrap_or_else(|| panic!("no {kind} line in {lines:#?}"));
        assert!(
            line.contains(reason)
                && line.contains(&format!("ticket={}", ticket::fingerprint(token)))
                && line.contains(&format!(
                    "token authority http://127.0.0.1:{}/console",
                    authority.addr.port()
                )),
            "{line}"
        );
        assert!(
            !line.contains("realm=test"),
            "the URL's query is not logged: {line}"
        );
    }
    assert_eq!(authority.questions_about("unknown"), 2);
    assert_eq!(
        echo.connections(),
        2,
        "refused tokens open no target connection"
    );

    // The browser gets a reason it can act on; the log has the details.
    let (code, reason) =
        refusal(ws_connect(proxy.addr, false, "websockify?token=slow", Some("binary")).await).await;
    assert_eq!(code, 4503);
    assert!(
        reason.starts_with("console authorization is temporarily unavailable - try again")
            && !reason.contains("127.0.0.1"),
        "{reason}"
    );

    // The proxy still serves valid tokens after all that.
    open_console(proxy.addr, "websockify?token=good-2")
        .await
        .unwrap();
    let logs = proxy.logs();
    assert!(
        !logs.contains("pa%40ss") && !logs.contains("pa@ss"),
        "{logs}"
    );
    assert!(
        logs.contains("TOKEN_AUTHORITY_URL=http://console:********@127.0.0.1"),
        "{logs}"
    );
}

#[tokio::test]
async fn token_authority_down_gives_503_and_says_so() {
    let echo = EchoServer::start().await;
    let down = closed_port();
    let proxy = ProxyProcess::start(&token_mode(
        "token-authority",
        &format!("TOKEN_AUTHORITY_URL=http://{down}/check\nTOKEN_AUTHORITY_TIMEOUT=2s"),
    ));
    assert_eq!(refused(proxy.addr, "websockify?token=good-1").await, 4503);
    let line = proxy.wait_for_log("kind=authority_unreachable");
    assert!(
        line.contains("refused: token authority")
            && line.contains(&format!("token authority http://{down}/check unreachable")),
        "{line}"
    );
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn token_authority_over_https_with_its_own_ca() {
    let echo = EchoServer::start().await;
    let pki = fixture("pki");
    let acceptor = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = std::fs::read(pki.join("proxy.pem")).unwrap();
        let key = std::fs::read(pki.join("proxy.key")).unwrap();
        let certs = rustls_pemfile::certs(&mut cert.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    };
    let authority = Authority::start(echo.addr, Some(acceptor)).await;
    let url = format!("https://localhost:{}/check", authority.addr.port());
    let trusted = ProxyProcess::start(&token_mode(
        "token-authority",
        &format!(
            "TOKEN_AUTHORITY_URL={url}\nTOKEN_AUTHORITY_CA={}",
            pki.join("ca.pem").display()
        ),
    ));
    open_console(trusted.addr, "websockify?token=good-tls")
        .await
        .unwrap();

    // Without the CA the authority's certificate is not trusted: unreachable, never asked.
    let untrusted = ProxyProcess::start(&token_mode(
        "token-authority",
        &format!("TOKEN_AUTHORITY_URL={url}\nTOKEN_AUTHORITY_CACHE_TTL=0"),
    ));
    assert_eq!(
        refused(untrusted.addr, "websockify?token=good-other").await,
        4503
    );
    let line = untrusted.wait_for_log("kind=authority_unreachable");
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert_eq!(authority.questions_about("good-other"), 0);
    assert_eq!(echo.connections(), 1);
}

// ---------------------------------------------------------------------------------------
// Single-use tickets

/// The same ticket in another dress: URL-safe base64 without padding. Same signed content,
/// so the same ticket for the replay check.
fn recoded(ticket: &str) -> String {
    let json = base64::engine::general_purpose::STANDARD
        .decode(ticket)
        .unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn single_use_tickets_in_memory_are_accepted_once() {
    let echo = EchoServer::start().await;
    // Refusals as upstream sends them, with an HTTP status before the upgrade.
    let proxy = ProxyProcess::start("TICKET_SINGLE_USE=True\nREFUSE_WITH_HTTP_STATUS=True");
    let ticket = ticket_for(echo.addr);
    open_console(proxy.addr, &ticket).await.unwrap();
    assert_eq!(refused(proxy.addr, &ticket).await, 403);
    let (status, body) =
        refusal(ws_connect(proxy.addr, false, &recoded(&ticket), None).await).await;
    assert_eq!(status, 403);
    assert!(body.starts_with("console ticket already used"), "{body}");
    let line = proxy.wait_for_log("kind=replayed");
    assert!(
        line.contains("refused: single-use ticket")
            && line.contains("ticket already used")
            && line.contains("memory replay store"),
        "{line}"
    );
    assert_eq!(echo.connections(), 1, "a replay opens no target connection");
    // A forged ticket is refused as forged, before the replay store is consulted.
    let mut forged = ticket_for(echo.addr).into_bytes();
    let middle = forged.len() / 2;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(refused(proxy.addr, &forged).await, 403);
    assert!(
        !proxy.logs().contains(&ticket[..32]),
        "tickets never reach the log"
    );

    // A configuration reload (SIGHUP) keeps the record: the ticket is still a replay.
    let fresh = ticket_for(echo.addr);
    open_console(proxy.addr, &fresh).await.unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(refused(proxy.addr, &fresh).await, 403);
    assert_eq!(refused(proxy.addr, &ticket).await, 403);
    open_console(proxy.addr, &ticket_for(echo.addr))
        .await
        .unwrap();
    echo.wait_connections(3).await;
}

/// A Redis server run by the test on a loopback port, with a password and no persistence.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

const REDIS_PASSWORD: &str = "s3cret-redis-pw";

impl RedisServer {
    fn start() -> RedisServer {
        let port = closed_port().port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        server
    }

    /// Starts (again) on the same port, and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--requirepass",
                REDIS_PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): scripts/setup-redis.sh installs it")
            });
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            match pong {
                Ok(pong) if pong == "PONG" => return,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => panic!(
                    "redis-server on port {} does not answer: {other:?}",
                    self.port
                ),
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// Milliseconds the key of every recorded ticket has left, by `PTTL`.
    fn recorded_ttls(&self) -> Vec<i64> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("consolegate:ticket:*")
            .query(&mut connection)
            .unwrap();
        keys.iter()
            .map(|key| redis::cmd("PTTL").arg(key).query(&mut connection).unwrap())
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn single_use_tickets_shared_through_redis_by_two_instances() {
    let echo = EchoServer::start().await;
    let mut redis = RedisServer::start();
    let config = format!(
        "TICKET_SINGLE_USE=True\nREPLAY_STORE=redis\nREDIS_URL={}\nREPLAY_STORE_TIMEOUT=1s",
        redis.url()
    );
    let first = ProxyProcess::start(&config);
    let second = ProxyProcess::start(&config);

    let ticket = ticket_for(echo.addr);
    open_console(first.addr, &ticket).await.unwrap();
    // The ticket's id is in Redis with an expiry: its 2-minute window plus the margin.
    let ttls = redis.recorded_ttls();
    assert_eq!(ttls.len(), 1, "{ttls:?}");
    assert!(ttls[0] > 60_000 && ttls[0] <= 180_000, "{ttls:?}");

    // A replay to the other instance, in any encoding, and to the first: refused.
    assert_eq!(refused(second.addr, &ticket).await, 4403);
    let (code, reason) =
        refusal(ws_connect(second.addr, false, &recoded(&ticket), None).await).await;
    assert_eq!(code, 4403);
    assert!(reason.starts_with("console link already used"), "{reason}");
    assert_eq!(refused(first.addr, &ticket).await, 4403);
    let line = second.wait_for_log("kind=replayed");
    assert!(
        line.contains("ticket already used") && line.contains("redis replay store"),
        "{line}"
    );
    assert_eq!(echo.connections(), 1, "replays open no target connection");

    // Fresh tickets work on either instance.
    open_console(second.addr, &ticket_for(echo.addr))
        .await
        .unwrap();
    open_console(first.addr, &ticket_for(echo.addr))
        .await
        .unwrap();
    assert_eq!(redis.recorded_ttls().len(), 3);

    // Redis down: single-use tickets fail closed, with a 503 and a reason in the log.
    redis.stop();
    let unused = ticket_for(echo.addr);
    assert_eq!(refused(first.addr, &unused).await, 4503);
    let line = first.wait_for_log("kind=replay_store_unavailable");
    assert!(
        line.contains("replay store unavailable, single-use ticket refused")
            && line.contains(&format!("127.0.0.1:{}", redis.port)),
        "{line}"
    );
    first.wait_for_log("replay store unreachable: single-use tickets are refused until it answers");
    assert_eq!(echo.connections(), 3);

    // Back up: the ticket refused while it was down was never recorded, so it works now.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open_console(first.addr, &unused).await {
            Ok(()) => break,
            // Within the reconnect back-off the store still counts as down.
            Err(e) if e.contains("close 4503") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}\n{}", first.logs()),
        }
    }
    first.wait_for_log("replay store reachable again");
    assert_eq!(refused(second.addr, &unused).await, 4403);

    for proxy in [&first, &second] {
        assert!(
            !proxy.logs().contains(REDIS_PASSWORD),
            "the Redis password leaked"
        );
        assert!(!proxy.logs().contains(&ticket[..32]), "a ticket leaked");
    }
    let settings = first.wait_for_log("listening on");
    assert!(
        settings.contains("REPLAY_STORE=redis")
            && settings.contains("REDIS_URL=redis://:********@"),
        "{settings}"
    );
}

#[tokio::test]
async fn a_token_file_path_gets_the_token_fingerprint_not_the_path() {
    // The path form and the query form of one token are one credential in the logs.
    let echo = EchoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens: PathBuf = dir.path().join("tokens");
    std::fs::write(&tokens, format!("same: 127.0.0.1:{}\n", echo.addr.port())).unwrap();
    let proxy = ProxyProcess::start(&token_mode(
        "token-file",
        &format!("TOKEN_FILE={}", tokens.display()),
    ));
    open_console(proxy.addr, "same").await.unwrap();
    open_console(proxy.addr, "websockify?token=same")
        .await
        .unwrap();
    let expected = format!("ticket={}", ticket::fingerprint("same"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.logs().matches("session started").count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started: Vec<String> = proxy
        .logs()
        .lines()
        .filter(|l| l.contains("session started"))
        .map(str::to_owned)
        .collect();
    assert_eq!(started.len(), 2);
    assert!(
        started.iter().all(|l| l.contains(&expected)),
        "{started:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// The target policy holds for every mode

#[tokio::test]
async fn every_mode_is_held_to_the_target_policy() {
    let echo = EchoServer::start().await;
    // The echo server's port is ephemeral, outside the ports this policy allows.
    let policy = "TARGET_ALLOW_PORTS=5900-5999";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("vm-1: 127.0.0.1:{}\n", echo.addr.port())).unwrap();
    let authority = Authority::start(echo.addr, None).await;
    let proxies = [
        ProxyProcess::start(&token_mode(
            "token-file",
            &format!("TOKEN_FILE={}\n{policy}", tokens.display()),
        )),
        ProxyProcess::start(&token_mode(
            "token-authority",
            &format!(
                "TOKEN_AUTHORITY_URL=http://{}/check\n{policy}",
                authority.addr
            ),
        )),
        ProxyProcess::start(&format!("TICKET_SINGLE_USE=True\n{policy}")),
    ];
    let paths = [
        "websockify?token=vm-1".to_owned(),
        "websockify?token=good-1".to_owned(),
        ticket_for(echo.addr),
    ];
    for (proxy, path) in proxies.iter().zip(&paths) {
        let (code, reason) =
            refusal(ws_connect(proxy.addr, false, path, Some("binary")).await).await;
        assert_eq!(code, 4403, "{reason}");
        let line = proxy.wait_for_log("refused: target policy");
        assert!(
            line.contains("TARGET_ALLOW_PORTS") && line.contains("kind="),
            "{line}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        echo.connections(),
        0,
        "a target the policy refuses is never connected"
    );
}
