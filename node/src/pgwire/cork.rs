//! Owns write coalescing for one connection: a stream wrapper that holds replies while it is
//! corked, so a Bind/Execute/Sync exchange leaves in one `send` instead of one per message
//! (as PostgreSQL buffers extended-protocol replies until Sync or Flush).
//! Must not reorder or drop bytes, and must not hold more than `LIMIT` bytes: past that it
//! writes through even while corked, so a large result streams instead of piling up.
//! Invariant: the connection loop uncorks and flushes after every message that a client may
//! wait on (anything but Parse/Bind/Describe/Execute/Close), so no reply is ever stranded.
//! It also caps what a client may send before it is authenticated (`read_budget`): a message
//! announcing 512 MiB ends the connection after a few KB instead of being buffered.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes held while corked before writing through anyway.
const LIMIT: usize = 64 * 1024;

pub(crate) struct Corked<S> {
    inner: S,
    buf: Vec<u8>,
    pub(crate) corked: bool,
    /// Bytes the client may still send (before authentication); `None`: no cap.
    pub(crate) read_budget: Option<usize>,
}

impl<S> Corked<S> {
    pub(crate) fn new(inner: S) -> Corked<S> {
        Corked {
            inner,
            buf: Vec::with_capacity(8 * 1024),
            corked: false,
            read_budget: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// Writes the held bytes to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        while written < self.buf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[written..]) {
                Poll::Ready(Ok(0)) => {
                    self.buf.drain(..written);
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => {
                    self.buf.drain(..written);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    self.buf.drain(..written);
                    return Poll::Pending;
                }
            }
        }
        self.buf.clear();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(budget) = this.read_budget else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if budget == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "too much data before authentication",
            )));
        }
        // Read at most what is left of the budget.
        let room = buf.remaining().min(budget);
        let mut limited = ReadBuf::new(&mut buf.initialize_unfilled()[..room]);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        this.read_budget = Some(budget - n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.corked {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn corked_bytes_leave_together_on_the_first_uncorked_flush() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Corked::new(a);
        c.corked = true;
        c.write_all(b"one").await.unwrap();
        c.flush().await.unwrap();
        c.write_all(b"two").await.unwrap();
        let mut probe = [0u8; 8];
        let nothing =
            tokio::time::timeout(std::time::Duration::from_millis(20), b.read(&mut probe)).await;
        assert!(nothing.is_err(), "corked bytes must not leave");
        c.corked = false;
        c.flush().await.unwrap();
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"onetwo");
    }

    #[tokio::test]
    async fn reading_past_the_budget_fails() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Corked::new(a);
        c.read_budget = Some(10);
        b.write_all(&[1u8; 64]).await.unwrap();
        let mut got = vec![0u8; 64];
        let n = c.read(&mut got).await.unwrap();
        assert_eq!(n, 10);
        assert!(c.read(&mut got).await.is_err());
        c.read_budget = None;
        assert_eq!(c.read(&mut got).await.unwrap(), 54);
    }

    #[tokio::test]
    async fn a_large_reply_writes_through_while_corked() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Corked::new(a);
        c.corked = true;
        let big = vec![7u8; LIMIT + 10];
        c.write_all(&big).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut got = vec![0u8; LIMIT + 10];
        b.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|x| *x == 7));
    }
}
