//! Write coalescing for a plain (ws://) browser connection, under hyper and the WebSocket
//! layer.
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

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes at least this large are gathered; smaller ones are written at once.
pub const GATHERED_WRITE: usize = crate::relay::FRAME_TO_CLIENT;

/// Most bytes gathered before they are written out: one read from the target, in frames.
const GATHER_LIMIT: usize = 64 * 1024 + 1024;

/// A stream whose large writes are gathered until the next small write or flush.
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    gathered: Vec<u8>,
    /// Bytes of `gathered` already written out.
    written: usize,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Coalesce {
            inner,
            gathered: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
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
            if this.gathered.len() + data.len() > GATHER_LIMIT {
                ready!(this.poll_drain(cx))?;
            }
            if this.gathered.is_empty() && data.len() >= GATHER_LIMIT {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
            if this.gathered.capacity() == 0 {
                this.gathered.reserve_exact(GATHER_LIMIT);
            }
            this.gathered.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
