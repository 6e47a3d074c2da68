//! VeNCrypt for `ssl_target` sessions (contract section 4). The VNC server wants TLS that
//! noVNC cannot speak, so the proxy speaks it: it reads the server's RFB greeting, and when
//! the server offers exactly VeNCrypt (19) it negotiates VeNCrypt 0.2 with subtype X509VNC
//! (261), runs a TLS client handshake over the socket ([`crate::target_tls`]), tells the
//! browser that the one security type is VNC authentication (2), and hands the relay the TLS
//! stream: the VNC password challenge then goes end to end, encrypted between proxy and host.
//!
//! Anything else the server offers is passed on untouched: every byte read from either side
//! while looking is forwarded, so the relay continues a conversation nobody else noticed.
//!
//! Runs in the session task after the `101`, since it talks RFB to the browser. The whole
//! negotiation is bound by one deadline; a failure names its [`Step`] for the log.
//!
//! ```text
//! server -> proxy -> browser  "RFB 003.008\n"            (forwarded)
//! browser -> proxy -> server  "RFB 003.008\n"            (forwarded)
//! server -> proxy             [1, 19]                    (kept)
//! proxy <-> server            VeNCrypt 0.2, X509VNC, TLS
//! proxy -> browser            [1, 2]                     (made up)
//! browser -> proxy            [2]                        (swallowed)
//! browser <-> TLS <-> server  VNC auth challenge, then the session
//! ```

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::WebSocketStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::target_tls::{self, TargetTls};

/// The only RFB version the proxy negotiates VeNCrypt in; noVNC answers a 3.8 server in kind.
pub const RFB_3_8: &[u8; 12] = b"RFB 003.008\n";
/// RFB security type "VNC authentication": what the browser is told it gets.
pub const SECURITY_VNC_AUTH: u8 = 2;
/// RFB security type VeNCrypt.
pub const SECURITY_VENCRYPT: u8 = 19;
/// VeNCrypt subtype: X.509 TLS, then VNC authentication inside it.
pub const SUBTYPE_X509VNC: u32 = 261;
/// What the browser reads when the proxy cannot set up the encrypted session; the details
/// stay in the proxy's log.
const PUBLIC_FAILURE: &str = "the console proxy could not set up encryption with the VM's host";

/// Where in the negotiation something went wrong: in the log line, and a closed set of labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    ServerVersion,
    BrowserVersion,
    SecurityTypes,
    VencryptVersion,
    VencryptSubtypes,
    VencryptSubtypeAck,
    TlsHandshake,
    BrowserSecurityType,
}

/// Every value of the metrics' `outcome` label: the two successes, then each step's label.
pub const OUTCOMES: &[&str] = &[
    "encrypted",
    "passthrough",
    "server_version",
    "browser_version",
    "security_types",
    "vencrypt_version",
    "vencrypt_subtypes",
    "vencrypt_subtype_ack",
    "tls_handshake",
    "browser_security_type",
];

impl Step {
    /// A stable label for log filters and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Step::ServerVersion => "server_version",
            Step::BrowserVersion => "browser_version",
            Step::SecurityTypes => "security_types",
            Step::VencryptVersion => "vencrypt_version",
            Step::VencryptSubtypes => "vencrypt_subtypes",
            Step::VencryptSubtypeAck => "vencrypt_subtype_ack",
            Step::TlsHandshake => "tls_handshake",
            Step::BrowserSecurityType => "browser_security_type",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::ServerVersion => "reading the VNC server's protocol version",
            Step::BrowserVersion => "reading the browser's protocol version",
            Step::SecurityTypes => "reading the VNC server's security types",
            Step::VencryptVersion => "agreeing on the VeNCrypt version",
            Step::VencryptSubtypes => "choosing the VeNCrypt subtype",
            Step::VencryptSubtypeAck => "reading the VNC server's answer to X509VNC",
            Step::TlsHandshake => "TLS handshake with the VNC server",
            Step::BrowserSecurityType => "reading the browser's security type",
        })
    }
}

/// A failed negotiation: the step, and what happened there.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct NegotiationError {
    pub step: Step,
    pub cause: Cause,
}

#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("no answer within {0:?} (SSL_TARGET_TIMEOUT)")]
    TimedOut(Duration),
    #[error("the VNC server closed the connection")]
    TargetClosed,
    #[error("the VNC server connection failed: {0}")]
    TargetIo(io::Error),
    #[error("the browser closed the connection")]
    BrowserClosed,
    #[error("the browser connection failed: {0}")]
    BrowserIo(String),
    #[error("the browser sent a text frame")]
    BrowserText,
    #[error("the VNC server offers VeNCrypt {major}.{minor}; 0.2 is needed")]
    OldVencrypt { major: u8, minor: u8 },
    #[error("the VNC server refused VeNCrypt 0.2 (status {0})")]
    VersionRefused(u8),
    #[error("the VNC server offers no X509VNC (261) subtype, only {0:?}")]
    NoX509Vnc(Vec<u32>),
    #[error("the VNC server refused X509VNC (answer {0})")]
    SubtypeRefused(u8),
    #[error("{0:?} is not a name a TLS certificate can carry")]
    BadServerName(String),
    #[error("{0}")]
    Tls(io::Error),
    #[error("the browser chose security type {0}, not VNC authentication (2)")]
    BrowserSecurityType(u8),
}

impl NegotiationError {
    /// Whether the browser is gone, so that no close frame needs sending.
    pub fn browser_gone(&self) -> bool {
        matches!(self.cause, Cause::BrowserClosed | Cause::BrowserIo(_))
    }
}

/// Why a session with `ssl_target` is relayed without the proxy's TLS: the server did not
/// ask for VeNCrypt alone, or the browser spoke another RFB version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passthrough {
    ServerVersion(String),
    BrowserVersion(String),
    SecurityTypes(Vec<u8>),
    /// Zero (a refusal whose reason follows) or several types.
    TypeCount(u8),
}

impl fmt::Display for Passthrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Passthrough::ServerVersion(v) => write!(f, "the VNC server greeted with {v:?}"),
            Passthrough::BrowserVersion(v) => write!(f, "the browser answered {v:?}"),
            Passthrough::SecurityTypes(types) => {
                write!(f, "the VNC server offers security types {types:?}")
            }
            Passthrough::TypeCount(0) => f.write_str("the VNC server refuses the connection"),
            Passthrough::TypeCount(n) => write!(f, "the VNC server offers {n} security types"),
        }
    }
}

/// What the browser's stream carried during the negotiation: a resumable session counts
/// these bytes and keeps those it sent, so that offsets after a re-attach match the browser's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Each message sent to the browser, made up or forwarded, in order.
    pub sent: Vec<Bytes>,
    /// Bytes received from the browser and consumed: swallowed or forwarded.
    pub from_browser: u64,
}

impl Tally {
    /// Bytes sent to the browser.
    pub fn to_browser(&self) -> u64 {
        self.sent.iter().map(|m| m.len() as u64).sum()
    }
}

/// What the relay carries once negotiation is over.
pub enum Negotiated<T> {
    /// The browser's RFB stream now goes through this TLS session.
    Encrypted(Box<TlsStream<T>>),
    /// The server asked for something else; everything read so far was forwarded.
    Passthrough(T, Passthrough),
}

/// Runs the negotiation between the browser on `ws` and the VNC server on `target`, which
/// has sent nothing yet, within `timeout`.
///
/// # Errors
/// A [`NegotiationError`]. If it happened while the browser waited for the security types,
/// the browser has been sent an RFB failure with a generic reason; the caller closes the
/// WebSocket (1011).
pub async fn negotiate<S, T>(
    ws: &mut WebSocketStream<S>,
    mut target: T,
    tls: &TargetTls,
    host: &str,
    timeout: Duration,
    tally: &mut Tally,
) -> Result<Negotiated<T>, NegotiationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + timeout;
    let mut link = Link {
        ws,
        pending: BytesMut::new(),
        clock: Clock { deadline, timeout },
        tally,
    };

    let mut version = [0u8; 12];
    link.clock
        .read_target(&mut target, &mut version, Step::ServerVersion)
        .await?;
    link.send_browser(&version, Step::ServerVersion).await?;
    if &version != RFB_3_8 {
        let why = Passthrough::ServerVersion(String::from_utf8_lossy(&version).into_owned());
        return link.passthrough(target, why, Step::ServerVersion).await;
    }

    let answer = link.recv_browser(12, Step::BrowserVersion).await?;
    link.clock
        .to_target(&mut target, &answer, Step::BrowserVersion)
        .await?;
    if answer.as_ref() != RFB_3_8 {
        let why = Passthrough::BrowserVersion(String::from_utf8_lossy(&answer).into_owned());
        return link.passthrough(target, why, Step::BrowserVersion).await;
    }

    // The browser now waits for the security types: when the host cannot be reached
    // securely it is told so, rather than only closed.
    let mut tls_stream = match link.security(target, tls, host).await {
        Ok(Security::Vencrypt(stream)) => stream,
        Ok(Security::Other(target, why)) => {
            return link.passthrough(target, why, Step::SecurityTypes).await
        }
        Err(error) => {
            link.security_failure().await;
            return Err(error);
        }
    };

    link.send_browser(&[1, SECURITY_VNC_AUTH], Step::BrowserSecurityType)
        .await?;
    let choice = link.recv_browser(1, Step::BrowserSecurityType).await?;
    if choice[0] != SECURITY_VNC_AUTH {
        return Err(NegotiationError {
            step: Step::BrowserSecurityType,
            cause: Cause::BrowserSecurityType(choice[0]),
        });
    }
    let rest = link.pending.split().freeze();
    link.clock
        .to_target(&mut tls_stream, &rest, Step::BrowserSecurityType)
        .await?;
    link.tally.from_browser += rest.len() as u64;
    Ok(Negotiated::Encrypted(tls_stream))
}

/// Sends the browser close 1011 after a failed negotiation (unless it is gone) and waits a
/// moment for its reply, so that it sees a clean close with the reason; `reference` (the
/// request id) ties what the user sees to the log line.
pub async fn close_failed<S>(ws: &mut WebSocketStream<S>, error: &NegotiationError, reference: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use hyper_tungstenite::tungstenite::protocol::CloseFrame;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if error.browser_gone() {
            let _ = ws.flush().await;
            return;
        }
        let frame = CloseFrame {
            code: CloseCode::Error,
            reason: format!("VNC encryption negotiation failed (ref {reference})").into(),
        };
        if ws.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        }
    })
    .await;
}

/// How the security types went.
enum Security<T> {
    Vencrypt(Box<TlsStream<T>>),
    /// Not VeNCrypt alone: what the server offered has been forwarded to the browser.
    Other(T, Passthrough),
}

/// Both ends of a negotiation in progress, under one deadline.
struct Link<'a, S> {
    ws: &'a mut WebSocketStream<S>,
    /// Browser bytes received but not yet consumed; forwarded to the target at the end.
    pending: BytesMut,
    clock: Clock,
    tally: &'a mut Tally,
}

/// The negotiation's deadline. Apart from [`Link`] so that target I/O borrows nothing of
/// the WebSocket, whose stream need not be `Sync`.
#[derive(Debug, Clone, Copy)]
struct Clock {
    deadline: Instant,
    timeout: Duration,
}

impl Clock {
    fn timed_out(self, step: Step) -> NegotiationError {
        fail(step, Cause::TimedOut(self.timeout))
    }

    async fn read_target<T: AsyncRead + Unpin>(
        self,
        target: &mut T,
        buf: &mut [u8],
        step: Step,
    ) -> Result<(), NegotiationError> {
        match tokio::time::timeout_at(self.deadline, target.read_exact(buf)).await {
            Err(_) => Err(self.timed_out(step)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Err(fail(step, Cause::TargetClosed))
            }
            Ok(Err(e)) => Err(fail(step, Cause::TargetIo(e))),
            Ok(Ok(_)) => Ok(()),
        }
    }

    async fn to_target<T: AsyncWrite + Unpin>(
        self,
        target: &mut T,
        bytes: &[u8],
        step: Step,
    ) -> Result<(), NegotiationError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let write = async {
            target.write_all(bytes).await?;
            target.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Err(_) => Err(self.timed_out(step)),
            Ok(Err(e)) => Err(fail(step, Cause::TargetIo(e))),
            Ok(Ok(())) => Ok(()),
        }
    }
}

fn fail(step: Step, cause: Cause) -> NegotiationError {
    NegotiationError { step, cause }
}

impl<S> Link<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn send_browser(&mut self, bytes: &[u8], step: Step) -> Result<(), NegotiationError> {
        let bytes = Bytes::copy_from_slice(bytes);
        let message = Message::Binary(bytes.clone());
        match tokio::time::timeout_at(self.clock.deadline, self.ws.send(message)).await {
            Err(_) => Err(self.clock.timed_out(step)),
            Ok(Err(e)) => Err(fail(step, Cause::BrowserIo(e.to_string()))),
            Ok(Ok(())) => {
                self.tally.sent.push(bytes);
                Ok(())
            }
        }
    }

    /// Exactly `n` bytes from the browser's binary messages; the rest stays in `pending`.
    async fn recv_browser(&mut self, n: usize, step: Step) -> Result<Bytes, NegotiationError> {
        while self.pending.len() < n {
            let next = tokio::time::timeout_at(self.clock.deadline, self.ws.next()).await;
            match next {
                Err(_) => return Err(self.clock.timed_out(step)),
                Ok(None | Some(Ok(Message::Close(_)))) => {
                    return Err(fail(step, Cause::BrowserClosed))
                }
                Ok(Some(Ok(Message::Binary(data)))) => self.pending.extend_from_slice(&data),
                Ok(Some(Ok(Message::Text(_)))) => return Err(fail(step, Cause::BrowserText)),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Ok(Some(Err(e))) => return Err(fail(step, Cause::BrowserIo(e.to_string()))),
            }
        }
        self.tally.from_browser += n as u64;
        Ok(self.pending.split_to(n).freeze())
    }

    /// Ends the negotiation without TLS: browser bytes read ahead go on to the target.
    async fn passthrough<T: AsyncWrite + Unpin>(
        &mut self,
        mut target: T,
        why: Passthrough,
        step: Step,
    ) -> Result<Negotiated<T>, NegotiationError> {
        let rest = self.pending.split().freeze();
        self.clock.to_target(&mut target, &rest, step).await?;
        self.tally.from_browser += rest.len() as u64;
        Ok(Negotiated::Passthrough(target, why))
    }

    /// Reads the server's security types; VeNCrypt alone is answered by the proxy, anything
    /// else is forwarded to the browser.
    async fn security<T>(
        &mut self,
        mut target: T,
        tls: &TargetTls,
        host: &str,
    ) -> Result<Security<T>, NegotiationError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut count = [0u8; 1];
        self.clock
            .read_target(&mut target, &mut count, Step::SecurityTypes)
            .await?;
        if count[0] != 1 {
            // Zero is a failure whose reason follows; several may include VeNCrypt, but only
            // a server that insists on it is the contract's case. noVNC deals with the rest.
            self.send_browser(&count, Step::SecurityTypes).await?;
            return Ok(Security::Other(target, Passthrough::TypeCount(count[0])));
        }
        let mut offered = [0u8; 1];
        self.clock
            .read_target(&mut target, &mut offered, Step::SecurityTypes)
            .await?;
        if offered[0] != SECURITY_VENCRYPT {
            self.send_browser(&[1, offered[0]], Step::SecurityTypes)
                .await?;
            return Ok(Security::Other(
                target,
                Passthrough::SecurityTypes(vec![offered[0]]),
            ));
        }
        Ok(Security::Vencrypt(Box::new(
            self.vencrypt(target, tls, host).await?,
        )))
    }

    /// VeNCrypt 0.2 with X509VNC, then the TLS handshake, with a server that offered only 19.
    async fn vencrypt<T>(
        &mut self,
        mut target: T,
        tls: &TargetTls,
        host: &str,
    ) -> Result<TlsStream<T>, NegotiationError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.clock
            .to_target(&mut target, &[SECURITY_VENCRYPT], Step::SecurityTypes)
            .await?;

        let mut version = [0u8; 2];
        self.clock
            .read_target(&mut target, &mut version, Step::VencryptVersion)
            .await?;
        let [major, minor] = version;
        if (major, minor) < (0, 2) {
            return Err(fail(
                Step::VencryptVersion,
                Cause::OldVencrypt { major, minor },
            ));
        }
        self.clock
            .to_target(&mut target, &[0, 2], Step::VencryptVersion)
            .await?;
        let mut status = [0u8; 1];
        self.clock
            .read_target(&mut target, &mut status, Step::VencryptVersion)
            .await?;
        if status[0] != 0 {
            return Err(fail(
                Step::VencryptVersion,
                Cause::VersionRefused(status[0]),
            ));
        }

        let mut count = [0u8; 1];
        self.clock
            .read_target(&mut target, &mut count, Step::VencryptSubtypes)
            .await?;
        let mut listed = vec![0u8; usize::from(count[0]) * 4];
        self.clock
            .read_target(&mut target, &mut listed, Step::VencryptSubtypes)
            .await?;
        let subtypes = parse_subtypes(&listed);
        if !subtypes.contains(&SUBTYPE_X509VNC) {
            return Err(fail(Step::VencryptSubtypes, Cause::NoX509Vnc(subtypes)));
        }
        self.clock
            .to_target(
                &mut target,
                &SUBTYPE_X509VNC.to_be_bytes(),
                Step::VencryptSubtypes,
            )
            .await?;
        let mut ack = [0u8; 1];
        self.clock
            .read_target(&mut target, &mut ack, Step::VencryptSubtypeAck)
            .await?;
        if ack[0] != 1 {
            return Err(fail(
                Step::VencryptSubtypeAck,
                Cause::SubtypeRefused(ack[0]),
            ));
        }

        let name = target_tls::server_name(host)
            .map_err(|_| fail(Step::TlsHandshake, Cause::BadServerName(host.to_owned())))?;
        match tokio::time::timeout_at(self.clock.deadline, tls.connector().connect(name, target))
            .await
        {
            Err(_) => Err(self.clock.timed_out(Step::TlsHandshake)),
            Ok(Err(e)) => Err(fail(Step::TlsHandshake, Cause::Tls(e))),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// Tells a browser waiting for the security types that there are none, with a reason
    /// (RFB 3.8 section 7.1.2), which noVNC shows.
    async fn security_failure(&mut self) {
        let mut message = vec![0u8];
        message.extend_from_slice(&(PUBLIC_FAILURE.len() as u32).to_be_bytes());
        message.extend_from_slice(PUBLIC_FAILURE.as_bytes());
        let message = Bytes::from(message);
        let send = self.ws.send(Message::Binary(message.clone()));
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), send).await {
            self.tally.sent.push(message);
        }
    }
}

/// The big-endian `u32` subtypes of a VeNCrypt 0.2 list.
fn parse_subtypes(listed: &[u8]) -> Vec<u32> {
    listed
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    //! The negotiation between a real WebSocket client (the browser) and a scripted VNC server,
    //! over loopback sockets, with real TLS from the test PKI.

    use std::future::Future;
    use std::path::PathBuf;
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;
    use tokio_tungstenite::{accept_async, client_async};

    use super::*;

    type Ws = WebSocketStream<TcpStream>;

    const TIMEOUT: Duration = Duration::from_secs(5);
    const CHALLENGE: [u8; 16] = *b"0123456789abcdef";
    const RESPONSE: [u8; 16] = *b"fedcba9876543210";

    fn pki(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pki")
            .join(name)
    }

    fn acceptor(name: &str) -> TlsAcceptor {
        let cert_pem = std::fs::read(pki(&format!("{name}.pem"))).unwrap();
        let key_pem = std::fs::read(pki(&format!("{name}.key"))).unwrap();
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// The session relay, unbounded, until either side ends.
    async fn relay<T: AsyncRead + AsyncWrite + Unpin>(ws: Ws, target: T) -> crate::relay::ClosedBy {
        let counters = crate::registry::Counters::default();
        let stop = crate::relay::Stop::default();
        match crate::relay::run(
            ws,
            target,
            Default::default(),
            &stop,
            &counters,
            None,
            Default::default(),
        )
        .await
        {
            crate::relay::Outcome::Closed(stats) => stats.closed_by,
            crate::relay::Outcome::Detached { closed_by, .. } => closed_by,
        }
    }

    fn no_verification() -> TargetTls {
        TargetTls::load(None, true).unwrap()
    }

    /// [`negotiate`] as most tests run it: no certificate check, the test timeout.
    async fn negotiate_in_test(
        ws: &mut Ws,
        target: TcpStream,
        host: &str,
        tally: &mut Tally,
    ) -> Result<Negotiated<TcpStream>, NegotiationError> {
        negotiate(ws, target, &no_verification(), host, TIMEOUT, tally).await
    }

    /// A browser and the proxy's end of its WebSocket, over loopback.
    async fn websocket_pair() -> (Ws, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let browser = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            client_async(format!("ws://{addr}/ticket"), tcp)
                .await
                .unwrap()
                .0
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let proxy_side = accept_async(tcp).await.unwrap();
        (proxy_side, browser.await.unwrap())
    }

    /// A VNC server on loopback running `script` on its one connection; returns the proxy's
    /// connection to it and the script's outcome.
    async fn vnc_server<F, Fut, R>(script: F) -> (TcpStream, tokio::task::JoinHandle<R>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send,
        R: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            script(stream).await
        });
        (TcpStream::connect(addr).await.unwrap(), server)
    }

    async fn read_n<R: AsyncRead + Unpin>(reader: &mut R, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        tokio::time::timeout(TIMEOUT, reader.read_exact(&mut buf))
            .await
            .expect("peer answered in time")
            .unwrap();
        buf
    }

    /// The server side of VeNCrypt up to the subtype answer, as TigerVNC's Xvnc speaks it.
    async fn vencrypt_server_prelude(stream: &mut TcpStream, subtypes: &[u32], ack: u8) {
        stream.write_all(RFB_3_8).await.unwrap();
        assert_eq!(
            read_n(stream, 12).await,
            RFB_3_8,
            "client version forwarded"
        );
        stream.write_all(&[1, SECURITY_VENCRYPT]).await.unwrap();
        assert_eq!(read_n(stream, 1).await, [SECURITY_VENCRYPT]);
        stream.write_all(&[0, 2]).await.unwrap();
        assert_eq!(read_n(stream, 2).await, [0, 2]);
        stream.write_all(&[0]).await.unwrap();
        let mut list = vec![subtypes.len() as u8];
        for subtype in subtypes {
            list.extend_from_slice(&subtype.to_be_bytes());
        }
        stream.write_all(&list).await.unwrap();
        assert_eq!(read_n(stream, 4).await, SUBTYPE_X509VNC.to_be_bytes());
        stream.write_all(&[ack]).await.unwrap();
    }

    /// A VeNCrypt X509VNC server with certificate `cert`: after TLS, VNC authentication with
    /// a fixed challenge, then it echoes. Returns the first bytes it got inside TLS.
    fn x509vnc_server(
        cert: &'static str,
    ) -> impl FnOnce(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = Vec<u8>> + Send>> {
        move |mut stream| {
            Box::pin(async move {
                vencrypt_server_prelude(&mut stream, &[260, SUBTYPE_X509VNC], 1).await;
                let Ok(mut tls) = acceptor(cert).accept(stream).await else {
                    return Vec::new();
                };
                // A test may end once TLS is up: from here on the peer may vanish.
                let mut response = vec![0u8; 16];
                let auth = async {
                    tls.write_all(&CHALLENGE).await?;
                    tls.flush().await?;
                    tls.read_exact(&mut response).await?;
                    tls.write_all(&[0, 0, 0, 0]).await?;
                    tls.flush().await
                };
                if auth.await.is_err() {
                    return Vec::new();
                }
                let (mut rx, mut tx) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
                response
            })
        }
    }

    async fn browser_read(browser: &mut Ws, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(TIMEOUT, browser.next())
                .await
                .expect("proxy answered in time")
            {
                Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
                other => panic!("expected binary data, got {other:?}"),
            }
        }
        assert_eq!(got.len(), n, "no more than asked for: {got:?}");
        got
    }

    fn normal_close() -> hyper_tungstenite::tungstenite::protocol::CloseFrame {
        hyper_tungstenite::tungstenite::protocol::CloseFrame {
            code: hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        }
    }

    async fn browser_send(browser: &mut Ws, bytes: &[u8]) {
        browser
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    #[test]
    fn every_step_has_a_metrics_outcome() {
        for step in [
            Step::ServerVersion,
            Step::BrowserVersion,
            Step::SecurityTypes,
            Step::VencryptVersion,
            Step::VencryptSubtypes,
            Step::VencryptSubtypeAck,
            Step::TlsHandshake,
            Step::BrowserSecurityType,
        ] {
            assert!(OUTCOMES.contains(&step.label()), "{step:?}");
        }
        assert_eq!(OUTCOMES.len(), 2 + 8);
    }

    #[tokio::test]
    async fn x509vnc_is_negotiated_and_vnc_auth_goes_end_to_end() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, server) = vnc_server(x509vnc_server("vnc")).await;
        let proxy = tokio::spawn(async move {
            let mut tally = Tally::default();
            let negotiated =
                negotiate_in_test(&mut proxy_side, target, "127.0.0.1", &mut tally).await;
            let Ok(Negotiated::Encrypted(stream)) = negotiated else {
                panic!("not encrypted");
            };
            let sent: Vec<u8> = tally.sent.iter().flat_map(|m| m.to_vec()).collect();
            assert_eq!(
                sent, b"RFB 003.008\n\x01\x02",
                "the greeting and the made-up types"
            );
            assert_eq!(tally.to_browser(), 14);
            assert_eq!(
                tally.from_browser,
                12 + 1,
                "the version and the swallowed choice"
            );
            relay(proxy_side, stream).await
        });

        assert_eq!(browser_read(&mut browser, 12).await, RFB_3_8);
        browser_send(&mut browser, RFB_3_8).await;
        assert_eq!(browser_read(&mut browser, 2).await, [1, SECURITY_VNC_AUTH]);
        browser_send(&mut browser, &[SECURITY_VNC_AUTH]).await;
        assert_eq!(browser_read(&mut browser, 16).await, CHALLENGE);
        browser_send(&mut browser, &RESPONSE).await;
        assert_eq!(browser_read(&mut browser, 4).await, [0, 0, 0, 0]);
        browser_send(&mut browser, b"ClientInit and more").await;
        assert_eq!(browser_read(&mut browser, 19).await, b"ClientInit and more");
        browser.close(Some(normal_close())).await.unwrap();

        assert_eq!(
            server.await.unwrap(),
            RESPONSE,
            "the choice byte was swallowed"
        );
        let closed_by = tokio::time::timeout(TIMEOUT, proxy).await.unwrap().unwrap();
        assert_eq!(closed_by, crate::relay::ClosedBy::Client(1000));
    }

    #[tokio::test]
    async fn bytes_sent_with_the_choice_reach_the_server() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, server) = vnc_server(x509vnc_server("vnc")).await;
        let proxy = tokio::spawn(async move {
            let negotiated =
                negotiate_in_test(&mut proxy_side, target, "localhost", &mut Tally::default())
                    .await;
            let Ok(Negotiated::Encrypted(stream)) = negotiated else {
                panic!("not encrypted");
            };
            relay(proxy_side, stream).await
        });
        browser_read(&mut browser, 12).await;
        browser_send(&mut browser, RFB_3_8).await;
        browser_read(&mut browser, 2).await;
        browser_read_nothing_more(&mut browser).await;
        let mut choice_and_response = vec![SECURITY_VNC_AUTH];
        choice_and_response.extend_from_slice(&RESPONSE);
        browser_send(&mut browser, &choice_and_response).await;
        assert_eq!(browser_read(&mut browser, 16).await, CHALLENGE);
        assert_eq!(browser_read(&mut browser, 4).await, [0, 0, 0, 0]);
        browser.close(None).await.unwrap();
        assert_eq!(server.await.unwrap(), RESPONSE);
        let _ = proxy.await;
    }

    /// Nothing else arrives for a moment: the proxy says only what it must.
    async fn browser_read_nothing_more(browser: &mut Ws) {
        let next = tokio::time::timeout(Duration::from_millis(100), browser.next()).await;
        assert!(next.is_err(), "unexpected message {next:?}");
    }

    /// What a negotiation through [`negotiate_with`] left behind.
    struct Outcome<R> {
        result: Result<Negotiated<TcpStream>, NegotiationError>,
        /// Everything the browser received after an RFB 3.8 greeting (or the other greeting).
        browser_got: Vec<u8>,
        /// The script, which may still be running (a successful one waits for a client).
        _server: tokio::task::JoinHandle<R>,
        _websockets: (Ws, Ws),
    }

    /// Runs a negotiation against `script` with a browser that behaves as noVNC: it answers
    /// an RFB 3.8 greeting in kind and chooses VNC authentication when offered only that.
    async fn negotiate_with<F, Fut, R>(
        tls: TargetTls,
        host: &'static str,
        timeout: Duration,
        script: F,
    ) -> Outcome<R>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = R> + Send,
        R: Send + 'static,
    {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, server) = vnc_server(script).await;
        let mut proxy = tokio::spawn(async move {
            let result = negotiate(
                &mut proxy_side,
                target,
                &tls,
                host,
                timeout,
                &mut Tally::default(),
            )
            .await;
            (result, proxy_side)
        });
        let mut got = Vec::new();
        let mut greeted = false;
        let (result, proxy_side) = loop {
            tokio::select! {
                done = &mut proxy => break done.unwrap(),
                message = browser.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if !greeted && data.as_ref() == RFB_3_8 {
                            browser_send(&mut browser, RFB_3_8).await;
                        } else {
                            got.extend_from_slice(&data);
                            if data.as_ref() == [1, SECURITY_VNC_AUTH] {
                                browser_send(&mut browser, &[SECURITY_VNC_AUTH]).await;
                            }
                        }
                        greeted = true;
                    }
                    _ => break proxy.await.unwrap(),
                },
            }
        };
        // What the proxy sent just before it returned is already on its way.
        while let Ok(Some(Ok(Message::Binary(data)))) =
            tokio::time::timeout(Duration::from_millis(200), browser.next()).await
        {
            got.extend_from_slice(&data);
        }
        Outcome {
            result,
            browser_got: got,
            _server: server,
            _websockets: (proxy_side, browser),
        }
    }

    /// The reason of the RFB "no security types" failure the browser got.
    fn security_failure_reason(got: &[u8]) -> String {
        assert_eq!(got.first(), Some(&0), "no security types: {got:?}");
        let len = u32::from_be_bytes([got[1], got[2], got[3], got[4]]) as usize;
        assert_eq!(got.len(), 5 + len, "nothing after the reason");
        String::from_utf8(got[5..].to_vec()).unwrap()
    }

    #[tokio::test]
    async fn other_security_types_are_passed_through_untouched() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, server) = vnc_server(|mut stream: TcpStream| async move {
            stream.write_all(RFB_3_8).await.unwrap();
            assert_eq!(read_n(&mut stream, 12).await, RFB_3_8);
            stream.write_all(&[1, SECURITY_VNC_AUTH]).await.unwrap();
            assert_eq!(read_n(&mut stream, 1).await, [SECURITY_VNC_AUTH]);
            stream.write_all(&CHALLENGE).await.unwrap();
            read_n(&mut stream, 16).await
        })
        .await;
        let proxy = tokio::spawn(async move {
            match negotiate_in_test(&mut proxy_side, target, "127.0.0.1", &mut Tally::default())
                .await
            {
                Ok(Negotiated::Passthrough(stream, why)) => {
                    assert_eq!(why, Passthrough::SecurityTypes(vec![SECURITY_VNC_AUTH]));
                    relay(proxy_side, stream).await
                }
                _ => panic!("expected a passthrough"),
            }
        });
        assert_eq!(browser_read(&mut browser, 12).await, RFB_3_8);
        browser_send(&mut browser, RFB_3_8).await;
        assert_eq!(browser_read(&mut browser, 2).await, [1, SECURITY_VNC_AUTH]);
        browser_send(&mut browser, &[SECURITY_VNC_AUTH]).await;
        assert_eq!(browser_read(&mut browser, 16).await, CHALLENGE);
        browser_send(&mut browser, &RESPONSE).await;
        assert_eq!(server.await.unwrap(), RESPONSE);
        let closed_by = tokio::time::timeout(TIMEOUT, proxy).await.unwrap().unwrap();
        assert_eq!(closed_by, crate::relay::ClosedBy::Target);
    }

    #[tokio::test]
    async fn several_types_and_older_versions_are_passed_through() {
        // Several types, VeNCrypt among them: noVNC chooses.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                stream.write_all(RFB_3_8).await.unwrap();
                read_n(&mut stream, 12).await;
                stream
                    .write_all(&[2, SECURITY_VENCRYPT, SECURITY_VNC_AUTH])
                    .await
                    .unwrap();
            },
        )
        .await;
        let Ok(Negotiated::Passthrough(mut stream, why)) = result else {
            panic!("expected a passthrough");
        };
        assert_eq!(why, Passthrough::TypeCount(2));
        assert_eq!(browser_got, [2], "the count was forwarded");
        assert_eq!(
            read_n(&mut stream, 2).await,
            [SECURITY_VENCRYPT, SECURITY_VNC_AUTH],
            "the rest is left for the relay"
        );

        // An RFB 3.3 server: its greeting is forwarded and nothing else is done.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                stream.write_all(b"RFB 003.003\n").await.unwrap();
            },
        )
        .await;
        let Ok(Negotiated::Passthrough(_, why)) = result else {
            panic!("expected a passthrough");
        };
        assert_eq!(why, Passthrough::ServerVersion("RFB 003.003\n".into()));
        assert_eq!(
            browser_got, b"RFB 003.003\n",
            "the greeting and nothing else"
        );
    }

    #[tokio::test]
    async fn a_browser_speaking_another_version_is_passed_through() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, server) = vnc_server(|mut stream: TcpStream| async move {
            stream.write_all(RFB_3_8).await.unwrap();
            read_n(&mut stream, 12).await
        })
        .await;
        let proxy = tokio::spawn(async move {
            negotiate_in_test(&mut proxy_side, target, "127.0.0.1", &mut Tally::default())
                .await
                .map(|n| match n {
                    Negotiated::Passthrough(_, why) => why,
                    Negotiated::Encrypted(_) => panic!("expected a passthrough"),
                })
        });
        browser_read(&mut browser, 12).await;
        browser_send(&mut browser, b"RFB 003.007\n").await;
        assert_eq!(server.await.unwrap(), b"RFB 003.007\n");
        assert_eq!(
            proxy.await.unwrap().unwrap(),
            Passthrough::BrowserVersion("RFB 003.007\n".into())
        );
    }

    #[tokio::test]
    async fn vencrypt_failures_name_their_step_and_tell_the_browser() {
        // VeNCrypt 0.1 only.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                stream.write_all(RFB_3_8).await.unwrap();
                read_n(&mut stream, 12).await;
                stream.write_all(&[1, SECURITY_VENCRYPT]).await.unwrap();
                read_n(&mut stream, 1).await;
                stream.write_all(&[0, 1]).await.unwrap();
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::VencryptVersion);
        assert_eq!(
            error.to_string(),
            "agreeing on the VeNCrypt version: the VNC server offers VeNCrypt 0.1; 0.2 is needed"
        );
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);

        // No X509VNC among the subtypes (only TLSNone and Plain).
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                stream.write_all(RFB_3_8).await.unwrap();
                read_n(&mut stream, 12).await;
                stream.write_all(&[1, SECURITY_VENCRYPT]).await.unwrap();
                read_n(&mut stream, 1).await;
                stream.write_all(&[0, 2]).await.unwrap();
                read_n(&mut stream, 2).await;
                stream
                    .write_all(&[0, 2, 0, 0, 1, 1, 0, 0, 1, 0])
                    .await
                    .unwrap();
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::VencryptSubtypes);
        assert!(
            matches!(&error.cause, Cause::NoX509Vnc(offered) if offered == &[257, 256]),
            "{error}"
        );
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);

        // The server takes back its offer.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                vencrypt_server_prelude(&mut stream, &[SUBTYPE_X509VNC], 0).await;
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::VencryptSubtypeAck);
        assert!(matches!(error.cause, Cause::SubtypeRefused(0)));
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);

        // The server stops speaking once TLS should start.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                vencrypt_server_prelude(&mut stream, &[SUBTYPE_X509VNC], 1).await;
                stream
                    .write_all(b"not a TLS record at all\n")
                    .await
                    .unwrap();
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::TlsHandshake);
        assert!(
            error
                .to_string()
                .starts_with("TLS handshake with the VNC server: "),
            "{error}"
        );
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);
    }

    #[tokio::test]
    async fn certificate_verification_against_a_ca() {
        let ca = pki("ca.pem");
        let verifying = || TargetTls::load(Some(&ca), true).unwrap();

        // A certificate from the configured CA naming the host.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(verifying(), "127.0.0.1", TIMEOUT, x509vnc_server("vnc")).await;
        assert!(
            matches!(result, Ok(Negotiated::Encrypted(_))),
            "{:?}",
            result.err()
        );
        assert_eq!(
            browser_got,
            [1, SECURITY_VNC_AUTH],
            "VNC authentication, made up"
        );

        // From another CA: refused, as the browser is told.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            verifying(),
            "127.0.0.1",
            TIMEOUT,
            x509vnc_server("vnc-other-ca"),
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::TlsHandshake);
        assert!(error.to_string().contains("UnknownIssuer"), "{error}");
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);

        // From the CA, but for another host: refused unless names are not checked.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            verifying(),
            "127.0.0.1",
            TIMEOUT,
            x509vnc_server("vnc-elsewhere"),
        )
        .await;
        let error = result.err().expect("refused");
        assert!(
            error
                .to_string()
                .contains("not valid for name \"127.0.0.1\""),
            "{error}"
        );
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);
        let any_name = TargetTls::load(Some(&ca), false).unwrap();
        assert_eq!(
            *any_name.verification(),
            crate::target_tls::Verification::Chain { ca: ca.clone() }
        );
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            any_name,
            "127.0.0.1",
            TIMEOUT,
            x509vnc_server("vnc-elsewhere"),
        )
        .await;
        assert!(
            matches!(result, Ok(Negotiated::Encrypted(_))),
            "{:?}",
            result.err()
        );
        assert_eq!(
            browser_got,
            [1, SECURITY_VNC_AUTH],
            "VNC authentication, made up"
        );
        let any_name = TargetTls::load(Some(&ca), false).unwrap();
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            any_name,
            "127.0.0.1",
            TIMEOUT,
            x509vnc_server("vnc-other-ca"),
        )
        .await;
        assert!(result
            .err()
            .expect("refused")
            .to_string()
            .contains("UnknownIssuer"));
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);

        // Without a CA, as upstream: any certificate.
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            x509vnc_server("vnc-other-ca"),
        )
        .await;
        assert!(
            matches!(result, Ok(Negotiated::Encrypted(_))),
            "{:?}",
            result.err()
        );
        assert_eq!(
            browser_got,
            [1, SECURITY_VNC_AUTH],
            "VNC authentication, made up"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_at_the_step_it_was_in() {
        let short = Duration::from_millis(300);
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            short,
            |stream: TcpStream| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(stream);
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::ServerVersion);
        assert_eq!(
            error.to_string(),
            "reading the VNC server's protocol version: no answer within 300ms (SSL_TARGET_TIMEOUT)"
        );
        assert!(
            browser_got.is_empty(),
            "no greeting, nothing sent: {browser_got:?}"
        );

        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            short,
            |mut stream: TcpStream| async move {
                vencrypt_server_prelude(&mut stream, &[SUBTYPE_X509VNC], 1).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::TlsHandshake);
        assert!(matches!(error.cause, Cause::TimedOut(_)));
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_is_named() {
        let Outcome {
            result,
            browser_got,
            ..
        } = negotiate_with(
            no_verification(),
            "127.0.0.1",
            TIMEOUT,
            |mut stream: TcpStream| async move {
                stream.write_all(RFB_3_8).await.unwrap();
                read_n(&mut stream, 12).await;
            },
        )
        .await;
        let error = result.err().expect("refused");
        assert_eq!(error.step, Step::SecurityTypes);
        assert!(matches!(error.cause, Cause::TargetClosed));
        assert_eq!(security_failure_reason(&browser_got), PUBLIC_FAILURE);
    }

    #[tokio::test]
    async fn the_browser_must_choose_vnc_authentication() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, _server) = vnc_server(x509vnc_server("vnc")).await;
        let proxy = tokio::spawn(async move {
            negotiate_in_test(&mut proxy_side, target, "127.0.0.1", &mut Tally::default())
                .await
                .err()
        });
        browser_read(&mut browser, 12).await;
        browser_send(&mut browser, RFB_3_8).await;
        browser_read(&mut browser, 2).await;
        browser_send(&mut browser, &[1]).await;
        let error = proxy.await.unwrap().expect("refused");
        assert_eq!(error.step, Step::BrowserSecurityType);
        assert!(matches!(error.cause, Cause::BrowserSecurityType(1)));
        assert!(!error.browser_gone());
    }

    #[tokio::test]
    async fn a_browser_that_leaves_is_named() {
        let (mut proxy_side, mut browser) = websocket_pair().await;
        let (target, _server) = vnc_server(x509vnc_server("vnc")).await;
        let proxy = tokio::spawn(async move {
            negotiate_in_test(&mut proxy_side, target, "127.0.0.1", &mut Tally::default())
                .await
                .err()
        });
        browser_read(&mut browser, 12).await;
        browser.close(None).await.unwrap();
        let error = proxy.await.unwrap().expect("refused");
        assert_eq!(error.step, Step::BrowserVersion);
        assert!(error.browser_gone());
    }
}
