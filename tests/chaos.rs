//! Chaos against a real `redis-server` the test starts (and kills, pauses,
//! restarts, flushes and fills), under steady load through two limiter
//! instances: two `RedisStore`s with their own connections and one key
//! secret, one failing open, one failing closed.
//!
//! For each fault: the configured failure policy holds (open: admitted,
//! closed: 503, never anything else), no request waits past the Redis
//! timeout plus a generous slack (a property, not a performance
//! threshold), the shared limit holds again once Redis is back (polled
//! under a must-not-hang guard), and every switch between Redis and the
//! failure policy is logged exactly once.
//!
//! `tests/rate_limit_redis.rs` covers one store against each fault; this
//! file adds two instances under load, `FLUSHALL`, `maxmemory` with
//! `noeviction`, and the one-log-line-per-switch count.
//!
//! Without `redis-server` the test prints a SKIP line and passes, except
//! under `CI=true`, where it fails.
#![cfg(feature = "redis")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::logs::Captured;
use common::redis::RedisServer;
use http::{HeaderName, Request, Response, StatusCode};
use tower::{Layer, ServiceExt};
use tower_harden::rate_limit::{
    KeyHasher, KeySource, Policy, Quota, RateLimit, RateLimitLayer, RedisStore, StoreFailure,
};

/// Each Redis call's timeout.
const TIMEOUT: Duration = Duration::from_millis(200);
/// What a request may take beyond the timeout: scheduling on a loaded
/// machine.
const SLACK: Duration = Duration::from_secs(1);
/// Must-not-hang guard for anything that waits on Redis to change.
const GUARD: Duration = Duration::from_secs(15);
/// Load tasks per instance.
const TASKS: usize = 4;

const SECRET: &[u8] = b"shared by every instance";
static CLIENT: HeaderName = HeaderName::from_static("x-client");

type Service = RateLimit<
    tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>>>,
    RedisStore,
>;

fn ok(_: Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>> {
    std::future::ready(Ok(Response::new(())))
}

/// One instance: its own store (connection) and two services on it, the
/// steady load's (a quota it never reaches) and the probe's (burst 5 per
/// hour, to see the shared limit hold).
#[derive(Clone)]
struct Instance {
    name: &'static str,
    store: RedisStore,
    load: Service,
    probe: Service,
    failure: StoreFailure,
    stats: Arc<Stats>,
}

/// What the steady load saw since the last `take`.
#[derive(Default)]
struct Stats {
    longest_ns: AtomicU64,
    decided: AtomicU64,
    unchecked: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    longest: Duration,
    /// 200 with RateLimit headers: decided by Redis.
    #[allow(dead_code)]
    decided: u64,
    /// 200 without: admitted unchecked (fail open).
    unchecked: u64,
    /// 503: refused (fail closed).
    unavailable: u64,
    other: u64,
}

impl Stats {
    fn take(&self) -> Snapshot {
        Snapshot {
            longest: Duration::from_nanos(self.longest_ns.swap(0, Ordering::Relaxed)),
            decided: self.decided.swap(0, Ordering::Relaxed),
            unchecked: self.unchecked.swap(0, Ordering::Relaxed),
            unavailable: self.unavailable.swap(0, Ordering::Relaxed),
            other: self.other.swap(0, Ordering::Relaxed),
        }
    }
}

impl Instance {
    async fn new(name: &'static str, url: &str, failure: StoreFailure) -> Self {
        let store = RedisStore::builder()
            .timeout(TIMEOUT)
            .cool_down(Duration::from_millis(200))
            .connect(url)
            .await
            .unwrap();
        let service = |policy: Policy| {
            RateLimitLayer::new(store.clone())
                .key_hasher(KeyHasher::from_secret(SECRET))
                .on_store_failure(failure)
                .policy(policy)
                .layer(tower::service_fn(ok as fn(_) -> _))
        };
        let header = || KeySource::Header(CLIENT.clone());
        let plenty = Quota::new(1_000_000, Duration::from_secs(1))
            .unwrap()
            .with_burst(1_000_000)
            .unwrap();
        let five = Quota::new(1, Duration::from_secs(3600))
            .unwrap()
            .with_burst(5)
            .unwrap();
        Self {
            name,
            load: service(Policy::new("load", plenty, header())),
            probe: service(Policy::new("probe", five, header())),
            store,
            failure,
            stats: Arc::default(),
        }
    }

    fn request(client: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(CLIENT.clone(), client.parse().unwrap());
        request
    }

    /// Steady load until `stop`.
    fn spawn_load(&self, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..TASKS)
            .map(|task| {
                let instance = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let client = format!("load-{}-{task}", instance.name);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let response = instance
                            .load
                            .clone()
                            .oneshot(Self::request(&client))
                            .await
                            .unwrap();
                        let took = started.elapsed().as_nanos() as u64;
                        let stats = &instance.stats;
                        stats.longest_ns.fetch_max(took, Ordering::Relaxed);
                        let counter = match response.status() {
                            StatusCode::OK if response.headers().contains_key("ratelimit") => {
                                &stats.decided
                            }
                            StatusCode::OK => &stats.unchecked,
                            StatusCode::SERVICE_UNAVAILABLE => &stats.unavailable,
                            _ => &stats.other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect()
    }

    /// Checks what the load saw during a fault against the policy.
    fn assert_policy_held(&self, fault: &str, seen: Snapshot) {
        println!(
            "{fault}: {} (fail {:?}) under the fault: {seen:?}",
            self.name, self.failure
        );
        assert!(
            seen.longest <= TIMEOUT + SLACK,
            "{fault}: {} made a request wait {:?} (timeout {TIMEOUT:?})",
            self.name,
            seen.longest
        );
        assert_eq!(seen.other, 0, "{fault}: {}: {seen:?}", self.name);
        match self.failure {
            StoreFailure::Open => {
                assert_eq!(
                    seen.unavailable, 0,
                    "{fault}: {} fails open: {seen:?}",
                    self.name
                );
                assert!(seen.unchecked > 0, "{fault}: {}: {seen:?}", self.name);
            }
            StoreFailure::Closed => {
                assert_eq!(
                    seen.unchecked, 0,
                    "{fault}: {} fails closed: {seen:?}",
                    self.name
                );
                assert!(seen.unavailable > 0, "{fault}: {}: {seen:?}", self.name);
            }
            other => panic!("unexpected policy {other:?}"),
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < GUARD, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The shared limit holds: ten probes on a fresh client, alternating
/// instances, admit exactly the burst of five. Polled: right after a
/// recovery an instance may still be probing Redis.
async fn assert_limit_holds(fault: &str, instances: &[Instance; 2]) {
    let started = Instant::now();
    for attempt in 0.. {
        let client = format!("probe-{fault}-{attempt}");
        let mut statuses = Vec::new();
        for i in 0..10 {
            let response = instances[i % 2]
                .probe
                .clone()
                .oneshot(Instance::request(&client))
                .await
                .unwrap();
            statuses.push(response.status().as_u16());
        }
        let admitted = statuses.iter().filter(|&&s| s == 200).count();
        let refused = statuses.iter().filter(|&&s| s == 429).count();
        if admitted == 5 && refused == 5 {
            return;
        }
        assert!(
            started.elapsed() < GUARD,
            "{fault}: the shared limit did not hold again: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_lines(logs: &Captured, prefix: &str) -> u64 {
    logs.events()
        .iter()
        .filter(|event| {
            event["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(prefix))
        })
        .count() as u64
}

const DEGRADED: &str = "Redis rate-limit store degraded";
const RECOVERED: &str = "Redis rate-limit store recovered";

/// Switches logged so far (both instances) against the stores' counters.
fn assert_each_switch_logged_once(fault: &str, logs: &Captured, instances: &[Instance; 2]) {
    let degradations: u64 = instances.iter().map(|i| i.store.stats().degradations).sum();
    let recoveries: u64 = instances.iter().map(|i| i.store.stats().recoveries).sum();
    assert_eq!(
        count_lines(logs, DEGRADED),
        degradations,
        "{fault}: one log line per switch to the failure policy"
    );
    assert_eq!(
        count_lines(logs, RECOVERED),
        recoveries,
        "{fault}: one log line per switch back to Redis"
    );
}

fn used_memory(server: &RedisServer) -> u64 {
    let info: String = server.command(&["INFO", "memory"]);
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("used_memory in INFO")
}

/// Fills Redis to its `maxmemory` with junk under `noeviction`, then lowers
/// the line a little below what is used, so that the few rate-limit keys
/// expiring cannot bring Redis back under it between two writes.
fn fill_to_maxmemory(server: &RedisServer) {
    server.command::<()>(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let ceiling = used_memory(server) + (1 << 20);
    server.command::<()>(&["CONFIG", "SET", "maxmemory", &ceiling.to_string()]);
    let mut connection = server.connection();
    let junk = "x".repeat(4096);
    for batch in 0.. {
        assert!(batch < 10_000, "maxmemory was never reached");
        let mut pipe = redis::pipe();
        for i in 0..64 {
            pipe.cmd("SET")
                .arg(format!("junk:{batch}:{i}"))
                .arg(&junk)
                .ignore();
        }
        if let Err(error) = pipe.query::<()>(&mut connection) {
            assert!(error.to_string().contains("OOM"), "{error}");
            let below = used_memory(server) - (256 << 10);
            server.command::<()>(&["CONFIG", "SET", "maxmemory", &below.to_string()]);
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_under_load_hold_their_policy_through_every_fault() {
    let Some(mut server) = RedisServer::start("two_instances_under_load") else {
        return;
    };
    // The whole binary's log (this file holds one test): the stores log
    // from whichever worker thread runs them.
    let logs = Captured::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_writer(logs.clone())
            .with_max_level(tracing::Level::INFO)
            .finish(),
    )
    .unwrap();
    let instances = [
        Instance::new("open", &server.url(), StoreFailure::Open).await,
        Instance::new("closed", &server.url(), StoreFailure::Closed).await,
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = instances
        .iter()
        .flat_map(|instance| instance.spawn_load(stop.clone()))
        .collect();
    let healthy = |fault: &'static str| {
        let instances = instances.clone();
        async move {
            for instance in &instances {
                instance.stats.take();
            }
            wait_until("decisions by Redis", || {
                instances
                    .iter()
                    .all(|i| i.stats.decided.load(Ordering::Relaxed) > 20)
            })
            .await;
            for instance in &instances {
                let seen = instance.stats.take();
                assert_eq!(
                    (seen.unavailable, seen.other),
                    (0, 0),
                    "{fault}: {} before the fault: {seen:?}",
                    instance.name
                );
            }
        }
    };
    let degraded_under_load = |fault: &'static str| {
        let instances = instances.clone();
        async move {
            wait_until("both instances degrading", || {
                instances.iter().all(|i| i.store.is_degraded())
            })
            .await;
            wait_until("the failure policy answering", || {
                instances[0].stats.unchecked.load(Ordering::Relaxed) > 20
                    && instances[1].stats.unavailable.load(Ordering::Relaxed) > 20
            })
            .await;
            for instance in &instances {
                instance.assert_policy_held(fault, instance.stats.take());
            }
        }
    };
    let recovered = |fault: &'static str| {
        let instances = instances.clone();
        async move {
            wait_until("both instances recovering", || {
                instances.iter().all(|i| !i.store.is_degraded())
            })
            .await;
            assert_limit_holds(fault, &instances).await;
        }
    };

    // Kill, then restart.
    healthy("kill").await;
    server.kill();
    degraded_under_load("kill").await;
    server.restart();
    recovered("kill").await;
    assert_each_switch_logged_once("kill", &logs, &instances);

    // CLIENT PAUSE: Redis holds every reply for 1.5 s.
    healthy("pause").await;
    server.command::<()>(&["CLIENT", "PAUSE", "1500", "ALL"]);
    degraded_under_load("pause").await;
    recovered("pause").await;
    assert_each_switch_logged_once("pause", &logs, &instances);

    // FLUSHALL and SCRIPT FLUSH: state and script gone, Redis up. No
    // switch: the store reloads its script, and the limit holds at once.
    healthy("flush").await;
    let switches = |instances: &[Instance; 2]| -> u64 {
        instances.iter().map(|i| i.store.stats().degradations).sum()
    };
    let reloads = |instances: &[Instance; 2]| -> u64 {
        instances
            .iter()
            .map(|i| i.store.stats().script_reloads)
            .sum()
    };
    let (switches_before, reloads_before) = (switches(&instances), reloads(&instances));
    server.command::<()>(&["FLUSHALL"]);
    server.command::<()>(&["SCRIPT", "FLUSH"]);
    // The first instance to meet NOSCRIPT loads the script for both.
    wait_until("the script reloaded", || {
        reloads(&instances) > reloads_before
    })
    .await;
    assert_limit_holds("flush", &instances).await;
    assert_eq!(
        switches(&instances),
        switches_before,
        "a flush is no outage"
    );
    for instance in &instances {
        let seen = instance.stats.take();
        assert_eq!(
            (seen.unchecked, seen.unavailable, seen.other),
            (0, 0, 0),
            "flush: {seen:?}"
        );
    }
    assert_each_switch_logged_once("flush", &logs, &instances);

    // maxmemory with noeviction: every write refused with OOM.
    healthy("maxmemory").await;
    fill_to_maxmemory(&server);
    degraded_under_load("maxmemory").await;
    server.command::<()>(&["FLUSHALL"]);
    server.command::<()>(&["CONFIG", "SET", "maxmemory", "0"]);
    recovered("maxmemory").await;
    assert_each_switch_logged_once("maxmemory", &logs, &instances);

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no load task panicked");
    }
    for instance in &instances {
        let stats = instance.store.stats();
        println!("{}: {stats:?}", instance.name);
        assert!(
            stats.degradations >= 3,
            "{}: kill, pause and maxmemory each degraded it: {stats:?}",
            instance.name
        );
    }
}
