//! `serve` over a listener of the user's own: the `Listener` trait end to
//! end, over real TCP.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::Router;
use common::get as http_get;
use tokio::net::{TcpListener, TcpStream};
use tower_harden::context::PeerAddr;
use tower_harden::serve::Listener;

/// Wraps a TCP listener as a PROXY-protocol reader would: counts what it
/// accepts and reports another peer address than the socket's.
struct Counting {
    inner: TcpListener,
    accepted: Arc<AtomicUsize>,
    reported_peer: SocketAddr,
}

impl Listener for Counting {
    type Io = TcpStream;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        let (io, _socket_peer) = Listener::accept(&mut self.inner).await;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        (io, self.reported_peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Listener::local_addr(&self.inner)
    }
}

#[tokio::test]
async fn a_custom_listener_serves_and_its_peer_address_reaches_each_request() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let reported_peer: SocketAddr = "203.0.113.7:4321".parse().unwrap();
    let listener = Counting {
        inner: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        accepted: accepted.clone(),
        reported_peer,
    };
    let bound = listener.inner.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/peer",
            get(|request: Request| async move {
                request
                    .extensions()
                    .get::<PeerAddr>()
                    .map(|PeerAddr(peer)| peer.to_string())
                    .unwrap_or_default()
            }),
        )
        .route(
            "/connect-info",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
    let server = tower_harden::serve(listener, app);
    assert_eq!(server.local_addr().unwrap(), bound);
    tokio::spawn(async move { server.await.unwrap() });

    // Each request on its own connection (`Connection: close`).
    for path in ["/peer", "/connect-info", "/peer"] {
        let response = http_get(bound, path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.body, b"203.0.113.7:4321", "{path}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
