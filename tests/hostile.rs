//! The adversarial corpus: hostile requests over real TCP (raw sockets)
//! against the example server's routes wrapped in the `Harden` preset and
//! served by `Harden::serve`.
//!
//! Table-driven: each case is raw bytes (or a scripted send: slow, partial,
//! many connections, its own server), the outcomes expected on the
//! connection (statuses, then possibly a close), and after EVERY case the
//! server must still answer a normal request. Outcomes that hyper decides
//! before our layers run (400/431 on a malformed head, a close) are the
//! expected outcome where hyper is the right place to refuse. Run with
//! `--nocapture` to print the expected-vs-seen table.
//!
//! Time bounds are must-not-hang guards (10 s per read), never performance
//! thresholds.

mod common;

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::logs::capture_json;
use common::routes::{routes, SECRET};
use common::{RawResponse, ResponseReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_harden::rate_limit::{
    AnyStore, IpGrouping, KeySource, MemoryStore, Policy, ProxyHeader, Quota, RateLimitLayer,
    TrustedProxies,
};
use tower_harden::{Harden, HardenConfig};

/// Must-not-hang guard for each read.
const GUARD: Duration = Duration::from_secs(10);

/// The server under attack: small limits so every limit is reachable, short
/// timeouts so slow clients are cut quickly, a generous rate limit so the
/// corpus itself is not throttled (the spoofing cases run their own servers
/// with a tight one).
const CORPUS_CONFIG: &str = r#"
[input]
max_body = "64KiB"
max_decoded_body = "64KiB"
max_headers = 50
max_header_bytes = "8KiB"
max_uri = "2KiB"

[deadline]
request = "2s"
body_idle = "300ms"
min_body_rate = 1000
min_body_rate_grace = "500ms"
trusted_callers = ["127.0.0.1/32"]

[server]
header_read_timeout = "500ms"
keep_alive_idle_timeout = "3s"
max_headers = 100
max_header_bytes = "32KiB"
max_connections = 64
drain_timeout = "1s"

[[rate_limit.policies]]
name = "per-ip"
key = "client_ip"
quota = 100000
period = "1s"
burst = 100000
"#;

/// What one connection showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A response with this status.
    Status(u16),
    /// The server closed the connection (or reset it) without a response.
    Closed,
    /// Nothing within the guard: the server hangs the client.
    Hang,
}

use Outcome::{Closed, Hang, Status};

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status(status) => write!(f, "{status}"),
            Closed => f.write_str("close"),
            Hang => f.write_str("HANG"),
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    responses: Vec<RawResponse>,
}

impl Seen {
    fn push(&mut self, response: Option<RawResponse>) {
        match response {
            Some(response) => {
                self.outcomes.push(Status(response.status));
                self.responses.push(response);
            }
            None => self.outcomes.push(Closed),
        }
    }
}

type Script = fn(SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>>;

enum Send {
    /// Written at once; `expect.len()` outcomes are read.
    Raw(Vec<u8>),
    /// A scripted exchange (slow, partial, many connections, its own server).
    Script(Script),
}

struct Case {
    class: &'static str,
    name: &'static str,
    send: Send,
    expect: Vec<Outcome>,
}

fn raw(
    class: &'static str,
    name: &'static str,
    bytes: impl Into<Vec<u8>>,
    expect: &[Outcome],
) -> Case {
    Case {
        class,
        name,
        send: Send::Raw(bytes.into()),
        expect: expect.to_vec(),
    }
}

fn script(class: &'static str, name: &'static str, script: Script, expect: &[Outcome]) -> Case {
    Case {
        class,
        name,
        send: Send::Script(script),
        expect: expect.to_vec(),
    }
}

/// Reads one response, or `None` when the peer closed or reset.
async fn next_response(
    reader: &mut ResponseReader<tokio::net::tcp::OwnedReadHalf>,
) -> Result<Option<RawResponse>, ()> {
    match tokio::time::timeout(GUARD, reader.next()).await {
        Err(_) => Err(()),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(_reset)) => Ok(None),
    }
}

/// Writes `bytes` (concurrently with reading, so an early answer is never
/// lost to a reset) and reads up to `count` outcomes; stops at a close.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>, count: usize) -> Seen {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    // The write half is held until reading ends: dropping it would send FIN.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        write
    });
    let mut reader = ResponseReader::new(read);
    let mut seen = Seen::default();
    for _ in 0..count {
        match next_response(&mut reader).await {
            Err(()) => {
                seen.outcomes.push(Hang);
                break;
            }
            Ok(response) => {
                let closed = response.is_none();
                seen.push(response);
                if closed {
                    break;
                }
            }
        }
    }
    drop(writer.await);
    seen
}

fn request(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n").into_bytes();
    for header in headers {
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

fn get(path: &str, headers: &[&str]) -> Vec<u8> {
    request("GET", path, headers, b"")
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn compressed_post(encoding: &str, body: Vec<u8>) -> Vec<u8> {
    request(
        "POST",
        "/echo",
        &[
            &format!("Content-Encoding: {encoding}"),
            &format!("Content-Length: {}", body.len()),
        ],
        &body,
    )
}

fn many_headers(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("X-Flood-{i}: v")).collect()
}

fn refs(headers: &[String]) -> Vec<&str> {
    headers.iter().map(String::as_str).collect()
}

// ---- Scripted sends ------------------------------------------------------

/// The head, one header line every 100 ms: hyper's header-read timeout
/// closes the connection.
fn slow_headers(addr: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            if write
                .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
                .await
                .is_err()
            {
                return;
            }
            for i in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write
                    .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut seen = Seen::default();
        match next_response(&mut ResponseReader::new(read)).await {
            Ok(response) => seen.push(response),
            Err(()) => seen.outcomes.push(Hang),
        }
        writer.abort();
        seen
    })
}

/// A body declared 10,000 bytes long, sent 10 bytes every 100 ms (100 B/s,
/// under the 1,000 B/s minimum) and never idle long enough for the idle
/// timeout.
fn slow_body(addr: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            let head = request("POST", "/echo", &["Content-Length: 10000"], b"");
            if write.write_all(&head).await.is_err() {
                return;
            }
            for _ in 0..1000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if write.write_all(&[b'x'; 10]).await.is_err() {
                    return;
                }
            }
        });
        let mut reader = ResponseReader::new(read);
        let mut seen = Seen::default();
        for _ in 0..2 {
            match next_response(&mut reader).await {
                Ok(response) => {
                    let closed = response.is_none();
                    seen.push(response);
                    if closed {
                        break;
                    }
                }
                Err(()) => {
                    seen.outcomes.push(Hang);
                    break;
                }
            }
        }
        writer.abort();
        seen
    })
}

/// Half the declared body, then the client closes its side.
fn client_gives_up_mid_body(addr: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = request("POST", "/echo", &["Content-Length: 1000"], &[b'x'; 500]);
        stream.write_all(&head).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut seen = Seen::default();
        let (read, _write) = stream.into_split();
        let mut reader = ResponseReader::new(read);
        for _ in 0..2 {
            match next_response(&mut reader).await {
                Ok(response) => {
                    let closed = response.is_none();
                    seen.push(response);
                    if closed {
                        break;
                    }
                }
                Err(()) => {
                    seen.outcomes.push(Hang);
                    break;
                }
            }
        }
        seen
    })
}

/// 100 silent connections (more than the cap of 64) and 30 idle keep-alive
/// ones: a normal request is still answered (the header-read timeout frees
/// the slots), and every idle connection is closed by the server.
fn idle_connections(addr: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut idle = Vec::new();
        for _ in 0..30 {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (read, mut write) = stream.into_split();
            write.write_all(&get("/", &[])).await.unwrap();
            let mut reader = ResponseReader::new(read);
            let response = next_response(&mut reader).await.expect("no hang");
            assert_eq!(response.map(|r| r.status), Some(200));
            idle.push((reader, write));
        }
        let mut seen = Seen::default();
        // A normal request while all of them are held open.
        let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
        write
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        match next_response(&mut ResponseReader::new(read)).await {
            Ok(response) => seen.push(response),
            Err(()) => seen.outcomes.push(Hang),
        }
        // Every silent connection is closed by the header-read timeout...
        let mut all_closed = true;
        for mut stream in silent {
            let mut buffer = [0u8; 64];
            match tokio::time::timeout(GUARD, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                Ok(Ok(_)) | Err(_) => all_closed = false,
            }
        }
        // ...and every idle keep-alive one by the idle timeout.
        for (mut reader, _write) in idle {
            match next_response(&mut reader).await {
                Ok(None) => {}
                _ => all_closed = false,
            }
        }
        seen.outcomes.push(if all_closed { Closed } else { Hang });
        seen
    })
}

/// A server of its own with a tight per-client limit (3 per hour).
async fn tight_server(trusted_proxies: &[&str], header: ProxyHeader) -> SocketAddr {
    let mut config = HardenConfig::from_toml(CORPUS_CONFIG).unwrap();
    config.rate_limit.trusted_proxies =
        trusted_proxies.iter().map(|s| s.parse().unwrap()).collect();
    let proxies = TrustedProxies::new()
        .trust_all(trusted_proxies.iter().map(|s| s.parse().unwrap()))
        .header(header);
    let quota = Quota::new(1, Duration::from_secs(3600))
        .unwrap()
        .with_burst(3)
        .unwrap();
    let harden = Harden::from_config(&config).unwrap().rate_limit(
        RateLimitLayer::new(AnyStore::from(MemoryStore::new(1000))).policy(Policy::new(
            "per-client",
            quota,
            KeySource::ClientIp(proxies, IpGrouping::new()),
        )),
    );
    serve(harden).await
}

async fn serve(harden: Harden) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(Arc::default()).layer(harden.clone().into_layer());
    let server = harden.serve(listener, app);
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

/// One request per header value, each on its own connection.
async fn each_header(addr: SocketAddr, values: Vec<String>) -> Seen {
    let mut seen = Seen::default();
    for value in values {
        let bytes = get("/", &["Connection: close", &value]);
        let mut one = exchange(addr, bytes, 1).await;
        seen.outcomes.append(&mut one.outcomes);
        seen.responses.append(&mut one.responses);
    }
    seen
}

fn xff_without_trusted_proxy(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&[], ProxyHeader::XForwardedFor).await;
        let values = (1..=5)
            .map(|i| format!("X-Forwarded-For: 198.51.100.{i}"))
            .collect();
        each_header(addr, values).await
    })
}

fn forwarded_without_trusted_proxy(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&[], ProxyHeader::Forwarded).await;
        let values = (1..=5)
            .map(|i| format!("Forwarded: for=198.51.100.{i}"))
            .collect();
        each_header(addr, values).await
    })
}

/// Behind a trusted proxy the client writes what it likes on the left; the
/// proxy appends the real address on the right.
fn xff_spoofed_left_of_trusted_proxy(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&["127.0.0.1/32"], ProxyHeader::XForwardedFor).await;
        let values = (1..=5)
            .map(|i| format!("X-Forwarded-For: 198.51.100.{i}, 203.0.113.7"))
            .collect();
        each_header(addr, values).await
    })
}

fn forwarded_spoofed_left_of_trusted_proxy(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&["127.0.0.1/32"], ProxyHeader::Forwarded).await;
        let values = (1..=5)
            .map(|i| format!("Forwarded: for=198.51.100.{i};proto=http, for=\"203.0.113.8:4711\""))
            .collect();
        each_header(addr, values).await
    })
}

/// A second X-Forwarded-For field: the proxy appends its own line after the
/// client's.
fn xff_in_two_fields(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&["127.0.0.1/32"], ProxyHeader::XForwardedFor).await;
        let values = (1..=5)
            .map(|i| format!("X-Forwarded-For: 198.51.100.{i}\r\nX-Forwarded-For: 203.0.113.9"))
            .collect();
        each_header(addr, values).await
    })
}

/// Garbage and over-long chains from behind the trusted proxy fall into
/// one shared bucket: they cannot mint fresh keys.
fn xff_garbage_and_too_many_hops(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&["127.0.0.1/32"], ProxyHeader::XForwardedFor).await;
        let hops = vec!["127.0.0.1"; 40].join(", ");
        let values = vec![
            "X-Forwarded-For: unknown".to_owned(),
            "X-Forwarded-For: not-an-ip, _hidden".to_owned(),
            format!("X-Forwarded-For: {hops}"),
            format!("X-Forwarded-For: {}", "9".repeat(4000)),
            "X-Forwarded-For: [::1".to_owned(),
        ];
        each_header(addr, values).await
    })
}

/// Rotating addresses within one IPv6 /64 (through the trusted proxy):
/// one bucket; the IPv4-mapped form of an address is that address; the
/// next /64 is somebody else.
fn ipv6_rotation_within_a_64(_: SocketAddr) -> Pin<Box<dyn Future<Output = Seen>>> {
    Box::pin(async move {
        let addr = tight_server(&["127.0.0.1/32"], ProxyHeader::XForwardedFor).await;
        let mut values: Vec<String> = [
            "2001:db8:aa:bb::1",
            "2001:db8:aa:bb:ffff:ffff:ffff:fffe",
            "[2001:db8:aa:bb::dead]:443",
            "2001:db8:aa:bb:1:2:3:4",
            "2001:db8:aa:bb::5%eth0",
        ]
        .iter()
        .map(|ip| format!("X-Forwarded-For: {ip}"))
        .collect();
        values.push("X-Forwarded-For: 2001:db8:aa:bc::1".into());
        for _ in 0..3 {
            values.push("X-Forwarded-For: 203.0.113.50".into());
        }
        values.push("X-Forwarded-For: ::ffff:203.0.113.50".into());
        each_header(addr, values).await
    })
}

// ---- The corpus ----------------------------------------------------------

fn corpus() -> Vec<Case> {
    let ten_mib = vec![0u8; 10 << 20];
    let gzip_bomb = gzip(&ten_mib);
    let zlib_bomb = zlib(&ten_mib);
    let nested_bomb = gzip(&gzip_bomb);
    let flood_100 = many_headers(120);
    let flood_60 = many_headers(60);
    let huge_header = format!("X-Huge: {}", "a".repeat(40_000));
    let big_header = format!("X-Big: {}", "a".repeat(12_000));
    let huge_uri = format!("/{}", "a".repeat(40_000));
    let long_uri = format!("/{}", "a".repeat(4_000));
    let chunk_extensions = format!("1;{}\r\nx\r\n0\r\n\r\n", "a=b;".repeat(10_000));
    let smuggled_get = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    let hostile_ids = [
        format!("X-Request-Id: {}", "a".repeat(1000)),
        "X-Request-Id: \"}{\"level\":\"ERROR\",\"fields\":{\"message\":\"forged".to_owned(),
        "X-Request-Id: ../../etc/passwd".to_owned(),
    ];

    vec![
        // -- Content-Length / Transfer-Encoding: smuggling --------------------
        raw(
            "smuggling",
            "CL+TE: chunked wins, CL dropped; smuggled GET stays body",
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled_get}"),
            &[Status(200), Closed],
        ),
        raw(
            "smuggling",
            "TE+CL (TE first)",
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled_get}"),
            &[Status(200), Closed],
        ),
        raw(
            "smuggling",
            "two different Content-Lengths",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Content-Length: 3, 40 in one field",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 40\r\n\r\nabc",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Content-Length: +3",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Content-Length: -1",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Content-Length past u64",
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Transfer-Encoding: chunked, identity",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "obfuscated TE: xchunked",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "obfuscated TE: space before the colon",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "TE identity, then chunked in a second field: read as chunked (the final coding)",
            concat(&[
                request("POST", "/echo", &["Transfer-Encoding: identity", "Transfer-Encoding: chunked"], b"0\r\n\r\n"),
                get("/", &["Connection: close"]),
            ]),
            &[Status(200), Status(200), Closed],
        ),
        raw(
            "smuggling",
            "TE chunked on HTTP/1.0",
            format!("POST /echo HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled_get}"),
            &[Status(400), Closed],
        ),
        raw(
            "smuggling",
            "Content-Length shorter than the body: the rest is the next request",
            concat(&[request("POST", "/echo", &["Content-Length: 5"], b"hello"), get("/", &["Connection: close"])]),
            &[Status(200), Status(200), Closed],
        ),
        // -- Chunked framing ---------------------------------------------------
        raw(
            "chunked",
            "chunk size past u64",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "chunked",
            "chunk size 256 MiB, 70 KiB sent (over the 64 KiB limit)",
            concat(&[
                request("POST", "/echo", &["Transfer-Encoding: chunked"], b"10000000\r\n"),
                vec![b'x'; 70 * 1024],
            ]),
            &[Status(413), Closed],
        ),
        raw(
            "chunked",
            "chunk-extension flood (40 KB of ;a=b)",
            request("POST", "/echo", &["Transfer-Encoding: chunked"], chunk_extensions.as_bytes()),
            &[Status(400), Closed],
        ),
        raw(
            "chunked",
            "chunk size not hex",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        raw(
            "chunked",
            "chunk data longer than its size",
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
            &[Status(400), Closed],
        ),
        // -- Expect: 100-continue ----------------------------------------------
        raw(
            "expect",
            "Expect: 100-continue with 10 GB declared: 413, no 100",
            request("POST", "/echo", &["Expect: 100-continue", "Content-Length: 10000000000"], b""),
            &[Status(413), Closed],
        ),
        raw(
            "expect",
            "Expect: 100-continue, chunked, 70 KiB after the 100",
            concat(&[
                request("POST", "/echo", &["Expect: 100-continue", "Transfer-Encoding: chunked"], b"11800\r\n"),
                vec![b'x'; 0x11800],
            ]),
            &[Status(100), Status(413), Closed],
        ),
        // -- Compression -------------------------------------------------------
        raw("encoding", "gzip bomb: 10 MiB of zeros in ~10 KB", compressed_post("gzip", gzip_bomb.clone()), &[Status(413)]),
        raw("encoding", "deflate (zlib) bomb", compressed_post("deflate", zlib_bomb), &[Status(413)]),
        raw("encoding", "nested gzip, gzip bomb", compressed_post("gzip, gzip", nested_bomb), &[Status(415)]),
        raw("encoding", "unknown encoding", compressed_post("compress", b"abc".to_vec()), &[Status(415)]),
        raw("encoding", "corrupt gzip stream", compressed_post("gzip", b"\x1f\x8b\x08\x00garbage-not-deflate".to_vec()), &[Status(400)]),
        raw(
            "encoding",
            "truncated gzip bomb",
            compressed_post("gzip", gzip_bomb[..gzip_bomb.len() / 2].to_vec()),
            &[Status(413)],
        ),
        // -- Headers -----------------------------------------------------------
        raw("headers", "120 headers (past hyper's 100)", get("/", &refs(&flood_100)), &[Status(431), Closed]),
        raw("headers", "60 headers (past the layer's 50)", get("/", &refs(&flood_60)), &[Status(431)]),
        raw("headers", "one 40 KB header (past hyper's 32 KiB buffer)", get("/", &[&huge_header]), &[Status(431), Closed]),
        raw("headers", "one 12 KB header (past the layer's 8 KiB)", get("/", &[&big_header]), &[Status(431)]),
        raw("headers", "obs-fold continuation line", get("/", &["X-Folded: a", " b"]), &[Status(400), Closed]),
        raw("headers", "NUL in a header value", get("/", &["X-Nul: a\0b"]), &[Status(400), Closed]),
        raw("headers", "NUL in a header name", get("/", &["X-N\0ul: a"]), &[Status(400), Closed]),
        raw("headers", "bare CR in a header value", get("/", &["X-Cr: a\rb"]), &[Status(400), Closed]),
        raw("headers", "header line without a colon", get("/", &["NoColonHere"]), &[Status(400), Closed]),
        raw("headers", "obs-text (bytes >= 0x80) in a value", get("/", &["X-Latin: caf\u{e9}\u{ff}"]), &[Status(200)]),
        // -- Request line and URI ----------------------------------------------
        raw("uri", "40 KB URI (past hyper's buffer)", get(&huge_uri, &[]), &[Status(431), Closed]),
        raw("uri", "4 KB URI (past the layer's 2 KiB)", get(&long_uri, &[]), &[Status(414)]),
        raw("uri", "percent-encoded CR LF NUL in the path", get("/%0d%0aSet-Cookie:%20a=b%00", &[]), &[Status(404)]),
        raw("uri", "percent-encoded control characters into a path parameter", get("/slow/%00%0a%1b", &[]), &[Status(400)]),
        raw("uri", "raw control character in the target", b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[Status(400), Closed]),
        raw("uri", "dot segments", get("/../../etc/passwd", &[]), &[Status(404)]),
        raw("uri", "absolute-form target", get("http://evil.example/", &[]), &[Status(200)]),
        raw("uri", "invalid method token", b"G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), &[Status(400), Closed]),
        raw("uri", "unknown HTTP version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n".to_vec(), &[Status(400), Closed]),
        raw("uri", "HTTP/2 preface then garbage", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage-not-a-frame".to_vec(), &[Closed]),
        raw("uri", "TLS ClientHello on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), &[Status(400), Closed]),
        // -- Slow and partial clients ------------------------------------------
        script("slow", "slow headers (one line per 100 ms; header timeout 500 ms)", slow_headers, &[Closed]),
        script("slow", "slow body (100 B/s, minimum 1,000 B/s)", slow_body, &[Status(408), Closed]),
        raw(
            "slow",
            "body stops mid-way (500 of 1,000 bytes, then silence)",
            request("POST", "/echo", &["Content-Length: 1000"], &[b'x'; 500]),
            &[Status(408), Closed],
        ),
        script("slow", "client closes its side mid-body", client_gives_up_mid_body, &[Status(400), Closed]),
        script("slow", "100 silent + 30 idle keep-alive connections (cap 64)", idle_connections, &[Status(200), Closed]),
        // -- Pipelining of refused requests --------------------------------------
        raw(
            "pipelining",
            "3 x 431 (layer), then a normal request",
            concat(&[get("/", &refs(&flood_60)), get("/", &refs(&flood_60)), get("/", &refs(&flood_60)), get("/", &[])]),
            &[Status(431), Status(431), Status(431), Status(200)],
        ),
        raw(
            "pipelining",
            "3 x 414 (layer), then a normal request",
            concat(&[get(&long_uri, &[]), get(&long_uri, &[]), get(&long_uri, &[]), get("/", &[])]),
            &[Status(414), Status(414), Status(414), Status(200)],
        ),
        raw(
            "pipelining",
            "declared-oversize 413 with a smuggled request as its body",
            concat(&[
                request("POST", "/echo", &["Content-Length: 100000"], smuggled_get.as_bytes()),
                get("/smuggled", &[]),
            ]),
            &[Status(413), Closed],
        ),
        raw(
            "pipelining",
            "a 400 from hyper ends the pipeline",
            concat(&[get("/", &["X-Nul: a\0b"]), get("/smuggled", &[])]),
            &[Status(400), Closed],
        ),
        // -- Forwarded headers and client addresses ---------------------------
        script("forwarded", "X-Forwarded-For rotation, no trusted proxy (burst 3)", xff_without_trusted_proxy, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script("forwarded", "Forwarded rotation, no trusted proxy", forwarded_without_trusted_proxy, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script("forwarded", "X-Forwarded-For spoofed left of a trusted proxy", xff_spoofed_left_of_trusted_proxy, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script("forwarded", "Forwarded spoofed left of a trusted proxy", forwarded_spoofed_left_of_trusted_proxy, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script("forwarded", "X-Forwarded-For split over two fields", xff_in_two_fields, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script("forwarded", "garbage and 40-hop chains share one bucket", xff_garbage_and_too_many_hops, &[Status(200), Status(200), Status(200), Status(429), Status(429)]),
        script(
            "forwarded",
            "IPv6 rotated within one /64; next /64; IPv4-mapped",
            ipv6_rotation_within_a_64,
            &[Status(200), Status(200), Status(200), Status(429), Status(429), Status(200), Status(200), Status(200), Status(200), Status(429)],
        ),
        // -- Request ids, trace context, deadline header --------------------------
        raw("ids", "1,000-character request id", get("/", &[&hostile_ids[0]]), &[Status(200)]),
        raw("ids", "request id forging a JSON log line", get("/", &[&hostile_ids[1]]), &[Status(200)]),
        raw("ids", "request id with slashes", get("/", &[&hostile_ids[2]]), &[Status(200)]),
        raw("ids", "request id of invalid UTF-8", get("/", &["X-Request-Id: \u{ff}\u{fe}"]), &[Status(200)]),
        raw("ids", "malformed traceparent", get("/", &["traceparent: 00-zzzz-yyyy-01"]), &[Status(200)]),
        raw(
            "ids",
            "all-zero trace id, version ff",
            get("/", &["traceparent: ff-00000000000000000000000000000000-0000000000000000-01"]),
            &[Status(200)],
        ),
        raw(
            "ids",
            "4 KB tracestate of 500 members",
            get("/", &[
                "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                &format!("tracestate: {}", (0..500).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",")),
            ]),
            &[Status(200)],
        ),
        raw("ids", "deadline header 0 ms from a trusted caller", get("/slow/1000", &["x-request-deadline-ms: 0"]), &[Status(503)]),
        raw("ids", "deadline header past u64 cannot extend the 2 s deadline", get("/slow/5000", &["x-request-deadline-ms: 99999999999999999999999"]), &[Status(503)]),
        raw("ids", "deadline header garbage", get("/", &["x-request-deadline-ms: -5; DROP TABLE"]), &[Status(200)]),
        // -- Handler failures ------------------------------------------------------
        raw("handler", "a panic", get("/panic", &[]), &[Status(500)]),
        raw("handler", "an error carrying a secret", get("/fail", &[]), &[Status(500)]),
        raw("handler", "a handler past the deadline", get("/slow/5000", &[]), &[Status(503)]),
        raw("handler", "GET body declared past the limit", get("/", &["Content-Length: 10000000"]), &[Status(413), Closed]),
        raw("handler", "TRACE method", request("TRACE", "/", &[], b""), &[Status(405)]),
    ]
}

/// Every response of the corpus: no secret, no panic message, and every
/// answer from our layers carries a well-formed request id.
fn check_response(case: &Case, response: &RawResponse) {
    let body = String::from_utf8_lossy(&response.body);
    for leak in [SECRET, "postgres://", "the handler panicked", "db.internal"] {
        assert!(
            !body.contains(leak),
            "{}: the response leaks {leak:?}: {body}",
            case.name
        );
    }
    assert!(
        response.header("set-cookie").is_none(),
        "{}: a header was injected",
        case.name
    );
    if let Some(id) = response.header("x-request-id") {
        assert!(
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
            "{}: unsafe request id echoed: {id:?}",
            case.name
        );
    }
    if response
        .header("content-type")
        .is_some_and(|t| t == "application/problem+json")
    {
        let problem = response.json();
        assert_eq!(
            problem["request_id"].as_str(),
            response.header("x-request-id"),
            "{}: the problem names its request id",
            case.name
        );
    }
}

#[test]
fn hostile_corpus_is_refused_cleanly_and_the_server_keeps_answering() {
    // One current-thread runtime: the server's tasks log into this thread's
    // captured subscriber.
    let (logs, _guard) = capture_json();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let smuggled = Arc::new(AtomicUsize::new(0));
    let cases = corpus();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let table = runtime.block_on(async {
        let config = HardenConfig::from_toml(CORPUS_CONFIG).unwrap();
        let harden = Harden::from_config(&config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = routes(smuggled.clone()).layer(harden.clone().into_layer());
        let server = harden.serve(listener, app);
        tokio::spawn(async move { server.await.unwrap() });

        let mut table = Vec::new();
        for case in &cases {
            let seen = match &case.send {
                Send::Raw(bytes) => exchange(addr, bytes.clone(), case.expect.len()).await,
                Send::Script(script) => script(addr).await,
            };
            for response in &seen.responses {
                check_response(case, response);
            }
            // After every case, a normal request is answered.
            let after = exchange(
                addr,
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
                1,
            )
            .await;
            table.push((case, seen.outcomes, after.outcomes));
        }
        table
    });

    let show = |outcomes: &[Outcome]| {
        outcomes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("| class | case | expected | seen | next request |");
    println!("|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (case, seen, after) in &table {
        println!(
            "| {} | {} | {} | {} | {} |",
            case.class,
            case.name,
            show(&case.expect),
            show(seen),
            show(after)
        );
        if *seen != case.expect || *after != [Status(200)] {
            failures.push(case.name);
        }
    }
    assert!(failures.is_empty(), "cases not as expected: {failures:#?}");
    assert_eq!(
        smuggled.load(Ordering::SeqCst),
        0,
        "a smuggled request reached a handler"
    );
    // Every log line is one JSON object (a forged id cannot forge a line),
    // and the error chain reached the log (the case ran) with its secret
    // redacted.
    let events = logs.events();
    assert!(
        logs.text()
            .contains("postgres://app:[REDACTED]@db.internal/app"),
        "the error chain is logged, redacted"
    );
    assert!(
        !logs.text().contains(SECRET),
        "the secret in the error chain is redacted from the log"
    );
    assert!(!events.is_empty());
}
