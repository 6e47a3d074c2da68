//! Write coalescing for a browser connection, right on its TCP socket: under hyper and the
//! WebSocket layer on ws://, under the TLS layer on wss:// (rustls writes one record per
//! frame, with `write_vectored`, and those records are gathered the same way).
//!
//! tungstenite writes every frame with its own write call and keeps its write buffer at the
//! size of the largest frame it ever sent, for the rest of the session. The relay therefore
//! sends target data in frames of at most [`crate::relay::FRAME_TO_CLIENT`] bytes (cheap
//! idle sessions), and this layer gathers those full-size frames into one system call per
//! read from the target: the relay always flushes after them. Anything smaller (the last
//! frame of a read, control frames, hyper's response) goes out at once, together with what
//! is gathered, in one vectored write, so nothing waits for a flush that might not come.
//! The gathering buffer is released every time it is written out: an idle console holds
//! none.
//!
//! Reads get the mirror treatment. tungstenite reads at most its read-buffer size (4 KiB,
//! which every idle session holds) per call, so a bulk upload costs a system call per 4 KiB.
//! Once a read fills all that was asked, the next one reads up to [`READ_AHEAD`] bytes and
//! serves the following asks from memory; that buffer too is released once drained. Small
//! input (keys, pointer moves) never fills the ask and goes straight through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Writes at least this large are gathered; smaller ones are written at once.
pub const GATHERED_WRITE: usize = crate::relay::FRAME_TO_CLIENT;

/// Most bytes gathered before they are written out: one read from the target, in frames.
const GATHER_LIMIT: usize = 64 * 1024 + 1024;

/// Most bytes read ahead in one system call during a bulk upload: 1 MiB against 64 KiB took
/// browser→target from about 0.4x to 0.55-0.75x of loopback, at half the CPU per byte, side by
/// side. Only a session in a bulk upload holds it, and only until drained.
const READ_AHEAD: usize = 1024 * 1024;

/// A stream whose large writes are gathered until the next small write or flush, and whose
/// reads, during bulk uploads, are served from one larger read.
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    gathered: Vec<u8>,
    /// Bytes of `gathered` already written out.
    written: usize,
    /// Read ahead and not yet asked for; empty and unallocated unless a bulk upload is
    /// under way.
    ahead: BytesMut,
    /// The last read filled all the caller asked for: more is probably waiting.
    bulk: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce {
            inner,
            gathered: Vec::new(),
            written: 0,
            ahead: BytesMut::new(),
            bulk: false,
        }
    }

    /// Hands out what was read ahead; the buffer goes once it is empty.
    fn take_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.ahead.len());
        buf.put_slice(&self.ahead[..n]);
        self.ahead.advance(n);
        if self.ahead.is_empty() {
            self.ahead = BytesMut::new();
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Takes a large write into the gathering buffer (writing out what is there first if it
    /// would not fit), or writes it straight through when it alone fills the buffer.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if self.gathered.len() + len > GATHER_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        if self.gathered.is_empty() && len >= GATHER_LIMIT {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(GATHER_LIMIT);
        }
        for buf in bufs {
            self.gathered.extend_from_slice(buf);
        }
        Poll::Ready(Ok(len))
    }

    /// Writes out everything gathered, then releases the buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.gathered.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.gathered = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            this.take_ahead(buf);
            return Poll::Ready(Ok(()));
        }
        let asked = buf.remaining();
        if !this.bulk || asked >= READ_AHEAD {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            this.bulk = asked > 0 && buf.filled().len() - before == asked;
            return Poll::Ready(Ok(()));
        }
        this.ahead.reserve(READ_AHEAD);
        let n = ready!(poll_read_buf(
            Pin::new(&mut this.inner),
            cx,
            &mut this.ahead
        ))?;
        this.bulk = n > asked;
        this.take_ahead(buf);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if data.len() >= GATHERED_WRITE {
            return this.poll_gather(cx, &[IoSlice::new(data)], data.len());
        }
        // A small write ends the batch: what is gathered and this write go out together.
        while this.written < this.gathered.len() {
            let pending = this.gathered.len() - this.written;
            let slices = [
                IoSlice::new(&this.gathered[this.written..]),
                IoSlice::new(data),
            ];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n > pending {
                this.gathered = Vec::new();
                this.written = 0;
                return Poll::Ready(Ok(n - pending));
            }
            this.written += n;
        }
        this.gathered = Vec::new();
        this.written = 0;
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    /// rustls writes its records this way: under TLS, a record of a full-size frame is
    /// gathered like the frame itself would be on a plain connection.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let len = bufs.iter().map(|b| b.len()).sum();
        if len >= GATHERED_WRITE {
            return this.poll_gather(cx, bufs, len);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn large_writes_wait_for_a_small_write_or_a_flush_and_keep_their_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesce::new(near);
        let frame = vec![1u8; GATHERED_WRITE];
        stream.write_all(&frame).await.unwrap();
        stream.write_all(&frame).await.unwrap();
        assert_eq!(stream.gathered.len(), 2 * GATHERED_WRITE);
        stream.write_all(b"tail").await.unwrap();
        assert_eq!(stream.gathered.capacity(), 0, "released once written");
        let mut got = vec![0u8; 2 * GATHERED_WRITE + 4];
        far.read_exact(&mut got).await.unwrap();
        assert!(got[..2 * GATHERED_WRITE].iter().all(|&b| b == 1));
        assert_eq!(&got[2 * GATHERED_WRITE..], b"tail");

        stream.write_all(&frame).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = vec![0u8; GATHERED_WRITE];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frame);
    }

    #[tokio::test]
    async fn large_vectored_writes_are_gathered_too_and_small_ones_go_out_after_them() {
        // rustls writes its records with write_vectored.
        use tokio::io::AsyncWrite;
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesce::new(near);
        let (head, body) = (vec![2u8; 5], vec![3u8; GATHERED_WRITE]);
        for _ in 0..3 {
            let slices = [IoSlice::new(&head), IoSlice::new(&body)];
            let n =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write_vectored(cx, &slices))
                    .await
                    .unwrap();
            assert_eq!(n, head.len() + body.len(), "taken whole");
        }
        assert_eq!(stream.gathered.len(), 3 * (head.len() + body.len()));
        let small = [IoSlice::new(b"alert")];
        std::future::poll_fn(|cx| Pin::new(&mut stream).poll_write_vectored(cx, &small))
            .await
            .unwrap();
        assert_eq!(
            stream.gathered.capacity(),
            0,
            "written out before the small write"
        );
        let mut got = vec![0u8; 3 * (head.len() + body.len()) + 5];
        far.read_exact(&mut got).await.unwrap();
        let mut expected = Vec::new();
        for _ in 0..3 {
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&body);
        }
        expected.extend_from_slice(b"alert");
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_full_batch_is_written_out_before_more_is_gathered() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesce::new(near);
        let frame: Vec<u8> = (0..GATHERED_WRITE).map(|i| i as u8).collect();
        for _ in 0..10 {
            stream.write_all(&frame).await.unwrap();
            assert!(stream.gathered.len() <= GATHER_LIMIT);
        }
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 10 * GATHERED_WRITE);
        assert!(got.chunks(GATHERED_WRITE).all(|c| c == frame.as_slice()));
    }

    #[tokio::test]
    async fn bulk_reads_are_served_from_one_larger_read_and_keep_their_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesce::new(near);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        far.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 4096];
        let mut read_ahead = false;
        while got.len() < data.len() {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
            read_ahead |= !stream.ahead.is_empty();
            assert!(stream.ahead.len() < 2 * READ_AHEAD, "read-ahead is bounded");
        }
        assert!(got == data, "bytes altered or reordered");
        assert!(read_ahead, "a bulk upload is read ahead");
        assert_eq!(stream.ahead.capacity(), 0, "released once drained");
    }

    #[tokio::test]
    async fn small_reads_go_straight_through() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesce::new(near);
        for key in 0..20u8 {
            far.write_all(&[key; 10]).await.unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[key; 10]);
            assert_eq!(stream.ahead.capacity(), 0, "no read-ahead for key presses");
        }
    }

    #[tokio::test]
    async fn a_slow_reader_backs_pressure_up_instead_of_growing_the_buffer() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut stream = Coalesce::new(near);
        let frame = vec![7u8; GATHERED_WRITE];
        let writer = async {
            for _ in 0..8 {
                stream.write_all(&frame).await.unwrap();
                assert!(stream.gathered.len() <= GATHER_LIMIT);
            }
            stream.flush().await.unwrap();
        };
        let reader = async {
            let mut got = vec![0u8; 8 * GATHERED_WRITE];
            far.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert!(got.iter().all(|&b| b == 7));
    }
}
