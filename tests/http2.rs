//! HTTP/2 against `serve` over TCP: a real client (the h2 crate) and raw
//! frames written by hand for what a real client will not send (rapid
//! reset, CONTINUATION, SETTINGS and PING floods, too many streams, an
//! oversized header list, a window that stays at zero).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the test server counts.
#[derive(Default)]
struct Counts {
    /// Handlers called.
    calls: AtomicUsize,
    /// Handlers of `/hold` running now.
    holding: AtomicUsize,
    /// Bytes `/big` has produced (not necessarily sent).
    produced: AtomicU64,
}

struct Holding(Arc<Counts>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.holding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `/` ("ok"), `/hold` (never answers until cancelled) and `/big`
/// (16 MiB, produced 16 KiB at a time as the connection pulls it).
async fn server(max_streams: u32) -> (SocketAddr, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let (root, hold, big) = (counts.clone(), counts.clone(), counts.clone());
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                root.calls.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .route(
            "/hold",
            get(move || async move {
                hold.calls.fetch_add(1, Ordering::SeqCst);
                hold.holding.fetch_add(1, Ordering::SeqCst);
                let _holding = Holding(hold.clone());
                std::future::pending::<()>().await;
            }),
        )
        .route(
            "/big",
            get(move || async move {
                big.calls.fetch_add(1, Ordering::SeqCst);
                let chunks = futures_util::stream::unfold(16u32 * 64, move |left| {
                    let big = big.clone();
                    async move {
                        big.produced.fetch_add(16 * 1024, Ordering::SeqCst);
                        (left > 0).then(|| {
                            (
                                Ok::<_, std::convert::Infallible>(Bytes::from(vec![
                                    b'x';
                                    16 * 1024
                                ])),
                                left - 1,
                            )
                        })
                    }
                });
                Body::from_stream(chunks)
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tower_harden::serve(listener, app)
            .max_concurrent_streams(max_streams)
            .max_header_bytes(16 * 1024)
            .with_graceful_shutdown(std::future::pending())
            .await
            .unwrap();
    });
    (addr, counts)
}

/// A GET over a fresh connection with the h2 crate's client.
async fn h2_get(addr: SocketAddr, path: &str) -> (u16, Bytes) {
    let work = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://t{path}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        (status, Bytes::from(bytes))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("a normal HTTP/2 client is answered within 10 s")
}

async fn assert_served(addr: SocketAddr) {
    assert_eq!(h2_get(addr, "/").await, (200, Bytes::from_static(b"ok")));
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET {path}` as an HPACK block: indexed `:method GET` and `:scheme
/// http`, literal `:path` and `:authority` (static name indexes 4 and 1).
fn get_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 0x01, b't']);
    block
}

/// A literal header field without indexing, `name: value`.
fn literal(name: &[u8], value_len: usize) -> Vec<u8> {
    let mut field = vec![0x00, name.len() as u8];
    field.extend_from_slice(name);
    // HPACK integer with a 7-bit prefix.
    if value_len < 127 {
        field.push(value_len as u8);
    } else {
        field.push(127);
        let mut rest = value_len - 127;
        while rest >= 128 {
            field.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        field.push(rest as u8);
    }
    field.extend(std::iter::repeat_n(b'v', value_len));
    field
}

/// A raw connection: the preface and our SETTINGS written.
async fn raw(addr: SocketAddr, settings: &[(u16, u32)]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &payload));
    stream.write_all(&hello).await.unwrap();
    stream
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

async fn read_frame<R: AsyncRead + Unpin>(read: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    read.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    read.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7FFF_FFFF,
        payload,
    })
}

/// Reads frames until the server sends GOAWAY or closes (the GOAWAY, if
/// any), or until `until` says stop.
async fn read_until<R: AsyncRead + Unpin>(
    read: &mut R,
    frames: &mut Vec<Frame>,
    mut until: impl FnMut(&[Frame]) -> bool,
) -> Option<usize> {
    let work = async {
        while let Some(frame) = read_frame(read).await {
            let goaway = frame.kind == GOAWAY;
            frames.push(frame);
            if goaway {
                return Some(frames.len() - 1);
            }
            if until(frames) {
                return None;
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("the server answered or closed within 20 s")
}

/// CVE-2023-44487: HEADERS then RST_STREAM, again and again. Each reset
/// stream cancels its handler, so work in flight stays bounded; the flood
/// is ended with GOAWAY ENHANCE_YOUR_CALM once the resets outrun the
/// server; a normal client is served meanwhile.
#[tokio::test]
async fn rapid_reset_is_bounded_and_ended_with_goaway() {
    let (addr, counts) = server(128).await;
    let stream = raw(addr, &[]).await;
    let (mut read, mut write) = stream.into_split();
    const STREAMS: u32 = 20_000;
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..STREAMS {
            let id = 2 * i + 1;
            batch.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                id,
                &get_block("/hold"),
            ));
            batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            if batch.len() > 64 * 1024 {
                if write.write_all(&batch).await.is_err() {
                    return i;
                }
                batch.clear();
            }
        }
        let _ = write.write_all(&batch).await;
        STREAMS
    });
    let mut frames = Vec::new();
    let goaway = read_until(&mut read, &mut frames, |_| false).await;
    let written = writer.await.unwrap();
    let calls = counts.calls.load(Ordering::SeqCst);
    eprintln!(
        "rapid reset: {written} HEADERS+RST_STREAM pairs written, {calls} handlers called, goaway {:?}",
        goaway.map(|at| frames[at].error_code())
    );
    let goaway = goaway.expect("the flood is ended with GOAWAY");
    assert_eq!(frames[goaway].error_code(), ENHANCE_YOUR_CALM);
    assert!(
        (calls as u32) < STREAMS,
        "every reset stream reached a handler"
    );
    // Every handler of a reset stream was cancelled.
    let settled = async {
        while counts.holding.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("the reset streams' handlers are cancelled");
    assert_served(addr).await;
}

/// Rapid reset paced to dodge h2's pending-accept count: each stream is
/// reset only once its handler runs. Each reset cancels that handler, so
/// the work in flight stays at one stream; the cost to the attacker is a
/// round trip per stream, and each stream is a request the rate limit and
/// in-flight limit count.
#[tokio::test]
async fn paced_resets_cancel_their_handlers() {
    let (addr, counts) = server(128).await;
    let mut stream = raw(addr, &[]).await;
    let wait_for = |holding: usize| {
        let counts = counts.clone();
        async move {
            let settled = async {
                while counts.holding.load(Ordering::SeqCst) != holding {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), settled)
                .await
                .expect("the handler count settles");
        }
    };
    for i in 0..200u32 {
        let id = 2 * i + 1;
        stream
            .write_all(&frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                id,
                &get_block("/hold"),
            ))
            .await
            .unwrap();
        wait_for(1).await;
        stream
            .write_all(&frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()))
            .await
            .unwrap();
        wait_for(0).await;
    }
    assert_eq!(counts.calls.load(Ordering::SeqCst), 200);
    assert_served(addr).await;
}

/// CVE-2024-27316 class: a header block that never ends (HEADERS without
/// END_HEADERS, then CONTINUATION after CONTINUATION). The server ends the
/// connection with GOAWAY after a bounded number of frames, before the
/// handler is called, and keeps serving others.
#[tokio::test]
async fn continuation_flood_is_ended_with_goaway() {
    let (addr, counts) = server(128).await;
    let stream = raw(addr, &[]).await;
    let (mut read, mut write) = stream.into_split();
    const FRAMES: usize = 50_000;
    let writer = tokio::spawn(async move {
        if write
            .write_all(&frame(HEADERS, END_STREAM, 1, &get_block("/")))
            .await
            .is_err()
        {
            return 0;
        }
        for i in 0..FRAMES {
            let field = literal(format!("x-flood-{i}").as_bytes(), 1000);
            if write
                .write_all(&frame(CONTINUATION, 0, 1, &field))
                .await
                .is_err()
            {
                return i;
            }
        }
        FRAMES
    });
    let mut frames = Vec::new();
    let goaway = read_until(&mut read, &mut frames, |_| false)
        .await
        .expect("the flood is ended with GOAWAY");
    let written = writer.await.unwrap();
    eprintln!(
        "CONTINUATION flood: {written} of {FRAMES} frames written before the connection closed"
    );
    assert!(
        [ENHANCE_YOUR_CALM, COMPRESSION_ERROR].contains(&frames[goaway].error_code()),
        "GOAWAY {:#x}",
        frames[goaway].error_code()
    );
    assert!(written < FRAMES, "the server read every frame");
    assert_eq!(counts.calls.load(Ordering::SeqCst), 0);
    assert_served(addr).await;
}

/// SETTINGS and PING floods from a client that never reads the ACKs: the
/// server stops reading once its ACKs stop draining (its buffered replies
/// are bounded), so the flood cannot all be written; a normal client is
/// served meanwhile.
#[tokio::test]
async fn settings_and_ping_floods_are_bounded_by_backpressure() {
    let (addr, _) = server(128).await;
    for (name, flood) in [
        ("SETTINGS", frame(SETTINGS, 0, 0, &[])),
        ("PING", frame(PING, 0, 0, &[7; 8])),
    ] {
        let mut stream = raw(addr, &[]).await;
        // 256 MiB of floods: more than the socket buffers on both sides
        // and anything the server should ever hold.
        const TOTAL: usize = 256 * 1024 * 1024;
        let batch: Vec<u8> = flood
            .iter()
            .copied()
            .cycle()
            .take(flood.len() * 8192)
            .collect();
        let written = Arc::new(AtomicUsize::new(0));
        let counter = written.clone();
        let writer = tokio::spawn(async move {
            while counter.load(Ordering::SeqCst) < TOTAL {
                if stream.write_all(&batch).await.is_err() {
                    return;
                }
                counter.fetch_add(batch.len(), Ordering::SeqCst);
            }
        });
        // Others are served while the flood runs.
        for _ in 0..3 {
            assert_served(addr).await;
        }
        // The flood stalls (or the connection is closed) well before its
        // end: the server does not buffer ACKs without bound.
        let finished = tokio::time::timeout(Duration::from_secs(5), writer).await;
        let bytes = written.load(Ordering::SeqCst);
        eprintln!(
            "{name} flood: {bytes} bytes written, writer finished: {}",
            finished.is_ok()
        );
        assert!(bytes < TOTAL, "{name}: the server read the whole flood");
        assert_served(addr).await;
    }
}

/// More streams than `max_concurrent_streams`: the excess is refused with
/// RST_STREAM REFUSED_STREAM (RFC 9113, 5.1.2) and never reaches a handler.
#[tokio::test]
async fn streams_beyond_max_concurrent_streams_are_refused() {
    let (addr, counts) = server(4).await;
    let stream = raw(addr, &[]).await;
    let (mut read, mut write) = stream.into_split();
    // Wait for the server's SETTINGS (with the limit), and acknowledge them.
    let mut frames = Vec::new();
    read_until(&mut read, &mut frames, |frames| {
        frames
            .iter()
            .any(|f| f.kind == SETTINGS && f.flags & ACK == 0)
    })
    .await;
    write
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    let mut requests = Vec::new();
    for i in 0..10u32 {
        requests.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &get_block("/hold"),
        ));
    }
    write.write_all(&requests).await.unwrap();
    let refused = |frames: &[Frame]| {
        frames
            .iter()
            .filter(|f| f.kind == RST_STREAM && f.error_code() == REFUSED_STREAM)
            .count()
    };
    let goaway = read_until(&mut read, &mut frames, |frames| refused(frames) >= 6).await;
    assert!(goaway.is_none(), "the connection itself stays up");
    assert_eq!(refused(&frames), 6);
    let settled = async {
        while counts.holding.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("the four admitted streams reach their handler");
    assert_eq!(counts.calls.load(Ordering::SeqCst), 4);
    assert_served(addr).await;
}

/// A header list over `max_header_bytes` (the HTTP/2
/// SETTINGS_MAX_HEADER_LIST_SIZE): that stream is answered 431 and reset,
/// its handler never runs, and the connection serves the next stream.
#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_on_its_stream() {
    let (addr, counts) = server(128).await;
    let stream = raw(addr, &[]).await;
    let (mut read, mut write) = stream.into_split();
    // 20 KB of header value (over the 16 KiB limit), in two frames.
    let mut block = get_block("/");
    block.extend(literal(b"x-big", 20_000));
    let (first, rest) = block.split_at(12_000);
    let mut bytes = frame(HEADERS, END_STREAM, 1, first);
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, rest));
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &get_block("/")));
    write.write_all(&bytes).await.unwrap();
    let mut frames = Vec::new();
    let answered = |frames: &[Frame]| {
        frames
            .iter()
            .any(|f| f.kind == DATA && f.stream == 3 && f.flags & END_STREAM != 0)
    };
    let goaway = read_until(&mut read, &mut frames, answered).await;
    assert!(goaway.is_none(), "the connection stays up: {frames:?}");
    let first_response: Vec<&Frame> = frames.iter().filter(|f| f.stream == 1).collect();
    assert!(
        first_response.iter().any(
            |f| f.kind == RST_STREAM || (f.kind == HEADERS && f.payload.first() != Some(&0x88))
        ),
        "stream 1 is refused (431 and/or RST_STREAM): {first_response:?}"
    );
    // `:status 200` is the static table's index 8.
    assert!(frames
        .iter()
        .any(|f| f.kind == HEADERS && f.stream == 3 && f.payload.first() == Some(&0x88)));
    assert_eq!(counts.calls.load(Ordering::SeqCst), 1, "only stream 3 ran");
}

/// A client that opens its stream windows at zero and never grants more:
/// the response body is produced only as the window allows (nothing is
/// queued for a client that does not read), the stream resumes when the
/// window opens, and others are served meanwhile.
#[tokio::test]
async fn a_stream_whose_window_stays_at_zero_buffers_nothing() {
    let (addr, counts) = server(128).await;
    // SETTINGS_INITIAL_WINDOW_SIZE = 0.
    let stream = raw(addr, &[(0x4, 0)]).await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(&frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &get_block("/big"),
        ))
        .await
        .unwrap();
    let mut frames = Vec::new();
    let goaway = read_until(&mut read, &mut frames, |frames| {
        frames.iter().any(|f| f.kind == HEADERS && f.stream == 1)
    })
    .await;
    assert!(goaway.is_none());
    // While the window stays shut, others are served, and the body is not
    // pulled ahead (at most a chunk or two waiting for the window).
    for _ in 0..3 {
        assert_served(addr).await;
    }
    let produced = counts.produced.load(Ordering::SeqCst);
    eprintln!("zero window: {produced} bytes produced while the window was shut");
    assert!(
        produced <= 64 * 1024,
        "{produced} bytes produced for a shut window"
    );
    assert!(!frames.iter().any(|f| f.kind == DATA && f.stream == 1));
    // Opening the window lets the stream flow.
    write
        .write_all(&frame(WINDOW_UPDATE, 0, 1, &65_535u32.to_be_bytes()))
        .await
        .unwrap();
    read_until(&mut read, &mut frames, |frames| {
        frames.iter().any(|f| f.kind == DATA && f.stream == 1)
    })
    .await;
}

/// A normal client gets a large response whole over HTTP/2.
#[tokio::test]
async fn a_normal_client_is_served() {
    let (addr, _) = server(128).await;
    assert_served(addr).await;
    let (status, body) = h2_get(addr, "/big").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 16 * 1024 * 1024);
}

/// The example server's `GET /bytes/{n}` through the whole preset: a
/// download of `n` bytes, streamed; over the 1 GiB cap, a 400 problem.
#[tokio::test]
async fn the_example_download_streams_n_bytes() {
    let harden = tower_harden::Harden::from_config(&tower_harden::HardenConfig::default()).unwrap();
    let app = common::routes::routes(Arc::default()).layer(harden.clone().into_layer());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        harden
            .serve(listener, app)
            .with_graceful_shutdown(std::future::pending())
            .await
            .unwrap();
    });
    let (status, body) = h2_get(addr, "/bytes/5000001").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 5_000_001);
    assert_eq!(h2_get(addr, "/bytes/0").await, (200, Bytes::new()));
    let (status, _) = h2_get(addr, "/bytes/1073741825").await;
    assert_eq!(status, 400);
    // And over HTTP/1.1, with its length declared up front.
    let response = common::get(addr, "/bytes/70000").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("70000"));
    assert_eq!(response.body.len(), 70_000);
}
