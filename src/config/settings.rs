//! Typed settings: each key of a [`RawConfig`] parsed once by its `parse_*` function,
//! then the keys checked together. No file is opened here: `tls` reads the certificate
//! and key, `ticket` the engine certificate.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tracing::Level;

// Every key name is a const in `keys`; settings reads them all.
use super::keys::*;
use super::resolvers::ResolverSettings;
use super::{ConfigError, ConfigWarning, Entry, RawConfig};
use crate::admin::parse_admin_listen;
use crate::logging::{
    parse_log_facility, parse_log_format, parse_log_target, LogFacility, LogFormat, LogTarget,
};
use crate::policy::{parse_host_rules, parse_port_ranges, TargetPolicy};
use crate::proxy_protocol::{parse_trusted, Trusted};

/// Smallest `WS_MAX_MESSAGE_SIZE`: below it even a console's first frames may not fit.
const MIN_MESSAGE_SIZE: usize = 1024;

/// Longest duration any key accepts: far beyond any sensible timeout, far below where
/// `Instant` and `DateTime` arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// Every address: IPv4, or IPv6 with `SOURCE_IS_IPV6`, as upstream binds.
    Any,
    Addr(IpAddr),
    /// Resolved when binding, which is I/O and so not done here.
    Name(String),
}

impl fmt::Display for ListenHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenHost::Any => f.write_str("*"),
            ListenHost::Addr(addr) => write!(f, "{addr}"),
            ListenHost::Name(name) => f.write_str(name),
        }
    }
}

/// The oldest TLS version offered; rustls has nothing older than 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        })
    }
}

/// A value its key's parser rejects, and what the key expects instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {expected}")]
pub struct InvalidValue {
    pub value: String,
    pub expected: &'static str,
}

impl InvalidValue {
    pub fn new(value: &str, expected: &'static str) -> InvalidValue {
        InvalidValue {
            value: value.to_owned(),
            expected,
        }
    }
}

/// Reads a boolean as upstream does: `t`, `true`, `y`, `yes`, `1` (any case) are true.
/// `None` for text that is not a spelling of either value either: upstream takes it as
/// false, and so do callers, but they warn, since it is likely a typo of `True`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "0" | "" => Some(false),
        _ => None,
    }
}

/// Reads `PROXY_HOST`: `*` or empty for every address, an IP literal (IPv6 with or
/// without brackets) or a host name.
pub fn parse_listen_host(value: &str) -> Result<ListenHost, InvalidValue> {
    const EXPECTED: &str = "an IP address or host name (or * for every address)";
    if value.is_empty() || value == "*" {
        return Ok(ListenHost::Any);
    }
    if let Some(inner) = value
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    {
        return inner
            .parse::<Ipv6Addr>()
            .map(|addr| ListenHost::Addr(addr.into()))
            .map_err(|_| InvalidValue::new(value, EXPECTED));
    }
    if let Ok(addr) = value.parse::<IpAddr>() {
        return Ok(ListenHost::Addr(addr));
    }
    if is_host_name(value) {
        Ok(ListenHost::Name(value.to_owned()))
    } else {
        Err(InvalidValue::new(value, EXPECTED))
    }
}

/// Whether `name` is a DNS host name (RFC 1123), optionally ending in a dot. A numeric
/// last label is refused, so that a mistyped IPv4 address is not looked up as a name.
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let is_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let numeric_top = name
        .rsplit('.')
        .next()
        .is_some_and(|label| label.bytes().all(|byte| byte.is_ascii_digit()));
    name.len() <= 253 && name.split('.').all(is_label) && !numeric_top
}

/// Reads a port number, 0-65535; 0 asks the system for any free port.
pub fn parse_port(value: &str) -> Result<u16, InvalidValue> {
    value
        .parse()
        .map_err(|_| InvalidValue::new(value, "a port number (0-65535)"))
}

/// Reads `SSL_MIN_VERSION` in Python's spellings (`TLSv1_2`) or OpenSSL's (`TLSv1.2`),
/// any case. `Ok(None)` for `TLSv1` and `TLSv1.1`, which upstream accepts but rustls
/// cannot offer: callers raise them to TLS 1.2 with a warning.
pub fn parse_tls_version(value: &str) -> Result<Option<TlsVersion>, InvalidValue> {
    match value.to_ascii_lowercase().replace('_', ".").as_str() {
        "tlsv1" | "tlsv1.1" => Ok(None),
        "tlsv1.2" => Ok(Some(TlsVersion::Tls12)),
        "tlsv1.3" => Ok(Some(TlsVersion::Tls13)),
        _ => Err(InvalidValue::new(
            value,
            "a TLS version (TLSv1.2 or TLSv1.3)",
        )),
    }
}

/// Reads a duration: whole seconds, as upstream-style keys use, or humantime syntax
/// (`500ms`, `2m`, `1h 30s`), of at most [`MAX_DURATION`], so that every deadline the server
/// computes from it is representable: a larger value used to pass the checks and then fail
/// every connection.
pub fn parse_duration(value: &str) -> Result<Duration, InvalidValue> {
    let duration = match value.parse() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(value).map_err(|_| {
            InvalidValue::new(
                value,
                "a duration (whole seconds, or e.g. 500ms, 2m, \"1h 30s\")",
            )
        })?,
    };
    if duration > MAX_DURATION {
        return Err(InvalidValue::new(value, "a duration of at most 10 years"));
    }
    Ok(duration)
}

/// Reads `WS_MAX_MESSAGE_SIZE`, in bytes.
pub fn parse_message_size(value: &str) -> Result<usize, InvalidValue> {
    value
        .parse()
        .ok()
        .filter(|&size| size >= MIN_MESSAGE_SIZE)
        .ok_or_else(|| InvalidValue::new(value, "a size in bytes of at least 1024"))
}

/// Reads a limit: a whole number of at least 1.
pub fn parse_count(value: &str) -> Result<usize, InvalidValue> {
    value
        .parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| InvalidValue::new(value, "a whole number of at least 1"))
}

/// Reads `auto` (`None`) or a count of at least 1.
pub fn parse_auto_count(value: &str) -> Result<Option<usize>, InvalidValue> {
    if value.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    parse_count(value)
        .map(Some)
        .map_err(|_| InvalidValue::new(value, "auto or a whole number of at least 1"))
}

/// Reads `MAX_REQUEST_HEADER_SIZE`: hyper needs at least 8 KiB to read any request.
pub fn parse_header_size(value: &str) -> Result<usize, InvalidValue> {
    value
        .parse()
        .ok()
        .filter(|&size| size >= 8192)
        .ok_or_else(|| InvalidValue::new(value, "a size in bytes of at least 8192"))
}

/// Reads a duration where `0` means "off".
pub fn parse_optional_duration(value: &str) -> Result<Option<Duration>, InvalidValue> {
    parse_duration(value).map(|d| (!d.is_zero()).then_some(d))
}

/// Reads `ALLOWED_ORIGINS`: `scheme://host[:port]` entries separated by commas or blanks.
pub fn parse_origins(value: &str) -> Result<Vec<String>, InvalidValue> {
    value
        .split([',', ' ', '\t'])
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let origin = origin.trim_end_matches('/').to_ascii_lowercase();
            let well_formed = ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            });
            if well_formed {
                Ok(origin)
            } else {
                Err(InvalidValue::new(
                    &origin,
                    "an origin like https://portal.example.com[:port]",
                ))
            }
        })
        .collect()
}

/// Reads `LOG_LEVEL`, any case.
pub fn parse_log_level(value: &str) -> Result<Level, InvalidValue> {
    match value.to_ascii_lowercase().as_str() {
        "error" => Ok(Level::ERROR),
        "warn" => Ok(Level::WARN),
        "info" => Ok(Level::INFO),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        _ => Err(InvalidValue::new(
            value,
            "a log level (error, warn, info, debug or trace)",
        )),
    }
}

/// Reads an optional path: empty means unset, as upstream writes `SSL_KEY=`.
pub fn parse_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// Smallest admin token: shorter ones can be guessed by anyone who can reach the listener.
const MIN_TOKEN_LENGTH: usize = 16;

/// A value that must never be printed: `Debug` shows a mask, and only [`Secret::expose`]
/// gives the text, at the one place that compares it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(super::MASK)
    }
}

/// Checks an admin token without quoting it: at least 16 printable, non-blank ASCII
/// characters (it travels in an HTTP header). The error says what is wrong, never the value.
pub fn check_admin_token(token: &str) -> Result<(), &'static str> {
    if token.len() < MIN_TOKEN_LENGTH {
        Err("is shorter than 16 characters: use a long random value, e.g. `openssl rand -hex 32`")
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Err("must be printable ASCII without blanks (it is sent in an HTTP header)")
    } else {
        Ok(())
    }
}

/// Everything the proxy needs from its configuration, parsed and checked; shared by
/// connections as `Arc<Settings>`. Its one secret, the admin token, is a [`Secret`], so
/// the settings may be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proxy_host: ListenHost,
    pub proxy_port: u16,
    pub source_is_ipv6: bool,
    /// `None`: no TLS, plain `ws://` only.
    pub ssl_certificate: Option<PathBuf>,
    /// `None`: the key is inside `ssl_certificate`.
    pub ssl_key: Option<PathBuf>,
    pub ssl_only: bool,
    pub ssl_min_version: TlsVersion,
    /// OpenSSL syntax, as upstream configs carry it; `tls` maps it to rustls suites.
    pub ssl_ciphers: String,
    /// May hold several certificates, so the engine can rotate its key. `None` only when
    /// the resolver verifies no tickets.
    pub cert_for_data_verification: Option<PathBuf>,
    /// Accepted for compatibility; tracing is not supported and this is ignored.
    pub trace_enable: bool,
    pub trace_file: Option<PathBuf>,
    pub ticket_accept_legacy_sha1: bool,
    pub ticket_clock_skew: Duration,
    pub handshake_timeout: Duration,
    pub target_connect_timeout: Duration,
    pub shutdown_grace_period: Duration,
    pub ws_max_message_size: usize,
    pub ws_max_frame_size: usize,
    pub target_policy: TargetPolicy,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub max_handshakes: usize,
    /// One address's share of `max_handshakes`: a slow flood from one address leaves the
    /// rest for everyone else.
    pub max_handshakes_per_client: usize,
    /// `None` (`auto`): one per CPU the process may use.
    pub worker_threads: Option<usize>,
    pub max_request_header_size: usize,
    /// `None`: sessions may idle forever (heartbeats still detect dead browsers).
    pub session_idle_timeout: Option<Duration>,
    pub session_max_duration: Option<Duration>,
    /// Lowercased `scheme://host[:port]`; empty: any origin.
    pub allowed_origins: Vec<String>,
    pub refuse_with_http_status: bool,
    /// `None`: no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    pub heartbeat_timeout: Duration,
    /// `None`: reconnects off; sessions end when their browser drops.
    pub reconnect_grace_period: Option<Duration>,
    pub reconnect_buffer_size: usize,
    pub log_level: Level,
    /// How a request names its console, and what that needs.
    pub resolver: ResolverSettings,
    pub log_format: LogFormat,
    pub log_target: LogTarget,
    pub log_syslog_socket: PathBuf,
    pub log_syslog_facility: LogFacility,
    /// Peers whose connections start with a PROXY protocol header; empty: off.
    pub proxy_protocol_trusted: Trusted,
    /// `None`: no admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// From `ADMIN_TOKEN`; `ADMIN_TOKEN_FILE` is read when the proxy is built.
    pub admin_token: Option<Secret>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_metrics_require_token: bool,
    /// `None`: VNC servers' VeNCrypt certificates are not verified, as upstream.
    pub ssl_target_ca: Option<PathBuf>,
    /// With `ssl_target_ca`: the certificate must name the ticket's host, not only chain.
    pub ssl_target_verify_name: bool,
    pub ssl_target_timeout: Duration,
    /// `None`: no static files; non-upgrade requests get 405 as upstream.
    pub web_root: Option<PathBuf>,
}

impl Settings {
    /// Parses every key, collecting every error (never stops at the first), then runs
    /// the cross-field checks.
    ///
    /// Returns the settings with the warnings found while parsing them (a boolean that
    /// is neither true nor false, a raised TLS version, tracing asked for), kept apart
    /// from `raw.warnings`, which are about merging, so that `RawConfig` stays read-only
    /// here. Unknown keys in `raw` are not looked at.
    ///
    /// # Errors
    ///
    /// Every invalid value, an empty `CERT_FOR_DATA_VERIFICATION`, and every failed
    /// cross-field check.
    pub fn from_raw(raw: &RawConfig) -> Result<(Settings, Vec<ConfigWarning>), Vec<ConfigError>> {
        let mut keys = KeyReader::new(raw);
        let resolver = ResolverSettings::read(&mut keys);
        let settings = Settings {
            proxy_host: keys.parse(PROXY_HOST, parse_listen_host),
            proxy_port: keys.parse(PROXY_PORT, parse_port),
            source_is_ipv6: keys.flag(SOURCE_IS_IPV6),
            ssl_certificate: parse_path(keys.text(SSL_CERTIFICATE)),
            ssl_key: parse_path(keys.text(SSL_KEY)),
            ssl_only: keys.flag(SSL_ONLY),
            ssl_min_version: keys.tls_version(SSL_MIN_VERSION),
            ssl_ciphers: keys.text(SSL_CIPHERS).to_owned(),
            cert_for_data_verification: keys.engine_certificate(
                CERT_FOR_DATA_VERIFICATION,
                resolver.needs_engine_certificate(),
            ),
            trace_enable: keys.flag(TRACE_ENABLE),
            trace_file: parse_path(keys.text(TRACE_FILE)),
            ticket_accept_legacy_sha1: keys.flag(TICKET_ACCEPT_LEGACY_SHA1),
            ticket_clock_skew: keys.parse(TICKET_CLOCK_SKEW, parse_duration),
            handshake_timeout: keys.parse(HANDSHAKE_TIMEOUT, parse_duration),
            target_connect_timeout: keys.parse(TARGET_CONNECT_TIMEOUT, parse_duration),
            shutdown_grace_period: keys.parse(SHUTDOWN_GRACE_PERIOD, parse_duration),
            ws_max_message_size: keys.parse(WS_MAX_MESSAGE_SIZE, parse_message_size),
            ws_max_frame_size: keys.parse(WS_MAX_FRAME_SIZE, parse_message_size),
            target_policy: TargetPolicy {
                allow_hosts: keys.parse(TARGET_ALLOW_HOSTS, parse_host_rules),
                deny_hosts: keys.parse(TARGET_DENY_HOSTS, parse_host_rules),
                allow_ports: keys.parse(TARGET_ALLOW_PORTS, parse_port_ranges),
            },
            max_sessions: keys.parse(MAX_SESSIONS, parse_count),
            max_sessions_per_client: keys.parse(MAX_SESSIONS_PER_CLIENT, parse_count),
            max_handshakes: keys.parse(MAX_HANDSHAKES, parse_count),
            max_handshakes_per_client: keys.parse(MAX_HANDSHAKES_PER_CLIENT, parse_count),
            worker_threads: keys.parse(WORKER_THREADS, parse_auto_count),
            max_request_header_size: keys.parse(MAX_REQUEST_HEADER_SIZE, parse_header_size),
            session_idle_timeout: keys.parse(SESSION_IDLE_TIMEOUT, parse_optional_duration),
            session_max_duration: keys.parse(SESSION_MAX_DURATION, parse_optional_duration),
            allowed_origins: keys.parse(ALLOWED_ORIGINS, parse_origins),
            refuse_with_http_status: keys.flag(REFUSE_WITH_HTTP_STATUS),
            heartbeat_interval: keys.parse(HEARTBEAT_INTERVAL, parse_optional_duration),
            heartbeat_timeout: keys.parse(HEARTBEAT_TIMEOUT, parse_duration),
            reconnect_grace_period: keys.parse(RECONNECT_GRACE_PERIOD, parse_optional_duration),
            reconnect_buffer_size: keys.parse(RECONNECT_BUFFER_SIZE, parse_message_size),
            log_level: keys.parse(LOG_LEVEL, parse_log_level),
            resolver,
            log_format: keys.parse(LOG_FORMAT, parse_log_format),
            log_target: keys.parse(LOG_TARGET, parse_log_target),
            log_syslog_socket: PathBuf::from(keys.text(LOG_SYSLOG_SOCKET)),
            log_syslog_facility: keys.parse(LOG_SYSLOG_FACILITY, parse_log_facility),
            proxy_protocol_trusted: keys.parse(PROXY_PROTOCOL_TRUSTED, parse_trusted),
            admin_listen: keys.parse(ADMIN_LISTEN, parse_admin_listen),
            admin_token: keys.secret(ADMIN_TOKEN),
            admin_token_file: parse_path(keys.text(ADMIN_TOKEN_FILE)),
            admin_metrics_require_token: keys.flag(ADMIN_METRICS_REQUIRE_TOKEN),
            ssl_target_ca: parse_path(keys.text(SSL_TARGET_CA)),
            ssl_target_verify_name: keys.flag(SSL_TARGET_VERIFY_NAME),
            ssl_target_timeout: keys.parse(SSL_TARGET_TIMEOUT, parse_duration),
            web_root: parse_path(keys.text(WEB_ROOT)),
        };
        check_cross_fields(&settings, &mut keys);
        if keys.errors.is_empty() {
            Ok((settings, keys.warnings))
        } else {
            Err(keys.errors)
        }
    }
}

/// Checks between keys, each valid alone. Runs even when some keys failed to parse
/// (they then hold their defaults), since it only reads keys that cannot fail.
fn check_cross_fields(settings: &Settings, keys: &mut KeyReader<'_>) {
    if settings.ssl_only && settings.ssl_certificate.is_none() {
        keys.error(
            SSL_ONLY,
            "is true but SSL_CERTIFICATE is empty: serving TLS only needs a certificate",
        );
    }
    if settings.ssl_key.is_some() && settings.ssl_certificate.is_none() {
        keys.error(
            SSL_KEY,
            "is set but SSL_CERTIFICATE is empty: a key needs its certificate",
        );
    }
    if let Some(interval) = settings.heartbeat_interval {
        if settings.heartbeat_timeout <= interval {
            keys.error(
                HEARTBEAT_TIMEOUT,
                "must be longer than HEARTBEAT_INTERVAL, or a healthy browser is cut off before it can answer",
            );
        }
    }
    if settings.trace_enable {
        keys.warn(TRACE_ENABLE, "traffic tracing is not supported; ignored");
    }
    if !settings.ssl_target_verify_name && settings.ssl_target_ca.is_none() {
        keys.warn(
            SSL_TARGET_VERIFY_NAME,
            "has no effect: SSL_TARGET_CA is empty, so VNC server certificates are not verified at all",
        );
    }
    check_admin(settings, keys);
    if settings.log_target.to_syslog() && settings.log_syslog_socket.as_os_str().is_empty() {
        keys.error(
            LOG_SYSLOG_SOCKET,
            "is empty but LOG_TARGET sends lines to syslog",
        );
    }
}

/// The admin keys together: one token source, and a word when a setting has no effect or
/// exposes more than the operator may think.
fn check_admin(settings: &Settings, keys: &mut KeyReader<'_>) {
    if settings.admin_token.is_some() && settings.admin_token_file.is_some() {
        keys.error(
            ADMIN_TOKEN_FILE,
            "is set and so is ADMIN_TOKEN: set only one of them",
        );
    }
    let has_token = settings.admin_token.is_some() || settings.admin_token_file.is_some();
    match settings.admin_listen {
        None if has_token || settings.admin_metrics_require_token => keys.warn(
            ADMIN_LISTEN,
            "is empty, so the admin token settings have no effect",
        ),
        None => {}
        Some(addr) if !addr.ip().is_loopback() && !has_token => keys.warn(
            ADMIN_LISTEN,
            format!(
                "{addr} is reachable from the network: /livez, /readyz and /metrics answer anyone who can reach it (the session endpoints stay disabled without a token)"
            ),
        ),
        Some(_) => {}
    }
    if settings.admin_metrics_require_token && !has_token {
        keys.error(
            ADMIN_METRICS_REQUIRE_TOKEN,
            "is true but no ADMIN_TOKEN or ADMIN_TOKEN_FILE is set",
        );
    }
}

/// Reads registered keys from a [`RawConfig`], collecting errors and warnings with
/// each key's origin, so that parsing goes on after a bad value.
pub(super) struct KeyReader<'a> {
    raw: &'a RawConfig,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl<'a> KeyReader<'a> {
    fn new(raw: &'a RawConfig) -> KeyReader<'a> {
        KeyReader {
            raw,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn entry(&self, key: &str) -> &'a Entry {
        self.raw
            .get(key)
            .expect("a RawConfig holds every registered key")
    }

    pub(super) fn text(&self, key: &str) -> &'a str {
        &self.entry(key).value
    }

    /// Parses `key` with `parse`. On error the key's built-in default stands in, so that
    /// the other keys and the cross-field checks still run; the settings are then
    /// discarded, since an error was recorded.
    pub(super) fn parse<T>(&mut self, key: &str, parse: fn(&str) -> Result<T, InvalidValue>) -> T {
        parse(self.text(key)).unwrap_or_else(|error| {
            self.error(key, error.to_string());
            let default = key_def(key).expect("a registered key").default;
            parse(default).expect("built-in defaults are valid")
        })
    }

    /// Parses a boolean key, warning when the value is taken as false only by upstream's
    /// rule that anything not true is false.
    pub(super) fn flag(&mut self, key: &str) -> bool {
        let value = self.text(key);
        parse_bool(value).unwrap_or_else(|| {
            self.warn(
                key,
                format!(
                    "{value:?} is not a boolean (true/false, yes/no, t/f, y/n, 1/0); taken as false"
                ),
            );
            false
        })
    }

    /// Parses `SSL_MIN_VERSION`, raising versions rustls lacks to TLS 1.2 with a warning.
    fn tls_version(&mut self, key: &str) -> TlsVersion {
        let value = self.text(key);
        self.parse(key, parse_tls_version).unwrap_or_else(|| {
            self.warn(
                key,
                format!(
                    "{value:?} is older than TLSv1.2, the oldest rustls offers; raised to TLSv1.2"
                ),
            );
            TlsVersion::Tls12
        })
    }

    /// Reads a secret key: empty is unset; a bad value is reported without quoting it.
    fn secret(&mut self, key: &str) -> Option<Secret> {
        let value = self.text(key);
        if value.is_empty() {
            return None;
        }
        match check_admin_token(value) {
            Ok(()) => Some(Secret::new(value)),
            Err(problem) => {
                self.error(key, problem);
                None
            }
        }
    }

    /// Reads the engine certificate path, which tickets cannot be verified without:
    /// an error when it is `needed` and not set.
    fn engine_certificate(&mut self, key: &str, needed: bool) -> Option<PathBuf> {
        let path = parse_path(self.text(key));
        if path.is_none() && needed {
            self.error(
                key,
                "is not set: the engine certificate is needed to verify tickets",
            );
        }
        path
    }

    /// Records an error about `key`, at the assignment that set it if a file did.
    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        let origin = &self.entry(key).origin;
        self.errors.push(ConfigError {
            origin: (!origin.is_built_in()).then(|| origin.clone()),
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            origin: self.entry(key).origin.clone(),
            key: Some(key.to_owned()),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolvers::{ReplayStoreKind, ResolverMode};
    use crate::config::Origin;
    use crate::policy::{HostRule, PortRange};

    const ENGINE_CERT: (&str, &str) = (
        CERT_FOR_DATA_VERIFICATION,
        "/etc/pki/ovirt-engine/certs/engine.cer",
    );

    fn settings(
        pairs: &[(&str, &str)],
    ) -> Result<(Settings, Vec<ConfigWarning>), Vec<ConfigError>> {
        let mut all = vec![ENGINE_CERT];
        all.extend_from_slice(pairs);
        Settings::from_raw(&RawConfig::from_pairs(&all))
    }

    fn messages<T: ToString>(items: &[T]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_with_an_engine_certificate_are_valid() {
        let (settings, warnings) = settings(&[]).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(
            settings,
            Settings {
                proxy_host: ListenHost::Any,
                proxy_port: 6100,
                source_is_ipv6: false,
                ssl_certificate: None,
                ssl_key: None,
                ssl_only: false,
                ssl_min_version: TlsVersion::Tls12,
                ssl_ciphers: "HIGH:!aNULL".to_owned(),
                cert_for_data_verification: Some(PathBuf::from(ENGINE_CERT.1)),
                trace_enable: false,
                trace_file: None,
                ticket_accept_legacy_sha1: false,
                ticket_clock_skew: Duration::ZERO,
                handshake_timeout: Duration::from_secs(10),
                target_connect_timeout: Duration::from_secs(10),
                shutdown_grace_period: Duration::from_secs(30),
                ws_max_message_size: 4 * 1024 * 1024,
                ws_max_frame_size: 1024 * 1024,
                target_policy: TargetPolicy {
                    allow_hosts: vec![HostRule::Any],
                    deny_hosts: vec![],
                    allow_ports: vec![PortRange {
                        first: 5900,
                        last: 65535
                    }],
                },
                max_sessions: 10_000,
                max_sessions_per_client: 100,
                max_handshakes: 1024,
                max_handshakes_per_client: 256,
                worker_threads: None,
                max_request_header_size: 32 * 1024,
                session_idle_timeout: None,
                session_max_duration: None,
                allowed_origins: vec![],
                refuse_with_http_status: false,
                heartbeat_interval: Some(Duration::from_secs(20)),
                heartbeat_timeout: Duration::from_secs(60),
                reconnect_grace_period: None,
                reconnect_buffer_size: 2 * 1024 * 1024,
                log_level: Level::INFO,
                resolver: ResolverSettings {
                    mode: ResolverMode::SignedTicket,
                    ticket_single_use: false,
                    replay_store: ReplayStoreKind::Memory,
                    redis_url: None,
                    replay_store_timeout: Duration::from_secs(2),
                    token_file: None,
                    token_authority_url: None,
                    token_authority_ca: None,
                    token_authority_timeout: Duration::from_secs(5),
                    token_authority_cache_ttl: Duration::from_secs(30),
                    token_authority_cache_size: 1000,
                },
                log_format: LogFormat::Text,
                log_target: LogTarget::Stderr,
                log_syslog_socket: PathBuf::from("/dev/log"),
                log_syslog_facility: LogFacility::DAEMON,
                proxy_protocol_trusted: Trusted::default(),
                admin_listen: None,
                admin_token: None,
                admin_token_file: None,
                admin_metrics_require_token: false,
                ssl_target_ca: None,
                ssl_target_verify_name: true,
                ssl_target_timeout: Duration::from_secs(10),
                web_root: None,
            }
        );
    }

    #[test]
    fn limits_and_origins() {
        let (settings, _) = settings(&[
            (SESSION_IDLE_TIMEOUT, "5m"),
            (SESSION_MAX_DURATION, "0"),
            (
                ALLOWED_ORIGINS,
                "https://Portal.example.com/, http://localhost:8080",
            ),
            (TARGET_ALLOW_PORTS, "5900-5999"),
        ])
        .unwrap();
        assert_eq!(
            settings.session_idle_timeout,
            Some(Duration::from_secs(300))
        );
        assert_eq!(settings.session_max_duration, None);
        assert_eq!(
            settings.allowed_origins,
            ["https://portal.example.com", "http://localhost:8080"]
        );
        let errors = settings_errors(&[
            (MAX_SESSIONS, "0"),
            (MAX_REQUEST_HEADER_SIZE, "100"),
            (ALLOWED_ORIGINS, "portal.example.com"),
            (TARGET_ALLOW_HOSTS, "10.0.0.0/40"),
            (TARGET_ALLOW_PORTS, "22-21"),
        ]);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("TARGET_ALLOW_HOSTS: \"10.0.0.0/40\" is not")),
            "{errors:?}"
        );
    }

    fn settings_errors(pairs: &[(&str, &str)]) -> Vec<String> {
        messages(&settings(pairs).unwrap_err())
    }

    #[test]
    fn missing_engine_certificate_is_an_error() {
        let errors = Settings::from_raw(&RawConfig::defaults()).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["CERT_FOR_DATA_VERIFICATION: is not set: the engine certificate is needed to verify tickets"]
        );
        let errors = settings(&[(CERT_FOR_DATA_VERIFICATION, "")]).unwrap_err();
        assert_eq!(errors[0].origin, Some(Origin::new("test", 0)));
    }

    #[test]
    fn booleans_follow_upstream_in_any_case() {
        for value in [
            "t", "T", "true", "True", "TRUE", "y", "Y", "yes", "YES", "1",
        ] {
            assert_eq!(parse_bool(value), Some(true), "{value}");
        }
        for value in ["f", "F", "false", "False", "n", "N", "no", "No", "0", ""] {
            assert_eq!(parse_bool(value), Some(false), "{value}");
        }
        for value in ["Ture", "on", "2", " true", "yess"] {
            assert_eq!(parse_bool(value), None, "{value}");
        }
    }

    #[test]
    fn unrecognised_boolean_is_false_with_a_warning() {
        let (settings, warnings) = settings(&[(SSL_ONLY, "Ture")]).unwrap();
        assert!(!settings.ssl_only);
        assert_eq!(
            messages(&warnings),
            ["test: SSL_ONLY: \"Ture\" is not a boolean (true/false, yes/no, t/f, y/n, 1/0); taken as false"]
        );
    }

    #[test]
    fn listen_hosts() {
        assert_eq!(parse_listen_host("*"), Ok(ListenHost::Any));
        assert_eq!(parse_listen_host(""), Ok(ListenHost::Any));
        assert_eq!(
            parse_listen_host("0.0.0.0"),
            Ok(ListenHost::Addr("0.0.0.0".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_host("::1"),
            Ok(ListenHost::Addr("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_host("[::1]"),
            Ok(ListenHost::Addr("::1".parse().unwrap()))
        );
        assert_eq!(
            parse_listen_host("engine.example.com"),
            Ok(ListenHost::Name("engine.example.com".to_owned()))
        );
        assert_eq!(
            parse_listen_host("localhost."),
            Ok(ListenHost::Name("localhost.".to_owned()))
        );
        for bad in [
            "[1.2.3.4]",
            "[::1",
            "10.0.0.256",
            "-bad.example",
            "a..b",
            "exa_mple.com",
            "::g",
        ] {
            assert!(parse_listen_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("0"), Ok(0));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in ["65536", "-1", "", "61o0", "6100 "] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_port("61o0").unwrap_err().to_string(),
            "\"61o0\" is not a port number (0-65535)"
        );
    }

    #[test]
    fn tls_versions() {
        for (value, expected) in [
            ("TLSv1.2", Some(TlsVersion::Tls12)),
            ("tlsv1_2", Some(TlsVersion::Tls12)),
            ("TLSv1.3", Some(TlsVersion::Tls13)),
            ("TLSV1_3", Some(TlsVersion::Tls13)),
            ("TLSv1", None),
            ("TLSv1.1", None),
            ("TLSv1_1", None),
        ] {
            assert_eq!(parse_tls_version(value), Ok(expected), "{value}");
        }
        for bad in ["SSLv3", "TLSv1.4", "1.2", ""] {
            assert!(parse_tls_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn old_tls_versions_are_raised_with_a_warning() {
        let (settings, warnings) = settings(&[(SSL_MIN_VERSION, "TLSv1")]).unwrap();
        assert_eq!(settings.ssl_min_version, TlsVersion::Tls12);
        assert_eq!(
            messages(&warnings),
            ["test: SSL_MIN_VERSION: \"TLSv1\" is older than TLSv1.2, the oldest rustls offers; raised to TLSv1.2"]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30s"), Ok(Duration::from_secs(3630)));
        for bad in ["", "-1", "10x", "1.5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_too_long_to_compute_a_deadline_are_refused() {
        // HANDSHAKE_TIMEOUT=18446744073709551615 used to pass check-config, then panic in
        // every connection task ("overflow when adding duration to instant").
        assert_eq!(parse_duration("315360000"), Ok(MAX_DURATION));
        for huge in [
            "315360001",
            "18446744073709551615",
            "11years",
            "9999999999999h",
        ] {
            let error = parse_duration(huge).unwrap_err();
            assert_eq!(error.value, huge);
        }
        assert_eq!(
            parse_duration("18446744073709551615")
                .unwrap_err()
                .to_string(),
            "\"18446744073709551615\" is not a duration of at most 10 years"
        );
    }

    #[test]
    fn message_sizes() {
        assert_eq!(parse_message_size("1024"), Ok(1024));
        assert_eq!(parse_message_size("16777216"), Ok(16_777_216));
        for bad in ["1023", "0", "", "16M", "-5"] {
            assert!(parse_message_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_levels_in_any_case() {
        assert_eq!(parse_log_level("error"), Ok(Level::ERROR));
        assert_eq!(parse_log_level("WARN"), Ok(Level::WARN));
        assert_eq!(parse_log_level("Info"), Ok(Level::INFO));
        assert_eq!(parse_log_level("debug"), Ok(Level::DEBUG));
        assert_eq!(parse_log_level("trace"), Ok(Level::TRACE));
        for bad in ["warning", "", "3", "verbose"] {
            assert!(parse_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_not_just_the_first() {
        let errors = Settings::from_raw(&RawConfig::from_pairs(&[
            (PROXY_HOST, "not a host"),
            (PROXY_PORT, "61o0"),
            (SSL_MIN_VERSION, "SSLv3"),
            (TICKET_CLOCK_SKEW, "soon"),
            (WS_MAX_MESSAGE_SIZE, "10"),
            (LOG_LEVEL, "loud"),
            (SSL_ONLY, "yes"),
        ]))
        .unwrap_err();
        let keys: Vec<&str> = errors
            .iter()
            .filter_map(|error| error.key.as_deref())
            .collect();
        assert_eq!(
            keys,
            [
                PROXY_HOST,
                PROXY_PORT,
                SSL_MIN_VERSION,
                CERT_FOR_DATA_VERIFICATION,
                TICKET_CLOCK_SKEW,
                WS_MAX_MESSAGE_SIZE,
                LOG_LEVEL,
                SSL_ONLY
            ]
        );
        assert_eq!(
            errors[1].to_string(),
            "test: PROXY_PORT: \"61o0\" is not a port number (0-65535)"
        );
    }

    #[test]
    fn ssl_only_needs_a_certificate() {
        let errors = settings(&[(SSL_ONLY, "True")]).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["test: SSL_ONLY: is true but SSL_CERTIFICATE is empty: serving TLS only needs a certificate"]
        );
        let (settings, _) = settings(&[(SSL_ONLY, "True"), (SSL_CERTIFICATE, "/c.pem")]).unwrap();
        assert!(settings.ssl_only);
        assert_eq!(settings.ssl_certificate, Some(PathBuf::from("/c.pem")));
        assert_eq!(settings.ssl_key, None);
    }

    #[test]
    fn a_key_needs_a_certificate() {
        let errors = settings(&[(SSL_KEY, "/k.pem")]).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["test: SSL_KEY: is set but SSL_CERTIFICATE is empty: a key needs its certificate"]
        );
    }

    #[test]
    fn admin_settings_and_their_checks() {
        let token = "0123456789abcdef0123";
        let (admin, warnings) = settings(&[(ADMIN_LISTEN, "6101"), (ADMIN_TOKEN, token)]).unwrap();
        assert_eq!(admin.admin_listen, Some("127.0.0.1:6101".parse().unwrap()));
        assert_eq!(admin.admin_token, Some(Secret::new(token)));
        assert_eq!(warnings, []);
        assert_eq!(format!("{:?}", admin.admin_token), "Some(********)");
        assert!(!format!("{admin:?}").contains(token));

        let errors = settings_errors(&[(ADMIN_TOKEN, "short-secret")]);
        assert_eq!(
            errors,
            ["test: ADMIN_TOKEN: is shorter than 16 characters: use a long random value, e.g. `openssl rand -hex 32`"]
        );
        let errors = settings_errors(&[
            (ADMIN_LISTEN, "6101"),
            (ADMIN_TOKEN, token),
            (ADMIN_TOKEN_FILE, "/etc/consolegate/admin.token"),
        ]);
        assert_eq!(
            errors,
            ["test: ADMIN_TOKEN_FILE: is set and so is ADMIN_TOKEN: set only one of them"]
        );
        let errors =
            settings_errors(&[(ADMIN_LISTEN, "6101"), (ADMIN_METRICS_REQUIRE_TOKEN, "yes")]);
        assert_eq!(
            errors,
            ["test: ADMIN_METRICS_REQUIRE_TOKEN: is true but no ADMIN_TOKEN or ADMIN_TOKEN_FILE is set"]
        );
        let (_, warnings) = settings(&[(ADMIN_LISTEN, "0.0.0.0:6101")]).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("reachable from the network"));
        let (_, warnings) = settings(&[(ADMIN_TOKEN, token)]).unwrap();
        assert!(messages(&warnings)[0].contains("ADMIN_LISTEN: is empty"));
    }

    #[test]
    fn log_and_proxy_protocol_settings() {
        let (settings, _) = settings(&[
            (LOG_FORMAT, "JSON"),
            (LOG_TARGET, "both"),
            (LOG_SYSLOG_FACILITY, "local3"),
            (PROXY_PROTOCOL_TRUSTED, "10.0.0.0/24, 192.0.2.7"),
        ])
        .unwrap();
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.log_target, LogTarget::Both);
        assert_eq!(settings.log_syslog_facility, LogFacility(19));
        assert!(settings
            .proxy_protocol_trusted
            .contains("10.0.0.9".parse().unwrap()));
        assert!(settings
            .proxy_protocol_trusted
            .contains("192.0.2.7".parse().unwrap()));
        assert!(!settings
            .proxy_protocol_trusted
            .contains("192.0.2.8".parse().unwrap()));
        let errors = settings_errors(&[
            (LOG_FORMAT, "xml"),
            (LOG_TARGET, "file"),
            (LOG_SYSLOG_FACILITY, "local9"),
            (PROXY_PROTOCOL_TRUSTED, "10.0.0.0/33"),
            (ADMIN_LISTEN, "localhost:6101"),
        ]);
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn tracing_is_accepted_but_warned() {
        let (settings, warnings) =
            settings(&[(TRACE_ENABLE, "True"), (TRACE_FILE, "/tmp/trace")]).unwrap();
        assert!(settings.trace_enable);
        assert_eq!(settings.trace_file, Some(PathBuf::from("/tmp/trace")));
        assert_eq!(
            messages(&warnings),
            ["test: TRACE_ENABLE: traffic tracing is not supported; ignored"]
        );
    }
}
