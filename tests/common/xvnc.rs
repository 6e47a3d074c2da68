//! TigerVNC's Xvnc as a test target: a real VNC server on loopback, with VNC authentication
//! or VeNCrypt X509Vnc and a certificate from the test PKI. `scripts/setup-e2e.sh` installs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::fixture;

/// Display numbers for this process, away from the browser tests' range.
static NEXT_DISPLAY: AtomicU32 = AtomicU32::new(0);

pub struct Xvnc {
    child: Child,
    pub addr: SocketAddr,
    pub display: u32,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Xvnc {
    /// Starts Xvnc with `-SecurityTypes security`; `certificate` names a pair in the test PKI
    /// (`vnc` is `vnc.pem` and `vnc.key`) for the X509 types.
    pub fn start(security: &str, certificate: Option<&str>) -> Xvnc {
        assert!(
            Command::new("Xvnc")
                .arg("-version")
                .stderr(Stdio::null())
                .status()
                .is_ok(),
            "Xvnc is not installed: run scripts/setup-e2e.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("passwd");
        let output = Command::new("vncpasswd")
            .arg("-f")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(b"e2e-secret")?;
                child.wait_with_output()
            })
            .expect("vncpasswd runs");
        std::fs::write(&password, output.stdout).unwrap();
        NEXT_DISPLAY
            .compare_exchange(
                0,
                150 + std::process::id() % 50,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .ok();
        for _ in 0..50 {
            let display = NEXT_DISPLAY.fetch_add(1, Ordering::SeqCst);
            if display_in_use(display) {
                continue;
            }
            let port = super::closed_port().port();
            let log = dir.path().join(format!("Xvnc-{display}.log"));
            let mut command = Command::new("Xvnc");
            command
                .arg(format!(":{display}"))
                .args([
                    "-rfbport",
                    &port.to_string(),
                    "-interface",
                    "127.0.0.1",
                    "-localhost",
                ])
                .args(["-nolisten", "tcp", "-geometry", "320x200", "-depth", "24"])
                .args(["-SecurityTypes", security, "-PasswordFile"])
                .arg(&password);
            if let Some(name) = certificate {
                command
                    .arg("-X509Cert")
                    .arg(fixture(&format!("pki/{name}.pem")))
                    .arg("-X509Key")
                    .arg(fixture(&format!("pki/{name}.key")));
            }
            let file = std::fs::File::create(&log).unwrap();
            let mut child = command
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .unwrap();
            if wait_listening(&mut child, &log) {
                return Xvnc {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    display,
                    log,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Xvnc did not start on any display");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connections the server accepted, from its own log.
    pub fn accepted(&self) -> usize {
        self.log().matches("Connections: accepted:").count()
    }
}

/// Waits (bounded) for Xvnc to say it listens; false if it exited (display taken).
fn wait_listening(child: &mut Child, log: &PathBuf) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    while Instant::now() < deadline {
        if read().contains("Listening for VNC connections") {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("Xvnc did not listen within 15s:\n{}", read());
}

/// Whether an X server holds `display`: its lock file names a live process. A stale lock
/// (its server killed) does not count; Xvnc replaces it.
fn display_in_use(display: u32) -> bool {
    std::fs::read_to_string(format!("/tmp/.X{display}-lock"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists())
}

impl Drop for Xvnc {
    /// SIGTERM first, so that Xvnc removes its lock file and socket; SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
