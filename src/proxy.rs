//! Assembly: typed [`Settings`] plus the files they name (TLS certificate and key, engine
//! certificate, token file) become a [`Proxy`], the read-only state every connection shares. `serve` and
//! `check-config` both go through [`Proxy::build`], so a configuration that checks is one
//! that serves.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::Utc;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_rustls::TlsAcceptor;

use url::Url;

use crate::config::{check_admin_token, Secret};
use crate::config::{keys, ConfigError, RawConfig, ReplayStoreKind, ResolverMode, Settings};
use crate::health::Lifecycle;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::resume::Parking;
use crate::target::authority::{AuthorityConfigError, AuthorityOptions};
use crate::target::replay::{MemoryReplayStore, RedisReplayStore, ReplayStore};
use crate::target::{SignedTickets, SingleUseTickets, TargetResolver, TokenAuthority, TokenFile};
use crate::target_tls::TargetTls;
use crate::ticket::TicketVerifier;
use crate::tls::{self, CertSummary};
use crate::web::WebRoot;

/// Everything a connection needs, built once and shared behind an `Arc`.
pub struct Proxy {
    pub settings: Arc<Settings>,
    /// `None` when no `SSL_CERTIFICATE` is configured: plain ws:// only.
    pub tls: Option<TlsAcceptor>,
    pub resolver: Arc<dyn TargetResolver>,
    pub ws_config: WebSocketConfig,
    /// Every certificate loaded, for expiry metrics and readiness.
    pub certificates: Vec<LoadedCertificate>,
    /// The admin token, from `ADMIN_TOKEN` or read from `ADMIN_TOKEN_FILE`.
    pub admin_token: Option<Secret>,
    /// TLS towards VNC servers that want VeNCrypt (`ssl_target` tickets).
    pub target_tls: TargetTls,
    /// `None` without `WEB_ROOT`: non-upgrade requests get 405.
    pub web: Option<WebRoot>,
}

/// A certificate the proxy loaded and the key that named it.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    /// `SSL_CERTIFICATE`, `CERT_FOR_DATA_VERIFICATION` or `SSL_TARGET_CA`.
    pub key: &'static str,
    pub summary: CertSummary,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .field("tls", &self.tls.is_some())
            .field("resolver", &self.resolver)
            .field("target_tls", self.target_tls.verification())
            .field("web", &self.web)
            .finish_non_exhaustive()
    }
}

/// The configuration in force plus what outlives reloads (open-session counters). A reload
/// swaps the [`Proxy`] atomically: connections already accepted keep the one they started with.
#[derive(Debug)]
pub struct Shared {
    proxy: ArcSwap<Proxy>,
    pub limits: Arc<Limits>,
    /// Connections in their TLS or HTTP phase per client address, bounded by
    /// `MAX_HANDSHAKES_PER_CLIENT` (the total is the server's own count).
    pub client_handshakes: Arc<Limits>,
    pub registry: Arc<Registry>,
    /// Resumable sessions waiting for their browser.
    pub parking: Arc<Parking>,
    /// Counters and histograms the admin listener exposes; they outlive reloads.
    pub metrics: Arc<Metrics>,
    /// Starting, serving or draining: what readiness reports.
    pub lifecycle: Lifecycle,
}

impl Shared {
    pub fn new(proxy: Proxy) -> Arc<Shared> {
        let limits = Limits::new(
            proxy.settings.max_sessions,
            proxy.settings.max_sessions_per_client,
        );
        let client_handshakes = Limits::new(usize::MAX, proxy.settings.max_handshakes_per_client);
        Arc::new(Shared {
            proxy: ArcSwap::from_pointee(proxy),
            limits,
            client_handshakes,
            registry: Arc::default(),
            parking: Arc::default(),
            metrics: Arc::default(),
            lifecycle: Lifecycle::default(),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<Proxy> {
        self.proxy.load_full()
    }

    /// Puts a new configuration in force for new connections and new sessions.
    pub fn replace(&self, proxy: Proxy) {
        self.limits.set(
            proxy.settings.max_sessions,
            proxy.settings.max_sessions_per_client,
        );
        self.client_handshakes
            .set(usize::MAX, proxy.settings.max_handshakes_per_client);
        self.proxy.store(Arc::new(proxy));
    }
}

/// Something the operator should read at start-up; `loud` ones are about insecure set-ups.
#[derive(Debug, Clone)]
pub struct Notice {
    pub loud: bool,
    pub message: String,
}

impl Proxy {
    /// Loads the files the settings name and builds the shared state.
    ///
    /// # Errors
    /// Every unreadable or unusable file, each naming the key (and where it was set).
    pub fn build(
        settings: Settings,
        raw: &RawConfig,
    ) -> Result<(Proxy, Vec<Notice>), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut notices = Vec::new();
        let mut certificates = Vec::new();
        let error = |key: &str, message: String| ConfigError {
            origin: raw.get(key).map(|entry| entry.origin.clone()),
            key: Some(key.to_owned()),
            message,
        };

        let resolver = match build_resolver(&settings, &mut notices, &mut certificates) {
            Ok(resolver) => Some(resolver),
            Err((key, message)) => {
                errors.push(error(key, message));
                None
            }
        };

        let tls = match &settings.ssl_certificate {
            None => None,
            Some(certificate) => match tls::load_server_config(
                certificate,
                settings.ssl_key.as_deref(),
                settings.ssl_min_version,
                &settings.ssl_ciphers,
            ) {
                Ok(loaded) => {
                    notices.extend(certificate_notices("SSL_CERTIFICATE", &loaded.certificate));
                    certificates.push(LoadedCertificate {
                        key: "SSL_CERTIFICATE",
                        summary: loaded.certificate.clone(),
                    });
                    notices.extend(loaded.warnings.into_iter().map(|message| Notice {
                        loud: false,
                        message,
                    }));
                    Some(TlsAcceptor::from(loaded.config))
                }
                Err(e) => {
                    let key = match e {
                        tls::TlsError::NoKey { .. } if settings.ssl_key.is_some() => "SSL_KEY",
                        tls::TlsError::Read { ref path, .. }
                        | tls::TlsError::Pem { ref path, .. }
                            if Some(path.as_path()) == settings.ssl_key.as_deref() =>
                        {
                            "SSL_KEY"
                        }
                        _ => "SSL_CERTIFICATE",
                    };
                    errors.push(error(key, e.to_string()));
                    None
                }
            },
        };

        let admin_token = match &settings.admin_token_file {
            None => settings.admin_token.clone(),
            Some(path) => match load_admin_token(path) {
                Ok((token, notice)) => {
                    notices.extend(notice);
                    Some(token)
                }
                Err(message) => {
                    errors.push(error("ADMIN_TOKEN_FILE", message));
                    None
                }
            },
        };

        let target_tls = match TargetTls::load(
            settings.ssl_target_ca.as_deref(),
            settings.ssl_target_verify_name,
        ) {
            Ok(target_tls) => {
                if let Some(ca) = &settings.ssl_target_ca {
                    if let Ok(pem) = std::fs::read(ca) {
                        for summary in tls::summarize_pem(&pem) {
                            notices.extend(certificate_notices("SSL_TARGET_CA", &summary));
                            certificates.push(LoadedCertificate {
                                key: "SSL_TARGET_CA",
                                summary,
                            });
                        }
                    }
                }
                Some(target_tls)
            }
            Err(e) => {
                errors.push(error("SSL_TARGET_CA", e.to_string()));
                None
            }
        };

        let web = match settings.web_root.as_deref().map(WebRoot::open) {
            None => None,
            Some(Ok(web)) => Some(web),
            Some(Err(e)) => {
                errors.push(error("WEB_ROOT", e.to_string()));
                None
            }
        };

        match (resolver, target_tls) {
            (Some(resolver), Some(target_tls)) if errors.is_empty() => {
                let ws_config = crate::relay::websocket_config(
                    settings.ws_max_message_size,
                    settings.ws_max_frame_size,
                );
                Ok((
                    Proxy {
                        settings: Arc::new(settings),
                        tls,
                        resolver,
                        ws_config,
                        certificates,
                        admin_token,
                        target_tls,
                        web,
                    },
                    notices,
                ))
            }
            _ => Err(errors),
        }
    }
}

/// The resolver `TARGET_RESOLVER` asks for, with the files it reads and the stores it uses.
/// Every mode ends up as one `Arc<dyn TargetResolver>`: nothing after this point knows which.
///
/// # Errors
/// The key to blame and what is wrong.
fn build_resolver(
    settings: &Settings,
    notices: &mut Vec<Notice>,
    certificates: &mut Vec<LoadedCertificate>,
) -> Result<Arc<dyn TargetResolver>, (&'static str, String)> {
    let resolver = &settings.resolver;
    let unset = |key: &'static str| (key, "is not set".to_owned());
    match resolver.mode {
        ResolverMode::SignedTicket => {
            let path = settings
                .cert_for_data_verification
                .as_deref()
                .ok_or_else(|| unset(keys::CERT_FOR_DATA_VERIFICATION))?;
            let (verifier, summaries) = load_verifier(settings, path)
                .map_err(|message| (keys::CERT_FOR_DATA_VERIFICATION, message))?;
            for summary in summaries {
                notices.extend(certificate_notices("CERT_FOR_DATA_VERIFICATION", &summary));
                certificates.push(LoadedCertificate {
                    key: "CERT_FOR_DATA_VERIFICATION",
                    summary,
                });
            }
            let tickets = SignedTickets::new(verifier);
            if !resolver.ticket_single_use {
                return Ok(Arc::new(tickets));
            }
            let store: Arc<dyn ReplayStore> = match resolver.replay_store {
                ReplayStoreKind::Memory => MemoryReplayStore::process_wide(),
                ReplayStoreKind::Redis => {
                    let url = resolver
                        .redis_url
                        .as_ref()
                        .ok_or_else(|| unset(keys::REDIS_URL))?;
                    let store = RedisReplayStore::new(url.expose(), resolver.replay_store_timeout)
                        .map_err(|message| (keys::REDIS_URL, message))?;
                    Arc::new(store)
                }
            };
            Ok(Arc::new(SingleUseTickets::new(tickets, store)))
        }
        ResolverMode::TokenFile => {
            let path = resolver
                .token_file
                .as_deref()
                .ok_or_else(|| unset(keys::TOKEN_FILE))?;
            let (file, problems) =
                TokenFile::open(path).map_err(|e| (keys::TOKEN_FILE, e.to_string()))?;
            notices.extend(problems.into_iter().map(|problem| Notice {
                loud: false,
                message: format!("TOKEN_FILE: {problem}"),
            }));
            if file.size().0 == 0 {
                notices.push(Notice {
                    loud: false,
                    message: format!(
                        "TOKEN_FILE: {} holds no tokens yet: every console is refused until it does",
                        path.display()
                    ),
                });
            }
            Ok(Arc::new(file))
        }
        ResolverMode::TokenAuthority => {
            let url = resolver
                .token_authority_url
                .as_ref()
                .ok_or_else(|| unset(keys::TOKEN_AUTHORITY_URL))?;
            let url =
                Url::parse(url.expose()).map_err(|e| (keys::TOKEN_AUTHORITY_URL, e.to_string()))?;
            let authority = TokenAuthority::new(AuthorityOptions {
                ca: resolver
                    .token_authority_ca
                    .clone()
                    .filter(|_| url.scheme() == "https"),
                url,
                timeout: resolver.token_authority_timeout,
                cache_ttl: resolver.token_authority_cache_ttl,
                cache_size: resolver.token_authority_cache_size,
            })
            .map_err(|e| {
                let key = match e {
                    AuthorityConfigError::NoSystemRoots(_) => keys::TOKEN_AUTHORITY_URL,
                    _ => keys::TOKEN_AUTHORITY_CA,
                };
                (key, e.to_string())
            })?;
            Ok(Arc::new(authority))
        }
    }
}

fn load_verifier(
    settings: &Settings,
    path: &Path,
) -> Result<(TicketVerifier, Vec<CertSummary>), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let verifier = TicketVerifier::from_pem(&pem)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .accept_legacy_sha1(settings.ticket_accept_legacy_sha1)
        .clock_skew(settings.ticket_clock_skew);
    Ok((verifier, tls::summarize_pem(&pem)))
}

/// Reads the admin token from the first line of `path`, with a notice when other users can
/// read the file. Messages never quote the file's content.
fn load_admin_token(path: &Path) -> Result<(Secret, Option<Notice>), String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    check_admin_token(token)
        .map_err(|problem| format!("the token in {} {problem}", path.display()))?;
    let notice = std::fs::metadata(path)
        .ok()
        .filter(|meta| meta.permissions().mode() & 0o004 != 0)
        .map(|_| Notice {
            loud: false,
            message: format!(
                "ADMIN_TOKEN_FILE {} is readable by every user; chmod 0640 it",
                path.display()
            ),
        });
    Ok((Secret::new(token), notice))
}

fn certificate_notices(key: &str, cert: &CertSummary) -> Vec<Notice> {
    let mut notices = Vec::new();
    if cert.is_demo {
        notices.push(Notice {
            loud: true,
            message: format!(
                "{key} is a DEMO certificate ({}): its private key is public in the consolegate \
                 repository, so anyone can {}. Never use it outside a test machine.",
                cert.subject,
                match key {
                    "SSL_CERTIFICATE" => "impersonate this proxy",
                    "SSL_TARGET_CA" => "impersonate any VNC server",
                    _ => "sign tickets for any target",
                }
            ),
        });
    }
    let left = cert.not_after - Utc::now();
    if left < chrono::TimeDelta::zero() {
        notices.push(Notice {
            loud: true,
            message: format!(
                "{key}: certificate {} expired on {}",
                cert.subject, cert.not_after
            ),
        });
    } else if left < chrono::TimeDelta::days(30) {
        notices.push(Notice {
            loud: false,
            message: format!(
                "{key}: certificate {} expires on {}",
                cert.subject, cert.not_after
            ),
        });
    }
    notices
}
