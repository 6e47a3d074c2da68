//! Log output: human-readable lines (or JSON lines with `LOG_FORMAT=json`) on standard error,
//! which is the journal under systemd, and optionally to the local syslog socket as upstream
//! does (`LOG_TARGET=syslog` or `both`). `RUST_LOG`, when set, overrides `LOG_LEVEL` for
//! debugging.
//!
//! A log line that cannot be written (a full disk, a closed pipe, a stuck syslog daemon) is
//! dropped and counted, never fatal and never waited for: losing a log line must not cost a
//! console session.

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{InvalidValue, Settings};

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Largest syslog datagram sent; longer lines are cut, so one huge line cannot be refused
/// whole by the socket.
const MAX_SYSLOG_LINE: usize = 16 * 1024;

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `timestamp LEVEL span{fields}: message key=value`, for people.
    Text,
    /// One JSON object per line, event fields at the top level, spans in `spans`.
    Json,
}

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Syslog,
    Both,
}

impl LogTarget {
    pub fn to_stderr(self) -> bool {
        matches!(self, LogTarget::Stderr | LogTarget::Both)
    }

    pub fn to_syslog(self) -> bool {
        matches!(self, LogTarget::Syslog | LogTarget::Both)
    }
}

/// A syslog facility code (RFC 5424 section 6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFacility(pub u8);

impl LogFacility {
    pub const USER: LogFacility = LogFacility(1);
    pub const DAEMON: LogFacility = LogFacility(3);
}

/// Reads `LOG_FORMAT`, any case.
pub fn parse_log_format(value: &str) -> Result<LogFormat, InvalidValue> {
    match value.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(InvalidValue::new(value, "a log format (text or json)")),
    }
}

/// Reads `LOG_TARGET`, any case.
pub fn parse_log_target(value: &str) -> Result<LogTarget, InvalidValue> {
    match value.to_ascii_lowercase().as_str() {
        "stderr" => Ok(LogTarget::Stderr),
        "syslog" => Ok(LogTarget::Syslog),
        "both" => Ok(LogTarget::Both),
        _ => Err(InvalidValue::new(
            value,
            "a log target (stderr, syslog or both)",
        )),
    }
}

/// Reads `LOG_SYSLOG_FACILITY`: `user`, `daemon` or `local0` to `local7`, any case.
pub fn parse_log_facility(value: &str) -> Result<LogFacility, InvalidValue> {
    let lower = value.to_ascii_lowercase();
    let local = lower
        .strip_prefix("local")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| *n <= 7 && lower.len() == 6);
    match (lower.as_str(), local) {
        ("user", _) => Ok(LogFacility::USER),
        ("daemon", _) => Ok(LogFacility::DAEMON),
        (_, Some(n)) => Ok(LogFacility(16 + n)),
        _ => Err(InvalidValue::new(
            value,
            "a syslog facility (daemon, user, local0 to local7)",
        )),
    }
}

/// Installs the global subscriber the settings describe; later calls are no-ops.
///
/// # Errors
/// A socket for syslog cannot be created. A syslog socket that does not exist yet is not an
/// error: lines are dropped (and counted) until it appears.
pub fn init(settings: &Settings) -> io::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("consolegate={},warn", settings.log_level)));
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if settings.log_target.to_stderr() {
        let make = || LossyStderr;
        layers.push(match settings.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(make)
                .with_target(false)
                .with_ansi(io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(make)
                .with_target(false)
                .boxed(),
        });
    }
    if settings.log_target.to_syslog() {
        let syslog = Syslog::new(&settings.log_syslog_socket, settings.log_syslog_facility)?;
        // syslog stamps the time and the level is in the priority: the line carries neither.
        layers.push(match settings.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_writer(syslog)
                .with_target(false)
                .with_ansi(false)
                .without_time()
                .with_level(false)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(syslog)
                .with_target(false)
                .without_time()
                .boxed(),
        });
    }
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    Ok(())
}

/// Log lines lost because their destination could not take them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Standard error that reports every write as done. tracing-subscriber answers a failed
/// write by printing a complaint with `eprintln!`, which panics when standard error is
/// itself what failed.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if io::stderr().write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// The local syslog socket: one RFC 3164 datagram per line, `<PRI>Mmm dd hh:mm:ss
/// consolegate[PID]: message`, the form glibc's `syslog()` sends and both journald and
/// rsyslog read. The socket is not connected, so a restarted syslog daemon is found again
/// at the next line; it does not block, so a stuck daemon costs lines, not sessions.
#[derive(Clone)]
struct Syslog {
    socket: Arc<UnixDatagram>,
    path: Arc<PathBuf>,
    facility: LogFacility,
    pid: u32,
}

impl Syslog {
    fn new(path: &Path, facility: LogFacility) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Syslog {
            socket: Arc::new(socket),
            path: Arc::new(path.to_owned()),
            facility,
            pid: std::process::id(),
        })
    }

    fn line(&self, level: Level) -> SyslogLine {
        // RFC 5424 severities: err, warning, info, debug.
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let priority = u16::from(self.facility.0) * 8 + severity;
        let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
        SyslogLine {
            syslog: self.clone(),
            buf: format!("<{priority}>{stamp} consolegate[{}]: ", self.pid).into_bytes(),
        }
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        self.line(*meta.level())
    }
}

/// One event's line, sent as one datagram when the formatter is done with it.
struct SyslogLine {
    syslog: Syslog,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        self.buf.truncate(MAX_SYSLOG_LINE);
        if self
            .syslog
            .socket
            .send_to(&self.buf, self.syslog.path.as_path())
            .is_err()
        {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_targets_and_facilities() {
        assert_eq!(parse_log_format("Text"), Ok(LogFormat::Text));
        assert_eq!(parse_log_format("json"), Ok(LogFormat::Json));
        assert!(parse_log_format("logfmt").is_err());
        assert_eq!(parse_log_target("BOTH"), Ok(LogTarget::Both));
        assert!(parse_log_target("syslog").unwrap().to_syslog());
        assert!(!parse_log_target("syslog").unwrap().to_stderr());
        assert!(parse_log_target("journal").is_err());
        assert_eq!(parse_log_facility("daemon"), Ok(LogFacility(3)));
        assert_eq!(parse_log_facility("LOCAL0"), Ok(LogFacility(16)));
        assert_eq!(parse_log_facility("local7"), Ok(LogFacility(23)));
        for bad in ["local8", "local", "local07", "kern", ""] {
            assert!(parse_log_facility(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_syslog_line_is_one_datagram_with_priority_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let syslog = Syslog::new(&path, LogFacility(16)).unwrap();
        {
            let mut line = syslog.line(Level::WARN);
            line.write_all(b"refused: ticket ").unwrap();
            line.write_all(b"kind=expired\n").unwrap();
        }
        let mut buf = [0u8; 1024];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        // local0 (16) * 8 + warning (4)
        assert!(text.starts_with("<132>"), "{text}");
        assert!(
            text.ends_with(&format!(
                " consolegate[{}]: refused: ticket kind=expired",
                std::process::id()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_missing_syslog_socket_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let syslog = Syslog::new(&dir.path().join("absent"), LogFacility::DAEMON).unwrap();
        let before = dropped_lines();
        drop(syslog.line(Level::INFO));
        assert!(dropped_lines() > before);
    }
}
