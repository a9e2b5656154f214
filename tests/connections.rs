//! The other half of a connection, over real TCP against `serve`: fair
//! slots under a full cap, clients that stop reading, long streams, and
//! upgraded sockets. Timeouts are small; every wait is a hang guard.

mod common;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::ResponseReader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, Notify};

/// A hang guard: long enough never to fire on a working server.
const GUARD: Duration = Duration::from_secs(10);

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A body of `chunks` chunks of `size` bytes, one every `every`.
fn paced_body(chunks: usize, size: usize, every: Duration) -> Body {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent == chunks {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(every).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from(vec![b'x'; size])), sent + 1))
    });
    Body::from_stream(stream)
}

/// `/`: hello; `/big/{mib}`: that many MiB at once; `/work`: waits for
/// `release`; `/stream/{n}`: n chunks of 16 bytes 100 ms apart; `/upgrade`: an echo
/// protocol after 101.
fn app(release: Arc<Notify>) -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route(
            "/big/{mib}",
            get(
                |axum::extract::Path(mib): axum::extract::Path<usize>| async move {
                    paced_body(mib * 16, 64 * 1024, Duration::ZERO)
                },
            ),
        )
        .route(
            "/work",
            get(move || {
                let release = release.clone();
                async move {
                    release.notified().await;
                    "done"
                }
            }),
        )
        .route(
            "/stream/{chunks}",
            get(
                |axum::extract::Path(chunks): axum::extract::Path<usize>| async move {
                    paced_body(chunks, 16, Duration::from_millis(100))
                },
            ),
        )
        .route("/upgrade", get(upgrade))
}

/// Answers 101 and echoes what the client sends on the upgraded socket.
async fn upgrade(mut request: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = hyper_util::rt::TokioIo::new(upgraded);
        let mut buffer = [0u8; 1024];
        loop {
            match io.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if io.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .unwrap()
}

/// A connection that has sent part of a request head.
async fn half_head(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    stream
}

/// Whether the server closed `stream` (reads to its end, within the guard).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    tokio::time::timeout(GUARD, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Finishes the head `half_head` began and reads the answer.
async fn finish_head(stream: &mut TcpStream) -> Option<u16> {
    stream
        .write_all(b"1\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    tokio::time::timeout(GUARD, common::read_response(stream))
        .await
        .expect("hang")
        .ok()
        .flatten()
        .map(|response| response.status)
}

/// A connection whose socket takes a response only as fast as it is read.
async fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(256 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn half_sent_heads_beyond_the_cap_do_not_keep_a_new_client_out() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .max_connections(4)
            // Long, and not shortened under pressure: only eviction can
            // make room in this test.
            .header_read_timeout(Duration::from_secs(60))
            .pressure_timeout(None)
            .into_future(),
    );
    // Eight half-sent heads from this address against a cap of four: each
    // one past the cap evicts the oldest.
    let mut heads = Vec::new();
    for _ in 0..8 {
        heads.push(half_head(addr).await);
    }
    // A client from the same address is served.
    let response = tokio::time::timeout(GUARD, common::get(addr, "/"))
        .await
        .expect("a new client was kept out by half-sent heads");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");
    // The oldest were evicted; the newest still holds its slot and is
    // answered when it finishes its head.
    assert!(
        closed_by_server(&mut heads[0]).await,
        "the oldest head was not evicted"
    );
    let newest = heads.last_mut().unwrap();
    assert_eq!(finish_head(newest).await, Some(200));
}

#[tokio::test]
async fn eviction_takes_the_oldest_waiting_connection_never_a_working_one() {
    let (listener, addr) = bind().await;
    let release = Arc::new(Notify::new());
    tokio::spawn(
        tower_harden::serve(listener, app(release.clone()))
            .max_connections(4)
            .header_read_timeout(Duration::from_secs(60))
            .pressure_timeout(None)
            .into_future(),
    );
    // The two oldest connections work: a request being handled, and a
    // response flowing (3 s) to a client that reads it.
    let handled = tokio::spawn(common::get(addr, "/work"));
    let mut flowing = TcpStream::connect(addr).await.unwrap();
    flowing
        .write_all(b"GET /stream/30 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let flowing = tokio::spawn(async move {
        tokio::time::timeout(GUARD, common::read_response(&mut flowing))
            .await
            .expect("hang")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Then two half-sent heads, the older first.
    let mut older = half_head(addr).await;
    let mut newer = half_head(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The cap is full: a new client evicts the older head.
    let response = tokio::time::timeout(GUARD, common::get(addr, "/"))
        .await
        .expect("the new client was not served");
    assert_eq!(response.status, 200);
    assert!(
        closed_by_server(&mut older).await,
        "the older head was kept"
    );
    assert_eq!(finish_head(&mut newer).await, Some(200));
    // The working connections were never touched.
    let streamed = flowing.await.unwrap().unwrap().expect("the stream was cut");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body.len(), 480, "the stream was cut short");
    release.notify_one();
    let handled = tokio::time::timeout(GUARD, handled)
        .await
        .expect("the handled request did not finish")
        .unwrap();
    assert_eq!((handled.status, &handled.body[..]), (200, &b"done"[..]));
}

#[tokio::test]
async fn clients_that_stop_reading_are_dropped_and_a_new_client_is_served() {
    let (logs, _guard) = common::logs::capture_json();
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .max_connections(2)
            .min_response_rate(64 * 1024, Duration::from_millis(300))
            .into_future(),
    );
    // Two clients ask for 64 MiB each and read nothing: both slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /big/64 HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    // A third is served: it evicts one of them.
    let response = tokio::time::timeout(GUARD, common::get(addr, "/"))
        .await
        .expect("a client was kept out by two that do not read");
    assert_eq!(response.status, 200);
    // The other is cut by the minimum rate, and the cut logged.
    let stall = tokio::time::timeout(GUARD, async {
        loop {
            let found = logs.events().into_iter().find(|event| {
                event["fields"]["message"]
                    .as_str()
                    .is_some_and(|message| message.contains("minimum rate"))
            });
            if let Some(event) = found {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no connection was cut for its rate");
    assert_eq!(stall["level"], "WARN");
    assert!(stall["fields"]["peer"]
        .as_str()
        .is_some_and(|peer| peer.starts_with("127.0.0.1:")));
    assert!(stall["fields"]["bytes_written"].as_u64().unwrap() > 0);
    // Each stalled client finds its response cut short.
    for mut stream in stalled {
        let mut total = 0usize;
        let mut buffer = vec![0u8; 256 * 1024];
        let ended = tokio::time::timeout(GUARD, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "a stalled connection was left open");
        assert!(
            total < 64 << 20,
            "the whole response went out: {total} bytes"
        );
    }
}

#[tokio::test]
async fn a_slow_but_steady_reader_above_the_rate_is_never_cut() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .min_response_rate(64 * 1024, Duration::from_millis(500))
            .into_future(),
    );
    // 16 MiB read 64 KiB at a time every 10 ms (about 6 MB/s, a hundred
    // times the minimum), through a bounded receive window so that the
    // server's writes wait on this reader throughout.
    let mut stream = connect_small_window(addr).await;
    stream
        .write_all(b"GET /big/16 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut received = 0usize;
    let mut buffer = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(read.is_ok(), "hang");
    assert!(
        received > 16 << 20,
        "the steady reader was cut after {received} bytes"
    );
}

#[tokio::test]
async fn a_long_event_stream_outlives_the_idle_timeout_and_keeps_its_connection() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .header_read_timeout(Duration::from_millis(300))
            .keep_alive_idle_timeout(Duration::from_millis(300))
            .into_future(),
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = ResponseReader::new(read);
    // About a second of events, three times the idle timeout.
    write
        .write_all(b"GET /stream/10 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let streamed = tokio::time::timeout(GUARD, reader.next())
        .await
        .expect("hang")
        .unwrap()
        .expect("the stream was cut");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body.len(), 160);
    assert_ne!(streamed.header("connection"), Some("close"));
    // The connection was not marked idle while the stream ran: it serves
    // the next request.
    write
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let next = tokio::time::timeout(GUARD, reader.next())
        .await
        .expect("hang")
        .unwrap()
        .expect("the connection was closed after the stream");
    assert_eq!((next.status, &next.body[..]), (200, &b"hello"[..]));
}

/// Upgrades a new connection to the echo protocol and checks it echoes.
async fn upgraded(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before 101"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"ping");
    stream
}

#[tokio::test]
async fn the_cap_counts_upgraded_sockets_and_shutdown_closes_them() {
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .max_connections(1)
            .keep_alive_idle_timeout(Duration::from_secs(60))
            .pressure_timeout(Duration::from_secs(60))
            .drain_timeout(Duration::from_millis(300))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let mut socket = upgraded(addr).await;
    // The upgraded socket holds the only slot: a new request waits...
    let waiting = tokio::spawn(common::get(addr, "/"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a request was served while an upgraded socket held the only slot"
    );
    // ...until the upgraded socket closes.
    drop(socket);
    let response = tokio::time::timeout(GUARD, waiting)
        .await
        .expect("the slot of the closed upgraded socket was not freed")
        .unwrap();
    assert_eq!(response.status, 200);
    // Shutdown closes an upgraded socket once the drain timeout passes.
    socket = upgraded(addr).await;
    stop.send(()).unwrap();
    assert!(
        closed_by_server(&mut socket).await,
        "shutdown left the upgraded socket open"
    );
    tokio::time::timeout(GUARD, server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_idle_upgraded_socket_is_closed_after_the_idle_timeout() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .keep_alive_idle_timeout(Duration::from_millis(300))
            .into_future(),
    );
    let mut socket = upgraded(addr).await;
    assert!(
        closed_by_server(&mut socket).await,
        "the idle upgraded socket was left open"
    );
}

#[tokio::test]
async fn a_connection_ends_gracefully_after_its_most_requests() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .max_requests_per_connection(2)
            .into_future(),
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = ResponseReader::new(read);
    for _ in 0..2 {
        write
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let response = tokio::time::timeout(GUARD, reader.next())
            .await
            .expect("hang")
            .unwrap()
            .expect("closed before its response");
        assert_eq!((response.status, &response.body[..]), (200, &b"hello"[..]));
    }
    // The second was the last: the server closes the connection.
    let after = tokio::time::timeout(GUARD, reader.next())
        .await
        .expect("the connection was left open after its last request");
    assert!(matches!(after, Ok(None) | Err(_)), "{after:?}");
}

#[tokio::test]
async fn a_connection_past_its_age_finishes_its_response_then_closes() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .header_read_timeout(Duration::from_secs(60))
            .keep_alive_idle_timeout(Duration::from_secs(60))
            .max_connection_age(Duration::from_millis(300))
            .into_future(),
    );
    // A stream of about a second, begun before the age passes, is finished.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stream/10 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut reader = ResponseReader::new(&mut stream);
    let streamed = tokio::time::timeout(GUARD, reader.next())
        .await
        .expect("hang")
        .unwrap()
        .expect("the stream was cut");
    assert_eq!((streamed.status, streamed.body.len()), (200, 160));
    // Then the connection is closed, though far from its idle timeout.
    let after = tokio::time::timeout(GUARD, reader.next())
        .await
        .expect("the connection outlived its age");
    assert!(matches!(after, Ok(None) | Err(_)), "{after:?}");
}

#[tokio::test]
async fn an_http2_stream_held_at_a_zero_window_gets_its_connection_closed() {
    let (logs, _guard) = common::logs::capture_json();
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, app(Arc::default()))
            .min_response_rate(64 * 1024, Duration::from_millis(300))
            .into_future(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // 64 MiB asked for, none of it read: the stream's window stays shut
    // once the first 64 KiB arrive, so the server's writes wait on it.
    let request = http::Request::get(format!("http://{addr}/big/64"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let ended = tokio::time::timeout(GUARD, connection).await;
    assert!(ended.is_ok(), "the stalled HTTP/2 connection was left open");
    assert!(
        logs.text().contains("minimum rate"),
        "the stall was not logged"
    );
    drop(response);
}
