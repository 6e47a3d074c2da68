//! The admin listener (`ADMIN_LISTEN`, off by default, loopback when given only a port): plain
//! HTTP for the operator and the load balancer, apart from the console port.
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 when new sessions can be served ([`crate::health::readiness`]),
//!   else 503 with the reasons.
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]); with
//!   `ADMIN_METRICS_REQUIRE_TOKEN` it needs the token.
//! - `GET /sessions`: the open sessions as JSON; `DELETE /sessions/{id}` or
//!   `POST /sessions/{id}/close` closes one (close 1001 to its browser). These need
//!   `Authorization: Bearer <ADMIN_TOKEN>`, and are disabled when no token is configured.
//!
//! A token is never logged; a refused request is, with the caller's address.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::config::{InvalidValue, Secret};
use crate::proxy::Shared;
use crate::{health, metrics};

/// Admin connections served at once; more are closed at once. The operator and a few load
/// balancers need a handful.
const MAX_CONNECTIONS: usize = 64;
/// Time for an admin client to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `ADMIN_LISTEN`: empty for off, a port alone for `127.0.0.1:PORT`, or an IP address
/// and port (`10.0.0.5:6101`, `[::1]:6101`).
pub fn parse_admin_listen(value: &str) -> Result<Option<SocketAddr>, InvalidValue> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Ok(port) = value.parse::<u16>() {
        return Ok(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
    }
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        InvalidValue::new(
            value,
            "a port (on 127.0.0.1) or an IP address and port (127.0.0.1:6101, [::1]:6101)",
        )
    })
}

/// Serves admin requests on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "admin connection limit reached; closed");
            continue;
        };
        let shared = shared.clone();
        let span = tracing::debug_span!("admin", %peer);
        tokio::spawn(
            async move {
                let service = service_fn(move |request| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(request, peer, &shared)) }
                });
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    debug!(error = %e, "admin connection ended with an error");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn handle<B>(request: Request<B>, peer: SocketAddr, shared: &Shared) -> Response<Full<Bytes>> {
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let method = request.method().clone();
    debug!(%method, path, "admin request");
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["livez"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, ["readyz"]) => readyz(shared),
        (&Method::GET, ["metrics"]) => {
            let proxy = shared.current();
            if proxy.settings.admin_metrics_require_token {
                if let Err(why) = authorize(&request, proxy.admin_token.as_ref(), peer) {
                    return why.response();
                }
            }
            match metrics::render(shared) {
                Ok(body) => with_type(Response::new(Full::from(body)), metrics::CONTENT_TYPE),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode metrics: {e}\n"),
                ),
            }
        }
        (_, ["sessions", ..]) => {
            let proxy = shared.current();
            if let Err(why) = authorize(&request, proxy.admin_token.as_ref(), peer) {
                return why.response();
            }
            match (&method, &segments[1..]) {
                (&Method::GET, []) => list_sessions(shared),
                (&Method::DELETE, [id]) | (&Method::POST, [id, "close"]) => {
                    close_session(shared, id, peer)
                }
                _ => not_found(),
            }
        }
        (_, ["livez" | "readyz" | "metrics"]) => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
        _ => not_found(),
    }
}

fn readyz(shared: &Shared) -> Response<Full<Bytes>> {
    let proxy = shared.current();
    match health::readiness(
        shared.lifecycle.get(),
        &proxy.certificates,
        shared.limits.open_sessions(),
        proxy.settings.max_sessions,
        Utc::now(),
    ) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(reasons) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {}\n", reasons.join("; ")),
        ),
    }
}

/// Why an admin request was not authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Unauthorized {
    #[error("no ADMIN_TOKEN is configured, so the session endpoints are disabled")]
    Disabled,
    #[error("no bearer token")]
    Missing,
    #[error("wrong bearer token")]
    Wrong,
}

impl Unauthorized {
    fn response(self) -> Response<Full<Bytes>> {
        if self == Unauthorized::Disabled {
            return text(
                StatusCode::FORBIDDEN,
                "disabled: set ADMIN_TOKEN or ADMIN_TOKEN_FILE to use this endpoint\n",
            );
        }
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required\n",
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"consolegate admin\""),
        );
        response
    }
}

/// Checks the bearer token, logging a refusal with the caller's address (never a token).
/// Both sides are hashed before a constant-time comparison, so neither the content nor the
/// length leaks by timing.
fn authorize<B>(
    request: &Request<B>,
    token: Option<&Secret>,
    peer: SocketAddr,
) -> Result<(), Unauthorized> {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let verdict = match (token, given) {
        (None, _) => Err(Unauthorized::Disabled),
        (Some(_), None) => Err(Unauthorized::Missing),
        (Some(token), Some(given)) => {
            if openssl::memcmp::eq(
                &openssl::sha::sha256(given.as_bytes()),
                &openssl::sha::sha256(token.expose().as_bytes()),
            ) {
                Ok(())
            } else {
                Err(Unauthorized::Wrong)
            }
        }
    };
    if let Err(why) = verdict {
        warn!(%peer, path = request.uri().path(), "admin request refused: {why}");
    }
    verdict
}

fn list_sessions(shared: &Shared) -> Response<Full<Bytes>> {
    let now = SystemTime::now();
    let sessions: Vec<serde_json::Value> = shared
        .registry
        .list()
        .iter()
        .map(|s| {
            let started: DateTime<Utc> = s.started.into();
            serde_json::json!({
                "id": s.id,
                "request_id": s.request_id,
                "client": s.client.to_string(),
                "target": s.target.to_string(),
                "ssl_target": s.target.ssl_target,
                "started": started.to_rfc3339_opts(SecondsFormat::Secs, true),
                "duration_seconds": now.duration_since(s.started).unwrap_or_default().as_secs(),
                "bytes_to_target": s.counters.to_target(),
                "bytes_to_client": s.counters.to_client(),
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::Value::Array(sessions))
}

fn close_session(shared: &Shared, id: &str, peer: SocketAddr) -> Response<Full<Bytes>> {
    let Ok(id) = id.parse::<u64>() else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": format!("{id:?} is not a session id") }),
        );
    };
    let info = shared.registry.list().into_iter().find(|s| s.id == id);
    match info {
        Some(info) if shared.registry.close(id) => {
            info!(admin = %peer, session = id, request_id = %info.request_id, client = %info.client, "session closed by an administrator");
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "closing": id, "request_id": info.request_id }),
            )
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("no open session {id}") }),
        ),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "not found: /livez, /readyz, /metrics, /sessions, /sessions/{id}\n",
    )
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = with_type(
        Response::new(Full::from(body.to_owned())),
        "text/plain; charset=utf-8",
    );
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = with_type(
        Response::new(Full::from(format!("{value}\n"))),
        "application/json",
    );
    *response.status_mut() = status;
    response
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_admin_listen(""), Ok(None));
        assert_eq!(
            parse_admin_listen("6101"),
            Ok(Some("127.0.0.1:6101".parse().unwrap()))
        );
        assert_eq!(
            parse_admin_listen("[::1]:6101"),
            Ok(Some("[::1]:6101".parse().unwrap()))
        );
        assert_eq!(
            parse_admin_listen("10.0.0.5:6101"),
            Ok(Some("10.0.0.5:6101".parse().unwrap()))
        );
        for bad in ["localhost:6101", "70000", "10.0.0.5", ":6101"] {
            assert!(parse_admin_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let token = Secret::new("0123456789abcdef0123");
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let request = |value: Option<&str>| {
            let mut builder = Request::builder().uri("/sessions");
            if let Some(value) = value {
                builder = builder.header(AUTHORIZATION, value);
            }
            builder.body(()).unwrap()
        };
        let good = request(Some("Bearer 0123456789abcdef0123"));
        assert_eq!(authorize(&good, Some(&token), peer), Ok(()));
        let wrong = request(Some("Bearer 0123456789abcdef0124"));
        assert_eq!(
            authorize(&wrong, Some(&token), peer),
            Err(Unauthorized::Wrong)
        );
        let basic = request(Some("Basic 0123456789abcdef0123"));
        assert_eq!(
            authorize(&basic, Some(&token), peer),
            Err(Unauthorized::Missing)
        );
        assert_eq!(
            authorize(&request(None), Some(&token), peer),
            Err(Unauthorized::Missing)
        );
        assert_eq!(authorize(&good, None, peer), Err(Unauthorized::Disabled));
        assert_eq!(
            Unauthorized::Wrong.response().status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(Unauthorized::Missing
            .response()
            .headers()
            .contains_key(WWW_AUTHENTICATE));
        assert_eq!(
            Unauthorized::Disabled.response().status(),
            StatusCode::FORBIDDEN
        );
    }
}
