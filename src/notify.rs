//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` units: one datagram
//! of `KEY=value` lines to the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for
//! an abstract socket). `READY=1` goes out only once the listener is bound and the
//! configuration valid; `RELOADING=1` and `READY=1` bracket a SIGHUP reload; `STOPPING=1`
//! starts the shutdown; `WATCHDOG=1` keeps a `WatchdogSec=` unit alive. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// A handle on the service manager's notification socket; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

impl Notifier {
    /// The socket `NOTIFY_SOCKET` names, or a notifier that does nothing when it is unset.
    ///
    /// # Errors
    /// `NOTIFY_SOCKET` is set but is neither a path nor `@name`, or no socket can be made.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier::default()),
            Some(value) => {
                let value = value.to_string_lossy();
                let addr = if let Some(name) = value.strip_prefix('@') {
                    SocketAddr::from_abstract_name(name.as_bytes())?
                } else if value.starts_with('/') {
                    SocketAddr::from_pathname(value.as_ref())?
                } else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("NOTIFY_SOCKET={value:?} is neither a path nor @name"),
                    ));
                };
                Ok(Notifier {
                    target: Some(Arc::new((UnixDatagram::unbound()?, addr))),
                })
            }
        }
    }

    /// Whether a service manager is listening.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The service is up: the listener is bound and the configuration is in force.
    ///
    /// # Errors
    /// The datagram could not be sent.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.send(&format!(
            "READY=1\nSTATUS={}\nMAINPID={}",
            one_line(status),
            std::process::id()
        ))
    }

    /// A reload starts; [`Notifier::ready`] ends it.
    ///
    /// # Errors
    /// The datagram could not be sent.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={}",
            monotonic_usec()
        ))
    }

    /// Shutdown starts; open sessions may run for the grace period.
    ///
    /// # Errors
    /// The datagram could not be sent.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1\nSTATUS=shutting down: sessions are finishing")
    }

    /// The process is alive, for `WatchdogSec=`.
    ///
    /// # Errors
    /// The datagram could not be sent.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    fn send(&self, message: &str) -> io::Result<()> {
        match &self.target {
            None => Ok(()),
            Some(target) => {
                let (socket, addr) = &**target;
                socket.send_to_addr(message.as_bytes(), addr).map(drop)
            }
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` when the watchdog is meant for
/// this process (`WATCHDOG_PID` unset or ours), as `sd_watchdog_enabled(3)` decides.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd matches a reload against.
fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(now.tv_nsec).unwrap_or_default();
    secs * 1_000_000 + nanos / 1000
}

/// A status is one line of the datagram.
fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier_for(addr: SocketAddr) -> Notifier {
        Notifier {
            target: Some(Arc::new((UnixDatagram::unbound().unwrap(), addr))),
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = notifier_for(SocketAddr::from_pathname(&path).unwrap());
        notifier.ready("listening on\n127.0.0.1:6100").unwrap();
        let ready = receive(&listener);
        assert!(ready.starts_with("READY=1\nSTATUS=listening on 127.0.0.1:6100\nMAINPID="));
        notifier.reloading().unwrap();
        let reloading = receive(&listener);
        assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
        let usec: u64 = reloading
            .rsplit("MONOTONIC_USEC=")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        notifier.stopping().unwrap();
        assert!(receive(&listener).starts_with("STOPPING=1"));
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("consolegate-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        notifier_for(addr).watchdog().unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        let notifier = Notifier::default();
        assert!(!notifier.is_enabled());
        notifier.ready("x").unwrap();
    }
}
