//! The Redis store over a Redis Cluster beside `redis-benchmark --cluster`
//! running the same script (`EVALSHA`, same arguments) at the same
//! concurrency against the same cluster, in the same run.
//!
//! ```sh
//! cargo bench --features redis --bench rate_limit_cluster
//! ```
//!
//! Starts its own cluster (six `redis-server --cluster-enabled yes` on free
//! loopback ports: three primaries, three replicas). Both sides spread their
//! keys over the three primaries: the store's keys are its clients' hashes
//! (one per task), and `redis-benchmark --cluster` puts into its key's
//! `{tag}` a hash tag of the node each of its connections serves.

#[path = "../tests/common/redis_cluster.rs"]
mod redis_cluster;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster_async::ClusterConnection;
use redis_cluster::RedisCluster;
use tower_harden::rate_limit::{Check, KeyHash, Quota, RateLimitStore, RedisStore};

const CONCURRENCY: usize = 50;
const DECISIONS: usize = 60_000;
const ROUNDS: usize = 3;

fn main() {
    let cluster = RedisCluster::start("bench rate_limit_cluster").expect("redis-server");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let store = RedisStore::builder()
        .prefix("bench")
        .timeout(Duration::from_millis(500))
        .connect_cluster(cluster.urls())
        .unwrap();
    // Always admitted: 1 ns per request, a burst of u32::MAX.
    let quota = Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .with_burst(u32::MAX)
        .unwrap();
    // One key per task: spread over the three primaries.
    let checks: Vec<Vec<Check>> = (0..CONCURRENCY)
        .map(|task| {
            vec![Check {
                policy: Arc::from("bench"),
                key: KeyHash([task as u8; 16]),
                quota,
                cost: 1,
            }]
        })
        .collect();
    runtime.block_on(async {
        for check in &checks {
            store.check(check).await.unwrap(); // loads the script on each primary
        }
    });
    let primaries = cluster.primaries();
    // redis-benchmark sends EVALSHA only: every primary must have the script.
    for node in &primaries {
        cluster.command::<String>(
            node.port,
            &[
                "SCRIPT",
                "LOAD",
                tower_harden::rate_limit::redis::GCRA_SCRIPT,
            ],
        );
    }
    let per_primary: Vec<usize> = primaries
        .iter()
        .map(|node| {
            checks
                .iter()
                .filter(|check| {
                    cluster.primary_of(&store.redis_key("bench", &check[0].key)) == node.port
                })
                .count()
        })
        .collect();
    let script_args = [
        "EVALSHA".to_owned(),
        store.script_hash().to_owned(),
        "1".to_owned(),
        "bench:{tag}:bench".to_owned(),
        "0".to_owned(),
        quota.emission_interval_nanos().to_string(),
        quota.tolerance_nanos().to_string(),
        quota.emission_interval_nanos().to_string(),
    ];
    let port = cluster.live_ports()[0].to_string();

    println!(
        "\n## Decisions per second over a 3-primary cluster at concurrency {CONCURRENCY}, \
         {DECISIONS} decisions per run, same script\n"
    );
    println!("(the store's {CONCURRENCY} keys per primary: {per_primary:?})\n");
    println!("| run | tower-harden RedisStore (cluster) | p50 | p99 | redis-benchmark --cluster EVALSHA | p50 | p99 | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let ours = runtime.block_on(throughput(&store, &checks, DECISIONS));
        let theirs = redis_benchmark(&port, &script_args);
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
    let stats = store.stats();
    assert_eq!(stats.redis_failures, 0, "{stats:?}");
}

struct Throughput {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `decisions` calls of `store.check`, from one task per key.
async fn throughput(
    store: &RedisStore<ClusterConnection>,
    checks: &[Vec<Check>],
    decisions: usize,
) -> Throughput {
    let started = Instant::now();
    let tasks: Vec<_> = checks
        .iter()
        .map(|check| {
            let store = store.clone();
            let check = check.clone();
            let count = decisions / checks.len();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count);
                for _ in 0..count {
                    let call = Instant::now();
                    store.check(&check).await.expect("the cluster answers");
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

/// `redis-benchmark --cluster --csv` with the same command, concurrency and
/// count.
fn redis_benchmark(port: &str, command: &[String]) -> Throughput {
    let output = Command::new("redis-benchmark")
        .args(["--cluster", "-h", "127.0.0.1", "-p", port, "--csv"])
        .args(["-n", &DECISIONS.to_string(), "-c", &CONCURRENCY.to_string()])
        .args(command)
        .output()
        .expect("redis-benchmark runs (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|line| line.starts_with("\"EVALSHA"))
        .unwrap_or_else(|| {
            panic!(
                "no result in redis-benchmark output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
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
