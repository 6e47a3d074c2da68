//! Process signals that end the server: SIGTERM (systemd, kill) and SIGINT (Ctrl-C).

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::info;

/// Signal handlers registered up front, so a signal that arrives while the proxy is still
/// starting is not lost to the default action (which would kill it uncleanly).
pub struct StopSignals {
    term: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Must run inside the tokio runtime.
    ///
    /// # Errors
    /// The signal handlers cannot be registered.
    pub fn install() -> io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes when the process is asked to stop.
    pub async fn recv(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.interrupt.recv() => info!("SIGINT received"),
        }
    }
}
