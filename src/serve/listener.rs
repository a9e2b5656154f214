//! What the server accepts connections from.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A source of connections for [`serve()`](super::serve()), shaped like
/// axum's `axum::serve::Listener`: implemented for
/// [`tokio::net::TcpListener`], and meant to be wrapped (a PROXY-protocol
/// reader, a TLS acceptor, a counter) by a type that calls the inner
/// listener's [`accept`](Listener::accept) and hands on its own I/O type or
/// peer address.
///
/// The address `accept` returns is the one each request carries as
/// [`PeerAddr`](crate::context::PeerAddr) (and, with the `axum` feature, as
/// `ConnectInfo<SocketAddr>`), so a wrapper that learns the real client's
/// address (from a PROXY header) returns that one.
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tower_harden::serve::Listener;
///
/// /// Counts the connections it accepts.
/// struct Counting<L> {
///     inner: L,
///     accepted: Arc<AtomicU64>,
/// }
///
/// impl<L: Listener> Listener for Counting<L> {
///     type Io = L::Io;
///
///     async fn accept(&mut self) -> (Self::Io, SocketAddr) {
///         let accepted = self.inner.accept().await;
///         self.accepted.fetch_add(1, Ordering::Relaxed);
///         accepted
///     }
///
///     fn local_addr(&self) -> std::io::Result<SocketAddr> {
///         self.inner.local_addr()
///     }
/// }
/// ```
pub trait Listener: Send + 'static {
    /// A connection's I/O.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection; returns its I/O and its peer address.
    ///
    /// It does not fail: an implementation handles its own errors, skipping a
    /// connection that failed and pausing when accepting cannot work for a
    /// while (out of file descriptors), so that the server does not spin.
    /// The server calls it one call at a time, and not again until the
    /// connection it returned has a slot under
    /// [`Serve::max_connections`](super::Serve::max_connections) (at once,
    /// or by evicting an idle or stalled connection): whatever waits on a client here (a handshake, a PROXY
    /// header) holds up every other connection, so it must be bounded. The
    /// future is dropped when the server shuts down.
    fn accept(&mut self) -> impl Future<Output = (Self::Io, SocketAddr)> + Send;

    /// Prepares one accepted connection before HTTP is served over it, on
    /// the connection's own task: work that waits on the client (reading a
    /// PROXY header, a handshake) belongs here rather than in
    /// [`accept`](Self::accept), so that a slow client holds up only its own
    /// connection. It may replace the peer address. The connection holds
    /// its place under the connection cap meanwhile, so the wait must be
    /// bounded (a timeout); `None` closes the connection.
    ///
    /// Default: the connection and address as accepted. A wrapper calls its
    /// inner listener's `prepare` (as
    /// [`ProxyProtocolListener`](super::ProxyProtocolListener) does).
    fn prepare(
        &self,
        io: Self::Io,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Io, SocketAddr)>> + Send + 'static {
        std::future::ready(Some((io, peer)))
    }

    /// The address this listener is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Accepts TCP connections and sets `TCP_NODELAY` on each. An error
/// that concerns one connection (the peer went away) skips it; any other
/// (out of file descriptors) is logged and accepting pauses for 1 s before
/// it retries, as `axum::serve` does.
impl Listener for TcpListener {
    type Io = TcpStream;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            match TcpListener::accept(self).await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer);
                }
                Err(error) => wait_after_accept_error(error).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

/// Per-connection errors (the peer went away) need no pause; others (out of
/// file descriptors) do, so the loop does not spin. axum::serve does the
/// same.
async fn wait_after_accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
