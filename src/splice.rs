//! Zero-copy relaying towards a plain (ws://) browser connection from a plain target.
//!
//! A framebuffer burst is the bulk of a console's traffic. Copied through user space it
//! crosses the proxy four times (kernel to proxy, into tungstenite's frame buffer, into the
//! write gather, back to the kernel). With splice(2) the kernel moves the target's pages
//! through a pipe into the browser's socket, and the proxy only writes each frame's header
//! (encoded by tungstenite). Resumable sessions and TLS on either side keep the copying path:
//! they need the bytes in user space.
//!
//! Both the WebSocket layer and the splice path write to the browser's socket, so they share
//! it through [`SharedTcp`], whose write gate holds the WebSocket layer back while a spliced
//! frame is on its way: a pong or close frame can never land inside one.

use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use hyper_tungstenite::tungstenite::protocol::frame::FrameHeader;
use rustix::net::SendFlags;
use rustix::pipe::{PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes moved into the pipe, and so sent in one frame. Browsers take frames of any
/// size; bigger ones mean fewer system calls and wake-ups per byte: 1 MiB against 256 KiB
/// measured 1.2 to 1.7x the single-session throughput at about half the CPU per GB. Linux allows
/// an unprivileged process pipes up to `fs.pipe-max-size`, 1 MiB by default.
pub const PIPE_SIZE: usize = 1024 * 1024;

/// Tried when [`PIPE_SIZE`] is refused (a lowered `fs.pipe-max-size`).
const SMALLER_PIPE: usize = 256 * 1024;

/// A pipe smaller than this is not worth splicing through (a user past
/// `fs.pipe-user-pages-soft` gets two-page pipes): the session copies instead.
const MIN_PIPE: usize = 64 * 1024;

/// Pipes open at once across all sessions. Each costs two descriptors and, while a
/// browser is slower than its target, up to [`PIPE_SIZE`] of the target's pages held in
/// the kernel (256 MiB at worst for all of them, beside the sockets' own buffers); when a
/// burst from more consoles would need more, the rest copy. Sized to stay far below the
/// descriptor budget of two per session.
pub const MAX_PIPES: usize = 256;

static PIPES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_PIPES`] places, given back on drop.
#[derive(Debug)]
struct PipeSlot(());

impl PipeSlot {
    fn take() -> Option<PipeSlot> {
        PIPES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PIPES).then_some(n + 1)
            })
            .ok()
            .map(|_| PipeSlot(()))
    }
}

impl Drop for PipeSlot {
    fn drop(&mut self) {
        PIPES.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A session goes back to copying (and lets its pipe go) after the target has been quiet
/// this long: an idle console holds no pipe.
pub const QUIET: Duration = Duration::from_millis(500);

/// Bytes sent to browsers by splicing since the process started.
static SPLICED: AtomicU64 = AtomicU64::new(0);

/// Bytes sent to browsers by splicing since the process started, for metrics.
pub fn spliced_bytes() -> u64 {
    SPLICED.load(Ordering::Relaxed)
}

const OPEN: u8 = 0;
/// A spliced frame is being written: other writers wait.
const HELD: u8 = 1;
/// A spliced frame was abandoned half-written: the byte stream is no longer WebSocket, so
/// nothing else may be written to it.
const BROKEN: u8 = 2;

/// A TCP socket shared by the WebSocket layer (through `AsyncRead`/`AsyncWrite`) and the
/// splice path.
#[derive(Debug, Clone)]
pub struct SharedTcp(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    tcp: TcpStream,
    gate: AtomicU8,
    waiting: AtomicWaker,
}

impl SharedTcp {
    pub fn new(tcp: TcpStream) -> Self {
        SharedTcp(Arc::new(Inner {
            tcp,
            gate: AtomicU8::new(OPEN),
            waiting: AtomicWaker::new(),
        }))
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.0.tcp
    }

    /// Ready when a write may go out: no spliced frame is half-written.
    fn poll_gate(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let check = || match self.0.gate.load(Ordering::Acquire) {
            OPEN => Some(Ok(())),
            BROKEN => Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "a zero-copy frame was cut short; the connection cannot carry more",
            ))),
            _ => None,
        };
        if let Some(result) = check() {
            return Poll::Ready(result);
        }
        self.0.waiting.register(cx.waker());
        match check() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    /// Sets the write gate (`HELD` while a spliced frame is on its way) and wakes a writer
    /// waiting on it.
    fn set_gate(&self, state: u8) {
        self.0.gate.store(state, Ordering::Release);
        self.0.waiting.wake();
    }

    /// Waits until the socket is ready for `interest`, then makes `attempt`, until it does
    /// not report `WouldBlock` (which clears the readiness tokio had cached).
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut attempt: impl FnMut(&TcpStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let tcp = &self.0.tcp;
        loop {
            if interest.is_readable() {
                ready!(tcp.poll_read_ready(cx))?;
            } else {
                ready!(tcp.poll_write_ready(cx))?;
            }
            match attempt(tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let asked = buf.remaining();
        // SAFETY: recv only writes into the slice; `assume_init` covers exactly what it
        // reported written.
        let n = ready!(self.poll_io(cx, Interest::READABLE, |tcp| {
            let mut short = None;
            let result = tcp.try_io(Interest::READABLE, || {
                let n = SockRef::from(tcp).recv(unsafe { buf.unfilled_mut() })?;
                if n > 0 && n < asked {
                    // A short read drained the socket. Saying WouldBlock makes tokio clear
                    // its readiness (as its own TcpStream does), so the next read waits
                    // for the next event rather than meeting EAGAIN, and an idle session
                    // waits for data before it takes a buffer.
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            short.map_or(result, Ok)
        }))?;
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_gate(cx))?;
        self.poll_io(cx, Interest::WRITABLE, |tcp| tcp.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_gate(cx))?;
        self.poll_io(cx, Interest::WRITABLE, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_gate(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_gate(cx))?;
        Poll::Ready(SockRef::from(&self.0.tcp).shutdown(std::net::Shutdown::Write))
    }
}

/// A pipe through which a session's target bytes reach the browser without being copied.
#[derive(Debug)]
pub struct Splicer {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    /// Bytes in the pipe, not yet sent.
    queued: usize,
    /// The frame being sent, if one is part-way: sending can be resumed after a
    /// cancellation, so a session that must close finishes the frame before its close frame.
    frame: Option<Frame>,
    _slot: PipeSlot,
}

/// A spliced frame on its way: the browser socket (its gate is `HELD` meanwhile), the
/// encoded header, how much of it has been sent, and the payload length for the count.
#[derive(Debug)]
struct Frame {
    browser: SharedTcp,
    header: Vec<u8>,
    header_sent: usize,
    len: u64,
}

/// A frame dropped half-sent leaves the browser's byte stream in no WebSocket state.
impl Drop for Splicer {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            frame.browser.set_gate(BROKEN);
        }
    }
}

impl Splicer {
    /// # Errors
    /// All [`MAX_PIPES`] are in use, no pipe could be made (out of descriptors), or only a
    /// uselessly small one: the session keeps copying.
    pub fn new() -> io::Result<Self> {
        let slot = PipeSlot::take()
            .ok_or_else(|| io::Error::other(format!("all {MAX_PIPES} pipes are in use")))?;
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        let capacity = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE)
            .or_else(|_| rustix::pipe::fcntl_setpipe_size(&write, SMALLER_PIPE))
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))?;
        if capacity < MIN_PIPE {
            return Err(io::Error::other(format!(
                "pipes get only {capacity} bytes (fs.pipe-user-pages-soft reached?)"
            )));
        }
        Ok(Splicer {
            read,
            write,
            capacity,
            queued: 0,
            frame: None,
            _slot: slot,
        })
    }

    /// Moves what `target` has (up to the pipe's capacity) into the pipe, waiting until it
    /// has something. `Ok(0)`: the target closed. Cancel-safe: nothing moves unless it
    /// returns.
    pub async fn fill(&mut self, target: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.queued, 0, "a frame is still in the pipe");
        let n = target
            .async_io(Interest::READABLE, || {
                rustix::pipe::splice(
                    target,
                    None,
                    &self.write,
                    None,
                    self.capacity,
                    SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                )
                .map_err(io::Error::from)
            })
            .await?;
        self.queued = n;
        Ok(n)
    }

    /// Sends what [`Splicer::fill`] put in the pipe to the browser as one binary frame.
    /// The WebSocket layer must have nothing queued (flush it first); it is held back until
    /// the frame is complete. Cancel-safe: [`Splicer::finish_frame`] resumes where this
    /// stopped; dropping the splicer instead leaves the connection unusable, and later
    /// writers are told so.
    pub async fn send_frame(&mut self, browser: &SharedTcp) -> io::Result<()> {
        debug_assert!(self.frame.is_none(), "the last frame is unfinished");
        let mut header = Vec::with_capacity(14);
        FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            ..FrameHeader::default()
        }
        .format(self.queued as u64, &mut header)
        .map_err(io::Error::other)?;
        browser.set_gate(HELD);
        self.frame = Some(Frame {
            browser: browser.clone(),
            header,
            header_sent: 0,
            len: self.queued as u64,
        });
        self.finish_frame().await
    }

    /// Whether a frame is part-way to the browser.
    pub fn in_frame(&self) -> bool {
        self.frame.is_some()
    }

    /// Sends the rest of the frame [`Splicer::send_frame`] started, if any. Cancel-safe.
    pub async fn finish_frame(&mut self) -> io::Result<()> {
        let Splicer {
            read,
            queued,
            frame,
            ..
        } = self;
        let Some(current) = frame else {
            return Ok(());
        };
        let tcp = current.browser.tcp();
        while current.header_sent < current.header.len() {
            let rest = &current.header[current.header_sent..];
            // Corked with the payload that follows: header and data leave in the same
            // segments.
            let n = tcp
                .async_io(Interest::WRITABLE, || {
                    rustix::net::send(tcp, rest, SendFlags::MORE | SendFlags::NOSIGNAL)
                        .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            current.header_sent += n;
        }
        while *queued > 0 {
            let n = tcp
                .async_io(Interest::WRITABLE, || {
                    rustix::pipe::splice(
                        &*read,
                        None,
                        tcp,
                        None,
                        *queued,
                        SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
                    )
                    .map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            *queued -= n;
        }
        if let Some(done) = frame.take() {
            SPLICED.fetch_add(done.len, Ordering::Relaxed);
            done.browser.set_gate(OPEN);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_capped_and_given_back() {
        let taken: Vec<PipeSlot> = std::iter::from_fn(PipeSlot::take)
            .take(MAX_PIPES + 1)
            .collect();
        assert_eq!(taken.len(), MAX_PIPES);
        assert!(PipeSlot::take().is_none());
        assert!(Splicer::new().is_err(), "a pipe beyond the cap");
        drop(taken);
        let splicer = Splicer::new().expect("a pipe once slots are free");
        assert!(splicer.capacity >= 64 * 1024);
    }
}
