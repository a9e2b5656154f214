//! Rate limiting beside its peers, in the same run:
//!
//! - `check/*`: one decision on a hot key and on 100,000 keys, our
//!   `MemoryStore` beside governor's keyed `RateLimiter` (`keyed` =
//!   `DashMap` + SipHash over the key). `ours` starts from an already
//!   hashed key (as the store sees it); `ours+keyhash` includes the keyed
//!   BLAKE3 of an `IpAddr` (`KeyHasher::from_secret`, the shared-store
//!   hash); `ours+process_keyhash` the in-process default's SipHash
//!   (`KeyHasher::default`).
//! - `service/*`: end to end through a tower service (peer IP key, headers
//!   on), beside tower_governor's layer with and without its headers.
//! - `two_threads/*`: throughput of two threads deciding at once.
//!
//! Bytes per key are measured by `benches/rate_limit_memory.rs`.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use governor::{Quota as GovernorQuota, RateLimiter};
use http::{Request, Response};
use tower::{Layer, Service};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_governor::GovernorLayer;
use tower_harden::rate_limit::{
    Check, KeyHash, KeyHasher, KeySource, MemoryStore, Policy, Quota, RateLimitLayer,
    RateLimitStore,
};

const KEYS: u32 = 100_000;

/// A quota that always admits: one request per nanosecond, a huge burst.
fn open_quota() -> Quota {
    Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .with_burst(u32::MAX)
        .unwrap()
}

fn open_governor_quota() -> GovernorQuota {
    GovernorQuota::with_period(Duration::from_nanos(1))
        .unwrap()
        .allow_burst(NonZeroU32::MAX)
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn check_latency(c: &mut Criterion) {
    let hasher = KeyHasher::from_secret(b"bench");
    let process_hasher = KeyHasher::default();
    let policy: Arc<str> = Arc::from("per-ip");
    let quota = open_quota();
    let key_hashes: Vec<KeyHash> = (0..KEYS).map(|n| hasher.ip(ip(n))).collect();
    let ips: Vec<IpAddr> = (0..KEYS).map(ip).collect();

    let mut group = c.benchmark_group("check");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);

    for (label, keys) in [("hot_key", 1usize), ("100k_keys", KEYS as usize)] {
        let store = MemoryStore::new(2 * KEYS as usize);
        let governor = RateLimiter::keyed(open_governor_quota());
        for n in 0..keys {
            store.check_one(&policy, &key_hashes[n], quota, 1);
            let _ = governor.check_key(&ips[n]);
        }
        let mut index = 0usize;
        group.bench_function(BenchmarkId::new("governor_keyed", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                governor.check_key(&ips[index]).is_ok()
            })
        });
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                store
                    .check_one(&policy, &key_hashes[index], quota, 1)
                    .allowed
            })
        });
        group.bench_function(BenchmarkId::new("ours_store_trait", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                let check = [Check {
                    policy: policy.clone(),
                    key: key_hashes[index],
                    quota,
                    cost: 1,
                }];
                store.try_check_now(&check).unwrap().unwrap().allowed()
            })
        });
        group.bench_function(BenchmarkId::new("ours+keyhash", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                let key = hasher.ip(ips[index]);
                store.check_one(&policy, &key, quota, 1).allowed
            })
        });
        group.bench_function(BenchmarkId::new("ours+process_keyhash", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                let key = process_hasher.ip(ips[index]);
                store.check_one(&policy, &key, quota, 1).allowed
            })
        });
    }
    group.finish();
}

fn request(peer: IpAddr) -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(peer, 40_000)));
    request
}

fn call<S>(service: &mut S, request: Request<()>) -> u16
where
    S: Service<Request<()>>,
    S::Response: StatusOf,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .now_or_never()
        .unwrap()
        .unwrap();
    service
        .call(request)
        .now_or_never()
        .unwrap()
        .unwrap()
        .status_of()
}

trait StatusOf {
    fn status_of(&self) -> u16;
}

impl<B> StatusOf for Response<B> {
    fn status_of(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The three services of `service/*`: ours, tower_governor without and
/// with its headers.
macro_rules! end_to_end_services {
    ($ours:ident, $tower_governor_plain:ident, $tower_governor_headers:ident) => {
        let inner = tower::service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        });
        let ours = RateLimitLayer::in_memory(2 * KEYS as usize).policy(Policy::new(
            "per-ip",
            open_quota(),
            KeySource::peer_ip(),
        ));
        let mut $ours = ours.layer(inner);
        let plain_config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .key_extractor(PeerIpKeyExtractor)
            .finish()
            .unwrap();
        let mut $tower_governor_plain = GovernorLayer::new(plain_config).layer(inner);
        let headers_config = GovernorConfigBuilder::default()
            .per_nanosecond(1)
            .burst_size(u32::MAX)
            .key_extractor(PeerIpKeyExtractor)
            .use_headers()
            .finish()
            .unwrap();
        let mut $tower_governor_headers = GovernorLayer::new(headers_config).layer(inner);
    };
}

fn end_to_end(c: &mut Criterion) {
    end_to_end_services!(ours, tower_governor_plain, tower_governor_headers);

    let mut group = c.benchmark_group("service");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    for (label, keys) in [("hot_key", 1u32), ("100k_keys", KEYS)] {
        for n in 0..keys {
            assert_eq!(call(&mut ours, request(ip(n))), 200);
            assert_eq!(call(&mut tower_governor_plain, request(ip(n))), 200);
            assert_eq!(call(&mut tower_governor_headers, request(ip(n))), 200);
        }
        let mut index = 0u32;
        group.bench_function(BenchmarkId::new("tower_governor", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                call(&mut tower_governor_plain, request(ip(index)))
            })
        });
        group.bench_function(BenchmarkId::new("tower_governor_headers", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                call(&mut tower_governor_headers, request(ip(index)))
            })
        });
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            b.iter(|| {
                index = (index + 1) % keys;
                call(&mut ours, request(ip(index)))
            })
        });
    }
    group.finish();
}

/// Runs `work(thread, iterations)` on two threads at once; returns the
/// wall time.
fn two_threads(iters: u64, work: impl Fn(u32, u64) + Sync) -> Duration {
    let per_thread = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..2 {
            let work = &work;
            scope.spawn(move || work(thread, per_thread));
        }
    });
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let hasher = KeyHasher::from_secret(b"bench");
    let policy: Arc<str> = Arc::from("per-ip");
    let quota = open_quota();
    let key_hashes: Vec<KeyHash> = (0..KEYS).map(|n| hasher.ip(ip(n))).collect();
    let ips: Vec<IpAddr> = (0..KEYS).map(ip).collect();
    let store = MemoryStore::new(2 * KEYS as usize);
    let governor = RateLimiter::keyed(open_governor_quota());
    for n in 0..KEYS as usize {
        store.check_one(&policy, &key_hashes[n], quota, 1);
        let _ = governor.check_key(&ips[n]);
    }

    let mut group = c.benchmark_group("two_threads");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for (label, keys) in [("hot_key", 1u64), ("100k_keys", u64::from(KEYS))] {
        group.bench_function(BenchmarkId::new("governor_keyed", label), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |thread, count| {
                    for i in 0..count {
                        let index = ((i * 2 + u64::from(thread)) % keys) as usize;
                        let _ = std::hint::black_box(governor.check_key(&ips[index]));
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("ours", label), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |thread, count| {
                    for i in 0..count {
                        let index = ((i * 2 + u64::from(thread)) % keys) as usize;
                        std::hint::black_box(store.check_one(
                            &policy,
                            &key_hashes[index],
                            quota,
                            1,
                        ));
                    }
                })
            })
        });
    }
    group.finish();
}

/// `RATE_LIMIT_PROFILE=ours:100k_keys:3000` sends that many requests
/// through one of the `service/*` services (`ours`, `tower_governor`,
/// `tower_governor_headers`; `hot_key` or `100k_keys`, each request from a
/// new address) and exits, for a profiler: under
/// `valgrind --tool=callgrind`, the instruction count of two runs of
/// different lengths, over their difference, is the per-request cost, free
/// of timing noise.
fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let (Some(label), Some(keys), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("RATE_LIMIT_PROFILE=SERVICE:KEYS:COUNT");
    };
    let keys = match keys {
        "hot_key" => 1,
        "100k_keys" => KEYS,
        other => panic!("hot_key or 100k_keys, not {other}"),
    };
    let count: u32 = count.parse().expect("a request count");
    end_to_end_services!(ours, tower_governor_plain, tower_governor_headers);
    for n in 0..count {
        let request = request(ip(n % keys));
        let status = match label {
            "ours" => call(&mut ours, request),
            "tower_governor" => call(&mut tower_governor_plain, request),
            "tower_governor_headers" => call(&mut tower_governor_headers, request),
            other => panic!("ours, tower_governor or tower_governor_headers, not {other}"),
        };
        assert_eq!(status, 200);
    }
}

criterion_group!(benches, check_latency, end_to_end, throughput);

fn main() {
    if let Ok(spec) = std::env::var("RATE_LIMIT_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
