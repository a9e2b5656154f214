//! A connection's socket as the server watches it: bytes counted each way,
//! writes that wait on the client noticed, its slot under the cap held for
//! as long as the socket lives (an upgraded one included), and a close the
//! server can force wherever the socket has gone.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::cap::Slot;
use super::progress::ConnectionState;

/// The socket, watched. Dropping it frees its slot.
pub(super) struct WatchedIo<I> {
    inner: I,
    state: Arc<ConnectionState>,
    _slot: Slot,
}

impl<I> WatchedIo<I> {
    pub(super) fn new(inner: I, slot: Slot) -> Self {
        Self {
            inner,
            state: slot.state(),
            _slot: slot,
        }
    }
}

impl<I> Drop for WatchedIo<I> {
    fn drop(&mut self) {
        self.state.mark_io_dropped();
    }
}

fn closed_by_server() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection closed by the server",
    )
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.state.register_read(cx.waker());
        if self.state.io_closed() {
            return Poll::Ready(Err(closed_by_server()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.state.read(read);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> WatchedIo<I> {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => self.state.wrote(*n),
            Poll::Pending => self.state.write_blocked(),
            _ => {}
        }
    }

    fn check_open(&self, cx: &Context<'_>) -> io::Result<()> {
        self.state.register_write(cx.waker());
        if self.state.io_closed() {
            return Err(closed_by_server());
        }
        Ok(())
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
