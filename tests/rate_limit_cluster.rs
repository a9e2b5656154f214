//! The Redis store over a real Redis Cluster the tests start: six
//! `redis-server --cluster-enabled yes` on loopback ports (three primaries,
//! three replicas), created with `redis-cli --cluster create`.
//!
//! - keys of many clients spread over the three primaries, two instances
//!   share one limit, with an ACL user and password in the node URLs, and
//!   the script is loaded once per primary (`NOSCRIPT`, then `EVAL`);
//! - a primary is killed under load and its replica promoted: no request
//!   waits past the Redis timeout plus slack (a hang guard), each
//!   instance's failure policy holds, and afterwards the shared limit holds
//!   again; the state a killed primary had not yet replicated is measured
//!   (printed), and bounded: keys on the surviving primaries keep theirs;
//! - a slot is migrated (`MIGRATING`/`IMPORTING`, `MIGRATE`, `SETSLOT
//!   NODE`) while requests for a key in it flow: the key's limit holds
//!   across the move and no call fails (`ASK` and `MOVED` are followed);
//! - a store built before its cluster exists applies its failure policy,
//!   then finds the cluster by itself.
//!
//! Without `redis-server` and `redis-cli` each test prints a SKIP line and
//! passes, except under `CI=true`, where it fails.
#![cfg(feature = "redis")]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_cluster::{free_ports, RedisCluster, CLUSTER_GUARD};
use http::{HeaderName, Request, Response, StatusCode};
use redis::cluster_async::ClusterConnection;
use tower::{Layer, ServiceExt};
use tower_harden::rate_limit::{
    Check, KeyHash, KeyHasher, KeySource, Policy, Quota, RateLimit, RateLimitLayer, RateLimitStore,
    RedisStore, RedisStoreBuilder, StoreFailure,
};

/// Each Redis call's timeout.
const TIMEOUT: Duration = Duration::from_millis(200);
/// The breaker's cool-down.
const COOL_DOWN: Duration = Duration::from_millis(200);
/// What a request may take beyond the timeout: scheduling on a loaded
/// machine. A hang guard, not a performance threshold.
const SLACK: Duration = Duration::from_secs(1);

const SECRET: &[u8] = b"shared by every instance";
static CLIENT: HeaderName = HeaderName::from_static("x-client");

type Store = RedisStore<ClusterConnection>;
type Service = RateLimit<
    tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>>>,
    Store,
>;

fn ok(_: Request<()>) -> std::future::Ready<Result<Response<()>, Infallible>> {
    std::future::ready(Ok(Response::new(())))
}

fn builder() -> RedisStoreBuilder {
    RedisStore::builder().timeout(TIMEOUT).cool_down(COOL_DOWN)
}

/// Burst 5 per hour: what a test counts admissions against.
fn five_per_hour() -> Quota {
    Quota::new(1, Duration::from_secs(3600))
        .unwrap()
        .with_burst(5)
        .unwrap()
}

fn plenty() -> Quota {
    Quota::new(1_000_000, Duration::from_secs(1))
        .unwrap()
        .with_burst(1_000_000)
        .unwrap()
}

fn service(store: &Store, failure: StoreFailure, name: &str, quota: Quota) -> Service {
    RateLimitLayer::new(store.clone())
        .key_hasher(KeyHasher::from_secret(SECRET))
        .on_store_failure(failure)
        .policy(Policy::new(name, quota, KeySource::Header(CLIENT.clone())))
        .layer(tower::service_fn(ok as fn(_) -> _))
}

fn request(client: &str) -> Request<()> {
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(CLIENT.clone(), client.parse().unwrap());
    request
}

async fn status(service: &Service, client: &str) -> StatusCode {
    service
        .clone()
        .oneshot(request(client))
        .await
        .unwrap()
        .status()
}

/// The Redis key of `client` under `policy`.
fn redis_key(store: &Store, policy: &str, client: &str) -> String {
    let hash = KeyHasher::from_secret(SECRET).header_value(client.as_bytes());
    store.redis_key(policy, &hash)
}

/// Waits until `store` has its connection to the cluster (it connects in
/// the background: a call before that may time out on a loaded machine).
/// Its counters are read after this.
async fn connected(store: &Store) {
    let warm_up = [Check {
        policy: Arc::from("warm-up"),
        key: KeyHash([0; 16]),
        quota: plenty(),
        cost: 1,
    }];
    let started = Instant::now();
    while store.check(&warm_up).await.is_err() {
        assert!(
            started.elapsed() < CLUSTER_GUARD,
            "the store never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < CLUSTER_GUARD, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ten probes on a fresh client, alternating instances, admit exactly the
/// burst of five. Polled: right after a fault an instance may still be
/// probing the cluster.
async fn assert_limit_holds(what: &str, services: [&Service; 2]) {
    let started = Instant::now();
    for attempt in 0.. {
        let client = format!("probe-{what}-{attempt}");
        let mut statuses = Vec::new();
        for i in 0..10 {
            statuses.push(status(services[i % 2], &client).await.as_u16());
        }
        let admitted = statuses.iter().filter(|&&s| s == 200).count();
        let refused = statuses.iter().filter(|&&s| s == 429).count();
        if admitted == 5 && refused == 5 {
            return;
        }
        assert!(
            started.elapsed() < CLUSTER_GUARD,
            "{what}: the shared limit did not hold: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_over_the_primaries_and_instances_share_one_limit_with_acl_users() {
    let Some(cluster) = RedisCluster::start_with_acl("cluster_spread_and_share") else {
        return;
    };
    // Node URLs carry the limiter's ACL user and password; that user may
    // only run the script on `rl:*` and read the slot map.
    let urls = cluster.urls();
    assert!(urls[0].contains("limiter:limiter-secret@"), "{urls:?}");
    let one = builder().connect_cluster(&urls).unwrap();
    let two = builder().connect_cluster(&urls).unwrap();
    connected(&one).await;
    connected(&two).await;
    let (reloads, failures) = (one.stats().script_reloads, one.stats().redis_failures);
    let services = [
        service(&one, StoreFailure::Closed, "probe", five_per_hour()),
        service(&two, StoreFailure::Closed, "probe", five_per_hour()),
    ];

    // One request each for 300 clients, one after the other.
    for client in 0..300 {
        let status = status(&services[0], &format!("client-{client}")).await;
        assert_eq!(status, StatusCode::OK, "client {client}");
    }
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let sizes: Vec<usize> = primaries
        .iter()
        .map(|node| cluster.count_keys(node.port, "rl:*:probe"))
        .collect();
    println!("keys per primary: {sizes:?}");
    assert!(sizes.iter().all(|&size| size > 0), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 300, "{sizes:?}");
    // Each key is where the cluster routes it.
    for client in ["client-0", "client-1", "client-2", "client-299"] {
        let key = redis_key(&one, "probe", client);
        let port = cluster.primary_of(&key);
        let exists: i64 = cluster.command(port, &["EXISTS", &key]);
        assert_eq!(exists, 1, "{key} on {port}");
    }
    // Each primary lacked the script once (EVALSHA, NOSCRIPT, EVAL): one
    // of them for the warm-up's key already.
    assert_eq!(one.stats().script_reloads - reloads, 2, "{:?}", one.stats());
    assert_eq!(one.stats().redis_failures, failures, "{:?}", one.stats());

    // Two instances, one limit, for clients on every primary.
    for client in 0..20 {
        let client = format!("shared-{client}");
        let mut admitted = 0;
        for i in 0..10 {
            if status(&services[i % 2], &client).await == StatusCode::OK {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5, "{client}");
    }
    assert_eq!(one.stats().redis_failures, failures, "{:?}", one.stats());
}

/// What the steady load of one instance saw.
#[derive(Default)]
struct Seen {
    longest_ns: AtomicU64,
    decided: AtomicU64,
    unchecked: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
}

impl Seen {
    fn load(&self) -> [u64; 4] {
        [
            self.decided.load(Ordering::Relaxed),
            self.unchecked.load(Ordering::Relaxed),
            self.unavailable.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

/// Steady load through `service` over 60 clients (so every primary is
/// hit), until `stop`.
fn spawn_load(
    name: &'static str,
    service: Service,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..3)
        .map(|task| {
            let (service, seen, stop) = (service.clone(), seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let client = format!("load-{name}-{task}-{}", n % 20);
                    let started = Instant::now();
                    let response = service.clone().oneshot(request(&client)).await.unwrap();
                    let took = started.elapsed().as_nanos() as u64;
                    seen.longest_ns.fetch_max(took, Ordering::Relaxed);
                    let counter = match response.status() {
                        StatusCode::OK if response.headers().contains_key("ratelimit") => {
                            &seen.decided
                        }
                        StatusCode::OK => &seen.unchecked,
                        StatusCode::SERVICE_UNAVAILABLE => &seen.unavailable,
                        _ => &seen.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_load_fails_over_with_the_policy_held_and_the_limit_back() {
    let Some(mut cluster) = RedisCluster::start("cluster_failover") else {
        return;
    };
    let urls = cluster.urls();
    let open = builder().connect_cluster(&urls).unwrap();
    let closed = builder().connect_cluster(&urls).unwrap();
    // The measuring instance: no deny cache, so that every request asks the
    // cluster what it holds.
    let measuring = builder()
        .deny_cache_max_keys(0)
        .connect_cluster(&urls)
        .unwrap();
    for store in [&open, &closed, &measuring] {
        connected(store).await;
    }
    let probes = [
        service(&open, StoreFailure::Closed, "probe", five_per_hour()),
        service(&closed, StoreFailure::Closed, "probe", five_per_hour()),
    ];
    let measure = service(&measuring, StoreFailure::Closed, "probe", five_per_hour());
    assert_limit_holds("before", [&probes[0], &probes[1]]).await;

    // 60 clients spend their whole burst: their state is on every primary.
    let exhausted: Vec<String> = (0..60).map(|client| format!("spent-{client}")).collect();
    for client in &exhausted {
        for _ in 0..5 {
            assert_eq!(status(&measure, client).await, StatusCode::OK, "{client}");
        }
    }
    let victim = cluster.primary_of(&redis_key(&measuring, "probe", &exhausted[0]));
    let on_victim: Vec<bool> = exhausted
        .iter()
        .map(|client| cluster.primary_of(&redis_key(&measuring, "probe", client)) == victim)
        .collect();
    let victim_id = cluster
        .nodes()
        .into_iter()
        .find(|node| node.port == victim)
        .unwrap()
        .id;
    let replica = cluster
        .nodes()
        .into_iter()
        .find(|node| node.primary_id.as_deref() == Some(victim_id.as_str()))
        .expect("the victim has a replica")
        .port;

    // Steady load through a fail-open and a fail-closed instance.
    let stop = Arc::new(AtomicBool::new(false));
    let seen_open = Arc::new(Seen::default());
    let seen_closed = Arc::new(Seen::default());
    let mut load = spawn_load(
        "open",
        service(&open, StoreFailure::Open, "load", plenty()),
        seen_open.clone(),
        stop.clone(),
    );
    load.extend(spawn_load(
        "closed",
        service(&closed, StoreFailure::Closed, "load", plenty()),
        seen_closed.clone(),
        stop.clone(),
    ));
    wait_until("decisions by the cluster", || {
        seen_open.load()[0] > 20 && seen_closed.load()[0] > 20
    })
    .await;
    assert_eq!(seen_open.load()[1..], [0, 0, 0]);
    assert_eq!(seen_closed.load()[1..], [0, 0, 0]);

    // Kill the primary: its replica is promoted once the others see it
    // silent for `cluster-node-timeout`.
    let killed_at = Instant::now();
    cluster.kill(victim);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_until_ok();
        cluster
    })
    .await
    .unwrap();
    let promoted = cluster.primaries();
    assert!(
        promoted.iter().any(|node| node.port == replica),
        "{replica} was not promoted: {promoted:?}"
    );
    println!(
        "fail-over: cluster_state:ok again after {:?}",
        killed_at.elapsed()
    );
    // The load goes on until both instances decide through the cluster
    // again.
    let before = (seen_open.load()[0], seen_closed.load()[0]);
    wait_until("decisions by the promoted replica", || {
        !open.is_degraded()
            && !closed.is_degraded()
            && seen_open.load()[0] > before.0 + 50
            && seen_closed.load()[0] > before.1 + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // Through the fail-over: the fault was felt, each policy held, no
    // request hung.
    for (name, seen, store, failure) in [
        ("open", &seen_open, &open, StoreFailure::Open),
        ("closed", &seen_closed, &closed, StoreFailure::Closed),
    ] {
        let [decided, unchecked, unavailable, other] = seen.load();
        let longest = Duration::from_nanos(seen.longest_ns.load(Ordering::Relaxed));
        println!(
            "fail-over, {name}: decided {decided}, unchecked {unchecked}, 503 {unavailable}, \
             other {other}, longest {longest:?}, {:?}",
            store.stats()
        );
        assert!(
            store.stats().redis_failures > 0,
            "{name}: {:?}",
            store.stats()
        );
        assert!(
            longest <= TIMEOUT + SLACK,
            "{name}: a request waited {longest:?}"
        );
        assert_eq!(other, 0, "{name}");
        match failure {
            StoreFailure::Open => {
                assert_eq!(unavailable, 0, "{name} fails open");
                assert!(unchecked > 0, "{name} fails open");
            }
            _ => {
                assert_eq!(unchecked, 0, "{name} fails closed");
                assert!(unavailable > 0, "{name} fails closed");
            }
        }
    }

    // After it: the shared limit holds for new clients, ...
    assert_limit_holds("after", [&probes[0], &probes[1]]).await;
    // ... clients on the surviving primaries kept their state, and the
    // killed primary's clients lost at most what was not yet replicated
    // when it died: at most one burst each.
    let mut lost_on_victim = 0;
    let mut clients_on_victim = 0;
    for (client, &moved) in exhausted.iter().zip(&on_victim) {
        let mut admitted = 0;
        for _ in 0..5 {
            match status(&measure, client).await {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("{client}: {other} after the fail-over"),
            }
        }
        if moved {
            clients_on_victim += 1;
            lost_on_victim += admitted;
        } else {
            assert_eq!(admitted, 0, "{client} was on a surviving primary");
        }
    }
    assert!(clients_on_victim > 0);
    assert!(lost_on_victim <= 5 * clients_on_victim);
    println!(
        "fail-over: {lost_on_victim} admissions re-granted over {clients_on_victim} clients \
         whose state was on the killed primary (their whole burst spent just before the kill)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_keeps_its_limit_and_no_call_fails() {
    let Some(cluster) = RedisCluster::start("cluster_slot_migration") else {
        return;
    };
    let urls = cluster.urls();
    // No deny cache: every request of the load asks the cluster. A timeout
    // far above any redirection's cost: what this test checks is that the
    // move itself fails no call, not how fast a loaded machine answers (at
    // 500 ms, a CI run under load timed calls out during the move).
    let stores: Vec<Store> = (0..2)
        .map(|_| {
            builder()
                .timeout(Duration::from_secs(5))
                .deny_cache_max_keys(0)
                .connect_cluster(&urls)
                .unwrap()
        })
        .collect();
    for store in &stores {
        connected(store).await;
    }
    let failures: Vec<u64> = stores.iter().map(|s| s.stats().redis_failures).collect();
    let services: Vec<Service> = stores
        .iter()
        .map(|store| service(store, StoreFailure::Closed, "probe", five_per_hour()))
        .collect();
    let client = "migrating";
    let key = redis_key(&stores[0], "probe", client);
    let slot: i64 = cluster.command(cluster.live_ports()[0], &["CLUSTER", "KEYSLOT", &key]);
    let source_port = cluster.primary_of(&key);
    let primaries = cluster.primaries();
    let source = primaries.iter().find(|n| n.port == source_port).unwrap();
    let target = primaries.iter().find(|n| n.port != source_port).unwrap();

    // Load on the one key, from both instances.
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let load: Vec<_> = services
        .iter()
        .flat_map(|service| (0..2).map(move |_| service.clone()))
        .map(|service| {
            let (stop, counts) = (stop.clone(), counts.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let response = service.clone().oneshot(request(client)).await.unwrap();
                    let index = match response.status() {
                        StatusCode::OK => 0,
                        StatusCode::TOO_MANY_REQUESTS => 1,
                        _ => {
                            let refused =
                                response.extensions().get::<tower_harden::error::Refused>();
                            let chain: Vec<String> = refused
                                .map(|refused| refused.chain().map(|e| format!("{e:?}")).collect())
                                .unwrap_or_default();
                            eprintln!("failed during the move: {chain:?}");
                            2
                        }
                    };
                    counts[index].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    let refused = || counts[1].load(Ordering::Relaxed);
    wait_until("the burst spent", || refused() > 20).await;

    // The move, step by step, with load between the steps.
    let slot = slot.to_string();
    let pause = || tokio::time::sleep(Duration::from_millis(300));
    let command = |port: u16, args: &[&str]| cluster.command::<redis::Value>(port, args);
    command(
        target.port,
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source.id],
    );
    command(
        source.port,
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target.id],
    );
    let before = refused();
    pause().await;
    wait_until("requests while MIGRATING", || refused() > before + 20).await;
    let keys: Vec<String> =
        cluster.command(source.port, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    assert!(keys.contains(&key), "{keys:?}");
    let mut migrate = vec!["MIGRATE", "127.0.0.1"];
    let target_port = target.port.to_string();
    migrate.extend([target_port.as_str(), "", "0", "5000", "KEYS"]);
    migrate.extend(keys.iter().map(String::as_str));
    command(source.port, &migrate);
    // The key is on the target, the slot still the source's: ASK.
    let before = refused();
    wait_until("requests answered through ASK", || refused() > before + 20).await;
    // The target first, then the source (the order Redis documents: the
    // source must not redirect to a target that does not own the slot yet),
    // then the third primary.
    let third = primaries
        .iter()
        .map(|node| node.port)
        .find(|&port| port != target.port && port != source.port)
        .expect("a third primary");
    let order = [target.port, source.port, third];
    for port in order {
        command(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target.id]);
    }
    // The slot is the target's: MOVED, then the new slot map.
    let before = refused();
    wait_until("requests answered after the move", || {
        refused() > before + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let exists: i64 = cluster.command(target.port, &["EXISTS", &key]);
    assert_eq!(exists, 1, "the state moved with the slot");
    assert_eq!(cluster.primary_of(&key), target.port);
    let [admitted, refused, failed] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "slot {slot} moved {} -> {} under load: admitted {admitted}, refused {refused}, \
         failed {failed}; {:?} {:?}",
        source.port,
        target.port,
        stores[0].stats(),
        stores[1].stats()
    );
    assert_eq!(admitted, 5, "the burst, once, across the move");
    assert_eq!(failed, 0);
    for (store, before) in stores.iter().zip(failures) {
        assert_eq!(store.stats().redis_failures, before, "{:?}", store.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_built_before_its_cluster_exists_applies_its_policy_then_decides() {
    let test = "cluster_started_late";
    if !RedisCluster::available(test) {
        return;
    }
    let ports = free_ports();
    let urls: Vec<String> = ports
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let store = builder().connect_cluster(&urls).unwrap();
    let service = service(&store, StoreFailure::Closed, "probe", five_per_hour());
    // Nothing listens yet: the failure policy, at once or within the
    // timeout.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            status(&service, "early").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(started.elapsed() <= TIMEOUT + SLACK);
    }
    let _cluster = tokio::task::spawn_blocking(move || RedisCluster::start_on(test, ports))
        .await
        .unwrap()
        .expect("the tools were found above");
    // The same store finds the cluster by itself.
    let started = Instant::now();
    while status(&service, "late").await != StatusCode::OK {
        assert!(
            started.elapsed() < CLUSTER_GUARD,
            "the store never reached the cluster: {:?}",
            store.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_limit_holds("started late", [&service, &service]).await;
}
