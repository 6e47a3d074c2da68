//! Shared test harness: fixtures, a TCP echo server that counts its connections, the proxy
//! binary run as a real process, and WebSocket clients over plain TCP or rustls.
#![allow(dead_code)]

pub mod xvnc;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use consolegate::target::Target;
use consolegate::ticket::TicketSigner;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

pub fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A time inside every valid vector's window (contract section 8).
pub fn vectors_now() -> DateTime<Utc> {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

pub fn signer(name: &str) -> TicketSigner {
    let key = std::fs::read(fixture(&format!("pki/{name}.key"))).unwrap();
    let cert = std::fs::read(fixture(&format!("pki/{name}.pem"))).unwrap();
    TicketSigner::from_pem(&key, &cert).unwrap()
}

/// A ticket from the test engine key, valid now for two minutes.
pub fn ticket_for(addr: SocketAddr) -> String {
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
        ssl_target: false,
    };
    signer("engine").sign(
        &target,
        Utc::now() - TimeDelta::seconds(5),
        TimeDelta::seconds(120),
    )
}

/// A ticket for `addr` with `ssl_target` as given, valid now for two minutes.
pub fn ticket_for_target(addr: SocketAddr, ssl_target: bool) -> String {
    let target = Target {
        host: addr.ip().to_string(),
        port: addr.port(),
        ssl_target,
    };
    signer("engine").sign(
        &target,
        Utc::now() - TimeDelta::seconds(5),
        TimeDelta::seconds(120),
    )
}

/// A TCP echo server on loopback that counts the connections it accepted.
pub struct EchoServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        EchoServer::start_on("127.0.0.1:0").await
    }

    /// An echo server on a given loopback address, e.g. `[::1]:0`.
    pub async fn start_on(addr: &str) -> EchoServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut rx, mut tx) = stream.split();
                    let _ = tokio::io::copy(&mut rx, &mut tx).await;
                });
            }
        });
        EchoServer { addr, connections }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` connections were accepted: the proxy's connect completes
    /// before this server's accept loop has counted it.
    pub async fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.connections() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.connections(), n);
    }
}

/// A server that accepts, sends `greeting`, then closes: a target that ends the session.
pub async fn closing_server(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(greeting).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

/// An address on loopback where nothing listens.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The proxy binary running as a child process on an ephemeral port.
pub struct ProxyProcess {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Starts `consolegate serve` with TLS on the test PKI plus `extra` configuration lines.
    pub fn start(extra: &str) -> ProxyProcess {
        Self::start_with(extra, None)
    }

    /// Like [`ProxyProcess::start`], with the open-file limit lowered to `max_fds`.
    pub fn start_with(extra: &str, max_fds: Option<u32>) -> ProxyProcess {
        Self::start_full(extra, max_fds, &[])
    }

    /// Like [`ProxyProcess::start`], with extra environment variables.
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_full(extra, None, env)
    }

    fn start_full(extra: &str, max_fds: Option<u32>, env: &[(&str, &str)]) -> ProxyProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("consolegate.conf"), Self::config(extra)).unwrap();
        let mut command = match max_fds {
            None => Command::new(env!("CARGO_BIN_EXE_consolegate")),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_consolegate"));
                sh
            }
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("consolegate.conf"))
            .env(
                "RUST_LOG",
                std::env::var("TEST_PROXY_LOG").unwrap_or("consolegate=debug".into()),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "proxy did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        ProxyProcess {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    fn config(extra: &str) -> String {
        format!(
            "PKI={}\nPROXY_HOST=127.0.0.1\nPROXY_PORT=0\nSSL_CERTIFICATE=${{PKI}}/proxy.pem\nSSL_KEY=${{PKI}}/proxy.key\n\
             CERT_FOR_DATA_VERIFICATION=${{PKI}}/engine.pem\nHANDSHAKE_TIMEOUT=5\nSHUTDOWN_GRACE_PERIOD=10\n{extra}\n",
            fixture("pki").display()
        )
    }

    /// Replaces the configuration file (for a reload): the same base plus `extra`.
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(
            self._dir.path().join("consolegate.conf"),
            Self::config(extra),
        )
        .unwrap();
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until a log line contains `needle`. It blocks its thread: tests whose
    /// own tasks must go on meanwhile (relays, servers) use a multi-threaded runtime.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}; logs:\n{}", self.logs());
    }

    /// The admin listener's address, from its start-up line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin endpoints on http://");
        line.split("admin endpoints on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line}"))
    }

    /// The path of the configuration file, for tests that edit it.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("consolegate.conf")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until `n` log lines contain `needle`, and returns them.
    pub fn wait_for_lines(&self, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit within {within:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Client = WebSocketStream<Box<dyn Io>>;

/// A TLS connector trusting only the test CA.
pub fn tls_connector() -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(fixture("pki/ca.pem")).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens a raw stream to the proxy, TLS or plain.
pub async fn open(addr: SocketAddr, tls: bool) -> Box<dyn Io> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    if tls {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        Box::new(tls_connector().connect(name, tcp).await.unwrap())
    } else {
        Box::new(tcp)
    }
}

/// WebSocket handshake for `/path`, offering `protocols` (comma-separated) if given.
pub async fn ws_connect(
    addr: SocketAddr,
    tls: bool,
    path: &str,
    protocols: Option<&str>,
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://localhost:{}/{path}", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(protocols) = protocols {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).unwrap(),
        );
    }
    let stream = open(addr, tls).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("websocket handshake timed out")
}

/// How a request was refused: an HTTP status and body before the upgrade, or a WebSocket
/// close code (4xxx) and reason right after it.
pub async fn refusal(
    result: Result<(Client, impl Sized), tokio_tungstenite::tungstenite::Error>,
) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok((mut client, _)) => {
            match tokio::time::timeout(Duration::from_secs(10), client.next())
                .await
                .expect("refused socket not closed")
            {
                Some(Ok(Message::Close(Some(frame)))) => {
                    (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => (1005, String::new()),
                other => panic!("expected a close frame at once, got {other:?}"),
            }
        }
    }
}

/// The HTTP status or close code of a refusal.
pub async fn refusal_code(
    result: Result<(Client, impl Sized), tokio_tungstenite::tungstenite::Error>,
) -> u16 {
    refusal(result).await.0
}

/// Sends a raw HTTP request and returns the whole response text.
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A target that writes as fast as it can and counts what the proxy accepted from it.
pub async fn flood_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        if let Ok((mut stream, _)) = listener.accept().await {
            let chunk = vec![0x5au8; 64 * 1024];
            // Bounded: stops after 1 GiB even if nothing pushes back.
            for _ in 0..16 * 1024 {
                match stream.write(&chunk).await {
                    Ok(n) => counter.fetch_add(n, Ordering::SeqCst),
                    Err(_) => break,
                };
            }
        }
    });
    (addr, written)
}

/// A target that reads `first` bytes, then stops reading until `resume` is notified, then
/// reads on; `received` counts every byte it read.
pub async fn stalling_reader(
    first: usize,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let resume = Arc::new(tokio::sync::Notify::new());
    let (counter, go_on) = (received.clone(), resume.clone());
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut stalled = false;
        loop {
            if !stalled && counter.load(Ordering::SeqCst) >= first {
                stalled = true;
                go_on.notified().await;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => counter.fetch_add(n, Ordering::SeqCst),
            };
        }
    });
    (addr, received, resume)
}

/// Resident memory of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One HTTP/1.1 request to the admin listener, with a bearer token if given: status and body.
pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let response = raw_http(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.2, ...), so a
/// test can play several browsers.
pub async fn tcp_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// TLS (trusting the test CA) over an open stream.
pub async fn tls_over(stream: TcpStream) -> Box<dyn Io> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Box::new(tls_connector().connect(name, stream).await.unwrap())
}

/// The WebSocket handshake for `/path` over an open stream, offering `binary`.
pub async fn ws_over(
    stream: Box<dyn Io>,
    tls: bool,
    port: u16,
    path: &str,
) -> Result<
    (
        Client,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://localhost:{port}/{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("websocket handshake timed out")
}

/// Sends `payload` as binary messages of at most 64 KiB and reads it back from an echo
/// target, asserting it arrives byte for byte.
pub async fn echo_exact(client: &mut Client, payload: &[u8]) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for chunk in payload.chunks(64 * 1024) {
        client
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    let mut received = Vec::with_capacity(payload.len());
    while received.len() < payload.len() {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("echo stalled")
        {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(received == payload, "echoed bytes differ");
}

/// Reproducible bytes that are not all alike (xorshift), for byte-exact transfer checks.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Waits (bounded) for the next close frame, skipping other messages.
pub async fn next_close(client: &mut Client) -> (u16, String) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), client.next())
            .await
            .expect("no close frame")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The value of an unlabelled metric, or of one with exactly these labels (`a="b",c="d"`).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// A TCP relay in front of the proxy that can be cut, like a Wi-Fi or VPN blip.
pub struct Blip {
    pub addr: SocketAddr,
    pub cut: tokio_util::sync::CancellationToken,
}

pub async fn blip(proxy: SocketAddr) -> Blip {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = tokio_util::sync::CancellationToken::new();
    let token = cut.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                accepted = listener.accept() => {
                    let Ok((mut browser, _)) = accepted else { return };
                    let token = token.clone();
                    tokio::spawn(async move {
                        let mut upstream = TcpStream::connect(proxy).await.unwrap();
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut browser, &mut upstream) => {}
                            () = token.cancelled() => {
                                // Abrupt: no close frame, and a reset rather than a FIN.
                                let _ = browser.set_zero_linger();
                                let _ = upstream.set_zero_linger();
                            }
                        }
                    });
                }
            }
        }
    });
    Blip { addr, cut }
}
