//! The registry of configuration keys: names, built-in defaults, one-line docs.
//!
//! [`KEYS`] is the single source of defaults (read by [`RawConfig`](super::RawConfig))
//! and the print order of `check-config`; [`Settings`](super::Settings) parses each key.

/// Listen address: `*` or empty for all addresses, an IP literal or a host name.
pub const PROXY_HOST: &str = "PROXY_HOST";
/// Listen port.
pub const PROXY_PORT: &str = "PROXY_PORT";
/// Whether `*` means all IPv6 rather than all IPv4 addresses.
pub const SOURCE_IS_IPV6: &str = "SOURCE_IS_IPV6";
/// The proxy's certificate (PEM).
pub const SSL_CERTIFICATE: &str = "SSL_CERTIFICATE";
/// The proxy's private key (PEM).
pub const SSL_KEY: &str = "SSL_KEY";
/// Whether plain `ws://` is refused.
pub const SSL_ONLY: &str = "SSL_ONLY";
/// Oldest TLS version offered.
pub const SSL_MIN_VERSION: &str = "SSL_MIN_VERSION";
/// OpenSSL-style cipher list.
pub const SSL_CIPHERS: &str = "SSL_CIPHERS";
/// The engine certificate that signs tickets.
pub const CERT_FOR_DATA_VERIFICATION: &str = "CERT_FOR_DATA_VERIFICATION";
/// Upstream traffic tracing switch, accepted for compatibility.
pub const TRACE_ENABLE: &str = "TRACE_ENABLE";
/// Upstream traffic tracing file, accepted for compatibility.
pub const TRACE_FILE: &str = "TRACE_FILE";
/// Whether tickets signed with SHA-1 only are accepted.
pub const TICKET_ACCEPT_LEGACY_SHA1: &str = "TICKET_ACCEPT_LEGACY_SHA1";
/// Tolerance on a ticket's validity window.
pub const TICKET_CLOCK_SKEW: &str = "TICKET_CLOCK_SKEW";
/// How a request names its console.
pub const TARGET_RESOLVER: &str = "TARGET_RESOLVER";
/// Whether each signed ticket is accepted once only.
pub const TICKET_SINGLE_USE: &str = "TICKET_SINGLE_USE";
/// Where single-use tickets are recorded.
pub const REPLAY_STORE: &str = "REPLAY_STORE";
/// The Redis server shared by every instance for single-use tickets.
pub const REDIS_URL: &str = "REDIS_URL";
/// Time the replay store has to answer.
pub const REPLAY_STORE_TIMEOUT: &str = "REPLAY_STORE_TIMEOUT";
/// websockify-style token file or directory.
pub const TOKEN_FILE: &str = "TOKEN_FILE";
/// The HTTP service asked about tokens.
pub const TOKEN_AUTHORITY_URL: &str = "TOKEN_AUTHORITY_URL";
/// CAs trusted for an https token authority.
pub const TOKEN_AUTHORITY_CA: &str = "TOKEN_AUTHORITY_CA";
/// Time the token authority has to answer.
pub const TOKEN_AUTHORITY_TIMEOUT: &str = "TOKEN_AUTHORITY_TIMEOUT";
/// How long a positive answer of the token authority is reused.
pub const TOKEN_AUTHORITY_CACHE_TTL: &str = "TOKEN_AUTHORITY_CACHE_TTL";
/// How many positive answers of the token authority are kept.
pub const TOKEN_AUTHORITY_CACHE_SIZE: &str = "TOKEN_AUTHORITY_CACHE_SIZE";
/// Time allowed for the TLS handshake and the HTTP request.
pub const HANDSHAKE_TIMEOUT: &str = "HANDSHAKE_TIMEOUT";
/// Time allowed to connect to the console.
pub const TARGET_CONNECT_TIMEOUT: &str = "TARGET_CONNECT_TIMEOUT";
/// Time sessions may continue after SIGTERM.
pub const SHUTDOWN_GRACE_PERIOD: &str = "SHUTDOWN_GRACE_PERIOD";
/// Largest WebSocket message accepted.
pub const WS_MAX_MESSAGE_SIZE: &str = "WS_MAX_MESSAGE_SIZE";
/// Largest WebSocket frame accepted.
pub const WS_MAX_FRAME_SIZE: &str = "WS_MAX_FRAME_SIZE";
/// Hosts and networks a ticket may reach.
pub const TARGET_ALLOW_HOSTS: &str = "TARGET_ALLOW_HOSTS";
/// Hosts and networks no ticket may reach.
pub const TARGET_DENY_HOSTS: &str = "TARGET_DENY_HOSTS";
/// Ports a ticket may reach.
pub const TARGET_ALLOW_PORTS: &str = "TARGET_ALLOW_PORTS";
/// Sessions open at once, in total.
pub const MAX_SESSIONS: &str = "MAX_SESSIONS";
/// Sessions open at once from one client address.
pub const MAX_SESSIONS_PER_CLIENT: &str = "MAX_SESSIONS_PER_CLIENT";
/// Connections still in their TLS or HTTP phase at once.
pub const MAX_HANDSHAKES: &str = "MAX_HANDSHAKES";
pub const MAX_HANDSHAKES_PER_CLIENT: &str = "MAX_HANDSHAKES_PER_CLIENT";
pub const WORKER_THREADS: &str = "WORKER_THREADS";
/// Largest HTTP request head.
pub const MAX_REQUEST_HEADER_SIZE: &str = "MAX_REQUEST_HEADER_SIZE";
/// A session with no traffic either way for this long is closed.
pub const SESSION_IDLE_TIMEOUT: &str = "SESSION_IDLE_TIMEOUT";
/// A session is closed after this long, whatever it does.
pub const SESSION_MAX_DURATION: &str = "SESSION_MAX_DURATION";
/// Browser origins allowed to open consoles.
pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
/// Refuse before the upgrade with an HTTP status, as upstream does.
pub const REFUSE_WITH_HTTP_STATUS: &str = "REFUSE_WITH_HTTP_STATUS";
/// How often an idle session's browser is pinged.
pub const HEARTBEAT_INTERVAL: &str = "HEARTBEAT_INTERVAL";
/// How long a browser may stay silent after a ping before its session ends.
pub const HEARTBEAT_TIMEOUT: &str = "HEARTBEAT_TIMEOUT";
/// How long a session waits for its browser to re-attach after a drop.
pub const RECONNECT_GRACE_PERIOD: &str = "RECONNECT_GRACE_PERIOD";
/// Stream bytes kept per resumable session for resending after a re-attach.
pub const RECONNECT_BUFFER_SIZE: &str = "RECONNECT_BUFFER_SIZE";
/// Log verbosity.
pub const LOG_LEVEL: &str = "LOG_LEVEL";
/// Log line format: human-readable text or JSON lines.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// Where log lines go: standard error, syslog, or both.
pub const LOG_TARGET: &str = "LOG_TARGET";
/// The local syslog socket.
pub const LOG_SYSLOG_SOCKET: &str = "LOG_SYSLOG_SOCKET";
/// The syslog facility of our lines.
pub const LOG_SYSLOG_FACILITY: &str = "LOG_SYSLOG_FACILITY";
/// Load balancers whose PROXY protocol header names the real client.
pub const PROXY_PROTOCOL_TRUSTED: &str = "PROXY_PROTOCOL_TRUSTED";
/// Where the admin listener (health, metrics, sessions) listens; empty: off.
pub const ADMIN_LISTEN: &str = "ADMIN_LISTEN";
/// Bearer token for the admin session endpoints.
pub const ADMIN_TOKEN: &str = "ADMIN_TOKEN";
/// A file holding the admin token.
pub const ADMIN_TOKEN_FILE: &str = "ADMIN_TOKEN_FILE";
/// Whether `/metrics` needs the admin token too.
pub const ADMIN_METRICS_REQUIRE_TOKEN: &str = "ADMIN_METRICS_REQUIRE_TOKEN";
/// CA file that VNC servers' VeNCrypt certificates must chain to.
pub const SSL_TARGET_CA: &str = "SSL_TARGET_CA";
/// Whether a VNC server's certificate must also name the ticket's host.
pub const SSL_TARGET_VERIFY_NAME: &str = "SSL_TARGET_VERIFY_NAME";
/// Time allowed for the VeNCrypt negotiation of an `ssl_target` session.
pub const SSL_TARGET_TIMEOUT: &str = "SSL_TARGET_TIMEOUT";
/// Directory of static files (the console page) served on the proxy port.
pub const WEB_ROOT: &str = "WEB_ROOT";

/// One configuration key as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDef {
    pub name: &'static str,
    /// The value the key has before any file is read, in file syntax.
    pub default: &'static str,
    /// One line for `check-config` and the README.
    pub doc: &'static str,
    /// Whether the value must never be printed or logged.
    pub secret: bool,
}

/// Every key we understand, in `check-config` print order.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        name: PROXY_HOST,
        default: "*",
        doc: "listen address: * or empty for all addresses, an IP literal or a host name",
        secret: false,
    },
    KeyDef {
        name: PROXY_PORT,
        default: "6100",
        doc: "listen port, 0-65535 (0: any free port)",
        secret: false,
    },
    KeyDef {
        name: SOURCE_IS_IPV6,
        default: "False",
        doc: "with PROXY_HOST=*, listen on all IPv6 rather than all IPv4 addresses",
        secret: false,
    },
    KeyDef {
        name: SSL_CERTIFICATE,
        default: "",
        doc: "PEM certificate, may hold the key and chain; empty: no TLS",
        secret: false,
    },
    KeyDef {
        name: SSL_KEY,
        default: "",
        doc: "PEM private key; empty: the key is inside SSL_CERTIFICATE",
        secret: false,
    },
    KeyDef {
        name: SSL_ONLY,
        default: "False",
        doc: "refuse plain ws:// connections",
        secret: false,
    },
    KeyDef {
        name: SSL_MIN_VERSION,
        default: "TLSv1.2",
        doc: "oldest TLS version offered: TLSv1.2 or TLSv1.3",
        secret: false,
    },
    KeyDef {
        name: SSL_CIPHERS,
        default: "HIGH:!aNULL",
        doc: "OpenSSL cipher list",
        secret: false,
    },
    KeyDef {
        name: CERT_FOR_DATA_VERIFICATION,
        default: "",
        doc: "PEM engine certificate(s) that sign tickets (alias: CERT_FOR_DATA_VALIDATION)",
        secret: false,
    },
    KeyDef {
        name: TRACE_ENABLE,
        default: "False",
        doc: "accepted for compatibility; traffic tracing is not supported",
        secret: false,
    },
    KeyDef {
        name: TRACE_FILE,
        default: "",
        doc: "accepted for compatibility; traffic tracing is not supported",
        secret: false,
    },
    KeyDef {
        name: TICKET_ACCEPT_LEGACY_SHA1,
        default: "False",
        doc: "accept tickets signed with SHA-1 only (engines up to 4.4.10)",
        secret: false,
    },
    KeyDef {
        name: TICKET_CLOCK_SKEW,
        default: "0",
        doc: "tolerance on a ticket's validFrom and validTo",
        secret: false,
    },
    KeyDef {
        name: TARGET_RESOLVER,
        default: "signed-ticket",
        doc: "how a request names its console: signed-ticket, token-file or token-authority",
        secret: false,
    },
    KeyDef {
        name: TICKET_SINGLE_USE,
        default: "False",
        doc: "accept each signed ticket once only; replays are refused",
        secret: false,
    },
    KeyDef {
        name: REPLAY_STORE,
        default: "memory",
        doc: "where single-use tickets are recorded: memory (one instance) or redis (shared)",
        secret: false,
    },
    KeyDef {
        name: REDIS_URL,
        default: "",
        doc: "redis://[:password@]host[:port][/db] shared by every instance (REPLAY_STORE=redis)",
        secret: false,
    },
    KeyDef {
        name: REPLAY_STORE_TIMEOUT,
        default: "2s",
        doc: "time the replay store has to answer; no answer refuses the ticket",
        secret: false,
    },
    KeyDef {
        name: TOKEN_FILE,
        default: "",
        doc: "token-file mode: a file of TOKEN: host:port lines, or a directory of such files",
        secret: false,
    },
    KeyDef {
        name: TOKEN_AUTHORITY_URL,
        default: "",
        doc: "token-authority mode: the http(s) URL asked about each token",
        secret: false,
    },
    KeyDef {
        name: TOKEN_AUTHORITY_CA,
        default: "",
        doc: "PEM CA certificates trusted for an https authority; empty: the system's",
        secret: false,
    },
    KeyDef {
        name: TOKEN_AUTHORITY_TIMEOUT,
        default: "5s",
        doc: "time the token authority has to answer",
        secret: false,
    },
    KeyDef {
        name: TOKEN_AUTHORITY_CACHE_TTL,
        default: "30s",
        doc: "how long a positive answer is reused; 0: ask every time",
        secret: false,
    },
    KeyDef {
        name: TOKEN_AUTHORITY_CACHE_SIZE,
        default: "1000",
        doc: "most positive answers kept; 0: no cache",
        secret: false,
    },
    KeyDef {
        name: HANDSHAKE_TIMEOUT,
        default: "10s",
        doc: "time for the TLS handshake and the HTTP request",
        secret: false,
    },
    KeyDef {
        name: TARGET_CONNECT_TIMEOUT,
        default: "10s",
        doc: "time to connect to the console",
        secret: false,
    },
    KeyDef {
        name: SHUTDOWN_GRACE_PERIOD,
        default: "30s",
        doc: "on SIGTERM, how long open sessions may continue",
        secret: false,
    },
    KeyDef {
        name: WS_MAX_MESSAGE_SIZE,
        default: "4194304",
        doc: "largest WebSocket message from a browser in bytes, at least 1024",
        secret: false,
    },
    KeyDef {
        name: WS_MAX_FRAME_SIZE,
        default: "1048576",
        doc: "largest WebSocket frame from a browser in bytes, at least 1024",
        secret: false,
    },
    KeyDef {
        name: TARGET_ALLOW_HOSTS,
        default: "*",
        doc: "hosts a ticket may reach: *, addresses, networks (CIDR), host names, *.domain",
        secret: false,
    },
    KeyDef {
        name: TARGET_DENY_HOSTS,
        default: "",
        doc: "hosts no ticket may reach, whatever TARGET_ALLOW_HOSTS says",
        secret: false,
    },
    KeyDef {
        name: TARGET_ALLOW_PORTS,
        default: "5900-65535",
        doc: "ports a ticket may reach: ports and ranges",
        secret: false,
    },
    KeyDef {
        name: MAX_SESSIONS,
        default: "10000",
        doc: "sessions open at once; more get 503",
        secret: false,
    },
    KeyDef {
        name: MAX_SESSIONS_PER_CLIENT,
        default: "100",
        doc: "sessions open at once from one client address; more get 429",
        secret: false,
    },
    KeyDef {
        name: MAX_HANDSHAKES,
        default: "1024",
        doc: "connections in their TLS/HTTP phase at once; more are closed at once",
        secret: false,
    },
    KeyDef {
        name: MAX_HANDSHAKES_PER_CLIENT,
        default: "256",
        doc: "connections in their TLS/HTTP phase at once from one client address; more are closed at once",
        secret: false,
    },
    KeyDef {
        name: WORKER_THREADS,
        default: "auto",
        doc: "threads serving connections, each with its own event loop; auto: one per CPU the process may use",
        secret: false,
    },
    KeyDef {
        name: MAX_REQUEST_HEADER_SIZE,
        default: "32768",
        doc: "largest HTTP request head in bytes (8192 or more); larger gets 431",
        secret: false,
    },
    KeyDef {
        name: SESSION_IDLE_TIMEOUT,
        default: "0",
        doc: "close a session with no traffic either way for this long; 0 = never",
        secret: false,
    },
    KeyDef {
        name: SESSION_MAX_DURATION,
        default: "0",
        doc: "close a session after this long; 0 = never",
        secret: false,
    },
    KeyDef {
        name: ALLOWED_ORIGINS,
        default: "",
        doc: "browser origins (scheme://host[:port]) allowed to open consoles; empty = any",
        secret: false,
    },
    KeyDef {
        name: REFUSE_WITH_HTTP_STATUS,
        default: "False",
        doc: "refuse with an HTTP status before the upgrade (upstream) instead of a 4xxx close code noVNC can show",
        secret: false,
    },
    KeyDef {
        name: HEARTBEAT_INTERVAL,
        default: "20s",
        doc: "ping the browser after this long without traffic either way; 0 = never",
        secret: false,
    },
    KeyDef {
        name: HEARTBEAT_TIMEOUT,
        default: "60s",
        doc: "end a session whose browser sent nothing, not even a pong, for this long",
        secret: false,
    },
    KeyDef {
        name: RECONNECT_GRACE_PERIOD,
        default: "0",
        doc: "keep a console this long for its browser to re-attach after a drop (consolegate.v1); 0 = off",
        secret: false,
    },
    KeyDef {
        name: RECONNECT_BUFFER_SIZE,
        default: "2097152",
        doc: "bytes sent to a resumable browser kept until it acknowledges them (at least 1024)",
        secret: false,
    },
    KeyDef {
        name: LOG_LEVEL,
        default: "info",
        doc: "error, warn, info, debug or trace",
        secret: false,
    },
    KeyDef {
        name: LOG_FORMAT,
        default: "text",
        doc: "text (human-readable lines) or json (one JSON object per line)",
        secret: false,
    },
    KeyDef {
        name: LOG_TARGET,
        default: "stderr",
        doc: "stderr (the journal under systemd), syslog, or both",
        secret: false,
    },
    KeyDef {
        name: LOG_SYSLOG_SOCKET,
        default: "/dev/log",
        doc: "the local syslog datagram socket, with LOG_TARGET=syslog or both",
        secret: false,
    },
    KeyDef {
        name: LOG_SYSLOG_FACILITY,
        default: "daemon",
        doc: "syslog facility: daemon, user, or local0 to local7",
        secret: false,
    },
    KeyDef {
        name: PROXY_PROTOCOL_TRUSTED,
        default: "",
        doc: "addresses and networks of load balancers that must send a PROXY protocol v1/v2 header naming the real client; empty = off",
        secret: false,
    },
    KeyDef {
        name: ADMIN_LISTEN,
        default: "",
        doc: "admin listener (/livez, /readyz, /metrics, /sessions): PORT (on 127.0.0.1) or ADDRESS:PORT; empty = off",
        secret: false,
    },
    KeyDef {
        name: ADMIN_TOKEN,
        default: "",
        doc: "bearer token (16 or more characters) the admin /sessions endpoints require; empty: they are disabled",
        secret: true,
    },
    KeyDef {
        name: ADMIN_TOKEN_FILE,
        default: "",
        doc: "file whose first line is the admin token, instead of ADMIN_TOKEN",
        secret: false,
    },
    KeyDef {
        name: ADMIN_METRICS_REQUIRE_TOKEN,
        default: "False",
        doc: "/metrics requires the admin token too",
        secret: false,
    },
    KeyDef {
        name: SSL_TARGET_CA,
        default: "",
        doc: "PEM CA certificate(s) that ssl_target VNC servers' certificates must chain to; empty: not verified, as upstream",
        secret: false,
    },
    KeyDef {
        name: SSL_TARGET_VERIFY_NAME,
        default: "True",
        doc: "with SSL_TARGET_CA, the VNC server's certificate must also name the ticket's host",
        secret: false,
    },
    KeyDef {
        name: SSL_TARGET_TIMEOUT,
        default: "10s",
        doc: "time for the VeNCrypt negotiation of an ssl_target session",
        secret: false,
    },
    KeyDef {
        name: WEB_ROOT,
        default: "",
        doc: "directory of static files (the console page) served on the proxy port; empty: none, plain GETs get 405",
        secret: false,
    },
];

/// Other names for keys, as `(alias, key)`: an assignment to the alias sets the key.
///
/// Some oVirt documentation spells the engine certificate key this way.
pub const ALIASES: &[(&str, &str)] = &[("CERT_FOR_DATA_VALIDATION", CERT_FOR_DATA_VERIFICATION)];

/// Words that mark a key's value as secret, whether or not we know the key.
const SECRET_WORDS: &[&str] = &["PASSWORD", "SECRET", "PASSPHRASE", "TOKEN"];

/// The registry entry for `name`, which must already be canonical.
pub fn key_def(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|key| key.name == name)
}

/// The key `name` sets: the key an alias stands for, else `name` itself.
pub fn canonical_key(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, key)| key)
}

/// Whether `name`'s value must be masked: a key registered as secret, or an unknown key
/// whose name says so, since upstream files may carry helper keys we do not know. A
/// registered key is judged by its registration alone: `TOKEN_FILE` names a file, not a
/// token. (Passwords inside URLs are masked whatever the key: see `mask_url_password`.)
pub fn is_secret(name: &str) -> bool {
    match key_def(canonical_key(name)) {
        Some(key) => key.secret,
        None => {
            let upper = name.to_ascii_uppercase();
            SECRET_WORDS.iter().any(|word| upper.contains(word))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_unique() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(
                KEYS[i + 1..].iter().all(|other| other.name != key.name),
                "{} twice",
                key.name
            );
        }
    }

    #[test]
    fn aliases_name_known_keys_and_are_not_keys() {
        for (alias, key) in ALIASES {
            assert!(key_def(key).is_some(), "{alias} stands for unknown {key}");
            assert!(key_def(alias).is_none(), "{alias} is also a key");
        }
    }

    #[test]
    fn canonical_key_resolves_aliases_only() {
        assert_eq!(
            canonical_key("CERT_FOR_DATA_VALIDATION"),
            CERT_FOR_DATA_VERIFICATION
        );
        assert_eq!(
            canonical_key(CERT_FOR_DATA_VERIFICATION),
            CERT_FOR_DATA_VERIFICATION
        );
        assert_eq!(canonical_key("PKI_DIR"), "PKI_DIR");
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        for name in [
            "DB_PASSWORD",
            "API_TOKEN",
            "KEY_PASSPHRASE",
            "CLIENT_SECRET",
            "db_password",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for key in KEYS {
            assert_eq!(is_secret(key.name), key.secret, "{}", key.name);
        }
        assert!(!is_secret(TOKEN_FILE));
        assert!(!is_secret(TOKEN_AUTHORITY_URL));
        assert!(is_secret(ADMIN_TOKEN));
        assert!(!is_secret(ADMIN_TOKEN_FILE));
        assert!(!is_secret("PKI_DIR"));
    }
}
