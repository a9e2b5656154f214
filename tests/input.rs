//! Bounded input over real TCP, with raw sockets where a normal client would
//! refuse to send what we send.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::routing::{get, post};
use axum::Router;
use common::{get as get_path, raw_request, read_response, spawn_axum, ResponseReader};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::ServiceBuilder;
use tower_harden::input::{BodyLimitLayer, DecompressLayer, HeadLimitLayer, RouteBodyLimitLayer};

const LIMIT: u64 = 1024 * 1024;

/// The router under test, and a counter of body bytes handlers received.
fn app(received: Arc<AtomicUsize>) -> Router {
    let streamed = received.clone();
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { format!("{{\"bytes\":{}}}", body.len()) }),
        )
        .route(
            "/stream",
            post(move |request: Request| async move {
                // Counts what actually reaches the handler, frame by frame.
                let mut body = request.into_body();
                let mut total = 0usize;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => {
                            let n = frame.data_ref().map_or(0, |d| d.len());
                            total += n;
                            streamed.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(_) => return format!("error after {total}"),
                    }
                }
                format!("{{\"bytes\":{total}}}")
            }),
        )
        .route(
            "/json",
            post(
                |axum::Json(value): axum::Json<serde_json::Value>| async move { axum::Json(value) },
            ),
        )
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("{{\"bytes\":{}}}", body.len()) })
                .layer(RouteBodyLimitLayer::new(4 * LIMIT)),
        )
        .route(
            "/tiny",
            post(|body: Bytes| async move { format!("{{\"bytes\":{}}}", body.len()) })
                .layer(RouteBodyLimitLayer::new(16)),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HeadLimitLayer::new().max_headers(50))
                .layer(BodyLimitLayer::new(LIMIT).max_route_limit(4 * LIMIT))
                .layer(DecompressLayer::new(LIMIT)),
        )
}

async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    (spawn_axum(app(received.clone())).await, received)
}

fn assert_problem(response: &common::RawResponse, status: u16, slug: &str) {
    assert_eq!(
        response.status,
        status,
        "body: {:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let json = response.json();
    assert_eq!(json["status"], status);
    assert!(
        json["type"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{slug}")),
        "type {}",
        json["type"]
    );
}

async fn still_answers(addr: std::net::SocketAddr) {
    let response = get_path(addr, "/").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
}

#[tokio::test]
async fn declared_body_over_the_limit_is_refused_before_any_byte_is_read() {
    let (addr, received) = server().await;
    // Headers only: the server must answer without waiting for the body.
    let response = raw_request(
        addr,
        format!(
            "POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            2 * LIMIT
        )
        .as_bytes(),
    )
    .await;
    assert_problem(&response, 413, "payload-too-large");
    assert_eq!(response.json()["limit"], LIMIT);
    assert_eq!(received.load(Ordering::SeqCst), 0);
    // Over the ceiling routes may raise the limit to: refused before routing.
    let response = raw_request(
        addr,
        format!(
            "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            5 * LIMIT
        )
        .as_bytes(),
    )
    .await;
    assert_problem(&response, 413, "payload-too-large");
    still_answers(addr).await;
}

#[tokio::test]
async fn without_route_overrides_the_inner_service_is_never_called() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/echo",
            post(move |body: Bytes| async move {
                counted.fetch_add(1, Ordering::SeqCst);
                body.len().to_string()
            }),
        )
        .layer(BodyLimitLayer::new(LIMIT));
    let addr = spawn_axum(app).await;
    let response = raw_request(
        addr,
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            LIMIT + 1
        )
        .as_bytes(),
    )
    .await;
    assert_problem(&response, 413, "payload-too-large");
    assert_eq!(
        response.json()["detail"],
        format!(
            "the declared request body of {} bytes exceeds the limit of {LIMIT} bytes",
            LIMIT + 1
        )
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn expect_continue_with_oversized_length_gets_413_and_no_100() {
    let (addr, received) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                2 * LIMIT
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The first status line read is the final answer, not `100 Continue`.
    assert_problem(&response, 413, "payload-too-large");
    assert_eq!(received.load(Ordering::SeqCst), 0);
    still_answers(addr).await;
}

/// Sends `body` chunked in 8 KiB chunks while reading the response (the
/// server may answer 413 mid-upload and stop reading).
async fn post_chunked(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    extra: &str,
) -> common::RawResponse {
    post_chunked_in(addr, path, body, extra, 8 * 1024).await
}

/// Sends `body` chunked in chunks of `chunk` bytes.
async fn post_chunked_in(
    addr: std::net::SocketAddr,
    path: &str,
    body: Vec<u8>,
    extra: &str,
    chunk: usize,
) -> common::RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head =
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n{extra}\r\n");
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for chunk in body.chunks(chunk) {
            write
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            write.write_all(chunk).await?;
            write.write_all(b"\r\n").await?;
        }
        write.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(write)
    });
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut read))
        .await
        .expect("no response within 10 s")
        .unwrap()
        .expect("closed before a response");
    writer.abort();
    response
}

/// Sends `body` with a truthful Content-Length.
async fn post_sized(
    addr: std::net::SocketAddr,
    path: &str,
    body: &[u8],
    extra: &str,
) -> common::RawResponse {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let writer = tokio::spawn(async move { write.write_all(&request).await.map(|_| write) });
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut read))
        .await
        .expect("no response within 10 s")
        .unwrap()
        .expect("closed before a response");
    writer.abort();
    response
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_refused_while_streaming() {
    let (addr, received) = server().await;
    let response = post_chunked(addr, "/stream", vec![b'a'; 2 * LIMIT as usize], "").await;
    assert_problem(&response, 413, "payload-too-large");
    // Nothing past the limit reached the handler.
    assert!(received.load(Ordering::SeqCst) as u64 <= LIMIT);
    // Through axum's buffering extractors too, and the 413 is ours, not axum's.
    let response = post_chunked(addr, "/echo", vec![b'a'; 2 * LIMIT as usize], "").await;
    assert_problem(&response, 413, "payload-too-large");
    let json_body = format!("\"{}\"", "a".repeat(2 * LIMIT as usize));
    let response = post_chunked(
        addr,
        "/json",
        json_body.into_bytes(),
        "Content-Type: application/json\r\n",
    )
    .await;
    assert_problem(&response, 413, "payload-too-large");
    still_answers(addr).await;
}

#[tokio::test]
async fn limit_boundaries_are_exact() {
    let (addr, _) = server().await;
    for size in [LIMIT - 1, LIMIT] {
        for chunked in [false, true] {
            let body = vec![b'x'; size as usize];
            let response = if chunked {
                post_chunked(addr, "/echo", body, "").await
            } else {
                post_sized(addr, "/echo", &body, "").await
            };
            assert_eq!(response.status, 200, "size {size} chunked {chunked}");
            assert_eq!(response.json()["bytes"], size);
        }
    }
    let over = vec![b'x'; LIMIT as usize + 1];
    assert_problem(
        &post_sized(addr, "/echo", &over, "").await,
        413,
        "payload-too-large",
    );
    assert_problem(
        &post_chunked(addr, "/echo", over, "").await,
        413,
        "payload-too-large",
    );
    still_answers(addr).await;
}

#[tokio::test]
async fn lying_content_length_does_not_desync_the_connection() {
    let (addr, _) = server().await;
    // Declares 5 bytes, sends 5 and then bytes that are not a request: the
    // server frames the body by the declared length, answers it, and treats
    // the rest as a (bad) next request, never as part of this body.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloSMUGGLED-GARBAGE\r\n\r\n")
        .await
        .unwrap();
    let mut responses = ResponseReader::new(stream);
    let first = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["bytes"], 5);
    let second = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .unwrap()
        .unwrap();
    if let Some(second) = second {
        assert_eq!(second.status, 400, "the leftover bytes are a bad request");
    }
    // Declares 5 bytes and a pipelined request follows: both are answered,
    // in order, each with its own framing.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut responses = ResponseReader::new(stream);
    let first = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.json()["bytes"], 5);
    let second = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((second.status, second.body.as_slice()), (200, &b"ok"[..]));
    still_answers(addr).await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bomb_is_refused_on_decoded_bytes() {
    let (addr, received) = server().await;
    // 32 MiB of zeros compress to about 32 KB: well under the wire limit.
    let bomb = gzip(&vec![0u8; 32 * 1024 * 1024]);
    assert!(
        (bomb.len() as u64) < LIMIT / 8,
        "bomb is {} bytes",
        bomb.len()
    );
    let response = post_sized(addr, "/stream", &bomb, "Content-Encoding: gzip\r\n").await;
    assert_problem(&response, 413, "payload-too-large");
    // The handler saw at most the decoded limit: nothing inflated past it.
    assert!(received.load(Ordering::SeqCst) as u64 <= LIMIT);
    let response = post_sized(addr, "/echo", &bomb, "Content-Encoding: gzip\r\n").await;
    assert_problem(&response, 413, "payload-too-large");
    // A small gzip body is decoded and passes.
    let small = gzip(b"hello, world");
    let response = post_sized(addr, "/echo", &small, "Content-Encoding: gzip\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["bytes"], 12);
    still_answers(addr).await;
}

/// `data` as one zstd frame whose header asks for a `2^log` window (no
/// content size is written, so the Window_Descriptor carries it).
fn zstd_with_window(data: &[u8], log: u32) -> Vec<u8> {
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_contentsize(false).unwrap();
    encoder.window_log(log).unwrap();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A skippable frame (RFC 8878, 3.1.2): decoders pass over it.
fn zstd_skippable(payload: &[u8]) -> Vec<u8> {
    let mut frame = 0x184D_2A53u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// RFC 9659: a zstd window over 8 MiB is refused with 413 before the decoder
/// reserves it (libzstd would take up to 128 MiB); 8 MiB is decoded.
#[tokio::test]
async fn zstd_windows_over_8_mib_are_refused_before_decoding() {
    let (addr, received) = server().await;
    let text: Vec<u8> = (0..64 * 1024u32)
        .map(|i| b"zstd window "[i as usize % 12])
        .collect();
    let large = zstd_with_window(&text, 27);
    assert_eq!(
        large[5] >> 3,
        27 - 10,
        "the header carries a 128 MiB window"
    );
    for chunk in [8 * 1024, 3, 1] {
        // Chunks of 3 and 1 bytes split the frame header itself.
        let response = post_chunked_in(
            addr,
            "/stream",
            large.clone(),
            "Content-Encoding: zstd\r\n",
            chunk,
        )
        .await;
        assert_problem(&response, 413, "payload-too-large");
        assert_eq!(response.json()["limit"], 8 * 1024 * 1024, "chunk {chunk}");
    }
    let response = post_sized(addr, "/echo", &large, "Content-Encoding: zstd\r\n").await;
    assert_problem(&response, 413, "payload-too-large");
    assert_eq!(received.load(Ordering::SeqCst), 0, "nothing was decoded");
    // At the limit, after a skippable frame: decoded whole.
    let mut fits = zstd_skippable(b"metadata");
    fits.extend(zstd_with_window(&text, 23));
    let response =
        post_chunked_in(addr, "/echo", fits.clone(), "Content-Encoding: zstd\r\n", 5).await;
    assert_eq!(
        response.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()["bytes"], text.len());
    // A second frame asking for more is found past the first.
    fits.extend(zstd_with_window(b"more", 24));
    let response = post_sized(addr, "/stream", &fits, "Content-Encoding: zstd\r\n").await;
    assert_problem(&response, 413, "payload-too-large");
    // Not zstd at all: a 400, not a panic or a 500.
    let response = post_sized(addr, "/stream", b"plain text", "Content-Encoding: zstd\r\n").await;
    assert_problem(&response, 400, "malformed-body");
    still_answers(addr).await;
}

#[tokio::test]
async fn unknown_or_nested_encodings_get_415() {
    let (addr, _) = server().await;
    for coding in ["compress", "gzip, gzip", "snappy"] {
        let response = post_sized(
            addr,
            "/echo",
            b"data",
            &format!("Content-Encoding: {coding}\r\n"),
        )
        .await;
        assert_problem(&response, 415, "unsupported-encoding");
        assert_eq!(
            response.header("accept-encoding"),
            Some("gzip, deflate, br, zstd")
        );
    }
    still_answers(addr).await;
}

#[tokio::test]
async fn header_flood_gets_431() {
    let (addr, _) = server().await;
    // 60 fields: over our limit of 50, under hyper's own 100.
    let mut request = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..60 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_request(addr, request.as_bytes()).await;
    assert_problem(&response, 431, "headers-too-large");
    // 200 fields: refused too (by hyper's own bound before our layer).
    let mut request = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..200 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_request(addr, request.as_bytes()).await;
    assert_eq!(response.status, 431);
    // One huge header: over the 16 KiB of header bytes.
    let response = raw_request(
        addr,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nx-big: {}\r\n\r\n",
            "a".repeat(20 * 1024)
        )
        .as_bytes(),
    )
    .await;
    assert_problem(&response, 431, "headers-too-large");
    still_answers(addr).await;
}

#[tokio::test]
async fn huge_uri_gets_414() {
    let (addr, _) = server().await;
    let path = format!("/{}", "a".repeat(16 * 1024));
    let response = raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .await;
    assert_problem(&response, 414, "uri-too-long");
    still_answers(addr).await;
}

#[tokio::test]
async fn a_route_can_raise_or_lower_its_limit() {
    let (addr, _) = server().await;
    // 3 MiB: over the router-wide 1 MiB and over axum's own 2 MB default,
    // under the upload route's 4 MiB: accepted, so one limit is in force.
    let body = vec![b'u'; 3 * LIMIT as usize];
    let response = post_sized(addr, "/upload", &body, "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["bytes"], 3 * LIMIT);
    let response = post_chunked(addr, "/upload", body, "").await;
    assert_eq!(response.status, 200);
    // Over the upload route's limit.
    let response = post_sized(addr, "/upload", &vec![b'u'; 4 * LIMIT as usize + 1], "").await;
    assert_problem(&response, 413, "payload-too-large");
    // The same 3 MiB anywhere else is refused.
    let response = post_sized(addr, "/echo", &vec![b'u'; 3 * LIMIT as usize], "").await;
    assert_problem(&response, 413, "payload-too-large");
    // A lowered route.
    let response = post_sized(addr, "/tiny", &[b't'; 17], "").await;
    assert_problem(&response, 413, "payload-too-large");
    assert_eq!(response.json()["limit"], 16);
    let response = post_chunked(addr, "/tiny", vec![b't'; 17], "").await;
    assert_problem(&response, 413, "payload-too-large");
    let response = post_sized(addr, "/tiny", &[b't'; 16], "").await;
    assert_eq!(response.status, 200);
    still_answers(addr).await;
}

mod property {
    use super::*;
    use proptest::prelude::*;
    use tower::ServiceExt;

    const SMALL: u64 = 512;

    fn small_app() -> Router {
        Router::new()
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(BodyLimitLayer::new(SMALL))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Every body up to the limit arrives byte-exact, whatever its
        /// chunking; every body over it is refused with 413.
        #[test]
        fn bodies_arrive_exact_or_are_refused(
            body in proptest::collection::vec(any::<u8>(), 0..(2 * SMALL as usize)),
            chunk in 1usize..200,
            declared in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (status, echoed) = runtime.block_on(async {
                let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = body
                    .chunks(chunk)
                    .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
                    .collect();
                let stream_body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
                let mut request = http::Request::post("/echo").body(axum::body::Body::new(stream_body)).unwrap();
                if declared {
                    request.headers_mut().insert(http::header::CONTENT_LENGTH, body.len().into());
                }
                let response = small_app().oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (status, bytes)
            });
            if body.len() as u64 <= SMALL {
                prop_assert_eq!(status, 200);
                prop_assert_eq!(&echoed[..], &body[..]);
            } else {
                prop_assert_eq!(status, 413);
            }
        }
    }
}

/// A body that fails on its way in is the client's fault: 400 from the
/// layer, whatever the handler made of the read error (a handler that
/// bubbles it up would answer 500 and log a server error).
#[tokio::test]
async fn a_malformed_or_truncated_body_is_a_400_not_the_handlers_500() {
    let (addr, _) = server().await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "chunk size not hex",
            b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
        ),
        (
            "chunk size past u64",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
        ),
        (
            "corrupt gzip",
            b"POST /stream HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\n\x1f\x8b\x08\x00garbage!",
        ),
    ];
    for (name, request) in cases {
        let response = raw_request(addr, request).await;
        assert_eq!(response.status, 400, "{name}");
        assert_problem(&response, 400, "malformed-body");
        still_answers(addr).await;
    }
    // A client that hangs up mid-body: the answer it will not read is a 400.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /stream HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("no hang")
        .unwrap();
    if let Some(response) = response {
        assert_problem(&response, 400, "malformed-body");
    }
    still_answers(addr).await;
}
