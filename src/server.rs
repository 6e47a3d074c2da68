//! The listener: accept loop, one task per connection (TLS sniffing and handshake under a
//! deadline, one HTTP request), the console request checks before the upgrade, and the hand-off
//! to [`crate::relay`]. Shutdown stops accepting, lets sessions run for a grace period, then
//! closes them.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustix::net::SocketFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::coalesce::Coalesce;
use crate::config::{ListenHost, Settings};
use crate::connect;
use crate::metrics::Dropped;
use crate::proxy::{Proxy, Shared};
use crate::splice::SharedTcp;
use crate::workers::Workers;
use crate::{proxy_protocol, resume, session};

/// First byte of a TLS record carrying a handshake: how one port tells wss:// from ws://.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Bound on the final wait once sessions have been told to close.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Encrypted bytes rustls may hold for a browser that is not reading (its default is 64 KiB).
/// The gathering layer below it already batches records into one write, so more here only
/// duplicates what that layer and the socket hold: a wss:// browser that stopped reading
/// cost 260 KiB of the proxy's memory with the default, 230 KiB with this, at the same
/// throughput.
const TLS_SEND_BUFFER: usize = 16 * 1024;

/// The listening socket, watched by the accepting thread's event loop. What it accepts is
/// left unregistered there: the worker that serves a connection registers it once, with
/// its own event loop (tokio's `accept` would register it here, only for the hand-over to
/// deregister it again: two wasted system calls per connection).
pub struct Listener(AsyncFd<std::net::TcpListener>);

impl Listener {
    /// Watches `listener` with the current runtime's event loop.
    ///
    /// # Errors
    /// The socket cannot be moved to this event loop.
    pub fn new(listener: TcpListener) -> io::Result<Listener> {
        let listener = listener.into_std()?;
        // SAFETY: a `std::net::TcpListener` owns its descriptor and reports that same one
        // until it is dropped, which happens only with the `AsyncFd`.
        let watched = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }?;
        Ok(Listener(watched))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// The next connection, non-blocking and registered with no event loop yet.
    async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|listener| {
                let (socket, peer) = rustix::net::acceptfrom_with(
                    listener.get_ref(),
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                )?;
                let peer = peer
                    .and_then(|peer| SocketAddr::try_from(peer).ok())
                    .ok_or_else(|| io::Error::other("accepted a peer with no IP address"))?;
                Ok((std::net::TcpStream::from(socket), peer))
            }) {
                return accepted;
            }
        }
    }
}

/// Binds the listening socket the settings describe.
///
/// # Errors
/// The host name does not resolve, or the address cannot be bound.
pub async fn bind(settings: &Settings) -> io::Result<Listener> {
    let port = settings.proxy_port;
    let addr = match &settings.proxy_host {
        ListenHost::Any if settings.source_is_ipv6 => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
        }
        ListenHost::Any => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        ListenHost::Addr(ip) => SocketAddr::new(*ip, port),
        ListenHost::Name(name) => {
            let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect();
            addrs.sort_by_key(|a| a.is_ipv6() != settings.source_is_ipv6);
            addrs.into_iter().next().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name} resolves to no address"),
                )
            })?
        }
    };
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    // Inherited by every accepted browser connection.
    connect::tune(&socket);
    socket.bind(addr)?;
    Listener::new(socket.listen(1024)?)
}

/// Serves connections from `listener`, each on the least busy of `workers`, until `shutdown`
/// completes, then drains.
pub async fn run(
    listener: Listener,
    shared: Arc<Shared>,
    workers: Workers,
    shutdown: impl Future<Output = ()>,
) {
    let tracker = TaskTracker::new();
    let draining = CancellationToken::new();
    let closing = CancellationToken::new();
    let context = Arc::new(Context {
        shared: shared.clone(),
        tracker: tracker.clone(),
        draining: draining.clone(),
        closing: closing.clone(),
        handshakes: AtomicUsize::new(0),
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn_on(adopt(stream, peer, context.clone()), workers.least_busy());
                }
                Err(e) => handle_accept_error(e).await,
            },
        }
    }
    drop(listener);
    draining.cancel();
    tracker.close();
    let grace = shared.current().settings.shutdown_grace_period;
    info!(open_connections = tracker.len(), grace_period = ?grace, "shutting down: no longer accepting");
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        info!(
            open_connections = tracker.len(),
            "grace period over: closing the remaining sessions"
        );
        closing.cancel();
        if tokio::time::timeout(CLOSE_WAIT, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                open_connections = tracker.len(),
                "sessions still open after closing; exiting anyway"
            );
        }
    }
    info!("stopped");
}

/// Accept errors are about one connection or a passing shortage; the loop must survive them.
async fn handle_accept_error(error: io::Error) {
    match error.raw_os_error() {
        // Out of file descriptors or memory: back off instead of spinning.
        // ENFILE, EMFILE, ENOBUFS, ENOMEM.
        Some(code) if [23, 24, 105, 12].contains(&code) => {
            warn!(%error, "accept failed; pausing 100ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        _ => debug!(%error, "accept failed"),
    }
}

struct Context {
    /// The current configuration; each connection takes a snapshot when accepted, so a
    /// reload never changes the rules under a connection already in progress.
    shared: Arc<Shared>,
    tracker: TaskTracker,
    /// Fired when shutdown starts: connections still in their HTTP phase finish and close.
    draining: CancellationToken,
    /// Fired when the grace period ends: relaying sessions close with 1001.
    closing: CancellationToken,
    /// Connections in their TLS or HTTP phase, bounded by `MAX_HANDSHAKES` (per client
    /// address: [`Shared::client_handshakes`]).
    handshakes: AtomicUsize,
}

/// Counts one connection in its handshake phase for as long as it lives.
struct HandshakeSlot<'a>(&'a AtomicUsize);

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Registers an accepted connection with the worker it runs on, then serves it.
async fn adopt(stream: std::net::TcpStream, peer: SocketAddr, context: Arc<Context>) {
    match TcpStream::from_std(stream) {
        Ok(stream) => handle_connection(stream, peer, context).await,
        Err(error) => warn!(%error, client = %peer, "cannot watch an accepted connection"),
    }
}

async fn handle_connection(mut stream: TcpStream, peer: SocketAddr, context: Arc<Context>) {
    let proxy = context.shared.current();
    let settings = &proxy.settings;
    let metrics = &context.shared.metrics;
    let _slot = HandshakeSlot(&context.handshakes);
    let in_handshake = context.handshakes.fetch_add(1, Ordering::Relaxed);
    let mut span = tracing::info_span!("conn", client = %peer);
    span.in_scope(|| debug!(in_handshake, "connection accepted"));
    if in_handshake >= settings.max_handshakes {
        // A flood of connections that never finish must not starve real browsers of
        // descriptors and memory: shed the excess at once.
        metrics.dropped(Dropped::MaxHandshakes);
        return span.in_scope(|| {
            debug!(
                max = settings.max_handshakes,
                "MAX_HANDSHAKES reached; connection closed"
            )
        });
    }
    let deadline = Instant::now() + settings.handshake_timeout;

    // Behind a trusted load balancer the client is whom its PROXY protocol header names:
    // logs, limits and the registry all see that address.
    let mut client = peer;
    if settings.proxy_protocol_trusted.contains(peer.ip()) {
        let header = proxy_protocol::read_header(&mut stream);
        match tokio::time::timeout_at(deadline, header).await {
            Ok(Ok(Some(source))) => {
                client = source;
                span = tracing::info_span!("conn", client = %client, via = %peer);
                span.in_scope(|| debug!("client named by the PROXY protocol header"));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                metrics.dropped(Dropped::ProxyProtocol);
                return warn!(load_balancer = %peer, "connection closed: {e}");
            }
            Err(_) => {
                metrics.dropped(Dropped::ProxyProtocol);
                return warn!(
                    load_balancer = %peer,
                    "connection closed: no PROXY protocol header within HANDSHAKE_TIMEOUT"
                );
            }
        }
    }
    // Counted once the client is known: a load balancer's connections are its clients'.
    let client_handshakes = &context.shared.client_handshakes;
    let Ok(_client_slot) = client_handshakes.try_acquire(client.ip()) else {
        metrics.dropped(Dropped::MaxHandshakesPerClient);
        return span.in_scope(|| {
            debug!(
                max = settings.max_handshakes_per_client,
                "MAX_HANDSHAKES_PER_CLIENT reached for this address; connection closed"
            )
        });
    };
    serve_connection(stream, client, deadline, &context, &proxy)
        .instrument(span)
        .await;
}

/// A connection from `client`, TLS or plain, until its one HTTP request is answered.
async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    deadline: Instant,
    context: &Arc<Context>,
    proxy: &Arc<Proxy>,
) {
    let settings = &proxy.settings;
    let metrics = &context.shared.metrics;
    let first = match tokio::time::timeout_at(deadline, first_byte(&stream)).await {
        Err(_) => {
            metrics.dropped(Dropped::HandshakeTimeout);
            return debug!("no request within HANDSHAKE_TIMEOUT; closed");
        }
        Ok(Err(e)) => return debug!(error = %e, "connection failed before a request"),
        Ok(Ok(None)) => return debug!("connection closed before a request"),
        Ok(Ok(Some(byte))) => byte,
    };

    if first == TLS_HANDSHAKE_RECORD {
        let Some(acceptor) = &proxy.tls else {
            metrics.dropped(Dropped::SchemeRefused);
            return warn!("TLS connection refused: no SSL_CERTIFICATE is configured");
        };
        // Boxed: the TLS states are several times the size of the plain ones, and every
        // connection's task would otherwise be laid out for them.
        Box::pin(serve_tls(
            stream, acceptor, client, deadline, context, proxy,
        ))
        .await;
    } else if settings.ssl_only {
        metrics.dropped(Dropped::SchemeRefused);
        warn!("plain connection refused: SSL_ONLY is set, use wss://");
        refuse_plain(stream).await;
    } else {
        // Shared with the session, which may splice target bytes straight into it.
        let socket = SharedTcp::new(stream);
        let stream = Coalesce::new(socket.clone());
        serve_http(stream, client, Some(socket), deadline, context, proxy).await;
    }
}

/// A connection whose first byte opens a TLS handshake: the handshake, then HTTP over it.
async fn serve_tls(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    client: SocketAddr,
    deadline: Instant,
    context: &Arc<Context>,
    proxy: &Arc<Proxy>,
) {
    let metrics = &context.shared.metrics;
    let started = Instant::now();
    // Under the TLS layer: rustls writes one record per frame, each a system call of its own
    // unless gathered here.
    let stream = Coalesce::new(stream);
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Err(_) => {
            metrics.dropped(Dropped::HandshakeTimeout);
            warn!("TLS handshake not done within HANDSHAKE_TIMEOUT; closed");
        }
        Ok(Err(e)) => {
            metrics.dropped(Dropped::TlsFailed);
            warn!(error = %e, "TLS handshake failed");
        }
        Ok(Ok(mut tls)) => {
            tls.get_mut().1.set_buffer_limit(Some(TLS_SEND_BUFFER));
            metrics.tls_handshake_done(started.elapsed());
            serve_http(tls, client, None, deadline, context, proxy).await;
        }
    }
}

/// Waits until the client has sent something, without consuming it.
async fn first_byte(stream: &TcpStream) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await? {
        0 => Ok(None),
        _ => Ok(Some(byte[0])),
    }
}

async fn refuse_plain(mut stream: TcpStream) {
    let body = "this console proxy accepts only TLS (wss://)\n";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One HTTP/1.1 request per connection: the WebSocket upgrade, or a short refusal.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    plain: Option<SharedTcp>,
    deadline: Instant,
    context: &Arc<Context>,
    proxy: &Arc<Proxy>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (service_context, service_proxy) = (context.clone(), proxy.clone());
    let service = service_fn(move |request| {
        let (context, proxy, plain) = (
            service_context.clone(),
            service_proxy.clone(),
            plain.clone(),
        );
        async move { Ok::<_, Infallible>(handle_request(request, peer, plain, &context, &proxy).await) }
    });
    let header_timeout = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(proxy.settings.max_request_header_size)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = context.draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http connection ended with an error");
    }
}

async fn handle_request(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    socket: Option<SharedTcp>,
    context: &Arc<Context>,
    proxy: &Arc<Proxy>,
) -> Response<Full<Bytes>> {
    let request_id = new_request_id();
    if !hyper_tungstenite::is_upgrade_request(&request) {
        if let Some(web) = &proxy.web {
            return web.serve(&request, &request_id).await;
        }
        debug!(request_id = %request_id, method = %request.method(), "not a websocket request: 405");
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "this is a console proxy: open a console from the portal",
            &request_id,
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    if request.method() != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "websocket upgrades use GET",
            &request_id,
        );
    }

    let console = session::Console {
        request_id: request_id.clone(),
        client: peer,
        plain: socket,
    };
    if session::credential(request.uri()) == resume::PATH {
        let parking = context.shared.parking.clone();
        return match session::accept_resume(&mut request, &console, proxy, parking) {
            Ok((response, attach)) => {
                context.tracker.spawn(attach);
                response
            }
            Err(refusal) => {
                context.shared.metrics.refused(refusal.kind());
                warn!(request_id = %request_id, reason = %refusal, kind = %refusal.kind(), "refused: resume");
                plain(refusal.status(), refusal.public_reason(), &request_id)
            }
        };
    }
    match session::prepare(&mut request, &console, proxy, &context.shared.limits).await {
        Ok((response, session)) => {
            let closing = context.closing.clone();
            context
                .tracker
                .spawn(session.run(closing, context.shared.clone()));
            response
        }
        Err(refusal) => {
            context.shared.metrics.refused(refusal.kind());
            warn!(
                request_id = %request_id,
                ticket = %proxy.resolver.fingerprint(
                    session::credential(request.uri()),
                    request.uri().query()
                ),
                reason = %refusal,
                kind = %refusal.kind(),
                "refused: {}",
                refusal.stage()
            );
            if !proxy.settings.refuse_with_http_status {
                if let Some((response, close)) =
                    session::refuse_after_upgrade(&mut request, &refusal, &request_id, proxy)
                {
                    context.tracker.spawn(close);
                    return response;
                }
            }
            plain(refusal.status(), refusal.public_reason(), &request_id)
        }
    }
}

/// A short, generic refusal: the details are in the log line with the same request id.
fn plain(status: StatusCode, reason: &str, request_id: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(format!("{reason} (request id {request_id})\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
    response
}

/// Eight hex digits that tie a browser's refusal to its log line.
fn new_request_id() -> String {
    let mut bytes = [0u8; 4];
    openssl::rand::rand_bytes(&mut bytes).expect("the system random generator works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
