//! A token authority: an HTTP service that says whether a token is valid and where it
//! leads (the nova-consoleauth model, websockify's token-API plugins). The protocol:
//!
//! ```text
//! GET <TOKEN_AUTHORITY_URL>?token=<token>          (appended to any query the URL has)
//! Accept: application/json
//! X-Forwarded-For: <browser's IP address>
//!
//! 200 {"host": "10.0.0.5", "port": 5900}   the target (port a number or a string of digits;
//!                                          other fields are ignored)
//! 404                                      unknown token
//! 403                                      token refused (expired, revoked, not this client)
//! anything else, no answer in time         the authority is unavailable: the browser gets 503
//! ```
//!
//! Positive answers are cached for a short time in a bounded cache keyed by the token's
//! SHA-256, so a console reopened a few times is one question; refusals and failures are
//! never cached, so a token that becomes valid works at once. Redirects are not followed.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::token::{self};
use super::{ConsoleRequest, ResolveError, Target, TargetResolver};
use crate::ticket;

/// Largest answer body read from the authority.
const MAX_ANSWER: usize = 64 * 1024;

/// How long an idle connection to the authority is kept for the next question.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Why the authority gave no target. `url` is shown without credentials or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("unknown token: token authority {url} answered 404")]
    Unknown { url: String },
    #[error("token refused: token authority {url} answered 403")]
    Refused { url: String },
    #[error("token authority {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("token authority {url} did not answer within {after:?}")]
    TimedOut { url: String, after: Duration },
    #[error("token authority {url} gave an unusable answer: {reason}")]
    BadAnswer { url: String, reason: String },
}

impl AuthorityError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthorityError::Unknown { .. } => "unknown_token",
            AuthorityError::Refused { .. } => "authority_refused",
            AuthorityError::Unreachable { .. } => "authority_unreachable",
            AuthorityError::TimedOut { .. } => "authority_timeout",
            AuthorityError::BadAnswer { .. } => "authority_bad_answer",
        }
    }

    /// Whether the authority, not the token, is the problem.
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            AuthorityError::Unknown { .. } | AuthorityError::Refused { .. }
        )
    }
}

/// Why the authority client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityConfigError {
    #[error("cannot read {path}: {source}")]
    ReadCa {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadCa { path: String, reason: String },
    #[error("no CA certificates in the system store ({0}); set TOKEN_AUTHORITY_CA")]
    NoSystemRoots(String),
}

/// How to reach the authority and how long to trust its answers.
#[derive(Debug, Clone)]
pub struct AuthorityOptions {
    pub url: Url,
    /// PEM file of the CAs trusted for an `https` URL; `None`: the system's store.
    pub ca: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_size: usize,
}

/// Asks a token authority over HTTP(S).
pub struct TokenAuthority {
    /// The URL without its user information, which goes in `authorization` instead.
    url: Url,
    authorization: Option<String>,
    /// The URL as logs show it: no credentials, no query.
    shown: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    cache: AnswerCache,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("url", &self.shown)
            .field("timeout", &self.timeout)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// # Errors
    /// The CA file cannot be read or holds no certificate, or (for an `https` URL without
    /// one) the system has no CA certificates.
    pub fn new(options: AuthorityOptions) -> Result<TokenAuthority, AuthorityConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let tls = match &options.ca {
            Some(path) => {
                let shown = path.display().to_string();
                let pem = std::fs::read(path).map_err(|source| AuthorityConfigError::ReadCa {
                    path: shown.clone(),
                    source,
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| AuthorityConfigError::BadCa {
                        path: shown.clone(),
                        reason: e.to_string(),
                    })?;
                    roots.add(cert).map_err(|e| AuthorityConfigError::BadCa {
                        path: shown.clone(),
                        reason: e.to_string(),
                    })?;
                }
                if roots.is_empty() {
                    return Err(AuthorityConfigError::BadCa {
                        path: shown,
                        reason: "no certificate found".into(),
                    });
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None if options.url.scheme() == "https" => {
                let loaded = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    let reason = loaded
                        .errors
                        .first()
                        .map_or_else(|| "none found".to_owned(), ToString::to_string);
                    return Err(AuthorityConfigError::NoSystemRoots(reason));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            // Plain http: TLS is never used.
            None => builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .build(connector);
        let authorization = basic_authorization(&options.url);
        let mut url = options.url;
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(TokenAuthority {
            shown: shown_url(&url),
            url,
            authorization,
            timeout: options.timeout,
            client,
            cache: AnswerCache::new(options.cache_ttl, options.cache_size),
        })
    }

    /// The target the authority gives for `token`, from the cache if it answered recently.
    ///
    /// # Errors
    /// What the authority said instead, or why it could not be asked.
    pub async fn lookup(
        &self,
        token: &str,
        client: std::net::IpAddr,
    ) -> Result<Target, AuthorityError> {
        let key = openssl::sha::sha256(token.as_bytes());
        if let Some(target) = self.cache.get(&key, Instant::now()) {
            return Ok(target);
        }
        let target = match tokio::time::timeout(self.timeout, self.ask(token, client)).await {
            Ok(answer) => answer?,
            Err(_) => {
                return Err(AuthorityError::TimedOut {
                    url: self.shown.clone(),
                    after: self.timeout,
                })
            }
        };
        self.cache.insert(key, target.clone(), Instant::now());
        Ok(target)
    }

    async fn ask(&self, token: &str, client: std::net::IpAddr) -> Result<Target, AuthorityError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("token", token);
        let bad = |reason: String| AuthorityError::BadAnswer {
            url: self.shown.clone(),
            reason,
        };
        let mut request = Request::get(url.as_str())
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("consolegate/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-forwarded-for", client.to_string());
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| bad(format!("cannot build the request: {e}")))?;
        let response =
            self.client
                .request(request)
                .await
                .map_err(|e| AuthorityError::Unreachable {
                    url: self.shown.clone(),
                    reason: error_chain(&e),
                })?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(AuthorityError::Unknown {
                    url: self.shown.clone(),
                })
            }
            StatusCode::FORBIDDEN => {
                return Err(AuthorityError::Refused {
                    url: self.shown.clone(),
                })
            }
            other => return Err(bad(format!("HTTP status {other}"))),
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| bad(format!("cannot read the body: {e}")))?
            .to_bytes();
        parse_answer(&body).map_err(bad)
    }
}

/// `Basic` credentials from the URL's user information, if any.
fn basic_authorization(url: &Url) -> Option<String> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or_default())
    );
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
}

/// A URL for logs: scheme, host, port and path only.
pub fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// An error with its causes, which hyper keeps in `source()` (e.g. "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a `200` answer: a JSON object with `host` and `port`.
///
/// # Errors
/// What is wrong with the answer, for the log.
pub fn parse_answer(body: &[u8]) -> Result<Target, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("not a JSON object".into());
    };
    let host = match fields.get("host") {
        Some(Value::String(host)) => host.as_str(),
        Some(_) => return Err("host is not a string".into()),
        None => return Err("host is missing".into()),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .filter(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok())
        .unwrap_or(host);
    let host = ticket::parse_host(host).ok_or("host is not an IP address or a host name")?;
    let port = match fields.get("port") {
        Some(Value::Number(port)) => port
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port != 0),
        Some(Value::String(port)) => ticket::parse_port(port),
        Some(_) => return Err("port is not a number".into()),
        None => return Err("port is missing".into()),
    }
    .ok_or("port is not a number from 1 to 65535")?;
    Ok(Target {
        host,
        port,
        ssl_target: false,
    })
}

#[async_trait]
impl TargetResolver for TokenAuthority {
    async fn resolve(&self, request: &ConsoleRequest<'_>) -> Result<Target, ResolveError> {
        let token = token::from_request(request.path, request.query)?;
        Ok(self.lookup(&token, request.client.ip()).await?)
    }

    fn fingerprint(&self, path: &str, query: Option<&str>) -> String {
        token::fingerprint(path, query)
    }
}

/// Recent positive answers, at most `capacity`, each for `ttl`. Keys are token hashes, so
/// the cache holds no token. When full, the oldest answer goes first: with one TTL for
/// all, that is also the one closest to expiry.
struct AnswerCache {
    ttl: Duration,
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    answers: HashMap<[u8; 32], (Target, Instant)>,
    /// Insertion order, for eviction; may hold keys already replaced or removed.
    order: VecDeque<([u8; 32], Instant)>,
}

impl fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl AnswerCache {
    fn new(ttl: Duration, capacity: usize) -> AnswerCache {
        AnswerCache {
            ttl,
            capacity,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Target> {
        if !self.enabled() {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.answers.get(key) {
            Some((target, expires)) if *expires > now => Some(target.clone()),
            _ => None,
        }
    }

    fn insert(&self, key: [u8; 32], target: Target, now: Instant) {
        if !self.enabled() {
            return;
        }
        let expires = now + self.ttl;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Drop expired answers and, when full, the oldest ones.
        while let Some(&(oldest, inserted_expiry)) = state.order.front() {
            let current = state.answers.get(&oldest).map(|(_, at)| *at);
            let stale = current != Some(inserted_expiry);
            if stale || inserted_expiry <= now || state.answers.len() >= self.capacity {
                state.order.pop_front();
                if !stale {
                    state.answers.remove(&oldest);
                }
            } else {
                break;
            }
        }
        state.answers.insert(key, (target, expires));
        state.order.push_back((key, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.to_owned(),
            port,
            ssl_target: false,
        }
    }

    #[test]
    fn answers_with_host_and_port() {
        assert_eq!(
            parse_answer(br#"{"host": "10.0.0.5", "port": 5900}"#),
            Ok(target("10.0.0.5", 5900))
        );
        assert_eq!(
            parse_answer(br#"{"host": "vnc.example.com", "port": "5901", "expires": 9}"#),
            Ok(target("vnc.example.com", 5901))
        );
        assert_eq!(
            parse_answer(br#"{"host": "[::1]", "port": 5900}"#),
            Ok(target("::1", 5900))
        );
        assert_eq!(
            parse_answer(br#"{"host": "::1", "port": 5900}"#),
            Ok(target("::1", 5900))
        );
    }

    #[test]
    fn unusable_answers_say_why() {
        for (body, reason) in [
            (&b"<html>"[..], "not JSON"),
            (br#"[1]"#, "not a JSON object"),
            (br#"{"port": 1}"#, "host is missing"),
            (br#"{"host": 1, "port": 1}"#, "host is not a string"),
            (
                br#"{"host": "a b", "port": 1}"#,
                "host is not an IP address",
            ),
            (br#"{"host": "h"}"#, "port is missing"),
            (
                br#"{"host": "h", "port": 0}"#,
                "port is not a number from 1",
            ),
            (
                br#"{"host": "h", "port": 65536}"#,
                "port is not a number from 1",
            ),
            (
                br#"{"host": "h", "port": -1}"#,
                "port is not a number from 1",
            ),
            (
                br#"{"host": "h", "port": 1.5}"#,
                "port is not a number from 1",
            ),
            (
                br#"{"host": "h", "port": "59o0"}"#,
                "port is not a number from 1",
            ),
            (br#"{"host": "h", "port": true}"#, "port is not a number"),
        ] {
            let error = parse_answer(body).unwrap_err();
            assert!(error.starts_with(reason), "{error} for {body:?}");
        }
    }

    #[test]
    fn shown_urls_carry_no_credentials_or_query() {
        let url =
            Url::parse("https://proxy:s3cret@auth.example.com:8443/v1/tokens?key=abc").unwrap();
        assert_eq!(shown_url(&url), "https://auth.example.com:8443/v1/tokens");
    }

    #[test]
    fn basic_credentials_come_from_the_url() {
        let url = Url::parse("http://proxy:p%40ss@auth/check").unwrap();
        // "proxy:p@ss"
        assert_eq!(
            basic_authorization(&url).as_deref(),
            Some("Basic cHJveHk6cEBzcw==")
        );
        assert_eq!(
            basic_authorization(&Url::parse("http://auth/").unwrap()),
            None
        );
    }

    #[test]
    fn cache_keeps_answers_for_the_ttl() {
        let cache = AnswerCache::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        cache.insert([1; 32], target("a", 1), start);
        assert_eq!(
            cache.get(&[1; 32], start + Duration::from_secs(9)),
            Some(target("a", 1))
        );
        assert_eq!(cache.get(&[1; 32], start + Duration::from_secs(10)), None);
        assert_eq!(cache.get(&[2; 32], start), None);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_oldest() {
        let cache = AnswerCache::new(Duration::from_secs(60), 3);
        let start = Instant::now();
        for i in 0..5u8 {
            cache.insert(
                [i; 32],
                target("h", u16::from(i) + 1),
                start + Duration::from_millis(u64::from(i)),
            );
        }
        assert_eq!(cache.len(), 3);
        let now = start + Duration::from_secs(1);
        assert_eq!(cache.get(&[0; 32], now), None);
        assert_eq!(cache.get(&[1; 32], now), None);
        assert_eq!(cache.get(&[4; 32], now), Some(target("h", 5)));
        // Re-inserting a key does not let its stale order entry evict the fresh answer.
        cache.insert([2; 32], target("h", 9), now);
        cache.insert([7; 32], target("h", 8), now);
        assert_eq!(cache.get(&[2; 32], now), Some(target("h", 9)));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn expired_answers_are_purged_on_insert() {
        let cache = AnswerCache::new(Duration::from_secs(1), 100);
        let start = Instant::now();
        for i in 0..50u8 {
            cache.insert([i; 32], target("h", 1), start);
        }
        cache.insert([99; 32], target("h", 1), start + Duration::from_secs(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_zero_ttl_or_size_disables_the_cache() {
        for cache in [
            AnswerCache::new(Duration::ZERO, 100),
            AnswerCache::new(Duration::from_secs(5), 0),
        ] {
            let now = Instant::now();
            cache.insert([1; 32], target("a", 1), now);
            assert_eq!(cache.get(&[1; 32], now), None);
        }
    }
}
