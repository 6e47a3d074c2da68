//! The target every proxy relays to (the "VNC server" of the benchmark), run as its own process
//! so its descriptors and CPU are not the load generator's. One loopback listener per
//! behaviour, so a proxy needs no in-band instruction to pick one:
//!
//! - `source` writes as fast as the connection takes (the framebuffer direction);
//! - `discard` reads and acknowledges every MiB received with one byte, so the client can
//!   measure browser-to-target throughput in band, through the proxy;
//! - `echo` sends back what it reads (latency, session setup);
//! - `console` first sends [`GREETING`] bytes, as a VNC server sends its first framebuffer
//!   update, then echoes: an idle console that has streamed once (idle sessions).

use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bytes per acknowledgement from the discard listener.
pub const ACK_EVERY: u64 = 1 << 20;

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

    /// The line the sink prints once it listens.
    pub fn to_line(self) -> String {
        format!(
            "sink source={} discard={} echo={} console={}",
            self.source, self.discard, self.echo, self.console
        )
    }

    /// Parses [`SinkPorts::to_line`].
    pub fn parse_line(line: &str) -> Option<SinkPorts> {
        let mut ports = [None; 4];
        for word in line.strip_prefix("sink ")?.split_whitespace() {
            let (name, value) = word.split_once('=')?;
            let slot = Mode::ALL.iter().position(|m| m.name() == name)?;
            ports[slot] = Some(value.parse().ok()?);
        }
        Some(SinkPorts {
            source: ports[0]?,
            discard: ports[1]?,
            echo: ports[2]?,
            console: ports[3]?,
        })
    }
}

/// Listens on three loopback ports, prints them, and serves until standard input closes
/// (the benchmark that started it is gone) or `lifetime` passes.
///
/// # Errors
/// A listener cannot be bound.
pub async fn run(lifetime: Duration) -> io::Result<()> {
    let mut listeners = Vec::new();
    for _ in Mode::ALL {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
    let ports = SinkPorts {
        source: port(0)?,
        discard: port(1)?,
        echo: port(2)?,
        console: port(3)?,
    };
    println!("{}", ports.to_line());
    for (listener, mode) in listeners.into_iter().zip(Mode::ALL) {
        tokio::spawn(accept_loop(listener, mode));
    }
    let stdin_closed = async {
        let mut line = String::new();
        let mut stdin = BufReader::new(tokio::io::stdin());
        while stdin.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            line.clear();
        }
    };
    let _ = tokio::time::timeout(lifetime, stdin_closed).await;
    Ok(())
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
    let mut received = 0u64;
    let mut next_ack = ACK_EVERY;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        received += n as u64;
        while received >= next_ack {
            stream.write_all(&[1]).await?;
            next_ack += ACK_EVERY;
        }
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
        };
        assert_eq!(SinkPorts::parse_line(&ports.to_line()), Some(ports));
        assert_eq!(SinkPorts::parse_line("sink source=1 echo=2"), None);
        assert_eq!(SinkPorts::parse_line("hello"), None);
    }
}
