//! The target every proxy relays to (the "VNC server" of the benchmark), run as its own process
//! so its descriptors and CPU are not the load generator's. One loopback listener per
//! behaviour, so a proxy needs no in-band instruction to pick one:
//!
//! - `source` writes as fast as the connection takes (the framebuffer direction);
//! - `discard` reads and counts what it received, and a `stats` listener answers each
//!   connection with that count: browser-to-target throughput is measured where the bytes
//!   arrive, with no return traffic a proxy might hold back while the upload runs;
//! - `echo` sends back what it reads (latency, session setup);
//! - `console` first sends [`GREETING`] bytes, as a VNC server sends its first framebuffer
//!   update, then echoes: an idle console that has streamed once (idle sessions).

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bytes the discard listener has received, over all its connections.
static DISCARDED: AtomicU64 = AtomicU64::new(0);

/// What the console listener sends first: every relay buffer reaches its working size, as
/// it does for a real console's first screen, before the session goes idle.
pub const GREETING: usize = 256 * 1024;

/// Bytes per write from the source listener.
const SOURCE_CHUNK: usize = 256 * 1024;

/// Bound on any one connection's life, so nothing outlives a benchmark that went wrong.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(3600);

/// What a sink listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Source,
    Discard,
    Echo,
    Console,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Source, Mode::Discard, Mode::Echo, Mode::Console];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Source => "source",
            Mode::Discard => "discard",
            Mode::Echo => "echo",
            Mode::Console => "console",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sink's listening ports, as printed on its first output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkPorts {
    pub source: u16,
    pub discard: u16,
    pub echo: u16,
    pub console: u16,
    /// Answers every connection with [`DISCARDED`] in decimal, then closes.
    pub stats: u16,
}

impl SinkPorts {
    pub fn port(&self, mode: Mode) -> u16 {
        match mode {
            Mode::Source => self.source,
            Mode::Discard => self.discard,
            Mode::Echo => self.echo,
            Mode::Console => self.console,
        }
    }

    pub fn addr(&self, mode: Mode) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port(mode)))
    }

    pub fn stats_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.stats))
    }

    /// The line the sink prints once it listens.
    pub fn to_line(self) -> String {
        format!(
            "sink source={} discard={} echo={} console={} stats={}",
            self.source, self.discard, self.echo, self.console, self.stats
        )
    }

    /// Parses [`SinkPorts::to_line`].
    pub fn parse_line(line: &str) -> Option<SinkPorts> {
        let mut ports = [None; 5];
        for word in line.strip_prefix("sink ")?.split_whitespace() {
            let (name, value) = word.split_once('=')?;
            let slot = match Mode::ALL.iter().position(|m| m.name() == name) {
                Some(slot) => slot,
                None if name == "stats" => 4,
                None => return None,
            };
            ports[slot] = Some(value.parse().ok()?);
        }
        Some(SinkPorts {
            source: ports[0]?,
            discard: ports[1]?,
            echo: ports[2]?,
            console: ports[3]?,
            stats: ports[4]?,
        })
    }
}

/// Listens on one loopback port per behaviour and one for statistics, prints them, and
/// serves until standard input closes (the benchmark that started it is gone) or `lifetime`
/// passes.
///
/// # Errors
/// A listener cannot be bound.
pub async fn run(lifetime: Duration) -> io::Result<()> {
    let mut listeners = Vec::new();
    for _ in Mode::ALL {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let stats = TcpListener::bind("127.0.0.1:0").await?;
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
    let ports = SinkPorts {
        source: port(0)?,
        discard: port(1)?,
        echo: port(2)?,
        console: port(3)?,
        stats: stats.local_addr()?.port(),
    };
    println!("{}", ports.to_line());
    for (listener, mode) in listeners.into_iter().zip(Mode::ALL) {
        tokio::spawn(accept_loop(listener, mode));
    }
    tokio::spawn(serve_stats(stats));
    until_released(lifetime).await;
    Ok(())
}

/// Returns when standard input closes (the benchmark that started this process is gone) or
/// `lifetime` passes: how the sink and the bare relay know when to exit.
pub async fn until_released(lifetime: Duration) {
    let stdin_closed = async {
        let mut line = String::new();
        let mut stdin = BufReader::new(tokio::io::stdin());
        while stdin.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            line.clear();
        }
    };
    let _ = tokio::time::timeout(lifetime, stdin_closed).await;
}

async fn accept_loop(listener: TcpListener, mode: Mode) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, serve(stream, mode)).await;
                });
            }
            // Out of descriptors: wait for some to close rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn serve_stats(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let count = DISCARDED.load(Ordering::Relaxed).to_string();
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stream.write_all(count.as_bytes()),
                )
                .await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads the discard listener's count from the sink at `addr`.
///
/// # Errors
/// The sink does not answer, or answers something that is not a count.
pub async fn discarded(addr: SocketAddr) -> io::Result<u64> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    answer
        .trim()
        .parse()
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, format!("sink stats: {answer:?}")))
}

async fn serve(stream: TcpStream, mode: Mode) -> io::Result<()> {
    match mode {
        Mode::Source => source(stream).await,
        Mode::Discard => discard(stream).await,
        Mode::Echo => echo(stream).await,
        Mode::Console => {
            let screen: Vec<u8> = (0..GREETING).map(|i| (i % 249) as u8).collect();
            let mut stream = stream;
            stream.write_all(&screen).await?;
            drop(screen);
            echo(stream).await
        }
    }
}

async fn source(mut stream: TcpStream) -> io::Result<()> {
    let chunk: Vec<u8> = (0..SOURCE_CHUNK).map(|i| (i % 251) as u8).collect();
    loop {
        stream.write_all(&chunk).await?;
    }
}

async fn discard(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        DISCARDED.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Echoes without holding a buffer while the connection is idle: thousands of idle sessions
/// must not cost the sink more than the proxy under test.
async fn echo(mut stream: TcpStream) -> io::Result<()> {
    loop {
        stream.readable().await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.try_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => stream.write_all(&buf[..n]).await?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_line_round_trips() {
        let ports = SinkPorts {
            source: 1,
            discard: 2,
            echo: 65535,
            console: 4,
            stats: 5,
        };
        assert_eq!(SinkPorts::parse_line(&ports.to_line()), Some(ports));
        assert_eq!(SinkPorts::parse_line("sink source=1 echo=2"), None);
        assert_eq!(
            SinkPorts::parse_line("sink source=1 discard=2 echo=3 console=4 stats=5 extra=6"),
            None
        );
        assert_eq!(SinkPorts::parse_line("hello"), None);
    }
}
