//! The in-flight limit over TCP: a saturated backend answers at once with
//! 503 `overloaded` problems, the cap holds across HTTP/2 streams, reserved
//! routes are still answered, a slot is held until the body ends, a request
//! waiting on its client for body bytes holds none; and the adaptive limit
//! on simulated time.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::sync::{mpsc, Semaphore};
use tower::{Service, ServiceExt};
use tower_harden::overload::{
    AdaptiveLimit, InFlightLimitLayer, InFlightRequestBody, Limit, OverloadStats,
};

/// A route that waits until the test adds permits to `gate`, counting the
/// requests that reached it.
fn blocking_app(gate: Arc<Semaphore>, reached: Arc<AtomicUsize>) -> Router {
    let wait = move || {
        let gate = gate.clone();
        let reached = reached.clone();
        async move {
            reached.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            "done"
        }
    };
    Router::new()
        .route("/slow", get(wait.clone()))
        .route("/", get(wait))
        .route("/healthz", get(|| async { "ok" }))
}

async fn wait_for(stats: &OverloadStats, in_flight: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.in_flight() != in_flight {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the requests never got in flight");
}

#[tokio::test]
async fn a_saturated_backend_gets_503_overloaded_problems_with_retry_after_at_once() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = InFlightLimitLayer::fixed(2)
        .retry_after(Duration::from_millis(2500))
        .queue(0, Duration::ZERO);
    let stats = limit.stats();
    let addr =
        common::spawn_axum(blocking_app(gate.clone(), Default::default()).layer(limit)).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(common::get(addr, "/slow")))
        .collect();
    wait_for(&stats, 2).await;

    // The backend answers nothing while its two slots are held: the third
    // request is answered anyway, so it was not queued (no queue here).
    let shed = common::get(addr, "/slow").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("retry-after"), Some("3"));
    assert_eq!(
        shed.header("content-type"),
        Some("application/problem+json")
    );
    let problem = shed.json();
    assert!(problem["type"].as_str().unwrap().ends_with("#overloaded"));
    assert_eq!(problem["retry_after"], 3);
    assert_eq!(stats.shed(), 1);

    gate.add_permits(2);
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    wait_for(&stats, 0).await;
    gate.add_permits(1);
    assert_eq!(common::get(addr, "/slow").await.status, 200);
}

#[tokio::test]
async fn a_queued_request_gets_the_next_free_slot_and_the_queue_sheds_at_its_bounds() {
    let gate = Arc::new(Semaphore::new(0));
    // One slot; a queue of one that waits up to an hour, so that only a
    // freed slot decides what happens to the waiter.
    let limit = InFlightLimitLayer::fixed(1).queue(1, Duration::from_secs(3600));
    let stats = limit.stats();
    let addr =
        common::spawn_axum(blocking_app(gate.clone(), Default::default()).layer(limit)).await;
    let held = tokio::spawn(common::get(addr, "/slow"));
    wait_for(&stats, 1).await;
    let waiting = tokio::spawn(common::get(addr, "/slow"));
    while stats.queued() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The queue is full: the next request is shed at once.
    let shed = common::get(addr, "/slow").await;
    assert_eq!(shed.status, 503);
    assert!(shed.json()["type"]
        .as_str()
        .unwrap()
        .ends_with("#overloaded"));
    assert_eq!(stats.shed(), 1);
    assert_eq!(stats.queued(), 1);
    // The held request ends: its slot goes to the waiter, which is served.
    gate.add_permits(2);
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!((stats.admitted(), stats.shed(), stats.queued()), (2, 1, 0));
    wait_for(&stats, 0).await;
}

#[tokio::test]
async fn a_queued_request_is_shed_at_the_queue_hold() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = InFlightLimitLayer::fixed(1)
        .queue(8, Duration::from_millis(20))
        .queue_hold(Duration::from_millis(50));
    let stats = limit.stats();
    let addr =
        common::spawn_axum(blocking_app(gate.clone(), Default::default()).layer(limit)).await;
    let held = tokio::spawn(common::get(addr, "/slow"));
    wait_for(&stats, 1).await;
    // The slot is never freed while it waits: the hold's end answers it.
    let shed = common::get(addr, "/slow").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!((stats.shed(), stats.queued()), (1, 0));
    gate.add_permits(1);
    assert_eq!(held.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_reserved_route_is_answered_while_the_rest_is_shed() {
    let gate = Arc::new(Semaphore::new(0));
    // 4 slots: 1 kept for /healthz, 3 for everything else.
    let limit = InFlightLimitLayer::fixed(4).reserve("/healthz", 0.25);
    let stats = limit.stats();
    let addr =
        common::spawn_axum(blocking_app(gate.clone(), Default::default()).layer(limit)).await;
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(common::get(addr, "/slow")))
        .collect();
    wait_for(&stats, 3).await;
    assert_eq!(common::get(addr, "/").await.status, 503);
    for _ in 0..3 {
        assert_eq!(common::get(addr, "/healthz").await.status, 200);
    }
    gate.add_permits(3);
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn a_slot_is_held_until_the_response_body_ends() {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.clone();
                async move {
                    let rx = rx.lock().await.take().unwrap();
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (chunk, rx))
                    });
                    Body::from_stream(stream)
                }
            }),
        )
        .route("/", get(|| async { "ok" }));
    let limit = InFlightLimitLayer::fixed(1);
    let stats = limit.stats();
    let addr = common::spawn_axum(app.layer(limit)).await;

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"first"))).await.unwrap();
    // The frame reached the client, so the body has been polled again: it
    // waits on the handler, not on the client, and holds its slot.
    let mut seen = Vec::new();
    while !seen.windows(5).any(|window| window == b"first") {
        let mut buffer = [0u8; 1024];
        use tokio::io::AsyncReadExt;
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the connection closed before the first frame");
        seen.extend_from_slice(&buffer[..read]);
    }
    wait_for(&stats, 1).await;
    // The head went out, the body has not ended: the slot is still held.
    assert_eq!(common::get(addr, "/").await.status, 503);
    drop(tx);
    use tokio::io::AsyncReadExt;
    stream.read_to_end(&mut seen).await.unwrap();
    assert!(seen.starts_with(b"HTTP/1.1 200 OK"), "{seen:?}");
    wait_for(&stats, 0).await;
    assert_eq!(common::get(addr, "/").await.status, 200);
}

/// A client that stops reading a large response holds no slot: from a frame
/// it has not taken to the next poll, the server waits on the client (the
/// connection's own defences, the minimum response rate, deal with it).
#[tokio::test]
async fn a_response_the_client_does_not_read_holds_no_slot() {
    const CHUNKS: usize = 1024;
    const CHUNK: usize = 64 * 1024;
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let app = Router::new()
        .route(
            "/download",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let chunks = futures_util::stream::iter(
                    (0..CHUNKS).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; CHUNK]))),
                );
                Body::from_stream(chunks)
            }),
        )
        .route("/", get(|| async { "ok" }));
    let limit = InFlightLimitLayer::fixed(1);
    let stats = limit.stats();
    let addr = common::spawn_axum(app.layer(limit)).await;

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /download HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // 64 MiB cannot fit in the sockets' buffers: the server stops polling
    // the body with a frame the client has not taken, and lends the slot.
    tokio::time::timeout(Duration::from_secs(10), async {
        while reached.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the download never started");
    wait_for(&stats, 0).await;
    assert_eq!(common::get(addr, "/").await.status, 200);
    // Read again, the download completes whole, and the count ends at 0.
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await.unwrap();
    assert!(received.starts_with(b"HTTP/1.1 200 OK"));
    assert!(received.len() > CHUNKS * CHUNK, "{}", received.len());
    wait_for(&stats, 0).await;
}

#[tokio::test]
async fn the_cap_holds_across_http2_streams_on_one_connection() {
    let gate = Arc::new(Semaphore::new(0));
    let reached = Arc::new(AtomicUsize::new(0));
    let limit = InFlightLimitLayer::fixed(3);
    let stats = limit.stats();
    let app = blocking_app(gate.clone(), reached.clone()).layer(limit);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_harden::serve(listener, app);
    tokio::spawn(async move { server.await.unwrap() });

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = Request::get(format!("http://{addr}/slow"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    wait_for(&stats, 3).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.shed() < 7 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("seven streams were not shed");
    gate.add_permits(10);
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().0);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 3);
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let shed = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((ok, shed), (3, 7));
}

#[test]
fn the_preset_limits_requests_in_flight_by_default() {
    let harden = tower_harden::Harden::new();
    assert_eq!(harden.overload_stats().limit(), 20);
    let fixed = tower_harden::HardenConfig::from_toml("[overload]\nfixed_limit = 64\n").unwrap();
    let harden = tower_harden::Harden::from_config(&fixed).unwrap();
    assert_eq!(harden.overload_stats().limit(), 64);
    let bad = tower_harden::HardenConfig::from_toml(
        "[overload]\nmin_limit = 50\nmax_limit = 10\n[[overload.reserved]]\npath = \"healthz\"\nshare = 0.9\n",
    )
    .unwrap();
    let errors = tower_harden::Harden::from_config(&bad).unwrap_err();
    let text = errors.to_string();
    for key in [
        "overload.max_limit",
        "overload.initial_limit",
        "overload.reserved[0].path",
        "overload.reserved[0].share",
    ] {
        assert!(text.contains(key), "{text}");
    }
}

/// What clients did against [`simulated_database`] behind a limit.
struct SimulatedRun {
    /// The latencies of the successes, sorted.
    latencies: Vec<Duration>,
    /// Refusals answered at once (no time spent in the limit's queue).
    refused_at_once: u64,
}

impl SimulatedRun {
    fn goodput(&self, seconds: u64) -> f64 {
        self.latencies.len() as f64 / seconds as f64
    }

    fn p99(&self) -> Duration {
        self.latencies[self.latencies.len() * 99 / 100]
    }
}

/// A simulated database on simulated time, 16 connections, 20 ms a query
/// (800 queries/s), behind `limit`, driven for `seconds` by `clients` that
/// send again at once whatever the answer. A refusal answered at once is
/// followed by `round_trip` before the next try: on simulated time a
/// client resending at once would spin without time moving.
async fn simulated_database(
    limit: InFlightLimitLayer,
    clients: usize,
    seconds: u64,
    round_trip: Duration,
) -> SimulatedRun {
    let pool = Arc::new(Semaphore::new(16));
    let backend = tower::service_fn(move |_request: Request<InFlightRequestBody<Body>>| {
        let pool = pool.clone();
        async move {
            let _connection = pool.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    });
    let service = tower::ServiceBuilder::new().layer(limit).service(backend);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused_at_once = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let mut service = service.clone();
            let latencies = latencies.clone();
            let refused_at_once = refused_at_once.clone();
            tokio::spawn(async move {
                while tokio::time::Instant::now() < end {
                    let start = tokio::time::Instant::now();
                    let response = service
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::new(Body::empty()))
                        .await
                        .unwrap();
                    let ok = response.status() == StatusCode::OK;
                    response.into_body().collect().await.unwrap();
                    if ok {
                        latencies.lock().unwrap().push(start.elapsed());
                    } else if start.elapsed().is_zero() {
                        refused_at_once.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(round_trip).await;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    SimulatedRun {
        latencies,
        refused_at_once: refused_at_once.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// The simulated database at 4x its capacity (64 clients). The adaptive
/// limit settles near the capacity: what is admitted waits little, the
/// rest is shed.
#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_finds_the_capacity_of_a_simulated_database() {
    let limit = InFlightLimitLayer::with_limit(Limit::Adaptive(AdaptiveLimit::default()));
    let stats = limit.stats();
    let run = simulated_database(limit, 64, 20, Duration::from_millis(5)).await;
    let limit = stats.limit();
    assert!((16..=40).contains(&limit), "limit {limit}");
    assert!(stats.shed() > 0);
    // Goodput: at least 90 % of the pool's 800 queries/s.
    let goodput = run.goodput(20);
    assert!(goodput >= 720.0, "goodput {goodput}/s");
    // The latency of what is admitted: at most 3x the 20 ms of one query.
    let p99 = run.p99();
    assert!(p99 <= Duration::from_millis(60), "p99 {p99:?}");
}

/// The same database at 16x its capacity: 256 clients that send again at
/// once whatever the answer, with the default queue. A refused client has
/// waited for its 503 (the hold) and so sends about ten times a second,
/// not in a busy loop; goodput stays near the capacity and what is
/// admitted waits at most the queue's timeout more.
#[tokio::test(start_paused = true)]
async fn at_16x_with_clients_that_resend_at_once_the_queue_paces_their_refusals() {
    let limit = InFlightLimitLayer::new();
    let stats = limit.stats();
    let seconds = 20;
    let run = simulated_database(limit, 256, seconds, Duration::from_millis(1)).await;
    let goodput = run.goodput(seconds);
    assert!(goodput >= 720.0, "goodput {goodput}/s");
    let p99 = run.p99();
    assert!(p99 <= Duration::from_millis(60), "p99 {p99:?}");
    // Each client is refused at most once per hold (100 ms): at most 2,560
    // refusals a second, where an instant 503 and a 1 ms round trip would
    // allow 256,000.
    let refused_per_second = stats.shed() as f64 / seconds as f64;
    assert!(
        refused_per_second <= 2_560.0,
        "{refused_per_second} refusals/s"
    );
    assert!(stats.shed() > 0);
    assert_eq!(
        run.refused_at_once, 0,
        "the queue (256) holds every client the limit does not"
    );
}

/// `GET path` with an API key, on its own connection.
async fn get_as(addr: std::net::SocketAddr, path: &str, api_key: &str) -> common::RawResponse {
    common::raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nx-api-key: {api_key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share_of_slots() {
    let config = tower_harden::HardenConfig::from_toml(
        r#"
        [overload]
        per_key_limit = 2
        [[rate_limit.policies]]
        name = "per-api-key"
        key = "header:x-api-key"
        quota = 1000000
        period = "1s"
        burst = 1000000
        "#,
    )
    .unwrap();
    let harden = tower_harden::Harden::from_config(&config).unwrap();
    let stats = harden.overload_stats();
    let gate = Arc::new(Semaphore::new(0));
    let app = blocking_app(gate.clone(), Default::default()).layer(harden.into_layer());
    let addr = common::spawn_axum(app).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_as(addr, "/slow", "greedy").await }))
        .collect();
    wait_for(&stats, 2).await;
    // The greedy client's third is refused at once, with no slot taken.
    let refused = get_as(addr, "/slow", "greedy").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let problem = refused.json();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("too-many-in-flight"),
        "{problem}"
    );
    assert_eq!(stats.in_flight(), 2);
    // Another client is served.
    assert_eq!(get_as(addr, "/healthz", "polite").await.status, 200);
    gate.add_permits(2);
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    // Its slots are given back when its responses end.
    wait_for(&stats, 0).await;
    let again: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get_as(addr, "/slow", "greedy").await }))
        .collect();
    wait_for(&stats, 2).await;
    gate.add_permits(2);
    for request in again {
        assert_eq!(request.await.unwrap().status, 200);
    }
}

#[test]
fn a_per_key_limit_needs_a_policy_and_a_positive_value() {
    let bad = tower_harden::HardenConfig::from_toml(
        "[overload]\nper_key_limit = 0\n[rate_limit]\npolicies = []\n",
    )
    .unwrap();
    let text = tower_harden::Harden::from_config(&bad)
        .unwrap_err()
        .to_string();
    assert!(text.contains("overload.per_key_limit"), "{text}");
    assert!(text.contains("must be greater than zero"), "{text}");
    assert!(text.contains("needs a rate-limit policy"), "{text}");
}

#[test]
fn the_queue_is_configured_and_its_timeout_bounded() {
    let config = tower_harden::HardenConfig::from_toml(
        "[overload]\nfixed_limit = 1\nqueue_limit = 3\nqueue_timeout = \"25ms\"\nqueue_hold = \"1s\"\n",
    )
    .unwrap();
    assert_eq!(config.overload.queue_limit, 3);
    assert_eq!(config.overload.queue_timeout, Duration::from_millis(25));
    assert_eq!(config.overload.queue_hold, Duration::from_secs(1));
    assert!(tower_harden::Harden::from_config(&config).is_ok());
    let defaults = tower_harden::HardenConfig::default();
    assert_eq!(
        (
            defaults.overload.queue_limit,
            defaults.overload.queue_timeout
        ),
        (
            tower_harden::overload::DEFAULT_QUEUE_LIMIT,
            tower_harden::overload::DEFAULT_QUEUE_TIMEOUT
        )
    );
    let long =
        tower_harden::HardenConfig::from_toml("[overload]\nqueue_timeout = \"2m\"\n").unwrap();
    let text = tower_harden::Harden::from_config(&long)
        .unwrap_err()
        .to_string();
    assert!(text.contains("overload.queue_timeout"), "{text}");
    let short_hold = tower_harden::HardenConfig::from_toml(
        "[overload]\nqueue_timeout = \"50ms\"\nqueue_hold = \"20ms\"\n",
    )
    .unwrap();
    let text = tower_harden::Harden::from_config(&short_hold)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("must be at least overload.queue_timeout"),
        "{text}"
    );
}

/// A request body the test sends chunk by chunk, and its sender.
fn client_body() -> (mpsc::Sender<Result<Bytes, Infallible>>, Body) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (tx, Body::from_stream(stream))
}

type Upload = Request<InFlightRequestBody<Body>>;

/// Reads the whole body, then (on `/held`) waits for `gate`; answers the
/// body's length.
fn uploads_app(
    gate: Arc<Semaphore>,
) -> impl tower::Service<Upload, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send {
    tower::service_fn(move |request: Upload| {
        let gate = gate.clone();
        async move {
            let held = request.uri().path() == "/held";
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if held {
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, Infallible>(Response::new(Body::from(body.len().to_string())))
        }
    })
}

/// Waits until `admitted` requests were admitted and `in_flight` are in
/// flight.
async fn wait_for_admitted(stats: &OverloadStats, admitted: u64, in_flight: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while stats.admitted() != admitted || stats.in_flight() != in_flight {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "admitted {} in flight {}, not {admitted} and {in_flight}",
            stats.admitted(),
            stats.in_flight()
        )
    });
}

async fn status_and_body<S>(service: S, request: Request<Body>) -> (StatusCode, String)
where
    S: tower::Service<Request<Body>, Error = Infallible>,
    S::Response:
        Into<Response<tower_harden::error::ProblemOr<tower_harden::overload::InFlightBody<Body>>>>,
{
    let response = service.oneshot(request).await.unwrap().into();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn requests_waiting_on_their_clients_for_body_bytes_hold_no_slot() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = InFlightLimitLayer::fixed(2);
    let stats = limit.stats();
    let service = tower::ServiceBuilder::new()
        .layer(limit)
        .service(uploads_app(gate.clone()));

    // Two uploads whose clients send one byte and stall.
    let mut senders = Vec::new();
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let (tx, body) = client_body();
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        senders.push(tx);
        let request = Request::post("/held").body(body).unwrap();
        uploads.push(tokio::spawn(status_and_body(service.clone(), request)));
    }
    // Both were admitted, and both gave their slots back while waiting.
    wait_for_admitted(&stats, 2, 0).await;

    // So a third request is admitted and answered, though the limit is 2.
    let request = Request::get("/").body(Body::empty()).unwrap();
    let (status, body) = status_and_body(service.clone(), request).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "0"));
    assert_eq!(stats.shed(), 0);
    assert!(uploads.iter().all(|upload| !upload.is_finished()));

    // The clients resume: the requests are the service's again and take
    // their slots back (the handlers now wait on the gate), so the limit is
    // full and a fourth request is shed.
    for tx in senders {
        tx.send(Ok(Bytes::from_static(b"bc"))).await.unwrap();
    }
    wait_for_admitted(&stats, 3, 2).await;
    let request = Request::get("/").body(Body::empty()).unwrap();
    let (status, _) = status_and_body(service.clone(), request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stats.shed(), 1);

    gate.add_permits(2);
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "3"));
    }
    assert_eq!(stats.in_flight(), 0);
}

/// Requests that hold both slots of a limit of 2 (their handlers wait on
/// `gate`, their bodies sent whole): proof that the count is exactly 0
/// before they came (one slot leaked would shed the second; one released
/// twice would wrap the count and shed both).
async fn both_slots_can_be_taken<S>(service: &S, stats: &OverloadStats, gate: &Semaphore)
where
    S: tower::Service<Request<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Into<Response<tower_harden::error::ProblemOr<tower_harden::overload::InFlightBody<Body>>>>
        + Send,
{
    let admitted = stats.admitted();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let request = Request::post("/held").body(Body::from("xy")).unwrap();
            tokio::spawn(status_and_body(service.clone(), request))
        })
        .collect();
    wait_for_admitted(stats, admitted + 2, 2).await;
    gate.add_permits(2);
    for request in held {
        assert_eq!(request.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test]
async fn a_stalled_request_dropped_gives_its_slot_back_exactly_once() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = InFlightLimitLayer::fixed(2);
    let stats = limit.stats();
    let service = tower::ServiceBuilder::new()
        .layer(limit)
        .service(uploads_app(gate.clone()));
    let (tx, body) = client_body();
    tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
    let request = Request::post("/held").body(body).unwrap();
    let upload = tokio::spawn(status_and_body(service.clone(), request));
    wait_for_admitted(&stats, 1, 0).await;
    // The client goes away (the connection closes): the request, its body
    // and its slot are dropped while the body was waiting.
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    assert_eq!(stats.in_flight(), 0);
    both_slots_can_be_taken(&service, &stats, &gate).await;
    drop(tx);
}

#[tokio::test]
async fn a_handler_that_stops_reading_or_never_reads_holds_its_slot_to_the_end() {
    let gate = Arc::new(Semaphore::new(0));
    let stop_reading = Arc::new(tokio::sync::Notify::new());
    let limit = InFlightLimitLayer::fixed(2);
    let stats = limit.stats();
    let app = {
        let gate = gate.clone();
        let stop_reading = stop_reading.clone();
        tower::service_fn(move |request: Upload| {
            let gate = gate.clone();
            let stop_reading = stop_reading.clone();
            async move {
                let path = request.uri().path().to_owned();
                let mut body = request.into_body();
                match path.as_str() {
                    // Reads until told to stop (a handler's own timeout),
                    // then drops the body while it waits on the client.
                    "/gives-up" => {
                        tokio::select! {
                            _ = async { while body.frame().await.is_some() {} } => {}
                            _ = stop_reading.notified() => {}
                        }
                        drop(body);
                    }
                    // Answers without reading the body.
                    "/ignores" => {}
                    _ => {
                        body.collect().await.unwrap();
                    }
                }
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(Body::from(path)))
            }
        })
    };
    let service = tower::ServiceBuilder::new().layer(limit).service(app);

    let (tx, body) = client_body();
    tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
    let request = Request::post("/gives-up").body(body).unwrap();
    let gives_up = tokio::spawn(status_and_body(service.clone(), request));
    wait_for_admitted(&stats, 1, 0).await;
    // The handler gives up on the body: the request is the service's again.
    stop_reading.notify_one();
    wait_for_admitted(&stats, 1, 1).await;

    let (tx_ignored, body) = client_body();
    let request = Request::post("/ignores").body(body).unwrap();
    let ignores = tokio::spawn(status_and_body(service.clone(), request));
    // A body never polled never waited: its slot is held.
    wait_for_admitted(&stats, 2, 2).await;
    let request = Request::get("/").body(Body::empty()).unwrap();
    let (status, _) = status_and_body(service.clone(), request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    gate.add_permits(2);
    assert_eq!(
        gives_up.await.unwrap(),
        (StatusCode::OK, "/gives-up".to_owned())
    );
    assert_eq!(
        ignores.await.unwrap(),
        (StatusCode::OK, "/ignores".to_owned())
    );
    assert_eq!(stats.in_flight(), 0);
    drop((tx, tx_ignored));
    // The clients send on, or close: nothing is counted again.
    both_slots_can_be_taken(&service, &stats, &gate).await;
}

/// The attack that found it (`slowhttptest -B`), over TCP through `serve`
/// and the whole preset (its deadline reads the body too): clients that
/// send a head and a byte of their body, then stall, do not fill the limit.
#[tokio::test]
async fn slow_uploads_over_tcp_do_not_shed_other_clients() {
    use tokio::io::AsyncWriteExt;
    let config = tower_harden::HardenConfig::from_toml(
        r#"
        [overload]
        fixed_limit = 2
        # Out of the way (hang guards, not thresholds): the request is
        # answered by the handler, not by the deadline's 408.
        [deadline]
        request = "300s"
        body_idle = "300s"
        min_body_rate_grace = "300s"
        [[rate_limit.policies]]
        name = "per-ip"
        key = "client_ip"
        quota = 1000000000
        period = "1s"
        burst = 1000000000
        "#,
    )
    .unwrap();
    let harden = tower_harden::Harden::from_config(&config).unwrap();
    let stats = harden.overload_stats();
    let app = Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .route("/", get(|| async { "ok" }))
        .layer(harden.into_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_harden::serve(listener, app);
    tokio::spawn(async move { server.await.unwrap() });

    let mut uploads = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\na")
            .await
            .unwrap();
        uploads.push(stream);
    }
    wait_for_admitted(&stats, 2, 0).await;
    for _ in 0..3 {
        assert_eq!(common::get(addr, "/").await.status, 200);
    }
    assert_eq!(stats.shed(), 0);

    for stream in &mut uploads {
        stream.write_all(b"bcd").await.unwrap();
    }
    for mut stream in uploads {
        let response = common::read_response(&mut stream).await.unwrap().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"abcd"[..])
        );
    }
    wait_for(&stats, 0).await;
}

/// The per-key count includes the wait on the client (the documented
/// choice): a client's stalled upload holds back that client only.
#[tokio::test]
async fn a_stalled_upload_still_counts_against_its_own_clients_share() {
    use tokio::io::AsyncWriteExt;
    let config = tower_harden::HardenConfig::from_toml(
        r#"
        [overload]
        fixed_limit = 1
        per_key_limit = 1
        [deadline]
        request = "300s"
        body_idle = "300s"
        min_body_rate_grace = "300s"
        [[rate_limit.policies]]
        name = "per-api-key"
        key = "header:x-api-key"
        quota = 1000000
        period = "1s"
        burst = 1000000
        "#,
    )
    .unwrap();
    let harden = tower_harden::Harden::from_config(&config).unwrap();
    let stats = harden.overload_stats();
    let app = Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .route("/", get(|| async { "ok" }))
        .layer(harden.into_layer());
    let addr = common::spawn_axum(app).await;
    let mut upload = tokio::net::TcpStream::connect(addr).await.unwrap();
    upload
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nx-api-key: greedy\r\nContent-Length: 2\r\nConnection: close\r\n\r\na")
        .await
        .unwrap();
    wait_for_admitted(&stats, 1, 0).await;
    // The limit's one slot is free for anyone else...
    assert_eq!(get_as(addr, "/", "polite").await.status, 200);
    // ...but not for the client whose upload is pending.
    assert_eq!(get_as(addr, "/", "greedy").await.status, 429);
    upload.write_all(b"b").await.unwrap();
    let response = common::read_response(&mut upload).await.unwrap().unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"ab"[..])
    );
    wait_for(&stats, 0).await;
    assert_eq!(get_as(addr, "/", "greedy").await.status, 200);
}
