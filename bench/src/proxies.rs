//! Starting and stopping the programs under test as child processes on loopback ports: the
//! sink and the bare relay (both this binary), websockify (token-file mode, as Abiquo and
//! OpenStack deploy it), websocat (one per sink behaviour, as the issue runs it) and
//! consolegate (its own configuration file).
//! Every child is killed by its own process id when its handle drops.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procstat;
use crate::sink::{Mode, SinkPorts};

/// How long a program may take to accept connections after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{program} exited before listening ({status}); see {log}")]
    Exited {
        program: String,
        status: String,
        log: String,
    },
    #[error("{program} not listening on {addr} within {READY_WITHIN:?}; see {log}")]
    NotReady {
        program: String,
        addr: SocketAddr,
        log: String,
    },
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error("consolegate-bench {0} did not print its ports")]
    Ports(String),
}

/// Paths to the programs and the key material.
#[derive(Debug, Clone)]
pub struct Programs {
    pub consolegate: PathBuf,
    pub websockify: Option<PathBuf>,
    pub websocat: Option<PathBuf>,
    /// Holds `proxy.pem`/`proxy.key` (the TLS server, RSA-2048), `engine.pem`/`engine.key`
    /// (the ticket signer) and `ca.pem`.
    pub pki: PathBuf,
    /// Where configuration files and logs go.
    pub workdir: PathBuf,
}

/// Children that are killed, with all their descendants, when this drops.
pub struct Processes {
    children: Vec<(Option<Mode>, Child)>,
}

impl Processes {
    /// The process serving `mode` (websocat runs one per behaviour; the others serve all).
    pub fn pid(&self, mode: Mode) -> Option<u32> {
        self.children
            .iter()
            .find(|(m, _)| m.is_none() || *m == Some(mode))
            .map(|(_, c)| c.id())
    }

    fn kill(&mut self) {
        for (_, child) in &mut self.children {
            let pid = child.id();
            let descendants: Vec<u32> = procstat::tree(pid).into_iter().skip(1).collect();
            let _ = child.kill();
            let _ = child.wait();
            for descendant in descendants {
                // SAFETY: kill has no memory-safety preconditions; these are processes this
                // benchmark started (forked by its own child).
                unsafe {
                    libc::kill(descendant as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16, StartError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(StartError::NoPort)?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(StartError::NoPort)
}

fn log_file(workdir: &Path, name: &str) -> Result<(File, String), StartError> {
    let path = workdir.join(format!("{name}.log"));
    let file = File::create(&path).map_err(|source| StartError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok((file, path.display().to_string()))
}

fn spawn(command: &mut Command, program: &str, log: &(File, String)) -> Result<Child, StartError> {
    let stderr = log.0.try_clone().map_err(|source| StartError::Write {
        path: log.1.clone(),
        source,
    })?;
    let stdout = log.0.try_clone().map_err(|source| StartError::Write {
        path: log.1.clone(),
        source,
    })?;
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| StartError::Spawn {
            program: program.to_owned(),
            source,
        })
}

/// Waits (bounded) until `addr` accepts a connection, failing early if the child exits.
fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    program: &str,
    log: &str,
) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartError::Exited {
                program: program.to_owned(),
                status: status.to_string(),
                log: log.to_owned(),
            });
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(StartError::NotReady {
        program: program.to_owned(),
        addr,
        log: log.to_owned(),
    })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Starts this binary's `sink` subcommand and reads its ports. It exits when its standard
/// input (held by the returned handle) closes.
pub fn start_sink(workdir: &Path) -> Result<(Processes, SinkPorts), StartError> {
    start_own(workdir, "sink", &[])
}

/// Starts this binary's `relay` subcommand in front of `sink` and reads the ports it
/// listens on, one per sink behaviour. It exits when its standard input closes.
pub fn start_relay(workdir: &Path, sink: SinkPorts) -> Result<(Processes, SinkPorts), StartError> {
    start_own(workdir, "relay", &["--sink".to_owned(), sink.to_line()])
}

/// Runs a subcommand of this binary that prints a ports line and serves until its standard
/// input closes.
fn start_own(
    workdir: &Path,
    subcommand: &str,
    args: &[String],
) -> Result<(Processes, SinkPorts), StartError> {
    let program = format!("consolegate-bench {subcommand}");
    let exe = std::env::current_exe().map_err(|source| StartError::Spawn {
        program: program.clone(),
        source,
    })?;
    let (_, log) = log_file(workdir, subcommand)?;
    let mut child = Command::new(exe)
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&log).map_err(|source| StartError::Write {
            path: log.clone(),
            source,
        })?)
        .spawn()
        .map_err(|source| StartError::Spawn { program, source })?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let Some(ports) = SinkPorts::parse_line(line.trim()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(StartError::Ports(subcommand.to_owned()));
    };
    Ok((
        Processes {
            children: vec![(None, child)],
        },
        ports,
    ))
}

/// consolegate on one port serving ws:// and wss:// (RSA-2048 server key).
pub fn start_consolegate(
    programs: &Programs,
    extra_config: &str,
) -> Result<(Processes, SocketAddr), StartError> {
    let port = free_port()?;
    let pki = programs.pki.display();
    // Every benchmark session comes from 127.0.0.1, so the per-client cap (there to stop one
    // address starving the others) is lifted to the most this machine can hold; all other
    // settings are the defaults an operator gets.
    let config = format!(
        "PROXY_HOST=127.0.0.1\nPROXY_PORT={port}\nSSL_CERTIFICATE={pki}/proxy.pem\n\
         SSL_KEY={pki}/proxy.key\nCERT_FOR_DATA_VERIFICATION={pki}/engine.pem\n\
         MAX_SESSIONS=20000\nMAX_SESSIONS_PER_CLIENT=20000\n{extra_config}\n"
    );
    let path = programs.workdir.join("consolegate.conf");
    std::fs::write(&path, config).map_err(|source| StartError::Write {
        path: path.display().to_string(),
        source,
    })?;
    let log = log_file(&programs.workdir, "consolegate")?;
    let mut command = Command::new(&programs.consolegate);
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    let mut child = spawn(&mut command, "consolegate", &log)?;
    let addr = loopback(port);
    wait_ready(&mut child, addr, "consolegate", &log.1)?;
    Ok((
        Processes {
            children: vec![(None, child)],
        },
        addr,
    ))
}

/// websockify with a token file naming the three sink behaviours, and the same RSA-2048
/// certificate so it serves wss:// on the same port too.
pub fn start_websockify(
    programs: &Programs,
    program: &Path,
    sink: SinkPorts,
) -> Result<(Processes, SocketAddr), StartError> {
    let tokens: String = Mode::ALL
        .iter()
        .map(|&m| format!("{}: 127.0.0.1:{}\n", m.name(), sink.port(m)))
        .collect();
    let token_file = programs.workdir.join("websockify.tokens");
    std::fs::write(&token_file, tokens).map_err(|source| StartError::Write {
        path: token_file.display().to_string(),
        source,
    })?;
    let port = free_port()?;
    let log = log_file(&programs.workdir, "websockify")?;
    let mut command = Command::new(program);
    command
        .arg("--token-plugin")
        .arg("TokenFile")
        .arg("--token-source")
        .arg(&token_file)
        .arg("--cert")
        .arg(programs.pki.join("proxy.pem"))
        .arg("--key")
        .arg(programs.pki.join("proxy.key"))
        .arg(format!("127.0.0.1:{port}"));
    let mut child = spawn(&mut command, "websockify", &log)?;
    let addr = loopback(port);
    wait_ready(&mut child, addr, "websockify", &log.1)?;
    Ok((
        Processes {
            children: vec![(None, child)],
        },
        addr,
    ))
}

/// One `websocat -b -E ws-l:HOST:PORT tcp:TARGET` per sink behaviour.
pub fn start_websocat(
    programs: &Programs,
    program: &Path,
    sink: SinkPorts,
) -> Result<(Processes, Vec<(Mode, SocketAddr)>), StartError> {
    let mut processes = Processes {
        children: Vec::new(),
    };
    let mut addrs = Vec::new();
    for mode in Mode::ALL {
        let port = free_port()?;
        let log = log_file(&programs.workdir, &format!("websocat-{mode}"))?;
        let mut command = Command::new(program);
        command
            .arg("-b")
            .arg("-E")
            .arg(format!("ws-l:127.0.0.1:{port}"))
            .arg(format!("tcp:{}", sink.addr(mode)));
        let mut child = spawn(&mut command, "websocat", &log)?;
        let addr = loopback(port);
        let ready = wait_ready(&mut child, addr, "websocat", &log.1);
        processes.children.push((Some(mode), child));
        ready?;
        addrs.push((mode, addr));
    }
    Ok((processes, addrs))
}
