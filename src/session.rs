//! One console session: the checks before the upgrade (subprotocol, target choice, connect)
//! in the order that guarantees a refused request opens no target connection, then the relay
//! and the session's summary line.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use hyper::{Request, Response};
use hyper_tungstenite::HyperWebsocket;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::proxy::Proxy;
use crate::refusal::Refusal;
use crate::target::{ConsoleRequest, Target};
use crate::{connect, relay, ticket};

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
}

/// Runs every check and connects to the target; on success returns the `101` response and
/// the session to run once hyper hands over the upgraded connection.
///
/// # Errors
/// A [`Refusal`]; nothing has been opened towards any target unless the refusal is the
/// upgrade itself failing after connect.
pub async fn prepare(
    request: &mut Request<Incoming>,
    console: &Console,
    proxy: &Arc<Proxy>,
) -> Result<(Response<Full<Bytes>>, Session), Refusal> {
    let binary = match offered_subprotocols(request) {
        None => false,
        Some(offered) if offered.iter().any(|p| p == "binary") => true,
        Some(offered) => return Err(Refusal::Subprotocol { offered }),
    };
    let path = request.uri().path().trim_start_matches('/');
    let credential = ticket::fingerprint(path);
    let console_request = ConsoleRequest {
        path,
        query: request.uri().query(),
        client: console.client,
        now: Utc::now(),
    };
    let target = proxy.resolver.resolve(&console_request).await?;
    let target_stream = connect::connect(&target, proxy.settings.target_connect_timeout).await?;
    let (mut response, websocket) = hyper_tungstenite::upgrade(request, Some(proxy.ws_config))
        .map_err(|e| Refusal::Handshake(e.to_string()))?;
    if binary {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("binary"));
    }
    let session = Session {
        console: console.clone(),
        credential,
        target,
        target_stream,
        websocket,
    };
    Ok((response, session))
}

impl Session {
    /// Relays until either side ends or `closing` fires, then logs the summary line.
    pub async fn run(self, closing: CancellationToken) {
        let Session {
            console,
            credential,
            target,
            target_stream,
            websocket,
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
            let stats = relay::run(websocket, target_stream, closing).await;
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
