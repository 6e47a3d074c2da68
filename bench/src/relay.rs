//! The bare relay: the least work any TCP relay can do on this machine, as a second
//! baseline. One listener per sink behaviour; each connection to it gets a connection to the
//! sink and two blocking threads, one per direction, that splice bytes through a pipe: no
//! WebSocket, no event loop, no per-message work, not a byte copied. What it loses against
//! raw loopback is what a second TCP connection and a process in the path cost here, which
//! no proxy can avoid; what consolegate loses against it is consolegate's own.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::thread;
use std::time::Duration;

use rustix::pipe::{PipeFlags, SpliceFlags};

use crate::sink::{Mode, SinkPorts};

/// The same pipe size as consolegate's splice path, so both move the same amount per call.
const PIPE_SIZE: usize = consolegate::splice::PIPE_SIZE;

/// The pumps do nothing but block in splice(2); a small stack is plenty.
const STACK: usize = 64 * 1024;

/// Listens in front of `sink`, prints its ports in the sink's format (with the sink's own
/// statistics port), and leaves the relaying to its threads.
///
/// # Errors
/// A listener cannot be bound.
pub fn start(sink: SinkPorts) -> io::Result<()> {
    let mut ports = sink;
    for mode in Mode::ALL {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        match mode {
            Mode::Source => ports.source = port,
            Mode::Discard => ports.discard = port,
            Mode::Echo => ports.echo = port,
            Mode::Console => ports.console = port,
        }
        let target = sink.addr(mode);
        thread::Builder::new()
            .name(format!("accept-{}", mode.name()))
            .spawn(move || accept_loop(&listener, target))?;
    }
    println!("{}", ports.to_line());
    Ok(())
}

fn accept_loop(listener: &TcpListener, target: SocketAddr) {
    loop {
        match listener.accept() {
            Ok((browser, _)) => {
                if let Err(e) = start_session(browser, target) {
                    eprintln!("relay: session to {target}: {e}");
                }
            }
            // Out of descriptors or threads: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn start_session(browser: TcpStream, target: SocketAddr) -> io::Result<()> {
    let server = TcpStream::connect(target)?;
    browser.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (up_from, up_to) = (browser.try_clone()?, server.try_clone()?);
    spawn_pump(up_from, up_to)?;
    spawn_pump(server, browser)
}

fn spawn_pump(from: TcpStream, to: TcpStream) -> io::Result<()> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    // A smaller pipe still relays; it only moves less per call.
    let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
    thread::Builder::new()
        .name("pump".into())
        .stack_size(STACK)
        .spawn(move || {
            let _ = pump(&from, &to, &read, &write);
            // Half-close as TCP would: the other direction may still be moving.
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        })?;
    Ok(())
}

/// Moves everything `from` sends to `to` through the pipe until `from` ends.
fn pump(from: &TcpStream, to: &TcpStream, read: &OwnedFd, write: &OwnedFd) -> io::Result<()> {
    loop {
        let n = rustix::pipe::splice(from, None, write, None, PIPE_SIZE, SpliceFlags::MOVE)?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            let sent = rustix::pipe::splice(read, None, to, None, left, SpliceFlags::MOVE)?;
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= sent;
        }
    }
}
