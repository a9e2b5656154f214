//! The Redis store beside `redis-benchmark` running the same script
//! (`EVALSHA`, same key, same arguments) at the same concurrency against
//! the same Redis, in the same run.
//!
//! ```sh
//! cargo bench --features redis --bench rate_limit_redis
//! ```
//!
//! Starts its own `redis-server` on a free port (or uses `REDIS_URL`,
//! `redis://host:port`), then prints three tables:
//! 1. throughput and p50/p99 latency per decision at concurrency 50: this
//!    store (one multiplexed connection, every call with its timeout) vs
//!    `redis-benchmark -c 50` (50 connections, the C client);
//! 2. a flood on one refused key: Redis calls with and without the local
//!    deny cache;
//! 3. criterion latency of one decision: the store vs a bare `EVALSHA` of
//!    the same script on the same connection.

#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use redis_server::RedisServer;
use tower_harden::rate_limit::{Check, KeyHash, Quota, RateLimitStore, RedisStore};

const CONCURRENCY: usize = 50;
const DECISIONS: usize = 60_000;
const ROUNDS: usize = 3;

fn main() {
    let server;
    let (url, host, port) = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let address = url.trim_start_matches("redis://").trim_end_matches('/');
            let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
            (url.clone(), host.to_owned(), port.to_owned())
        }
        Err(_) => {
            server = RedisServer::start("bench rate_limit_redis").expect("redis-server");
            (
                server.url(),
                "127.0.0.1".to_owned(),
                server.port().to_string(),
            )
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(async {
        RedisStore::builder()
            .prefix("bench")
            .timeout(Duration::from_millis(500))
            .connect(&url)
            .await
            .unwrap()
    });
    // Always admitted: 1 ns per request, a burst of u32::MAX.
    let quota = Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .with_burst(u32::MAX)
        .unwrap();
    let checks = vec![Check {
        policy: Arc::from("bench"),
        key: KeyHash([0x42; 16]),
        quota,
        cost: 1,
    }];
    runtime.block_on(store.check(&checks)).unwrap(); // loads the script
    let redis_key = store.redis_key("bench", &checks[0].key);
    let script_args = [
        "EVALSHA".to_owned(),
        store.script_hash().to_owned(),
        "1".to_owned(),
        redis_key.clone(),
        "0".to_owned(),
        quota.emission_interval_nanos().to_string(),
        quota.tolerance_nanos().to_string(),
        quota.emission_interval_nanos().to_string(),
    ];

    println!("\n## Decisions per second at concurrency {CONCURRENCY}, {DECISIONS} decisions per run, same script, same key, same Redis\n");
    println!("| run | tower-harden RedisStore | p50 | p99 | redis-benchmark EVALSHA | p50 | p99 | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let ours = runtime.block_on(throughput(&store, &checks, CONCURRENCY, DECISIONS));
        let theirs = redis_benchmark(&host, &port, &script_args);
        let ratio = ours.per_second / theirs.per_second;
        ratios.push(ratio);
        println!(
            "| {round} | {:.0}/s | {:.3} ms | {:.3} ms | {:.0}/s | {:.3} ms | {:.3} ms | {:.0} % |",
            ours.per_second,
            ours.p50_ms,
            ours.p99_ms,
            theirs.per_second,
            theirs.p50_ms,
            theirs.p99_ms,
            ratio * 100.0
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("\nmedian ratio: {:.0} %", ratios[ratios.len() / 2] * 100.0);

    println!("\n## A flood on one refused key ({DECISIONS} requests, concurrency {CONCURRENCY}, burst 10 per hour)\n");
    println!("| deny cache | Redis calls | refused locally | decisions/s |");
    println!("|---|---|---|---|");
    let flood_quota = Quota::with_period(Duration::from_secs(360))
        .unwrap()
        .with_burst(10)
        .unwrap();
    let mut calls = Vec::new();
    for (label, cache, key) in [("on (default)", 10_000, 0x51), ("off", 0, 0x52)] {
        let flooded = runtime.block_on(async {
            RedisStore::builder()
                .prefix("bench")
                .deny_cache_max_keys(cache)
                .timeout(Duration::from_millis(500))
                .connect(&url)
                .await
                .unwrap()
        });
        let flood = vec![Check {
            policy: Arc::from("flood"),
            key: KeyHash([key; 16]),
            quota: flood_quota,
            cost: 1,
        }];
        let result = runtime.block_on(throughput(&flooded, &flood, CONCURRENCY, DECISIONS));
        let stats = flooded.stats();
        calls.push(stats.redis_calls);
        println!(
            "| {label} | {} | {} | {:.0}/s |",
            stats.redis_calls, stats.deny_cache_hits, result.per_second
        );
    }
    println!(
        "\nRedis calls saved by the deny cache: {:.2} %",
        100.0 * (1.0 - calls[0] as f64 / calls[1] as f64)
    );

    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    let mut group = criterion.benchmark_group("redis_decision_latency");
    group.bench_function("tower_harden_RedisStore_check", |b| {
        b.to_async(&runtime).iter(|| store.check(&checks))
    });
    let connection = runtime.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        redis::aio::ConnectionManager::new(client).await.unwrap()
    });
    group.bench_function("bare_EVALSHA_same_script", |b| {
        b.to_async(&runtime).iter(|| {
            let mut connection = connection.clone();
            let mut command = redis::cmd(&script_args[0]);
            for arg in &script_args[1..] {
                command.arg(arg);
            }
            async move {
                command
                    .query_async::<redis::Value>(&mut connection)
                    .await
                    .unwrap()
            }
        })
    });
    let refused = vec![Check {
        policy: Arc::from("flood"),
        key: KeyHash([0x51; 16]),
        quota: flood_quota,
        cost: 1,
    }];
    let cached = runtime.block_on(async {
        let store = RedisStore::builder()
            .prefix("bench")
            .connect(&url)
            .await
            .unwrap();
        store.check(&refused).await.unwrap();
        store
    });
    group.bench_function("deny_cache_hit", |b| {
        b.iter(|| cached.try_check_now(&refused).expect("cached"))
    });
    group.finish();
    criterion.final_summary();
}

struct Throughput {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `decisions` calls of `store.check` from `concurrency` tasks.
async fn throughput(
    store: &RedisStore,
    checks: &[Check],
    concurrency: usize,
    decisions: usize,
) -> Throughput {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let store = store.clone();
            let checks = checks.to_vec();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(decisions / concurrency);
                for _ in 0..decisions / concurrency {
                    let call = Instant::now();
                    store.check(&checks).await.expect("Redis answers");
                    latencies.push(call.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(decisions);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |quantile: f64| {
        latencies[((latencies.len() as f64 * quantile) as usize).min(latencies.len() - 1)]
            .as_secs_f64()
            * 1e3
    };
    Throughput {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// `redis-benchmark --csv` with the same command, concurrency and count.
fn redis_benchmark(host: &str, port: &str, command: &[String]) -> Throughput {
    let output = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "--csv"])
        .args(["-n", &DECISIONS.to_string(), "-c", &CONCURRENCY.to_string()])
        .args(command)
        .output()
        .expect("redis-benchmark runs (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|line| line.starts_with("\"EVALSHA"))
        .unwrap_or_else(|| panic!("no result in redis-benchmark output: {text}"));
    let fields: Vec<f64> = row
        .rsplit("\",\"")
        .take(7)
        .map(|field| field.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    // Reversed: max, p99, p95, p50, min, avg, rps.
    Throughput {
        per_second: fields[6],
        p50_ms: fields[3],
        p99_ms: fields[1],
    }
}
