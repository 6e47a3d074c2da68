//! Log output: human-readable lines on standard error (the journal under systemd).
//! `RUST_LOG`, when set, overrides `LOG_LEVEL` for debugging.
//!
//! A log line that cannot be written (a full disk, a closed pipe) is dropped and counted,
//! never fatal: losing a log line must not cost a console session.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber; later calls are no-ops.
pub fn init(level: tracing::Level) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("consolegate={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_target(false)
        .with_ansi(io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
}

/// Log lines lost because standard error could not take them.
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
