//! One console session: the checks before the upgrade (subprotocol, target choice, connect)
//! in the order that guarantees a refused request opens no target connection, then the relay
//! and the session's summary line.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::HyperWebsocket;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::limits::{Limits, SessionPermit};
use crate::proxy::Proxy;
use crate::refusal::Refusal;
use crate::registry::Registry;
use crate::target::{ConsoleRequest, Target};
use crate::{connect, relay, ticket};

/// How long a refused browser gets to answer the close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who is asking, as the server saw it.
#[derive(Debug, Clone)]
pub struct Console {
    pub request_id: String,
    pub client: SocketAddr,
    pub tls: bool,
}

/// A session whose target is connected and whose `101` is on its way to the browser.
pub struct Session {
    console: Console,
    credential: String,
    target: Target,
    target_stream: TcpStream,
    websocket: HyperWebsocket,
    options: relay::Options,
    /// Holds the session's slot under `MAX_SESSIONS` until the session ends.
    _permit: SessionPermit,
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
    let binary = match offered_subprotocols(request) {
        None => false,
        Some(offered) if offered.iter().any(|p| p == "binary") => true,
        Some(offered) => return Err(Refusal::Subprotocol { offered }),
    };
    check_origin(request, &settings.allowed_origins)?;
    let permit = limits.try_acquire(console.client.ip())?;

    let path = request.uri().path().trim_start_matches('/');
    let credential = ticket::fingerprint(path);
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
    let deadline = Instant::now() + timeout;
    let resolved = connect::resolve(&target, deadline, timeout).await?;
    let allowed = policy.allowed_addresses(&target, &resolved)?;
    let target_stream = connect::connect_any(&target, &allowed, deadline, timeout).await?;

    let (mut response, websocket) = hyper_tungstenite::upgrade(request, Some(proxy.ws_config))
        .map_err(|e| Refusal::Handshake(e.to_string()))?;
    if binary {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("binary"));
    }
    let options = relay::Options {
        idle_timeout: settings.session_idle_timeout,
        max_duration: settings.session_max_duration,
        heartbeat_interval: settings.heartbeat_interval,
        heartbeat_timeout: settings.heartbeat_timeout,
    };
    let session = Session {
        console: console.clone(),
        credential,
        target,
        target_stream,
        websocket,
        options,
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
    ws_config: WebSocketConfig,
) -> Option<(
    Response<Full<Bytes>>,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let code = refusal.close_code()?;
    let binary =
        offered_subprotocols(request).is_some_and(|offered| offered.iter().any(|p| p == "binary"));
    let (mut response, websocket) = hyper_tungstenite::upgrade(request, Some(ws_config)).ok()?;
    if binary {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("binary"));
    }
    let reason = format!("{} (ref {request_id})", refusal.user_message());
    let close = async move {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            let Ok(mut websocket) = websocket.await else {
                return;
            };
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if websocket.send(Message::Close(Some(frame))).await.is_ok() {
                // Read until the browser's close reply completes the handshake.
                while let Some(Ok(message)) = websocket.next().await {
                    if message.is_close() {
                        break;
                    }
                }
            }
        })
        .await;
    };
    Some((response, close))
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
        origin => Err(Refusal::Origin { origin }),
    }
}

impl Session {
    /// Relays until either side ends or `closing` fires, then logs the summary line. The
    /// session is in `registry` while it relays.
    pub async fn run(self, closing: CancellationToken, registry: Arc<Registry>) {
        let Session {
            console,
            credential,
            target,
            target_stream,
            websocket,
            options,
            _permit,
        } = self;
        let span = tracing::info_span!("session", request_id = %console.request_id, %target);
        async move {
            let websocket = match websocket.await {
                Ok(websocket) => websocket,
                Err(e) => return warn!(reason = %e, "websocket upgrade failed"),
            };
            let scheme = if console.tls { "wss" } else { "ws" };
            info!(client = %console.client, ticket = %credential, scheme, ssl_target = target.ssl_target, "session started");
            let started = Instant::now();
            let registered = registry.register(&console.request_id, console.client, &target);
            let stop = relay::Stop { shutdown: closing, admin: registered.info.close.clone() };
            let stats = relay::run(websocket, target_stream, options, &stop, &registered.info.counters).await;
            info!(
                client = %console.client,
                bytes_to_target = stats.bytes_to_target,
                bytes_to_client = stats.bytes_to_client,
                duration = ?started.elapsed(),
                closed_by = %stats.closed_by,
                "session ended"
            );
        }
        .instrument(span)
        .await;
    }
}

/// The `Sec-WebSocket-Protocol` values offered, or `None` when the header is absent.
fn offered_subprotocols<B>(request: &Request<B>) -> Option<Vec<String>> {
    let mut values = request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .peekable();
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
