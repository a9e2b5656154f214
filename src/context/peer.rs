//! Who is on the other end of the connection.

use std::net::SocketAddr;

use http::Extensions;

/// The TCP peer address of the connection a request arrived on, as a request
/// extension. Set by [`serve()`](crate::serve()); read by the deadline layer
/// (to decide whether a caller is trusted) and the rate limiter (peer-IP
/// keys). Servers built on hyper-util directly insert it into each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The peer address of a request: the crate's [`PeerAddr`] extension, else
/// axum's `ConnectInfo<SocketAddr>` (feature `axum`).
pub(crate) fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    None
}
