//! One console session: the checks before the upgrade (subprotocol, target choice, connect)
//! in the order that guarantees a refused request opens no target connection, then the relay
//! and the session's summary line.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::{HeaderMap, Request, Response, Uri};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::{HyperWebsocket, HyperWebsocketStream};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::limits::{Limits, SessionPermit};
use crate::proxy::{Proxy, Shared};
use crate::refusal::Refusal;
use crate::registry::Counters;
use crate::relay::ClosedBy;
use crate::resume::{self, Control, Parking, Reattach, Retained};
use crate::splice::SharedTcp;
use crate::target::{ConsoleRequest, Target};
use crate::vencrypt::{self, Negotiated};
use crate::{connect, relay};

/// How long a refused browser gets to answer the close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who is asking, as the server saw it.
#[derive(Debug, Clone)]
pub struct Console {
    pub request_id: String,
    pub client: SocketAddr,
    /// The browser's socket on a plain (ws://) connection, for zero-copy relaying; `None`
    /// over TLS.
    pub plain: Option<SharedTcp>,
}

impl Console {
    pub fn tls(&self) -> bool {
        self.plain.is_none()
    }
}

/// A session whose target is connected and whose `101` is on its way to the browser.
pub struct Session {
    console: Console,
    credential: String,
    target: Target,
    target_stream: TcpStream,
    websocket: HyperWebsocket,
    options: relay::Options,
    /// Set when the browser speaks `consolegate.v1` and reconnects are enabled.
    resume: Option<ResumeOptions>,
    /// How long resolving and connecting to the target took, for metrics.
    connect_took: Duration,
    /// Holds the session's slot under `MAX_SESSIONS` until the session ends.
    _permit: SessionPermit,
}

#[derive(Debug, Clone, Copy)]
struct ResumeOptions {
    grace: Duration,
    buffer: usize,
}

/// Runs every check and connects to the target; on success returns the `101` response and
/// the session to run once hyper hands over the upgraded connection.
///
/// The order is cheapest first, and nothing touches the network before the ticket and the
/// target policy have both said yes.
///
/// # Errors
/// A [`Refusal`]; no connection to any target is open when it returns one.
pub async fn prepare(
    request: &mut Request<Incoming>,
    console: &Console,
    proxy: &Arc<Proxy>,
    limits: &Arc<Limits>,
) -> Result<(Response<Full<Bytes>>, Session), Refusal> {
    let settings = &proxy.settings;
    let protocol = choose_subprotocol(request, settings.reconnect_grace_period.is_some())?;
    check_origin(request, &settings.allowed_origins)?;
    let permit = limits.try_acquire(console.client.ip())?;

    let path = credential(request.uri());
    let credential = proxy.resolver.fingerprint(path, request.uri().query());
    let console_request = ConsoleRequest {
        path,
        query: request.uri().query(),
        client: console.client,
        now: Utc::now(),
    };
    let target = proxy.resolver.resolve(&console_request).await?;

    let policy = &settings.target_policy;
    policy.check_before_resolution(&target)?;
    let timeout = settings.target_connect_timeout;
    let connecting = Instant::now();
    let deadline = connecting + timeout;
    let resolved = connect::resolve(&target, deadline, timeout).await?;
    let allowed = policy.allowed_addresses(&target, &resolved)?;
    let target_stream = connect::connect_any(&target, &allowed, deadline, timeout).await?;
    let connect_took = connecting.elapsed();

    let (response, websocket) = upgrade(request, protocol, proxy.ws_config)?;
    let options = relay::Options {
        idle_timeout: settings.session_idle_timeout,
        max_duration: settings.session_max_duration,
        heartbeat_interval: settings.heartbeat_interval,
        heartbeat_timeout: settings.heartbeat_timeout,
    };
    let resume = settings
        .reconnect_grace_period
        .filter(|_| protocol == Some(resume::PROTOCOL))
        .map(|grace| ResumeOptions {
            grace,
            buffer: settings.reconnect_buffer_size,
        });
    let session = Session {
        console: console.clone(),
        credential,
        target,
        target_stream,
        websocket,
        options,
        resume,
        connect_took,
        _permit: permit,
    };
    Ok((response, session))
}

/// Delivers a refusal inside the WebSocket: upgrade, then close at once with the refusal's
/// 4xxx code and a reason the user can act on, carrying the request id of the log line.
/// A browser shows a close reason only for a socket that opened; an HTTP error before the
/// upgrade reaches noVNC as a bare 1006 (novnc/noVNC#1145). Returns `None` when the
/// request cannot be upgraded; the caller then answers with the HTTP status.
pub fn refuse_after_upgrade(
    request: &mut Request<Incoming>,
    refusal: &Refusal,
    request_id: &str,
    proxy: &Proxy,
) -> Option<(
    Response<Full<Bytes>>,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let code = refusal.close_code()?;
    let reconnects = proxy.settings.reconnect_grace_period.is_some();
    let protocol = choose_subprotocol(request, reconnects).ok()?;
    let (response, websocket) = upgrade(request, protocol, proxy.ws_config).ok()?;
    let reason = format!("{} (ref {request_id})", refusal.user_message());
    let close = async move {
        if let Ok(websocket) = websocket.await {
            close_with(websocket, code, reason).await;
        }
    };
    Some((response, close))
}

/// Closes with `code` and `reason`, and waits (bounded) for the browser's reply.
async fn close_with(mut websocket: HyperWebsocketStream, code: u16, reason: String) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        if websocket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(message)) = websocket.next().await {
                if message.is_close() {
                    break;
                }
            }
        }
    })
    .await;
}

/// A browser re-attaching to a parked session: upgrade, read its resume message, and hand
/// it to the session filed under its secret; anything else is refused like a bad ticket.
pub fn accept_resume(
    request: &mut Request<Incoming>,
    console: &Console,
    proxy: &Proxy,
    parking: Arc<Parking>,
) -> Result<
    (
        Response<Full<Bytes>>,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    Refusal,
> {
    if proxy.settings.reconnect_grace_period.is_none() {
        return Err(Refusal::Handshake(
            "reconnects are not enabled (RECONNECT_GRACE_PERIOD)".into(),
        ));
    }
    check_origin(request, &proxy.settings.allowed_origins)?;
    match choose_subprotocol(request, true)? {
        Some(resume::PROTOCOL) => {}
        _ => {
            return Err(Refusal::Handshake(format!(
                "{} needs subprotocol {}",
                resume::PATH,
                resume::PROTOCOL
            )))
        }
    }
    let (response, websocket) = upgrade(request, Some(resume::PROTOCOL), proxy.ws_config)?;
    let console = console.clone();
    let wait = proxy.settings.handshake_timeout;
    let attach = async move {
        let Ok(mut websocket) = websocket.await else {
            return;
        };
        let first = tokio::time::timeout(wait, websocket.next()).await;
        let request = match first {
            Ok(Some(Ok(Message::Text(text)))) => resume::Control::parse(&text),
            _ => None,
        };
        let refuse = |why: &str| {
            warn!(request_id = %console.request_id, client = %console.client, reason = why, kind = "bad_resume", "refused: resume");
            let reason = format!("console session cannot be resumed - open the console again from the portal (ref {})", console.request_id);
            (4403, reason)
        };
        let (code, reason) = match request {
            Some(resume::Control::Resume { secret, received }) => {
                let reattach = Box::new(Reattach {
                    websocket,
                    received,
                    client: console.client,
                    request_id: console.request_id.clone(),
                });
                match parking.reattach(&secret, reattach) {
                    Ok(()) => return,
                    Err(back) => {
                        websocket = back.websocket;
                        refuse("no session waits under this resume secret (wrong, used or expired)")
                    }
                }
            }
            _ => refuse("no resume message"),
        };
        close_with(websocket, code, reason).await;
    };
    Ok((response, attach))
}

/// With an allow-list, the browser's `Origin` must be on it; browsers always send one on
/// WebSocket requests, so a missing header is refused too.
fn check_origin<B>(request: &Request<B>, allowed: &[String]) -> Result<(), Refusal> {
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = request
        .headers()
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_end_matches('/').to_ascii_lowercase());
    match origin {
        Some(origin) if allowed.contains(&origin) => Ok(()),
        // Bounded for the log line: a refused header may be as long as the request head.
        origin => Err(Refusal::Origin {
            origin: origin.map(|o| o.chars().take(100).collect()),
        }),
    }
}

impl Session {
    /// Relays until the session ends, then logs the summary line. The session is in the
    /// registry while it runs; a resumable one whose browser vanishes waits for it to come
    /// back before it ends.
    ///
    /// An idle console's memory is mostly this future, so it is kept small: not an `async
    /// fn` (which would hold `self` a second time beside `relay`'s state), and the rare
    /// steps (VeNCrypt, re-attaching, refusing a late browser) are boxed rather than laid
    /// out inside it.
    pub fn run(
        self,
        closing: CancellationToken,
        shared: Arc<Shared>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // A root span: the session outlives the handshake's connection span it starts in.
        let span = tracing::info_span!(parent: None, "session", request_id = %self.console.request_id, target = %self.target);
        self.relay(closing, shared).instrument(span)
    }

    // An async block rather than an `async fn`, and fields used in place: an `async fn`
    // moves its arguments into locals (two copies for the task's whole life), and so would
    // destructuring.
    #[allow(clippy::manual_async_fn)]
    fn relay(
        self,
        closing: CancellationToken,
        shared: Arc<Shared>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            let console = &self.console;
            shared.metrics.target_connected(self.connect_took);
            let websocket = match self.websocket.await {
                Ok(websocket) => websocket,
                Err(e) => return warn!(reason = %e, "websocket upgrade failed"),
            };
            let scheme = if console.tls() { "wss" } else { "ws" };
            info!(client = %console.client, ticket = %self.credential, scheme, ssl_target = self.target.ssl_target, resumable = self.resume.is_some(), "session started");
            let started = Instant::now();
            let registered =
                shared
                    .registry
                    .register(&console.request_id, console.client, &self.target);
            let counters = &registered.info.counters;
            let stop = relay::Stop {
                shutdown: closing,
                admin: registered.info.close.clone(),
                detach: CancellationToken::new(),
            };
            // Boxed: most sessions are not resumable and should not carry room for it.
            let resume = self.resume.map(|options| {
                let (secret, key) = resume::new_secret();
                Box::new(Resumable {
                    grace: options.grace,
                    secret,
                    key,
                    retained: Retained::new(options.buffer),
                })
            });
            // The streams are moved into each step and back out, never borrowed across it, so
            // the task holds them once.
            let websocket = match resume.as_deref() {
                Some(resumable) => {
                    let hello = Control::Session {
                        secret: resumable.secret.clone(),
                        grace_secs: resumable.grace.as_secs(),
                        heartbeat_secs: self
                            .options
                            .heartbeat_interval
                            .map_or(0, |every| every.as_secs_f64().ceil() as u64),
                    };
                    match send_text(websocket, hello.to_text()).await {
                        Some(websocket) => websocket,
                        None => return warn!("browser gone before the session started"),
                    }
                }
                None => websocket,
            };
            let retained = resume.as_deref().map(|r| &r.retained);
            let (websocket, secured) = if self.target.ssl_target {
                Box::pin(secure_target(
                    websocket,
                    self.target_stream,
                    &self.target,
                    &shared,
                    counters,
                    retained,
                    &console.request_id,
                ))
                .await
            } else {
                (
                    websocket,
                    Ok(Either::Right(SharedTcp::new(self.target_stream))),
                )
            };
            let relaying = Relaying {
                console,
                options: self.options,
                stop: &stop,
                counters,
            };
            let closed_by = match (secured, resume.as_deref()) {
                (Err(closed_by), _) => closed_by,
                (Ok(target_stream), None) => relaying.once(websocket, target_stream).await,
                (Ok(target_stream), Some(resumable)) => {
                    Box::pin(relaying.resumable(
                        websocket,
                        target_stream,
                        resumable,
                        &shared.parking,
                    ))
                    .await
                }
            };
            info!(
                client = %console.client,
                bytes_to_target = counters.to_target(),
                bytes_to_client = counters.to_client(),
                duration = ?started.elapsed(),
                %closed_by,
                "session ended"
            );
            shared.metrics.session_ended(started.elapsed());
            // Named so the block owns it (it captures only the fields it uses): the slot
            // under MAX_SESSIONS is held until here.
            drop(self._permit);
        }
    }
}

/// Sends one text message, handing the stream back unless the browser is gone.
async fn send_text(
    mut websocket: HyperWebsocketStream,
    text: String,
) -> Option<HyperWebsocketStream> {
    websocket.send(Message::Text(text.into())).await.ok()?;
    Some(websocket)
}

/// The connection to the target as the relay carries it: the proxy's TLS session after
/// VeNCrypt, or the plain socket.
type TargetStream = Either<Box<TlsStream<TcpStream>>, SharedTcp>;

/// A resumable session's state: the secret its browser re-attaches with (and the hash it
/// is filed under) and the stream bytes kept until the browser acknowledges them.
struct Resumable {
    grace: Duration,
    secret: String,
    key: [u8; 32],
    retained: Retained,
}

/// What relaying a session needs besides its two streams.
struct Relaying<'a> {
    console: &'a Console,
    options: relay::Options,
    stop: &'a relay::Stop,
    counters: &'a Counters,
}

impl Relaying<'_> {
    /// The plain sockets under the streams, for zero-copy relaying and idle waits.
    fn sockets(&self, target: &TargetStream) -> relay::Sockets {
        relay::Sockets {
            browser: self.console.plain.clone(),
            target: match target {
                Either::Right(target) => Some(target.clone()),
                Either::Left(_) => None,
            },
        }
    }

    /// A session that cannot resume: one relay, from start to end. (Not an `async fn`,
    /// which would hold both streams a second time beside the relay's own.)
    fn once(
        &self,
        websocket: HyperWebsocketStream,
        target: TargetStream,
    ) -> impl std::future::Future<Output = ClosedBy> + Send + '_ {
        let sockets = self.sockets(&target);
        relay::run(
            websocket,
            target,
            self.options,
            self.stop,
            self.counters,
            None,
            sockets,
        )
        .map(|outcome| match outcome {
            relay::Outcome::Closed(stats) => stats.closed_by,
            // Only a session with retained bytes detaches.
            relay::Outcome::Detached { closed_by, .. } => closed_by,
        })
    }

    /// A resumable session: relays, and when the browser's connection is lost keeps the
    /// target for the grace period, continuing on whichever connection re-attaches.
    async fn resumable(
        &self,
        mut websocket: HyperWebsocketStream,
        mut target_stream: TargetStream,
        resumable: &Resumable,
        parking: &Parking,
    ) -> ClosedBy {
        let (grace, retained) = (resumable.grace, &resumable.retained);
        // The hash of the secret the browser holds now: each re-attach hands it a new one.
        let mut key = resumable.key;
        loop {
            // Filed while relaying too: a browser that noticed the drop before the proxy did
            // (or gave up on a silent connection) re-attaches at once, and this connection is
            // let go.
            let mut back = Some(parking.park(key));
            let relay_stop = relay::Stop {
                detach: CancellationToken::new(),
                ..self.stop.clone()
            };
            let sockets = self.sockets(&target_stream);
            let relay = relay::run(
                websocket,
                target_stream,
                self.options,
                &relay_stop,
                self.counters,
                Some(retained),
                sockets,
            );
            tokio::pin!(relay);
            let mut early = None;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut relay => break outcome,
                    got = reattached(&mut back), if back.is_some() => {
                        if got.is_some() {
                            early = got;
                            relay_stop.detach.cancel();
                        }
                    }
                }
            };
            let (closed_by, mut parked_target) = match outcome {
                relay::Outcome::Closed(stats) => {
                    parking.unpark(&key);
                    if let Some(late) = early {
                        let (code, reason) = websocket_refusal(&late.request_id);
                        close_with(late.websocket, code, reason).await;
                    }
                    return stats.closed_by;
                }
                relay::Outcome::Detached { closed_by, target } => (closed_by, target),
            };
            let reattach = match early {
                Some(reattach) => {
                    info!(client = %reattach.client, "browser re-attached before its old connection was noticed gone; letting that one go");
                    Some(reattach)
                }
                None => {
                    info!(reason = %closed_by, ?grace, "browser connection lost; keeping the console for a re-attach");
                    tokio::select! {
                        back = tokio::time::timeout(grace, reattached(&mut back)) => back.ok().flatten(),
                        () = self.stop.shutdown.cancelled() => None,
                        () = self.stop.admin.cancelled() => None,
                    }
                }
            };
            parking.unpark(&key);
            let Some(reattach) = reattach else {
                let _ = parked_target.shutdown().await;
                return ClosedBy::ClientGone(format!(
                    "{closed_by}; not back within RECONNECT_GRACE_PERIOD"
                ));
            };
            match continue_stream(reattach, retained, self.counters).await {
                Ok((new_websocket, new_key, client)) => {
                    info!(%client, "browser re-attached; session continues");
                    websocket = new_websocket;
                    key = new_key;
                    target_stream = parked_target;
                }
                Err(why) => {
                    warn!(reason = %why, "re-attach refused: the stream cannot continue");
                    let _ = parked_target.shutdown().await;
                    return ClosedBy::ClientGone(format!("{closed_by}; re-attach failed: {why}"));
                }
            }
        }
    }
}

/// The browser that re-attached under the session's secret, if it did; `back` is spent
/// afterwards, so that a finished receiver is never polled again.
async fn reattached(back: &mut Option<oneshot::Receiver<Box<Reattach>>>) -> Option<Box<Reattach>> {
    let got = back.as_mut()?.await.ok();
    *back = None;
    got
}

/// The stream the relay carries to an `ssl_target` ticket's target: whatever
/// [`vencrypt::negotiate`] made of the connection (the proxy's TLS session, or the plain
/// socket when the server did not insist on VeNCrypt). Bytes the
/// browser exchanged during the negotiation count as stream bytes, and those sent to it are
/// retained like relayed ones, so that a resumed session's offsets match the browser's.
///
/// # Errors
/// The negotiation failed: the browser has been closed with 1011 and the reason logged.
async fn secure_target(
    mut websocket: HyperWebsocketStream,
    target_stream: TcpStream,
    target: &Target,
    shared: &Shared,
    counters: &Counters,
    retained: Option<&Retained>,
    request_id: &str,
) -> (HyperWebsocketStream, Result<TargetStream, ClosedBy>) {
    let proxy = shared.current();
    let metrics = &shared.metrics;
    let mut tally = vencrypt::Tally::default();
    let negotiation = vencrypt::negotiate(
        &mut websocket,
        target_stream,
        &proxy.target_tls,
        &target.host,
        proxy.settings.ssl_target_timeout,
        &mut tally,
    )
    .await;
    counters
        .to_client
        .fetch_add(tally.to_browser(), Ordering::Relaxed);
    counters
        .to_target
        .fetch_add(tally.from_browser, Ordering::Relaxed);
    if let Some(retained) = retained {
        for message in tally.sent {
            retained.keep(message);
        }
    }
    let secured = match negotiation {
        Ok(Negotiated::Encrypted(tls)) => {
            metrics.vencrypt("encrypted");
            info!(verification = %proxy.target_tls.verification(), "VeNCrypt X509VNC negotiated: encrypted to the VNC server");
            Ok(Either::Left(tls))
        }
        Ok(Negotiated::Passthrough(tcp, why)) => {
            metrics.vencrypt("passthrough");
            info!("ssl_target relayed as is, not encrypted by the proxy: {why}");
            Ok(Either::Right(SharedTcp::new(tcp)))
        }
        Err(e) => {
            metrics.vencrypt(e.step.label());
            warn!(step = e.step.label(), "VeNCrypt negotiation failed: {e}");
            vencrypt::close_failed(&mut websocket, &e, request_id).await;
            Err(ClosedBy::Negotiation(e.step.label()))
        }
    };
    (websocket, secured)
}

/// Picks up the stream where the browser lost it: a new secret, how much of the browser's
/// stream the target got, and the bytes the browser missed.
async fn continue_stream(
    reattach: Box<Reattach>,
    retained: &Retained,
    counters: &Counters,
) -> Result<(HyperWebsocketStream, [u8; 32], SocketAddr), String> {
    let Reattach {
        mut websocket,
        received,
        client,
        request_id,
    } = *reattach;
    let refuse = |why: String| (websocket_refusal(&request_id), why);
    let resend = match retained.resend_from(received, counters.to_client()) {
        Ok(resend) => resend,
        Err(gap) => {
            let ((code, reason), why) = refuse(gap.to_string());
            close_with(websocket, code, reason).await;
            return Err(why);
        }
    };
    let (secret, key) = resume::new_secret();
    let resumed = Control::Resumed {
        secret,
        received: counters.to_target(),
    };
    let mut send = vec![Message::Text(resumed.to_text().into())];
    send.extend(resend.into_iter().map(Message::Binary));
    for message in send {
        if let Err(e) = websocket.feed(message).await {
            return Err(format!("browser gone again: {e}"));
        }
    }
    websocket
        .flush()
        .await
        .map_err(|e| format!("browser gone again: {e}"))?;
    Ok((websocket, key, client))
}

fn websocket_refusal(request_id: &str) -> (u16, String) {
    (4409, format!("console session cannot continue - open the console again from the portal (ref {request_id})"))
}

/// Chooses the answer to `Sec-WebSocket-Protocol`: `consolegate.v1` when offered and
/// reconnects are on, else `binary` when offered, else none when nothing was offered.
///
/// # Errors
/// Subprotocols were offered but none we speak: the browser would fail the handshake anyway.
fn choose_subprotocol<B>(
    request: &Request<B>,
    reconnects: bool,
) -> Result<Option<&'static str>, Refusal> {
    let Some(offered) = offered_subprotocols(request.headers()) else {
        return Ok(None);
    };
    if reconnects && offered.iter().any(|p| p == resume::PROTOCOL) {
        Ok(Some(resume::PROTOCOL))
    } else if offered.iter().any(|p| p == "binary") {
        Ok(Some("binary"))
    } else {
        Err(Refusal::Subprotocol { offered })
    }
}

/// The `101` answer, naming the chosen subprotocol.
fn upgrade(
    request: &mut Request<Incoming>,
    protocol: Option<&'static str>,
    ws_config: WebSocketConfig,
) -> Result<(Response<Full<Bytes>>, HyperWebsocket), Refusal> {
    let (mut response, websocket) = hyper_tungstenite::upgrade(request, Some(ws_config))
        .map_err(|e| Refusal::Handshake(e.to_string()))?;
    if let Some(protocol) = protocol {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Ok((response, websocket))
}

/// The credential a request carries (contract section 1): the request-target's path without
/// its leading `/`, exactly as sent (not percent-decoded), the query left out.
pub fn credential(uri: &Uri) -> &str {
    uri.path().trim_start_matches('/')
}

/// The `Sec-WebSocket-Protocol` values offered, trimmed, empty ones left out, or `None`
/// when the header is absent. Values that are not visible ASCII are skipped.
pub fn offered_subprotocols(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut values = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn credential_is_the_raw_path_without_leading_slashes_or_query() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(credential(&uri("/eyJh+b/c=")), "eyJh+b/c=");
        assert_eq!(credential(&uri("/abc?x=1")), "abc");
        assert_eq!(credential(&uri("//abc")), "abc");
        assert_eq!(credential(&uri("/a%2Bb")), "a%2Bb");
        assert_eq!(credential(&uri("/")), "");
        assert_eq!(credential(&uri("*")), "*");
    }

    #[test]
    fn subprotocols_are_split_trimmed_and_merged_across_headers() {
        assert_eq!(offered_subprotocols(&HeaderMap::new()), None);
        assert_eq!(offered_subprotocols(&headers(&[b""])), Some(vec![]));
        assert_eq!(
            offered_subprotocols(&headers(&[b" base64 ,, binary", b"x"])),
            Some(vec!["base64".into(), "binary".into(), "x".into()])
        );
        // Not visible ASCII: that header value is skipped, the others still count.
        assert_eq!(
            offered_subprotocols(&headers(&[b"bin\xffary", b"binary"])),
            Some(vec!["binary".into()])
        );
    }
}
