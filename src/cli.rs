//! The command line: `serve`, `check-config`, `ticket verify` and `ticket sign`. Each command
//! returns its exit code; `main.rs` only parses arguments and exits.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{self, ConfigError, RawConfig, Settings};
use crate::health::Phase;
use crate::notify::{self, Notifier};
use crate::proxy::{Notice, Proxy, Shared};
use crate::target::Target;
use crate::ticket::{TicketSigner, TicketVerifier};
use crate::workers::Workers;
use crate::{admin, logging, server, shutdown};

/// `println!` that ignores a closed or full standard output (`check-config | head`).
macro_rules! say {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stdout(), $($arg)*); }};
}

/// `eprintln!` that ignores a closed or full standard error.
macro_rules! say_err {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stderr(), $($arg)*); }};
}

/// Exit code for a configuration that cannot be used (sysexits `EX_USAGE`, as linkerd).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a ticket that was refused, or a runtime failure.
const EXIT_REFUSED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "consolegate",
    version,
    about = "WebSocket proxy for VM consoles (noVNC to VNC), oVirt ticket compatible"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(ConfigArgs),
    /// Print the merged configuration, validate it as `serve` would, and exit.
    CheckConfig(ConfigArgs),
    /// Verify or issue console tickets.
    #[command(subcommand)]
    Ticket(TicketCommand),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// A configuration file (then PATH.d/*.conf) or directory (its *.conf); repeatable, read in
    /// order after the built-in defaults, later values winning.
    #[arg(long = "config", value_name = "PATH")]
    config: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TicketCommand {
    /// Decode and verify one ticket; print its target and exit 0, or the reason and exit 1.
    Verify {
        /// Engine certificate (PEM; several certificates are all trusted).
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        /// Check the validity window at this time instead of now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<DateTime<Utc>>,
        /// Accept legacy SHA-1 tickets (engines up to 4.4.10).
        #[arg(long)]
        accept_legacy_sha1: bool,
        /// A file holding the ticket, `-` for standard input, or the ticket itself.
        #[arg(value_name = "TICKET", default_value = "-")]
        ticket: String,
    },
    /// Issue a ticket exactly as an oVirt engine does.
    Sign {
        /// The engine's private key (PEM, RSA).
        #[arg(long, value_name = "PEM")]
        key: PathBuf,
        /// The engine's certificate (PEM), embedded in the ticket as the engine does.
        #[arg(long, value_name = "PEM")]
        cert: PathBuf,
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: u16,
        /// The VNC server expects VeNCrypt negotiated by the proxy.
        #[arg(long)]
        ssl_target: bool,
        /// Seconds the ticket stays valid (the engine's default is 120).
        #[arg(long, default_value_t = 120, value_name = "SECS")]
        lifetime: u32,
        /// Start of validity instead of now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<DateTime<Utc>>,
        /// Print a console URL instead of the bare ticket: this page address (e.g.
        /// https://proxy:6100/console.html) with the ticket as its #fragment, which browsers
        /// never send to a server.
        #[arg(long, value_name = "URL", value_parser = parse_console_page)]
        url: Option<String>,
    },
}

/// Checks a `--url` page address: http(s), and no fragment of its own.
fn parse_console_page(url: &str) -> Result<String, String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("the console page address must start with https:// (or http://)".into());
    }
    if url.contains('#') {
        return Err(
            "the console page address must not have a #fragment: the ticket goes there".into(),
        );
    }
    if url.contains(char::is_whitespace) {
        return Err("the console page address must not contain blanks".into());
    }
    Ok(url.to_owned())
}

impl Cli {
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Serve(args) => serve(&args.config),
            Command::CheckConfig(args) => check_config(&args.config),
            Command::Ticket(TicketCommand::Verify {
                cert,
                now,
                accept_legacy_sha1,
                ticket,
            }) => verify(&cert, now, accept_legacy_sha1, &ticket),
            Command::Ticket(TicketCommand::Sign {
                key,
                cert,
                host,
                port,
                ssl_target,
                lifetime,
                now,
                url,
            }) => sign(
                &key,
                &cert,
                Target {
                    host,
                    port,
                    ssl_target,
                },
                lifetime,
                now,
                url.as_deref(),
            ),
        }
    }
}

/// Everything `serve` and `check-config` share: read, parse and build, collecting every error.
struct Loaded {
    raw: RawConfig,
    proxy: Option<(Proxy, Vec<Notice>)>,
    warnings: Vec<String>,
    errors: Vec<ConfigError>,
}

fn load(paths: &[PathBuf]) -> Loaded {
    let (raw, mut errors) = config::load_all(paths);
    let mut warnings: Vec<String> = raw.warnings.iter().map(ToString::to_string).collect();
    let settings = match Settings::from_raw(&raw) {
        Ok((settings, settings_warnings)) => {
            warnings.extend(settings_warnings.iter().map(ToString::to_string));
            Some(settings)
        }
        Err(value_errors) => {
            errors.extend(value_errors);
            None
        }
    };
    // Files named by the settings are checked once every line and value is right.
    let proxy = match settings {
        Some(settings) if errors.is_empty() => match Proxy::build(settings, &raw) {
            Ok(built) => Some(built),
            Err(file_errors) => {
                errors.extend(file_errors);
                None
            }
        },
        _ => None,
    };
    Loaded {
        raw,
        proxy,
        warnings,
        errors,
    }
}

fn report_errors(errors: &[ConfigError]) {
    say_err!(
        "consolegate: the configuration has {} error(s):",
        errors.len()
    );
    for error in errors {
        say_err!("  error: {error}");
    }
}

fn serve(paths: &[PathBuf]) -> ExitCode {
    let loaded = load(paths);
    let Some((proxy, notices)) = loaded.proxy else {
        for warning in &loaded.warnings {
            say_err!("  warning: {warning}");
        }
        report_errors(&loaded.errors);
        return ExitCode::from(EXIT_CONFIG);
    };
    if let Err(e) = logging::init(&proxy.settings) {
        say_err!("consolegate: cannot set up logging: {e}");
        return ExitCode::from(EXIT_REFUSED);
    }
    log_warnings(&loaded.warnings, &notices);
    let notifier = match Notifier::from_env() {
        Ok(notifier) => notifier,
        Err(e) => {
            warn!("systemd notifications are off: {e}");
            Notifier::default()
        }
    };
    // This thread accepts, reloads and serves the admin endpoints; the workers serve the
    // connections.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let workers = match Workers::start(proxy.settings.worker_threads) {
        Ok(workers) => workers,
        Err(e) => {
            error!("cannot start the worker threads: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    runtime.block_on(async move {
        // Registered before anything else: a signal arriving during start-up must not take
        // its default action, which for SIGHUP and SIGTERM is to kill the process.
        let (signals, hangups) = match (
            shutdown::StopSignals::install(),
            signal(SignalKind::hangup()),
        ) {
            (Ok(signals), Ok(hangups)) => (signals, hangups),
            (Err(e), _) | (_, Err(e)) => {
                error!("cannot register signal handlers: {e}");
                return ExitCode::from(EXIT_REFUSED);
            }
        };
        let listener = match server::bind(&proxy.settings).await {
            Ok(listener) => listener,
            Err(e) => {
                error!(host = %proxy.settings.proxy_host, port = proxy.settings.proxy_port, "cannot listen: {e}");
                return ExitCode::from(EXIT_REFUSED);
            }
        };
        let admin_listener = match proxy.settings.admin_listen {
            None => None,
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    error!("cannot listen for ADMIN_LISTEN on {addr}: {e}");
                    return ExitCode::from(EXIT_REFUSED);
                }
            },
        };
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mode = match (&proxy.tls, proxy.settings.ssl_only) {
            (None, _) => "ws:// only",
            (Some(_), true) => "wss:// only",
            (Some(_), false) => "ws:// and wss://",
        };
        info!(
            version = env!("CARGO_PKG_VERSION"),
            settings = %loaded.raw.print_lines().join(" "),
            "listening on {address} ({mode})"
        );
        let shared = Shared::new(proxy);
        let admin = admin_listener.map(|admin_listener| {
            let admin_address = admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
            info!("admin endpoints on http://{admin_address} (/livez /readyz /metrics /sessions)");
            tokio::spawn(admin::run(admin_listener, shared.clone()))
        });
        shared.lifecycle.set(Phase::Serving);
        // Only now: the listeners are bound and the configuration is valid and in force.
        if let Err(e) = notifier.ready(&format!("listening on {address}")) {
            warn!("cannot notify systemd (READY=1): {e}");
        }
        let watchdog = notify::watchdog_interval().map(|every| {
            let notifier = notifier.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                loop {
                    ticks.tick().await;
                    let _ = notifier.watchdog();
                }
            })
        });
        let reloader = tokio::spawn(reload_on_hangup(
            paths.to_vec(),
            shared.clone(),
            hangups,
            notifier.clone(),
        ));
        let stop = {
            let shared = shared.clone();
            async move {
                signals.recv().await;
                // Readiness fails at once, so a load balancer stops sending new browsers here
                // while open sessions finish.
                shared.lifecycle.set(Phase::Draining);
                if let Err(e) = notifier.stopping() {
                    warn!("cannot notify systemd (STOPPING=1): {e}");
                }
            }
        };
        server::run(listener, shared, workers, stop).await;
        reloader.abort();
        for task in [admin, watchdog].into_iter().flatten() {
            task.abort();
        }
        ExitCode::SUCCESS
    })
}

fn log_warnings(warnings: &[String], notices: &[Notice]) {
    for warning in warnings {
        warn!("configuration: {warning}");
    }
    for notice in notices {
        if notice.loud {
            warn!("!!! {} !!!", notice.message);
        } else {
            warn!("{}", notice.message);
        }
    }
}

/// SIGHUP re-reads every file (configuration, TLS certificate and key, engine certificates,
/// admin token file) and puts the result in force for new connections; open sessions are
/// untouched. A configuration with any error is refused whole and the running one stays.
/// systemd hears `RELOADING=1` before and `READY=1` after, whatever the outcome.
async fn reload_on_hangup(
    paths: Vec<PathBuf>,
    shared: Arc<Shared>,
    mut hangups: Signal,
    notifier: Notifier,
) {
    while hangups.recv().await.is_some() {
        info!("SIGHUP received: reloading the configuration");
        if let Err(e) = notifier.reloading() {
            warn!("cannot notify systemd (RELOADING=1): {e}");
        }
        let status = reload(&paths, &shared).await;
        shared.metrics.reloaded(status.is_ok());
        let status = match status {
            Ok(()) => "configuration reloaded".to_owned(),
            Err(errors) => {
                format!("reload refused ({errors} errors): the previous configuration stays")
            }
        };
        if let Err(e) = notifier.ready(&status) {
            warn!("cannot notify systemd (READY=1): {e}");
        }
    }
}

/// One reload; `Err` holds how many errors refused it.
async fn reload(paths: &[PathBuf], shared: &Shared) -> Result<(), usize> {
    let files = paths.to_vec();
    let loaded = match tokio::task::spawn_blocking(move || load(&files)).await {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("reload failed: {e}");
            return Err(1);
        }
    };
    let Some((proxy, notices)) = loaded.proxy else {
        for error in &loaded.errors {
            error!("reload refused: {error}");
        }
        warn!(
            errors = loaded.errors.len(),
            "reload refused: the configuration in force stays unchanged"
        );
        return Err(loaded.errors.len());
    };
    log_warnings(&loaded.warnings, &notices);
    let current = shared.current();
    let (old, new) = (&current.settings, &proxy.settings);
    if (&old.proxy_host, old.proxy_port, old.source_is_ipv6)
        != (&new.proxy_host, new.proxy_port, new.source_is_ipv6)
    {
        warn!("PROXY_HOST, PROXY_PORT and SOURCE_IS_IPV6 changes take effect only after a restart");
    }
    if (
        old.log_level,
        old.log_format,
        old.log_target,
        &old.log_syslog_socket,
        old.log_syslog_facility,
    ) != (
        new.log_level,
        new.log_format,
        new.log_target,
        &new.log_syslog_socket,
        new.log_syslog_facility,
    ) {
        warn!("LOG_LEVEL, LOG_FORMAT, LOG_TARGET and LOG_SYSLOG_* changes take effect only after a restart");
    }
    if old.admin_listen != new.admin_listen {
        warn!("ADMIN_LISTEN changes take effect only after a restart");
    }
    if old.worker_threads != new.worker_threads {
        warn!("WORKER_THREADS changes take effect only after a restart");
    }
    shared.replace(proxy);
    info!(settings = %loaded.raw.print_lines().join(" "), "configuration reloaded");
    Ok(())
}

fn check_config(paths: &[PathBuf]) -> ExitCode {
    let loaded = load(paths);
    for line in loaded.raw.print_lines() {
        say!("{line}");
    }
    for warning in &loaded.warnings {
        say_err!("warning: {warning}");
    }
    if let Some((_, notices)) = &loaded.proxy {
        for notice in notices {
            say_err!(
                "{}: {}",
                if notice.loud { "WARNING" } else { "warning" },
                notice.message
            );
        }
    }
    if loaded.errors.is_empty() {
        say_err!("configuration OK");
        ExitCode::SUCCESS
    } else {
        report_errors(&loaded.errors);
        ExitCode::from(EXIT_CONFIG)
    }
}

fn verify(
    cert: &Path,
    now: Option<DateTime<Utc>>,
    accept_legacy_sha1: bool,
    ticket: &str,
) -> ExitCode {
    let verifier = match std::fs::read(cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| TicketVerifier::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(verifier) => verifier.accept_legacy_sha1(accept_legacy_sha1),
        Err(e) => {
            say_err!("consolegate: {}: {e}", cert.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let ticket = match read_ticket(ticket) {
        Ok(ticket) => ticket,
        Err(e) => {
            say_err!("consolegate: cannot read the ticket: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match verifier.verify(&ticket, now.unwrap_or_else(Utc::now)) {
        Ok(verified) => {
            say!("{}", verified.target);
            say!("ssl_target={}", verified.target.ssl_target);
            say!("valid_from={}", verified.valid_from.to_rfc3339());
            say!("valid_to={}", verified.valid_to.to_rfc3339());
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("refused: {e}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// `-` is standard input; an existing file is read; anything else is taken as the ticket.
fn read_ticket(argument: &str) -> std::io::Result<String> {
    let text = if argument == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else if Path::new(argument).is_file() {
        std::fs::read_to_string(argument)?
    } else {
        argument.to_owned()
    };
    Ok(text.trim().to_owned())
}

fn sign(
    key: &Path,
    cert: &Path,
    target: Target,
    lifetime: u32,
    now: Option<DateTime<Utc>>,
    page: Option<&str>,
) -> ExitCode {
    let signer = std::fs::read(key)
        .and_then(|key_pem| std::fs::read(cert).map(|cert_pem| (key_pem, cert_pem)))
        .map_err(|e| e.to_string())
        .and_then(|(key_pem, cert_pem)| {
            TicketSigner::from_pem(&key_pem, &cert_pem).map_err(|e| e.to_string())
        });
    match signer {
        Ok(signer) => {
            let ticket = signer.sign(
                &target,
                now.unwrap_or_else(Utc::now),
                TimeDelta::seconds(lifetime.into()),
            );
            match page {
                Some(page) => say!("{page}#{ticket}"),
                None => say!("{ticket}"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            say_err!(
                "consolegate: cannot sign with {} and {}: {e}",
                key.display(),
                cert.display()
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
