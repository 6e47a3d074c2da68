//! How the load generator reaches a target through each subject under test: straight to the
//! sink (raw loopback), websockify with a token, websocat with one instance per sink
//! behaviour, or consolegate with a signed ticket, over ws:// or wss://.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use consolegate::target::Target;
use consolegate::ticket::TicketSigner;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::sink::{Mode, SinkPorts};
use crate::wire::{Conn, Io, WireError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("tcp connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tls handshake: {0}")]
    Tls(std::io::Error),
    #[error("websocket: {0}")]
    Wire(#[from] WireError),
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pki { path: String, message: String },
}

/// How a subject is reached.
#[derive(Clone)]
pub enum Access {
    /// Straight to the sink: the physical limit of loopback TCP on this machine.
    Raw(SinkPorts),
    /// websockify in token-file mode: `/?token=<mode>`.
    Websockify { addr: SocketAddr, tls: bool },
    /// One websocat per sink behaviour.
    Websocat(Vec<(Mode, SocketAddr)>),
    /// consolegate with a signed ticket in the path.
    Consolegate {
        addr: SocketAddr,
        tls: bool,
        tickets: Arc<TicketPool>,
    },
}

/// What every session opener shares: the TLS client configuration.
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
}

impl Client {
    /// A TLS client trusting only the benchmark CA; session resumption is off, so every wss://
    /// session pays a full handshake (the browser's first visit, the proxy's worst case).
    ///
    /// # Errors
    /// The CA file is unreadable or not PEM.
    pub fn new(ca: &Path) -> Result<Client, SetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = read(ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| SetupError::Pki {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| SetupError::Pki {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    async fn stream(&self, addr: SocketAddr, tls: bool) -> Result<Box<dyn Io>, OpenError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| OpenError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|e| OpenError::Tls(std::io::Error::other(e)))?;
        let stream = self.tls.connect(name, tcp).await.map_err(OpenError::Tls)?;
        Ok(Box::new(stream))
    }

    /// Opens one session to the sink behaviour `mode` through `access`.
    ///
    /// # Errors
    /// Connect, TLS or upgrade failures, with the server's status line for a refusal.
    pub async fn open(&self, access: &Access, mode: Mode, seed: u64) -> Result<Conn, OpenError> {
        match access {
            Access::Raw(ports) => Ok(Conn::raw(self.stream(ports.addr(mode), false).await?, seed)),
            Access::Websockify { addr, tls } => {
                let stream = self.stream(*addr, *tls).await?;
                let path = format!("/?token={}", mode.name());
                Ok(Conn::websocket(stream, "localhost", &path, Some("binary"), seed).await?)
            }
            Access::Websocat(addrs) => {
                let addr = addrs
                    .iter()
                    .find(|(m, _)| *m == mode)
                    .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |(_, a)| *a);
                let stream = self.stream(addr, false).await?;
                Ok(Conn::websocket(stream, "localhost", "/", None, seed).await?)
            }
            Access::Consolegate { addr, tls, tickets } => {
                let stream = self.stream(*addr, *tls).await?;
                let path = format!("/{}", tickets.next(mode));
                Ok(Conn::websocket(stream, "localhost", &path, Some("binary"), seed).await?)
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Tickets signed at the start of the run by the benchmark's engine key, handed out in
/// rotation. Signing one costs the client an RSA private-key operation, far more than the
/// proxy's verification, so they are signed before any timing starts.
pub struct TicketPool {
    by_mode: Vec<(Mode, Vec<String>)>,
    next: AtomicUsize,
}

impl TicketPool {
    /// Signs `per_mode` distinct tickets for each sink behaviour, valid for `lifetime`.
    ///
    /// # Errors
    /// The engine key or certificate cannot be read or used.
    pub fn sign(
        key: &Path,
        cert: &Path,
        sink: SinkPorts,
        per_mode: usize,
        lifetime: TimeDelta,
    ) -> Result<TicketPool, SetupError> {
        let signer =
            TicketSigner::from_pem(&read(key)?, &read(cert)?).map_err(|e| SetupError::Pki {
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
        let valid_from = Utc::now() - TimeDelta::seconds(5);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let by_mode = Mode::ALL
            .iter()
            .map(|&mode| {
                let target = Target {
                    host: "127.0.0.1".into(),
                    port: sink.port(mode),
                    ssl_target: false,
                };
                let tickets: Vec<String> = std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..threads)
                        .map(|t| {
                            let count = per_mode / threads + usize::from(t < per_mode % threads);
                            let (signer, target) = (&signer, &target);
                            scope.spawn(move || {
                                (0..count)
                                    .map(|_| signer.sign(target, valid_from, lifetime))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .flat_map(|w| w.join().unwrap_or_default())
                        .collect()
                });
                (mode, tickets)
            })
            .collect();
        Ok(TicketPool {
            by_mode,
            next: AtomicUsize::new(0),
        })
    }

    /// The next ticket for `mode`, in rotation.
    pub fn next(&self, mode: Mode) -> &str {
        let tickets = self
            .by_mode
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, t)| t.as_slice())
            .unwrap_or_default();
        if tickets.is_empty() {
            return "";
        }
        &tickets[self.next.fetch_add(1, Ordering::Relaxed) % tickets.len()]
    }
}
