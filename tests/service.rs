//! Service integration: the systemd notification protocol spoken by the real binary (this
//! test is the NOTIFY_SOCKET listener, as systemd would be), the install script run into a
//! temporary root, and the unit file checked by `systemd-analyze`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A NOTIFY_SOCKET in a temporary directory.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        NotifySocket {
            socket,
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
        }
    }

    /// The next message, waiting (bounded) for it.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("no notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Whatever has arrived, without waiting.
    fn pending(&self) -> Option<String> {
        self.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let message = self
            .socket
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        self.socket.set_nonblocking(false).unwrap();
        message
    }
}

#[tokio::test]
async fn ready_reload_and_stop_are_announced_in_order() {
    let notify = NotifySocket::new();
    let mut proxy = ProxyProcess::start_env("", &[("NOTIFY_SOCKET", &notify.path)]);
    let ready = notify.next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", proxy.addr)),
        "{ready}"
    );
    assert!(
        ready.contains(&format!("MAINPID={}", proxy.pid())),
        "{ready}"
    );
    // READY came after the bind: the port takes connections now.
    tokio::net::TcpStream::connect(proxy.addr).await.unwrap();

    proxy.signal("HUP");
    let reloading = notify.next();
    assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = notify.next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=configuration reloaded"),
        "{ready}"
    );

    // A broken configuration is refused, and systemd still hears the reload end.
    proxy.rewrite_config("PROXY_PORT=61o0");
    proxy.signal("HUP");
    assert!(notify.next().starts_with("RELOADING=1"));
    let ready = notify.next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=reload refused (1 errors)"),
        "{ready}"
    );

    proxy.signal("TERM");
    assert!(notify.next().starts_with("STOPPING=1"));
    assert!(proxy.wait_exit(Duration::from_secs(15)).success());
}

#[test]
fn no_ready_when_the_configuration_is_bad_or_a_port_is_taken() {
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.conf");
    std::fs::write(&config, "PROXY_PORT=61o0\n").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));
    assert_eq!(notify.pending(), None);

    // The admin port is taken: the proxy exits before READY.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &config,
        format!(
            "PROXY_HOST=127.0.0.1\nPROXY_PORT=0\nCERT_FOR_DATA_VERIFICATION={}\nADMIN_LISTEN={}\n",
            fixture("pki/engine.pem").display(),
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_consolegate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot listen for ADMIN_LISTEN"),
        "{stderr}"
    );
    assert_eq!(notify.pending(), None);
}

fn install(root: &Path, extra: &[&str]) -> String {
    let output = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_consolegate"),
            "--prefix",
            "/usr",
        ])
        .args(extra)
        .env("DESTDIR", root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    text
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn the_install_script_lays_out_a_host_and_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let first = install(r, &[]);
    assert!(
        first.contains("installed /etc/consolegate/consolegate.conf"),
        "{first}"
    );
    assert_eq!(mode(&r.join("usr/bin/consolegate")), 0o755);
    assert_eq!(mode(&r.join("etc/consolegate")), 0o750);
    assert_eq!(mode(&r.join("etc/consolegate/consolegate.conf.d")), 0o750);
    assert_eq!(mode(&r.join("etc/consolegate/certs")), 0o750);
    assert_eq!(mode(&r.join("etc/consolegate/consolegate.conf")), 0o640);
    let unit = std::fs::read_to_string(r.join("etc/systemd/system/consolegate.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/consolegate serve --config /etc/consolegate/consolegate.conf"
        ),
        "{unit}"
    );

    // The shipped configuration is valid once certificates are in place: point them at the
    // test PKI from a drop-in, as an operator's 10-setup.conf would.
    let conf = r.join("etc/consolegate/consolegate.conf");
    let dropin = r.join("etc/consolegate/consolegate.conf.d/10-setup.conf");
    let pki = fixture("pki");
    std::fs::write(
        &dropin,
        format!(
            "SSL_CERTIFICATE={0}/proxy.pem\nSSL_KEY={0}/proxy.key\nCERT_FOR_DATA_VERIFICATION={0}/engine.pem\n",
            pki.display()
        ),
    )
    .unwrap();
    let check = Command::new(r.join("usr/bin/consolegate"))
        .args(["check-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("SSL_ONLY=True"), "{stdout}");

    // Again: the operator's edits survive, the unit is unchanged.
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf).unwrap() + "PROXY_PORT=6200\n",
    )
    .unwrap();
    let second = install(r, &[]);
    assert!(
        second.contains("kept the existing /etc/consolegate/consolegate.conf"),
        "{second}"
    );
    assert!(
        second.contains("consolegate.service (unchanged)"),
        "{second}"
    );
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .ends_with("PROXY_PORT=6200\n"));
    assert!(dropin.exists());
}

#[test]
fn the_unit_file_verifies_and_is_hardened() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // scripts/setup-ops.sh installs it; a bare `cargo test` may lack it.
        println!("SKIPPED: systemd-analyze is not installed (run scripts/setup-ops.sh)");
        return;
    };
    assert!(version.status.success());
    let root = tempfile::tempdir().unwrap();
    install(root.path(), &[]);
    // verify wants ExecStart to exist on this host: point it at the installed binary.
    let installed = root.path().join("etc/systemd/system/consolegate.service");
    let unit = std::fs::read_to_string(&installed).unwrap().replace(
        "/usr/bin/consolegate",
        &root.path().join("usr/bin/consolegate").to_string_lossy(),
    );
    let check_dir = tempfile::tempdir().unwrap();
    let unit_path = check_dir.path().join("consolegate.service");
    std::fs::write(&unit_path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{stderr}");
    assert!(
        !stderr.contains("consolegate.service"),
        "warnings about the unit: {stderr}"
    );

    // The exposure score systemd computes from the hardening options (0 best, 10 worst).
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.path().display()))
        .arg("consolegate.service")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .split("Overall exposure level for consolegate.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    assert!(score <= 2.0, "exposure {score}:\n{text}");
}
