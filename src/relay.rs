//! The session pump: binary WebSocket messages from the browser to the target's TCP stream
//! and target bytes back as binary messages, until one side ends; then the other side is
//! closed as the contract (section 6) says and the session is summed up for its log line.
//!
//! Backpressure is end to end: a message is read from one side only once the previous one
//! has been written to the other, so a slow browser stalls the target, never memory.

use std::fmt;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, Sink, SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use hyper_tungstenite::tungstenite::{self, Message};
use hyper_tungstenite::WebSocketStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::registry::Counters;
use crate::resume::{Control, Retained};
use crate::splice::{self, SharedTcp, Splicer};

/// Most bytes read from the target per message: a framebuffer update crosses in a few
/// messages. Reads start at [`IDLE_CHUNK`] and double while the target keeps filling them.
const READ_CHUNK: usize = 64 * 1024;

/// Stream bytes from the browser between two acknowledgements in resumable sessions.
const ACK_EVERY: u64 = 32 * 1024;

/// The first read of a session and of every burst: an idle console holds no more than this
/// (thousands of sessions must stay cheap).
const IDLE_CHUNK: usize = 1024;

/// A browser message at least this large may start a batch.
const BATCH_FROM: usize = 4 * 1024;

/// Most bytes from the browser gathered into one write to the target: one read-ahead's worth
/// (see [`crate::coalesce`]), so a bulk upload wakes the target once per MiB.
const BATCH_TO_TARGET: usize = 1024 * 1024;

/// A full read of this size means a burst: with both [`Sockets`], the rest of it is spliced.
const SPLICE_FROM: usize = 8 * 1024;

/// Largest message sent to the browser. tungstenite keeps its write buffer at the size of the
/// largest frame it ever sent, for the rest of the session: frames of 64 KiB would cost every
/// console that once showed a screen 64 KiB while idle. One read is sent as several frames
/// and flushed once; [`crate::coalesce`] turns those frames back into one system call.
pub const FRAME_TO_CLIENT: usize = 8 * 1024;

/// tungstenite's read buffer, allocated for every session and zero-filled before each read:
/// its default (128 KiB) alone would cost 1.2 GB for 9,000 idle consoles. Browser-to-target
/// traffic (keys, pointer, the odd clipboard) is small; larger frames still arrive whole, in
/// reads of this size.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Cap on bytes queued towards the browser. The relay waits for each frame to be accepted
/// and for the flush before reading the target again, so the queue never holds more than one
/// read; this is a guard, not a working size.
const WS_MAX_WRITE_BUFFER: usize = 4 * READ_CHUNK;

/// The WebSocket buffers and limits every session uses; the limits bound what the browser
/// may send (`WS_MAX_MESSAGE_SIZE`, `WS_MAX_FRAME_SIZE`).
pub fn websocket_config(max_message_size: usize, max_frame_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_frame_size))
}

/// How long to wait for the browser's close reply or the last flush before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Per-session limits, from the settings at the time the session started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Close when no byte has moved either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Close after this long whatever happens.
    pub max_duration: Option<Duration>,
    /// Ping the browser after this long without traffic either way (pings and pongs count),
    /// so load balancers and firewalls never see an idle connection.
    pub heartbeat_interval: Option<Duration>,
    /// With heartbeats on, end the session when the browser has sent nothing, not even a
    /// pong, for this long: it is gone without a FIN.
    pub heartbeat_timeout: Duration,
}

/// What can end a session from outside.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// The proxy's shutdown grace period is over.
    pub shutdown: CancellationToken,
    /// An operator closed this session.
    pub admin: CancellationToken,
    /// The browser re-attached on a new connection (resumable sessions): hand the target
    /// back as if this connection had vanished.
    pub detach: CancellationToken,
}

/// Who ended a session, for its summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosedBy {
    /// The browser sent a close frame with this code.
    Client(u16),
    /// The browser's connection ended without a close frame, or failed.
    ClientGone(String),
    /// The browser sent a text frame; answered with 1003.
    ClientSentText,
    /// The browser broke the WebSocket protocol (an unmasked frame, reserved bits, an
    /// unknown opcode, a fragmented or oversized control frame...); answered with 1002.
    ClientProtocolError(String),
    /// The browser sent a frame or message over `WS_MAX_FRAME_SIZE`/`WS_MAX_MESSAGE_SIZE`;
    /// answered with 1009.
    ClientTooBig(String),
    /// The target closed its connection; the browser got 1000 "Target closed".
    Target,
    /// Reading from or writing to the target failed; the browser got 1011.
    TargetError(String),
    /// The proxy is shutting down; the browser got 1001.
    Shutdown,
    /// No traffic for `SESSION_IDLE_TIMEOUT`; the browser got 1001.
    IdleTimeout,
    /// `SESSION_MAX_DURATION` reached; the browser got 1001.
    MaxDuration,
    /// The browser stopped answering pings for `HEARTBEAT_TIMEOUT`.
    HeartbeatTimeout,
    /// An operator closed the session; the browser got 1001.
    Admin,
    /// The VeNCrypt negotiation failed at this step, before relaying; the browser got 1011.
    Negotiation(&'static str),
}

impl fmt::Display for ClosedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClosedBy::Client(code) => write!(f, "client (close {code})"),
            ClosedBy::ClientGone(why) => write!(f, "client gone ({why})"),
            ClosedBy::ClientSentText => f.write_str("proxy (client sent a text frame, close 1003)"),
            ClosedBy::ClientProtocolError(why) => {
                write!(f, "proxy (client protocol error: {why}, close 1002)")
            }
            ClosedBy::ClientTooBig(why) => write!(f, "proxy (client {why}, close 1009)"),
            ClosedBy::Target => f.write_str("target"),
            ClosedBy::TargetError(why) => write!(f, "target error ({why})"),
            ClosedBy::Shutdown => f.write_str("proxy shutdown"),
            ClosedBy::IdleTimeout => f.write_str("proxy (SESSION_IDLE_TIMEOUT)"),
            ClosedBy::MaxDuration => f.write_str("proxy (SESSION_MAX_DURATION)"),
            ClosedBy::HeartbeatTimeout => {
                f.write_str("proxy (client stopped answering heartbeats)")
            }
            ClosedBy::Admin => f.write_str("administrator"),
            ClosedBy::Negotiation(step) => {
                write!(
                    f,
                    "proxy (VeNCrypt negotiation failed at {step}, close 1011)"
                )
            }
        }
    }
}

/// What a finished session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub bytes_to_target: u64,
    pub bytes_to_client: u64,
    pub closed_by: ClosedBy,
}

/// How a relay ended.
pub enum Outcome<T> {
    /// Both sides are closed.
    Closed(SessionStats),
    /// The browser vanished from a resumable session: the target is handed back, open and
    /// untouched, to wait for the browser to re-attach.
    Detached { closed_by: ClosedBy, target: T },
}

/// Relays until either side ends or `stop` fires, then closes both. `counters` follow the
/// bytes as they move, so others can watch a running session. With `retained` (a resumable
/// session, see [`crate::resume`]) stream bytes are kept until the browser acknowledges
/// them, acknowledgements flow as text frames, and a browser that vanishes detaches the
/// session instead of ending it.
pub async fn run<S, T>(
    ws: WebSocketStream<S>,
    target: T,
    options: Options,
    stop: &Stop,
    counters: &Counters,
    retained: Option<&Retained>,
    sockets: Sockets,
) -> Outcome<T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut target_rx, mut target_tx) = tokio::io::split(target);
    let started = Instant::now();
    // Milliseconds since `started`, shared by the halves: the last data byte either way (for
    // SESSION_IDLE_TIMEOUT), the last frame of any kind either way (for heartbeats), and the
    // last frame from the browser (to tell a live browser from a vanished one).
    let last_data = AtomicU64::new(0);
    let last_frame = AtomicU64::new(0);
    let last_from_client = AtomicU64::new(0);
    let now_ms = || started.elapsed().as_millis() as u64;
    let touch = || {
        let now = now_ms();
        last_data.store(now, Ordering::Relaxed);
        last_frame.store(now, Ordering::Relaxed);
    };
    let since = |at: &AtomicU64| started + Duration::from_millis(at.load(Ordering::Relaxed));
    let ping_now = Notify::new();
    let ack_now = Notify::new();
    // Stream bytes from the browser acknowledged to it so far (resumable sessions).
    let acked_to_client = AtomicU64::new(counters.to_target());

    let client_to_target = async {
        // A message read ahead while gathering a batch, handled next.
        let mut pending: Option<Result<Message, tungstenite::Error>> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        loop {
            let message = match pending.take() {
                Some(message) => message,
                None => match ws_rx.next().await {
                    Some(message) => message,
                    None => break,
                },
            };
            let now = now_ms();
            last_from_client.store(now, Ordering::Relaxed);
            last_frame.store(now, Ordering::Relaxed);
            match message {
                Ok(Message::Binary(data)) => {
                    // Messages the browser already sent go in the same write: one system
                    // call and one wake-up of the target for all of them.
                    let mut size = data.len();
                    batch.push(data);
                    let mut ended = false;
                    // Only bulk uploads are batched: looking ahead costs a read, and a key
                    // press or pointer move must not wait for it.
                    while (BATCH_FROM..BATCH_TO_TARGET).contains(&size) {
                        match ws_rx.next().now_or_never() {
                            Some(Some(Ok(Message::Binary(more)))) => {
                                size += more.len();
                                batch.push(more);
                            }
                            Some(Some(other)) => {
                                pending = Some(other);
                                break;
                            }
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        }
                    }
                    // Counted as written, so that after a re-attach the browser resends from
                    // exactly the first byte the target did not get.
                    if let Err(e) = write_batch(&mut target_tx, &mut batch, counters).await {
                        return ClosedBy::TargetError(e);
                    }
                    touch();
                    if retained.is_some()
                        && counters.to_target()
                            >= acked_to_client.load(Ordering::Relaxed) + ACK_EVERY
                    {
                        ack_now.notify_one();
                    }
                    if ended {
                        break;
                    }
                }
                Ok(Message::Text(text)) => match (retained, Control::parse(&text)) {
                    (Some(retained), Some(Control::Ack { received })) => retained.ack(received),
                    (Some(_), _) => debug!("ignored an unknown control message"),
                    (None, _) => return ClosedBy::ClientSentText,
                },
                Ok(Message::Close(frame)) => {
                    return ClosedBy::Client(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(e) => return client_failure(e),
            }
        }
        ClosedBy::ClientGone("connection closed without a close frame".into())
    };

    // Set while a burst goes through the kernel (see `crate::splice`); outlives the pump
    // below so that a frame it was sending when the session ended can be finished.
    let mut splicer: Option<Splicer> = None;
    let target_to_client = async {
        let mut buf = BytesMut::new();
        let mut want = IDLE_CHUNK;
        // Resumable sessions keep what they send, so they copy.
        let splice = match (&sockets.browser, &sockets.target) {
            (Some(browser), Some(target)) if retained.is_none() => Some(Splice { browser, target }),
            _ => None,
        };
        let has_room = || retained.is_none_or(Retained::has_room);
        loop {
            tokio::select! {
                read = read_target(
                    &mut target_rx,
                    &mut buf,
                    want,
                    sockets.target.as_ref(),
                    splicer.as_mut().zip(splice),
                ),
                    if has_room() => match read {
                    Ok(Read::Closed) => return ClosedBy::Target,
                    Ok(Read::Quiet) => {
                        splicer = None;
                        want = IDLE_CHUNK;
                    }
                    Ok(Read::Spliced { n, splicer, browser }) => {
                        counters.to_client.fetch_add(n as u64, Ordering::Relaxed);
                        // Whatever the WebSocket layer queued goes first, whole.
                        if let Err(e) = ws_tx.flush().await {
                            return ClosedBy::ClientGone(client_error(&e));
                        }
                        if let Err(e) = splicer.send_frame(browser).await {
                            return ClosedBy::ClientGone(format!("i/o: {e}"));
                        }
                        touch();
                    }
                    Ok(Read::Copied(n)) => {
                        // The whole buffer goes: nothing is held while the browser is slow
                        // or the console is idle.
                        let chunk = std::mem::take(&mut buf).freeze();
                        // Kept and counted before the send: if the browser vanishes during
                        // it, the chunk is sent again after a re-attach.
                        if let Some(retained) = retained {
                            retained.keep(chunk.clone());
                        }
                        counters.to_client.fetch_add(n as u64, Ordering::Relaxed);
                        if let Err(e) = send_binary(&mut ws_tx, chunk).await {
                            return ClosedBy::ClientGone(client_error(&e));
                        }
                        touch();
                        if splice.is_some() && n == want && want >= SPLICE_FROM {
                            // A burst: the kernel carries it from here.
                            splicer = Splicer::new()
                                .inspect_err(|e| debug!("no pipe for zero-copy relaying: {e}"))
                                .ok();
                        }
                        want = next_chunk(want, n);
                    }
                    Err(e) => return ClosedBy::TargetError(format!("read: {e}")),
                },
                () = retained.map_or(&ping_now, |r| &r.room).notified(), if !has_room() => {}
                () = ping_now.notified() => {
                    if let Err(e) = ws_tx.send(Message::Ping(Bytes::new())).await {
                        return ClosedBy::ClientGone(client_error(&e));
                    }
                    if retained.is_some() {
                        ack_now.notify_one();
                    }
                }
                () = ack_now.notified() => {
                    let received = counters.to_target();
                    acked_to_client.store(received, Ordering::Relaxed);
                    let ack = Control::Ack { received }.to_text();
                    if let Err(e) = ws_tx.send(Message::Text(ack.into())).await {
                        return ClosedBy::ClientGone(client_error(&e));
                    }
                }
            }
        }
    };

    // One timer for every deadline of the session (heartbeat, idle limit, time limit): each
    // armed timer is state an idle console carries.
    let deadlines = async {
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut wake_at = |at: Instant| next = Some(next.map_or(at, |n| n.min(at)));
            if let Some(limit) = options.max_duration {
                if now >= started + limit {
                    return ClosedBy::MaxDuration;
                }
                wake_at(started + limit);
            }
            if let Some(limit) = options.idle_timeout {
                let deadline = since(&last_data) + limit;
                if now >= deadline {
                    return ClosedBy::IdleTimeout;
                }
                wake_at(deadline);
            }
            if let Some(interval) = options.heartbeat_interval {
                let gone_at = since(&last_from_client) + options.heartbeat_timeout;
                if now >= gone_at {
                    return ClosedBy::HeartbeatTimeout;
                }
                if now >= since(&last_frame) + interval {
                    // Counts as traffic now, so the next ping is one interval away.
                    last_frame.store(now_ms(), Ordering::Relaxed);
                    ping_now.notify_one();
                }
                wake_at(since(&last_frame) + interval);
                wake_at(gone_at);
            }
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => return std::future::pending().await,
            }
        }
    };

    let closed_by = tokio::select! {
        end = client_to_target => end,
        end = target_to_client => end,
        end = deadlines => end,
        () = stop.shutdown.cancelled() => ClosedBy::Shutdown,
        () = stop.admin.cancelled() => ClosedBy::Admin,
        () = stop.detach.cancelled() => ClosedBy::ClientGone("replaced by a re-attach".into()),
    };

    if retained.is_some()
        && matches!(
            closed_by,
            ClosedBy::ClientGone(_) | ClosedBy::HeartbeatTimeout
        )
    {
        return Outcome::Detached {
            closed_by,
            target: target_rx.unsplit(target_tx),
        };
    }

    let close = |code: CloseCode, reason: &str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    let goodbye = match &closed_by {
        // tungstenite has queued the echo of the client's close frame; flushing sends it.
        ClosedBy::Client(_) | ClosedBy::ClientGone(_) => None,
        ClosedBy::ClientSentText => Some(close(CloseCode::Unsupported, "Binary frames only")),
        ClosedBy::ClientProtocolError(_) => Some(close(CloseCode::Protocol, "Protocol error")),
        ClosedBy::ClientTooBig(_) => Some(close(CloseCode::Size, "Message too big")),
        ClosedBy::Target => Some(close(CloseCode::Normal, "Target closed")),
        ClosedBy::TargetError(_) => Some(close(CloseCode::Error, "Target connection failed")),
        ClosedBy::Shutdown => Some(close(CloseCode::Away, "Proxy shutting down")),
        ClosedBy::IdleTimeout => Some(close(CloseCode::Away, "Idle timeout")),
        ClosedBy::MaxDuration => Some(close(CloseCode::Away, "Session time limit reached")),
        ClosedBy::HeartbeatTimeout => Some(close(CloseCode::Away, "No answer to heartbeats")),
        ClosedBy::Admin => Some(close(CloseCode::Away, "Session closed by an administrator")),
        ClosedBy::Negotiation(_) => Some(close(CloseCode::Error, "Negotiation failed")),
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        // A spliced frame cut off by the end goes out whole before the close frame; one
        // that cannot is dropped with the splicer, and the connection closes without one.
        if let Some(splicer) = &mut splicer {
            if splicer.in_frame() && splicer.finish_frame().await.is_err() {
                return;
            }
        }
        let sent_close = match goodbye {
            Some(message) => ws_tx.send(message).await.is_ok(),
            None => {
                if matches!(closed_by, ClosedBy::Client(_)) {
                    let _ = ws_tx.flush().await;
                }
                false
            }
        };
        // After a protocol or size error the browser's stream is in no known state: fail the
        // connection (RFC 6455, 7.1.7) rather than read on for a close reply.
        let violated = matches!(
            closed_by,
            ClosedBy::ClientProtocolError(_) | ClosedBy::ClientTooBig(_)
        );
        if sent_close && !violated {
            // Wait for the browser's close reply so the close handshake completes.
            while let Some(Ok(reply)) = ws_rx.next().await {
                if reply.is_close() {
                    break;
                }
            }
        }
        // A TLS target gets its close_notify. A plain socket closes when the relay returns,
        // and closing sends the FIN a shutdown would: one system call less per session.
        if sockets.target.is_none() {
            let _ = target_tx.shutdown().await;
        }
    })
    .await;

    Outcome::Closed(SessionStats {
        bytes_to_target: counters.to_target(),
        bytes_to_client: counters.to_client(),
        closed_by,
    })
}

/// Why reading from the browser failed: its fault (answered with a close code) or gone.
fn client_failure(error: tungstenite::Error) -> ClosedBy {
    use tungstenite::error::ProtocolError;
    match error {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ClosedBy::ClientGone("connection closed without a close frame".into())
        }
        tungstenite::Error::Protocol(e) => ClosedBy::ClientProtocolError(e.to_string()),
        tungstenite::Error::Capacity(e) => ClosedBy::ClientTooBig(e.to_string()),
        // A text frame that is not even UTF-8: still a text frame.
        tungstenite::Error::Utf8(_) => ClosedBy::ClientSentText,
        other => ClosedBy::ClientGone(client_error(&other)),
    }
}

/// Writes every message of `batch` to the target, counting bytes as they go; empties it.
async fn write_batch<W: AsyncWrite + Unpin>(
    target_tx: &mut W,
    batch: &mut Vec<Bytes>,
    counters: &Counters,
) -> Result<(), String> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match target_tx.write_vectored(rest).await {
            Ok(0) => return Err("write: target closed".into()),
            Ok(n) => {
                counters.to_target.fetch_add(n as u64, Ordering::Relaxed);
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    drop(slices);
    batch.clear();
    Ok(())
}

/// The plain sockets under a session's streams, where there are any.
#[derive(Debug, Default)]
pub struct Sockets {
    /// The browser's (ws://): with a plain target too, bursts are spliced into it.
    pub browser: Option<SharedTcp>,
    /// The target's, unless the proxy speaks TLS to it: an idle session waits on it
    /// without holding a read buffer.
    pub target: Option<SharedTcp>,
}

/// A plain browser connection and a plain target: target bytes may be spliced.
#[derive(Debug, Clone, Copy)]
struct Splice<'a> {
    browser: &'a SharedTcp,
    target: &'a SharedTcp,
}

/// What one read from the target gave.
enum Read<'s> {
    /// Copied into the read buffer.
    Copied(usize),
    /// Moved into `splicer`'s pipe, to be sent on as one frame to `browser`.
    Spliced {
        n: usize,
        splicer: &'s mut Splicer,
        browser: &'s SharedTcp,
    },
    /// The splicer waited [`splice::QUIET`] for nothing: the burst is over.
    Quiet,
    /// The target closed its side.
    Closed,
}

/// The next read from the target: spliced during a burst, else copied into `buf`.
async fn read_target<'s, R: AsyncRead + Unpin>(
    target_rx: &mut R,
    buf: &mut BytesMut,
    want: usize,
    socket: Option<&SharedTcp>,
    splicing: Option<(&'s mut Splicer, Splice<'s>)>,
) -> std::io::Result<Read<'s>> {
    if let Some((splicer, splice)) = splicing {
        return match tokio::time::timeout(splice::QUIET, splicer.fill(splice.target.tcp())).await {
            Err(_) => Ok(Read::Quiet),
            Ok(Ok(0)) => Ok(Read::Closed),
            Ok(Ok(n)) => Ok(Read::Spliced {
                n,
                splicer,
                browser: splice.browser,
            }),
            Ok(Err(e)) => Err(e),
        };
    }
    if let Some(socket) = socket.filter(|_| buf.capacity() == 0) {
        // An idle console waits here without a buffer: 1 KiB less for each of thousands.
        socket.tcp().readable().await?;
    }
    buf.reserve(want);
    match target_rx.read_buf(&mut buf.limit(want)).await? {
        0 => Ok(Read::Closed),
        n => Ok(Read::Copied(n)),
    }
}

/// Sends `data` as binary messages of at most [`FRAME_TO_CLIENT`] bytes, then flushes.
async fn send_binary<W>(ws_tx: &mut W, data: Bytes) -> Result<(), tungstenite::Error>
where
    W: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut start = 0;
    while start < data.len() {
        let end = (start + FRAME_TO_CLIENT).min(data.len());
        ws_tx.feed(Message::Binary(data.slice(start..end))).await?;
        start = end;
    }
    // Every frame is copied into the layers below by now: the read buffer need not wait
    // out a browser that is slow to take the flush.
    drop(data);
    ws_tx.flush().await
}

/// The next read size: double after a full read (the target has more ready), back to
/// [`IDLE_CHUNK`] after a short one (the burst is over).
fn next_chunk(chunk: usize, read: usize) -> usize {
    if read >= chunk {
        (chunk * 2).min(READ_CHUNK)
    } else if read < chunk / 2 {
        IDLE_CHUNK
    } else {
        chunk
    }
}

fn client_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "connection closed".into()
        }
        tungstenite::Error::Io(e) => format!("i/o: {e}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grow_while_full_and_fall_back_after_a_short_one() {
        assert_eq!(next_chunk(IDLE_CHUNK, IDLE_CHUNK), 2 * IDLE_CHUNK);
        assert_eq!(next_chunk(READ_CHUNK, READ_CHUNK), READ_CHUNK);
        assert_eq!(next_chunk(READ_CHUNK, READ_CHUNK * 3 / 4), READ_CHUNK);
        assert_eq!(next_chunk(READ_CHUNK, 100), IDLE_CHUNK);
        assert_eq!(next_chunk(IDLE_CHUNK, 1), IDLE_CHUNK);
    }
}
