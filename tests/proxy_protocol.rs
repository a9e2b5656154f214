//! The PROXY protocol listener over real TCP: the address a trusted
//! balancer's header carries is the peer every layer sees; from anyone else
//! a header closes the connection.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use common::{read_response, RawResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_harden::context::{PeerAddr, TrustedNetworks};
use tower_harden::rate_limit::{
    AnyStore, IpGrouping, KeySource, MemoryStore, Policy, Quota, RateLimitLayer, TrustedProxies,
};
use tower_harden::serve::ProxyProtocolListener;

/// Serves an app answering the peer address it saw (as `PeerAddr` and as
/// axum's `ConnectInfo`), behind a rate limit of two requests per client
/// address per hour; the balancer is `trusted`.
async fn server(trusted: &str, header_timeout: Duration) -> SocketAddr {
    let quota = Quota::new(2, Duration::from_secs(3600)).unwrap();
    let app =
        Router::new()
            .route(
                "/",
                get(
                    |ConnectInfo(info): ConnectInfo<SocketAddr>,
                     request: axum::extract::Request| async move {
                        let peer = request.extensions().get::<PeerAddr>().unwrap().0;
                        assert_eq!(peer, info);
                        peer.to_string()
                    },
                ),
            )
            .layer(
                RateLimitLayer::new(AnyStore::from(MemoryStore::new(1000))).policy(Policy::new(
                    "per-client",
                    quota,
                    KeySource::ClientIp(TrustedProxies::new(), IpGrouping::new()),
                )),
            );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = ProxyProtocolListener::new(listener, TrustedNetworks::cidrs([trusted]).unwrap())
        .header_timeout(header_timeout);
    tokio::spawn(async move {
        tower_harden::serve(listener, app)
            .with_graceful_shutdown(std::future::pending())
            .await
            .unwrap();
    });
    addr
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// Sends `header` then a GET; the response, or `None` if the server closed
/// the connection without one.
async fn send(addr: SocketAddr, header: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(GET);
    // The server may close before reading it all.
    let _ = stream.write_all(&bytes).await;
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("no answer or close within 10 s")
        .ok()
        .flatten()
}

fn v2_tcp4(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

fn v2_tcp6(source: [u8; 16], port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[0; 16]);
    header.extend_from_slice(&port.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

#[tokio::test]
async fn v1_and_v2_from_a_trusted_peer_set_the_client_address() {
    let addr = server("127.0.0.1/32", Duration::from_secs(10)).await;
    let response = send(addr, b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 80\r\n")
        .await
        .expect("served");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"192.0.2.7:51234");
    let response = send(addr, &v2_tcp4([198, 51, 100, 9], 4000))
        .await
        .expect("served");
    assert_eq!(response.body, b"198.51.100.9:4000");
    let mut ip = [0u8; 16];
    ip[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    ip[15] = 7;
    let response = send(addr, &v2_tcp6(ip, 4001)).await.expect("served");
    assert_eq!(response.body, b"[2001:db8::7]:4001");
    // A health check (`PROXY UNKNOWN`) keeps the balancer's own address.
    let response = send(addr, b"PROXY UNKNOWN\r\n").await.expect("served");
    assert!(
        String::from_utf8_lossy(&response.body).starts_with("127.0.0.1:"),
        "{:?}",
        response.body
    );
}

#[tokio::test]
async fn the_rate_limit_keys_on_the_address_from_the_header() {
    let addr = server("127.0.0.1/32", Duration::from_secs(10)).await;
    let a = b"PROXY TCP4 192.0.2.7 127.0.0.1 1000 80\r\n";
    let b = b"PROXY TCP4 192.0.2.8 127.0.0.1 1000 80\r\n";
    for _ in 0..2 {
        assert_eq!(send(addr, a).await.expect("served").status, 200);
    }
    // The third request of client A is limited, client B (same balancer
    // connection source) is not.
    assert_eq!(send(addr, a).await.expect("served").status, 429);
    assert_eq!(send(addr, b).await.expect("served").status, 200);
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_closes_the_connection() {
    // Loopback is not the balancer here.
    let addr = server("10.0.0.0/8", Duration::from_secs(10)).await;
    assert!(
        send(addr, b"PROXY TCP4 192.0.2.7 127.0.0.1 51234 80\r\n")
            .await
            .is_none(),
        "a v1 header from an untrusted peer was served"
    );
    assert!(send(addr, &v2_tcp4([192, 0, 2, 7], 1)).await.is_none());
    // Plain HTTP from the same peer is served, with its real address.
    let response = send(addr, b"").await.expect("served");
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).starts_with("127.0.0.1:"));
    // The signature split across writes is still caught.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for piece in [&b"PR"[..], b"OX", b"Y TCP4 192.0.2.7 127.0.0.1 1 80\r\n"] {
        let _ = stream.write_all(piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stream.write_all(GET).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed within 10 s");
    assert!(read.is_err() || rest.is_empty(), "answered: {rest:?}");
}

#[tokio::test]
async fn a_malformed_or_missing_header_from_a_trusted_peer_closes_the_connection() {
    let addr = server("127.0.0.1/32", Duration::from_secs(10)).await;
    for header in [
        &b""[..],
        b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 80\r\n",
        b"PROXY TCP9 x y 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x22\x11\x00\x0c",
    ] {
        assert!(send(addr, header).await.is_none(), "{header:?} was served");
    }
}

#[tokio::test]
async fn a_slow_header_holds_up_only_its_own_connection() {
    let addr = server("127.0.0.1/32", Duration::from_secs(1)).await;
    // A trusted peer that sends half a header and stops.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"PROXY TCP4 192.0").await.unwrap();
    // Others connecting after it are served meanwhile: the header is read
    // on the connection's task, not in the accept loop.
    for client in 10..13 {
        let header = format!("PROXY TCP4 192.0.2.{client} 127.0.0.1 1 80\r\n");
        let response = send(addr, header.as_bytes())
            .await
            .expect("served while another header is pending");
        assert_eq!(response.status, 200);
    }
    // The slow one is closed once its header timeout passes.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest))
        .await
        .expect("closed by the header timeout");
    assert!(read.is_err() || rest.is_empty());
}

/// `Serve::proxy_protocol` (what `[server] proxy_protocol` and
/// `trusted_load_balancers` set) wraps any listener.
#[tokio::test]
async fn the_server_setting_wraps_the_listener() {
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_harden::serve(listener, app)
        .proxy_protocol(["127.0.0.0/8".parse().unwrap()])
        .with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });
    let response = send(addr, b"PROXY TCP4 203.0.113.5 127.0.0.1 7 80\r\n")
        .await
        .expect("served");
    assert_eq!(response.body, b"203.0.113.5:7");
    assert!(
        send(addr, b"").await.is_none(),
        "no header from the balancer"
    );
}
