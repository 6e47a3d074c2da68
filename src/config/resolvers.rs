//! The settings that choose how a request names its console (`TARGET_RESOLVER`) and
//! configure each way: single-use tickets and their replay store, token files, the token
//! authority. Parsed by [`Settings::from_raw`](super::Settings::from_raw) with the other
//! keys, each key once by its `parse_*`; the keys are then checked against the mode.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::IntoConnectionInfo;
use url::Url;

use super::keys::{
    CERT_FOR_DATA_VERIFICATION, REDIS_URL, REPLAY_STORE, REPLAY_STORE_TIMEOUT, TARGET_RESOLVER,
    TICKET_SINGLE_USE, TOKEN_AUTHORITY_CA, TOKEN_AUTHORITY_CACHE_SIZE, TOKEN_AUTHORITY_CACHE_TTL,
    TOKEN_AUTHORITY_TIMEOUT, TOKEN_AUTHORITY_URL, TOKEN_FILE,
};
use super::mask_url_password;
use super::settings::{parse_duration, parse_path, InvalidValue, KeyReader};

/// How a request names its console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverMode {
    /// The path is an oVirt ticket signed by the engine (the default).
    SignedTicket,
    /// The token is looked up in websockify-style token files.
    TokenFile,
    /// The token is looked up by asking an HTTP service.
    TokenAuthority,
}

impl ResolverMode {
    pub fn name(self) -> &'static str {
        match self {
            ResolverMode::SignedTicket => "signed-ticket",
            ResolverMode::TokenFile => "token-file",
            ResolverMode::TokenAuthority => "token-authority",
        }
    }
}

impl fmt::Display for ResolverMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where single-use tickets are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStoreKind {
    /// In this process: enough for one instance.
    Memory,
    /// A Redis server every instance shares.
    Redis,
}

impl fmt::Display for ReplayStoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayStoreKind::Memory => "memory",
            ReplayStoreKind::Redis => "redis",
        })
    }
}

/// A URL that may carry a password: shown and debug-printed with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The URL in full, password included: for the client that needs it, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url_password(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

/// Everything about choosing the target, parsed; the files and servers it names are opened
/// by [`crate::proxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    pub mode: ResolverMode,
    pub ticket_single_use: bool,
    pub replay_store: ReplayStoreKind,
    pub redis_url: Option<SecretUrl>,
    pub replay_store_timeout: Duration,
    pub token_file: Option<PathBuf>,
    pub token_authority_url: Option<SecretUrl>,
    pub token_authority_ca: Option<PathBuf>,
    pub token_authority_timeout: Duration,
    pub token_authority_cache_ttl: Duration,
    pub token_authority_cache_size: usize,
}

/// Reads `TARGET_RESOLVER`.
pub fn parse_resolver_mode(value: &str) -> Result<ResolverMode, InvalidValue> {
    match value.to_ascii_lowercase().as_str() {
        "signed-ticket" => Ok(ResolverMode::SignedTicket),
        "token-file" => Ok(ResolverMode::TokenFile),
        "token-authority" => Ok(ResolverMode::TokenAuthority),
        _ => Err(InvalidValue::new(
            value,
            "a resolver (signed-ticket, token-file or token-authority)",
        )),
    }
}

/// Reads `REPLAY_STORE`.
pub fn parse_replay_store(value: &str) -> Result<ReplayStoreKind, InvalidValue> {
    match value.to_ascii_lowercase().as_str() {
        "memory" => Ok(ReplayStoreKind::Memory),
        "redis" => Ok(ReplayStoreKind::Redis),
        _ => Err(InvalidValue::new(value, "a replay store (memory or redis)")),
    }
}

/// Reads `REDIS_URL`: empty for unset, else `redis://` or `redis+unix://`/`unix://` as the
/// redis crate understands them. TLS (`rediss://`) is not built in.
pub fn parse_redis_url(value: &str) -> Result<Option<SecretUrl>, InvalidValue> {
    const EXPECTED: &str = "a Redis URL (redis://[:password@]host[:port][/db])";
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || InvalidValue::new(&mask_url_password(value), EXPECTED);
    if value.starts_with("rediss://") {
        return Err(InvalidValue::new(
            &mask_url_password(value),
            "a plain redis:// URL (rediss:// TLS is not supported)",
        ));
    }
    value.into_connection_info().map_err(|_| invalid())?;
    Ok(Some(SecretUrl(value.to_owned())))
}

/// Reads `TOKEN_AUTHORITY_URL`: empty for unset, else an absolute `http` or `https` URL with
/// a host and no fragment.
pub fn parse_authority_url(value: &str) -> Result<Option<SecretUrl>, InvalidValue> {
    const EXPECTED: &str = "an http:// or https:// URL with a host";
    if value.is_empty() {
        return Ok(None);
    }
    let invalid = || InvalidValue::new(&mask_url_password(value), EXPECTED);
    let url = Url::parse(value).map_err(|_| invalid())?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.fragment().is_none();
    if usable {
        Ok(Some(SecretUrl(value.to_owned())))
    } else {
        Err(invalid())
    }
}

/// Reads `TOKEN_AUTHORITY_CACHE_SIZE`: how many answers, 0 for none.
pub fn parse_cache_size(value: &str) -> Result<usize, InvalidValue> {
    value
        .parse()
        .ok()
        .filter(|&size| size <= 10_000_000)
        .ok_or_else(|| InvalidValue::new(value, "a number of answers from 0 to 10000000"))
}

impl ResolverSettings {
    /// Parses every key about choosing the target, recording errors and warnings in `keys`.
    pub(super) fn read(keys: &mut KeyReader<'_>) -> ResolverSettings {
        let settings = ResolverSettings {
            mode: keys.parse(TARGET_RESOLVER, parse_resolver_mode),
            ticket_single_use: keys.flag(TICKET_SINGLE_USE),
            replay_store: keys.parse(REPLAY_STORE, parse_replay_store),
            redis_url: keys.parse(REDIS_URL, parse_redis_url),
            replay_store_timeout: keys.parse(REPLAY_STORE_TIMEOUT, parse_duration),
            token_file: parse_path(keys.text(TOKEN_FILE)),
            token_authority_url: keys.parse(TOKEN_AUTHORITY_URL, parse_authority_url),
            token_authority_ca: parse_path(keys.text(TOKEN_AUTHORITY_CA)),
            token_authority_timeout: keys.parse(TOKEN_AUTHORITY_TIMEOUT, parse_duration),
            token_authority_cache_ttl: keys.parse(TOKEN_AUTHORITY_CACHE_TTL, parse_duration),
            token_authority_cache_size: keys.parse(TOKEN_AUTHORITY_CACHE_SIZE, parse_cache_size),
        };
        settings.check(keys);
        settings
    }

    /// Whether tickets are verified, so that the engine certificate is needed.
    pub fn needs_engine_certificate(&self) -> bool {
        self.mode == ResolverMode::SignedTicket
    }

    /// Keys the mode needs, and keys it ignores (a warning: the operator likely meant
    /// another mode). Single-use outside signed-ticket mode is an error, not a warning:
    /// ignoring it would accept replays the operator asked to refuse.
    fn check(&self, keys: &mut KeyReader<'_>) {
        let mode = self.mode;
        let ignored = || format!("is set but TARGET_RESOLVER is {mode}; ignored");
        match mode {
            ResolverMode::SignedTicket => {
                if self.ticket_single_use
                    && self.replay_store == ReplayStoreKind::Redis
                    && self.redis_url.is_none()
                {
                    keys.error(
                        REDIS_URL,
                        "is not set: REPLAY_STORE=redis records single-use tickets there",
                    );
                }
                if !self.ticket_single_use {
                    if self.replay_store == ReplayStoreKind::Redis {
                        keys.warn(
                            REPLAY_STORE,
                            "is redis but TICKET_SINGLE_USE is off; ignored",
                        );
                    }
                    if self.redis_url.is_some() {
                        keys.warn(REDIS_URL, "is set but TICKET_SINGLE_USE is off; ignored");
                    }
                }
            }
            ResolverMode::TokenFile | ResolverMode::TokenAuthority => {
                if self.ticket_single_use {
                    keys.error(
                        TICKET_SINGLE_USE,
                        format!("applies to signed tickets only, but TARGET_RESOLVER is {mode}"),
                    );
                }
                if !keys.text(CERT_FOR_DATA_VERIFICATION).is_empty() {
                    keys.warn(CERT_FOR_DATA_VERIFICATION, ignored());
                }
            }
        }
        match (mode, &self.token_file) {
            (ResolverMode::TokenFile, None) => keys.error(
                TOKEN_FILE,
                "is not set: TARGET_RESOLVER=token-file reads its tokens from it",
            ),
            (ResolverMode::TokenFile, Some(_)) | (_, None) => {}
            (_, Some(_)) => keys.warn(TOKEN_FILE, ignored()),
        }
        match (mode, &self.token_authority_url) {
            (ResolverMode::TokenAuthority, None) => keys.error(
                TOKEN_AUTHORITY_URL,
                "is not set: TARGET_RESOLVER=token-authority asks it about each token",
            ),
            (ResolverMode::TokenAuthority, Some(url)) => {
                if self.token_authority_ca.is_some() && url.expose().starts_with("http:") {
                    keys.warn(
                        TOKEN_AUTHORITY_CA,
                        "is set but TOKEN_AUTHORITY_URL is http://, which uses no TLS; ignored",
                    );
                }
                if self.token_authority_timeout.is_zero() {
                    keys.error(
                        TOKEN_AUTHORITY_TIMEOUT,
                        "is 0: the authority would never have time to answer",
                    );
                }
            }
            (_, None) => {}
            (_, Some(_)) => keys.warn(TOKEN_AUTHORITY_URL, ignored()),
        }
        if self.ticket_single_use && self.replay_store_timeout.is_zero() {
            keys.error(
                REPLAY_STORE_TIMEOUT,
                "is 0: the replay store would never have time to answer",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ConfigWarning, RawConfig, Settings};

    fn read(pairs: &[(&str, &str)]) -> Result<(Settings, Vec<ConfigWarning>), Vec<ConfigError>> {
        Settings::from_raw(&RawConfig::from_pairs(pairs))
    }

    fn messages<T: ToString>(items: &[T]) -> Vec<String> {
        items.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn modes_by_name_in_any_case() {
        assert_eq!(
            parse_resolver_mode("signed-ticket"),
            Ok(ResolverMode::SignedTicket)
        );
        assert_eq!(
            parse_resolver_mode("Token-File"),
            Ok(ResolverMode::TokenFile)
        );
        assert_eq!(
            parse_resolver_mode("TOKEN-AUTHORITY"),
            Ok(ResolverMode::TokenAuthority)
        );
        for bad in ["", "token", "tokenfile", "signed_ticket"] {
            assert!(parse_resolver_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_replay_store("Redis"), Ok(ReplayStoreKind::Redis));
        assert!(parse_replay_store("memcached").is_err());
    }

    #[test]
    fn redis_urls() {
        assert_eq!(parse_redis_url(""), Ok(None));
        for good in [
            "redis://127.0.0.1",
            "redis://:pw@10.0.0.9:6380/2",
            "redis+unix:///run/redis.sock",
        ] {
            assert!(parse_redis_url(good).unwrap().is_some(), "{good}");
        }
        for bad in ["http://h/", "127.0.0.1:6379", "redis://"] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
        let error = parse_redis_url("rediss://:pw@h/").unwrap_err();
        assert!(error.to_string().contains("TLS is not supported"));
        assert!(!error.to_string().contains("pw"), "{error}");
    }

    #[test]
    fn authority_urls() {
        assert_eq!(parse_authority_url(""), Ok(None));
        for good in [
            "http://127.0.0.1:8080/check",
            "https://auth.example.com/v1/console?realm=a",
            "https://u:p@[::1]:8443/",
        ] {
            assert!(parse_authority_url(good).unwrap().is_some(), "{good}");
        }
        for bad in [
            "ftp://h/",
            "/check",
            "http://",
            "http://h/#frag",
            "not a url",
        ] {
            assert!(parse_authority_url(bad).is_err(), "{bad}");
        }
        let url = parse_authority_url("https://u:secret@h/").unwrap().unwrap();
        assert_eq!(url.to_string(), "https://u:********@h/");
        assert!(!format!("{url:?}").contains("secret"));
        assert_eq!(url.expose(), "https://u:secret@h/");
    }

    #[test]
    fn cache_sizes() {
        assert_eq!(parse_cache_size("0"), Ok(0));
        assert_eq!(parse_cache_size("1000"), Ok(1000));
        for bad in ["-1", "", "1k", "10000001"] {
            assert!(parse_cache_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_tickets_are_the_default_and_need_the_engine_certificate() {
        let errors = read(&[]).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["CERT_FOR_DATA_VERIFICATION: is not set: the engine certificate is needed to verify tickets"]
        );
        let (settings, warnings) = read(&[(CERT_FOR_DATA_VERIFICATION, "/e.cer")]).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(settings.resolver.mode, ResolverMode::SignedTicket);
        assert!(!settings.resolver.ticket_single_use);
    }

    #[test]
    fn token_modes_need_their_source_but_no_engine_certificate() {
        let errors = read(&[(TARGET_RESOLVER, "token-file")]).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["TOKEN_FILE: is not set: TARGET_RESOLVER=token-file reads its tokens from it"]
        );
        let errors = read(&[(TARGET_RESOLVER, "token-authority")]).unwrap_err();
        assert_eq!(
            messages(&errors),
            ["TOKEN_AUTHORITY_URL: is not set: TARGET_RESOLVER=token-authority asks it about each token"]
        );
        let (settings, warnings) =
            read(&[(TARGET_RESOLVER, "token-file"), (TOKEN_FILE, "/etc/tokens")]).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(settings.cert_for_data_verification, None);
        assert_eq!(
            settings.resolver.token_file,
            Some(PathBuf::from("/etc/tokens"))
        );

        let (settings, _) = read(&[
            (TARGET_RESOLVER, "token-authority"),
            (TOKEN_AUTHORITY_URL, "http://u:pw@127.0.0.1:9/check"),
            (TOKEN_AUTHORITY_TIMEOUT, "750ms"),
        ])
        .unwrap();
        assert_eq!(
            settings.resolver.token_authority_timeout,
            Duration::from_millis(750)
        );
        assert_eq!(
            settings.resolver.token_authority_cache_ttl,
            Duration::from_secs(30)
        );
        assert_eq!(settings.resolver.token_authority_cache_size, 1000);
        let url = settings.resolver.token_authority_url.as_ref().unwrap();
        assert_eq!(url.to_string(), "http://u:********@127.0.0.1:9/check");
        assert!(!format!("{settings:?}").contains("pw@"));
    }

    #[test]
    fn keys_of_another_mode_are_warned_about() {
        let (_, warnings) = read(&[
            (TARGET_RESOLVER, "token-file"),
            (TOKEN_FILE, "/etc/tokens"),
            (CERT_FOR_DATA_VERIFICATION, "/e.cer"),
            (TOKEN_AUTHORITY_URL, "http://auth/"),
        ])
        .unwrap();
        assert_eq!(
            messages(&warnings),
            [
                "test: CERT_FOR_DATA_VERIFICATION: is set but TARGET_RESOLVER is token-file; ignored",
                "test: TOKEN_AUTHORITY_URL: is set but TARGET_RESOLVER is token-file; ignored",
            ]
        );
        let (_, warnings) = read(&[
            (CERT_FOR_DATA_VERIFICATION, "/e.cer"),
            (TOKEN_FILE, "/etc/tokens"),
            (REPLAY_STORE, "redis"),
        ])
        .unwrap();
        assert_eq!(
            messages(&warnings),
            [
                "test: REPLAY_STORE: is redis but TICKET_SINGLE_USE is off; ignored",
                "test: TOKEN_FILE: is set but TARGET_RESOLVER is signed-ticket; ignored",
            ]
        );
    }

    #[test]
    fn single_use_is_for_signed_tickets_and_redis_needs_its_url() {
        let errors = read(&[
            (TARGET_RESOLVER, "token-file"),
            (TOKEN_FILE, "/etc/tokens"),
            (TICKET_SINGLE_USE, "True"),
        ])
        .unwrap_err();
        assert_eq!(
            messages(&errors),
            ["test: TICKET_SINGLE_USE: applies to signed tickets only, but TARGET_RESOLVER is token-file"]
        );
        let errors = read(&[
            (CERT_FOR_DATA_VERIFICATION, "/e.cer"),
            (TICKET_SINGLE_USE, "True"),
            (REPLAY_STORE, "redis"),
        ])
        .unwrap_err();
        assert_eq!(
            messages(&errors),
            ["REDIS_URL: is not set: REPLAY_STORE=redis records single-use tickets there"]
        );
        let (settings, warnings) = read(&[
            (CERT_FOR_DATA_VERIFICATION, "/e.cer"),
            (TICKET_SINGLE_USE, "True"),
            (REPLAY_STORE, "redis"),
            (REDIS_URL, "redis://:pw@127.0.0.1:6390"),
        ])
        .unwrap();
        assert_eq!(warnings, []);
        assert_eq!(settings.resolver.replay_store, ReplayStoreKind::Redis);
        assert!(!format!("{settings:?}").contains("pw@"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let errors = read(&[
            (TARGET_RESOLVER, "tokens"),
            (REPLAY_STORE, "disk"),
            (REDIS_URL, "localhost:6379"),
            (TOKEN_AUTHORITY_URL, "ftp://x/"),
            (TOKEN_AUTHORITY_CACHE_SIZE, "lots"),
            (TOKEN_AUTHORITY_CACHE_TTL, "soon"),
            (CERT_FOR_DATA_VERIFICATION, "/e.cer"),
        ])
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                TARGET_RESOLVER,
                REPLAY_STORE,
                REDIS_URL,
                TOKEN_AUTHORITY_URL,
                TOKEN_AUTHORITY_CACHE_TTL,
                TOKEN_AUTHORITY_CACHE_SIZE,
            ]
        );
    }
}
