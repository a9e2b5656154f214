//! Soak: 1,000,000 requests from 1,000,000 distinct client addresses
//! (X-Forwarded-For through a trusted proxy) against the preset-wrapped
//! example router, whose in-process rate-limit store is capped at 100,000
//! keys. Driven in process through `tower::Service::call` by many
//! concurrent tasks, so the measurement is the stack, not the loopback.
//!
//! Asserted:
//! - every request is answered 200 (each client is new: no quota is hit,
//!   and evicting idle keys loses nobody's quota);
//! - the store never holds more than its 100,000 keys;
//! - resident memory (from /proc/self/statm) grows by at most
//!   `RSS_GROWTH_BOUND` between the moment the store is full and the end:
//!   900,000 more new clients cost no memory that stays;
//!
//! Printed, not asserted (a timing figure on a shared machine): the p99
//! latency of the last 50,000 requests against the first 50,000's (no
//! degradation as the store churns).
//!
//! Ignored by default; `.ci/run` runs it in release:
//! `cargo test --release --all-features --test soak -- --ignored --nocapture`

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_harden::context::PeerAddr;
use tower_harden::rate_limit::AnyStore;
use tower_harden::{Harden, HardenConfig};

const REQUESTS: u64 = 1_000_000;
const MAX_KEYS: usize = 100_000;
const WINDOW: u64 = 50_000;
const TASKS: u64 = 64;
/// The store is full after 100,000 clients; RSS is sampled once it is,
/// after `WARM` requests, and at the end.
const WARM: u64 = 200_000;
/// What resident memory may grow by from `WARM` to the end: the store is
/// full and bounded, so what remains is allocator noise (measured: about
/// 3 MiB; an unbounded store would add tens of MiB for 800,000 more keys).
const RSS_GROWTH_BOUND: u64 = 16 << 20;
/// Resident memory of the whole test process at the end: the store of at
/// most 100,000 keys, the runtime, the latency samples and the binary
/// (measured: about 11 MiB in release).
const RSS_BOUND: u64 = 64 << 20;

/// Resident set size in bytes, from /proc/self/statm (pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("the resident field of statm");
    // 4 KiB pages: the Linux default on x86_64 and the usual aarch64 kernels.
    pages * 4096
}

fn p99(mut samples: Vec<u64>) -> Duration {
    samples.sort_unstable();
    let index = (samples.len() * 99 / 100).min(samples.len() - 1);
    Duration::from_nanos(samples[index])
}

/// Client number `n` as a distinct public-looking IPv4 address.
fn client(n: u64) -> Ipv4Addr {
    Ipv4Addr::from(0x2100_0000u32 + n as u32)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: run in release by .ci/run"]
async fn a_million_clients_through_a_trusted_proxy_stay_bounded_and_fast() {
    let config = HardenConfig::from_toml(
        r#"
        [rate_limit]
        max_keys = 100000
        trusted_proxies = ["10.0.0.0/8"]
        "#,
    )
    .unwrap();
    let harden = Harden::from_config(&config).unwrap();
    let store = harden.rate_limiter().store().clone();
    let AnyStore::Memory(_) = &*store else {
        panic!("the in-process store");
    };
    let app = common::routes::routes(Arc::default()).layer(harden.into_layer());
    let proxy: SocketAddr = "10.0.0.1:443".parse().unwrap();

    let next = Arc::new(AtomicU64::new(0));
    let rss_warm = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let app = app.clone();
        let next = next.clone();
        let rss_warm = rss_warm.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut first = Vec::new();
            let mut last = Vec::new();
            let mut most_keys = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= REQUESTS {
                    break;
                }
                if n == WARM {
                    rss_warm.store(resident_bytes(), Ordering::Relaxed);
                }
                let mut request = Request::get("/")
                    .header("x-forwarded-for", client(n).to_string())
                    .body(Body::empty())
                    .unwrap();
                request.extensions_mut().insert(PeerAddr(proxy));
                let sent = Instant::now();
                let response = app.clone().oneshot(request).await.unwrap();
                let took = sent.elapsed().as_nanos() as u64;
                assert_eq!(response.status(), StatusCode::OK, "request {n}");
                if n < WINDOW {
                    first.push(took);
                } else if n >= REQUESTS - WINDOW {
                    last.push(took);
                }
                if n.is_multiple_of(1024) {
                    if let AnyStore::Memory(memory) = &*store {
                        most_keys = most_keys.max(memory.len());
                    }
                }
            }
            (first, last, most_keys)
        }));
    }
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut most_keys = 0;
    for task in tasks {
        let (mut f, mut l, keys) = task.await.expect("no task panicked");
        first.append(&mut f);
        last.append(&mut l);
        most_keys = most_keys.max(keys);
    }
    let elapsed = started.elapsed();
    let rss_end = resident_bytes();
    let rss_warm = rss_warm.load(Ordering::Relaxed);
    let AnyStore::Memory(memory) = &*store else {
        unreachable!()
    };
    let (p99_first, p99_last) = (p99(first), p99(last));
    println!(
        "soak: {REQUESTS} requests, {REQUESTS} clients in {elapsed:.1?} ({:.0} req/s); \
         store: {} keys (most seen {most_keys}, cap {MAX_KEYS}), {} evictions; \
         RSS at {WARM}: {:.1} MiB, at the end: {:.1} MiB (bound {} MiB, growth bound {} MiB); \
         p99 first {WINDOW}: {p99_first:?}, last {WINDOW}: {p99_last:?} (ratio {:.2})",
        REQUESTS as f64 / elapsed.as_secs_f64(),
        memory.len(),
        memory.evictions(),
        rss_warm as f64 / 1048576.0,
        rss_end as f64 / 1048576.0,
        RSS_BOUND >> 20,
        RSS_GROWTH_BOUND >> 20,
        p99_last.as_secs_f64() / p99_first.as_secs_f64(),
    );
    assert!(memory.len() <= MAX_KEYS && most_keys <= MAX_KEYS);
    assert!(
        memory.evictions() >= REQUESTS - MAX_KEYS as u64,
        "every new client past the cap evicted an idle one"
    );
    assert!(rss_warm > 0);
    assert!(rss_end <= RSS_BOUND, "RSS {rss_end} past {RSS_BOUND}");
    assert!(
        rss_end <= rss_warm + RSS_GROWTH_BOUND,
        "RSS grew from {rss_warm} to {rss_end} with the store full"
    );
    // The p99 ratio is printed above, not asserted: it is a timing figure,
    // and on a shared machine it moves with the neighbours' load.
}
