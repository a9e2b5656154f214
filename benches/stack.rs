//! The whole stack beside the stack a user would assemble by hand, in the
//! same run, logging on in both (one JSON subscriber writing to `io::sink`,
//! the example server's format):
//!
//! - `admitted/*`: one small `GET /` through (a) the bare axum router,
//!   (b) the `Harden` preset with its defaults, (c) the peer stack doing the
//!   nearest same job: tower-http `SetRequestId`, `TraceLayer` (span and
//!   response event at INFO, request id in the span), `PropagateRequestId`,
//!   `CatchPanicLayer`, `RequestBodyLimitLayer` (1 MiB), `TimeoutLayer`
//!   (10 s) and tower_governor (peer IP, 50/s burst 100). Each request comes
//!   from the next of 65,536 peer addresses (`ConnectInfo`), so per-IP
//!   quotas admit every one of them, as on a server with many clients.
//! - `admitted/d_peer_same_log`: the peer stack logging the same span and
//!   event fields as the preset (its line is about twice as long as
//!   tower-http's usual one); it tells the cost of the stack from the cost
//!   of the longer line.
//! - `admitted/b_harden_json_log` (feature `json-log`): the preset with
//!   the same line written by `tower_harden::telemetry::json_log` instead
//!   of tracing-subscriber's JSON formatter (`STACK_SUBSCRIBER=json-log`
//!   does the same for `STACK_PROFILE`).
//! - `admitted_no_log/*`: (a), (b), (c) with no subscriber: the layers'
//!   own cost.
//! - `refused_413/*`: a declared `Content-Length` over the limit.
//! - `refused_429/*`: one peer address whose quota is spent (both stacks
//!   with a quota of one an hour, so that none slips through).
//! - `threads/*`: requests per second of the preset (and the peer) on one
//!   and on two threads, each thread on its own current-thread runtime and
//!   its own peer addresses.
//!
//! `benches/README.md` says how to read the numbers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_governor::GovernorLayer;
use tower_harden::{Harden, HardenConfig};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Peer addresses the admitted requests cycle through: each comes back
/// every 65,536 requests, long after its bucket has refilled.
const PEERS: u32 = 1 << 16;

fn routes() -> Router {
    let router = Router::new().route("/", get(|| async { "ok" }));
    // Only where it is sent: a second route would change every other
    // profile's count (the router's lookup).
    match std::env::var("STACK_REQUEST").as_deref() {
        Ok("panic") => router.route("/panic", get(panics)),
        Ok("503" | "503-queued") => router.route("/hold", get(std::future::pending::<()>)),
        _ => router,
    }
}

/// `STACK_REQUEST=panic`: a panicking handler (a 500 from either stack).
async fn panics() -> &'static str {
    panic!("the handler panicked")
}

/// Turns the routes into services once, as `axum::serve` does
/// (`into_make_service`); without it a `Router` without state rebuilds each
/// route, layers included, on every request.
fn ready(router: Router) -> Router {
    router.with_state(())
}

fn harden() -> Router {
    ready(routes().layer(Harden::new().into_layer()))
}

/// The preset with a quota of one request an hour: once spent, every
/// request is refused (with the default 50/s, one in 20 ms would pass).
fn harden_spent_quota() -> Router {
    let mut config = HardenConfig::default();
    let policy = &mut config.rate_limit.policies[0];
    policy.quota = 1;
    policy.burst = 1;
    policy.period = Duration::from_secs(3600);
    ready(routes().layer(Harden::from_config(&config).unwrap().into_layer()))
}

/// The preset with one slot in flight, held by a request to `/hold` that
/// never ends: every other request is shed, at once (`queued` false: no
/// queue) or at the queue's hold (the defaults: it joins the queue, is not
/// served, and gets its 503 100 ms later).
fn harden_saturated(queued: bool) -> Router {
    let mut config = HardenConfig::default();
    config.overload.fixed_limit = Some(1);
    // The holder outlives the run, whose paused clock moves 100 ms a
    // queued request.
    config.deadline.request = Duration::from_secs(24 * 3600);
    if !queued {
        config.overload.queue_limit = 0;
    }
    ready(routes().layer(Harden::from_config(&config).unwrap().into_layer()))
}

/// The hand-built stack: the same limits as the preset's defaults.
fn peer() -> Router {
    peer_with_quota(Duration::from_millis(20), 100)
}

/// The hand-built stack around `trace`, its TraceLayer.
macro_rules! peer_stack {
    ($period:expr, $burst:expr, $trace:expr) => {{
        let governor = GovernorConfigBuilder::default()
            .period($period)
            .burst_size($burst)
            .key_extractor(PeerIpKeyExtractor)
            .finish()
            .unwrap();
        ready(
            routes().layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer($trace)
                    .layer(PropagateRequestIdLayer::x_request_id())
                    .layer(CatchPanicLayer::new())
                    .layer(RequestBodyLimitLayer::new(1024 * 1024))
                    // Inside the body limit: its 408 needs a body type with `Default`.
                    .layer(TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        Duration::from_secs(10),
                    ))
                    .layer(GovernorLayer::new(governor)),
            ),
        )
    }};
}

/// tower-http's usual trace: a span with the method, path and request id,
/// and its response event, both at INFO.
fn peer_with_quota(period: Duration, burst: u32) -> Router {
    peer_stack!(
        period,
        burst,
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request<Body>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    http.request.method = %request.method(),
                    url.path = request.uri().path(),
                    request_id,
                )
            })
            .on_response(DefaultOnResponse::new().level(Level::INFO))
    )
}

/// The preset's outcome event, written from tower-http's `on_response`.
fn log_same_outcome<B>(response: &Response<B>, latency: Duration, _span: &tracing::Span) {
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let client = response
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    tracing::info!(
        http.request.method = "GET",
        http.route = "/",
        url.path = "/",
        http.response.status_code = response.status().as_u16(),
        http.response.body.size = 2u64,
        latency_ms = latency.as_secs_f64() * 1000.0,
        client.address = client.as_deref().unwrap_or("10.0.0.1"),
        user_agent.original = "bench/1.0",
        request_id,
        span_id = "a8554d97c60bcd27",
        "request completed"
    );
}

/// The peer stack made to log what the preset logs: the same span fields
/// (request and trace ids) and the same event fields (request id included), so
/// that both log lines have the same shape and size. It separates the cost
/// of the stack from the cost of the longer line.
fn peer_same_log() -> Router {
    peer_stack!(
        Duration::from_millis(20),
        100,
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request<Body>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let trace = uuid::Uuid::new_v4().simple().to_string();
                tracing::info_span!("request", request_id, trace_id = trace.as_str())
            })
            .on_response(log_same_outcome)
    )
}

fn peer_addr(n: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n)), 40_000)
}

fn get_root(peer: u32) -> Request<Body> {
    get_path("/", peer)
}

fn get_path(path: &str, peer: u32) -> Request<Body> {
    let mut request = Request::get(path)
        .header("host", "bench")
        .header("user-agent", "bench/1.0")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer_addr(peer)));
    request
}

fn oversized(peer: u32) -> Request<Body> {
    let mut request = Request::post("/")
        .header("host", "bench")
        .header("user-agent", "bench/1.0")
        .header("content-length", "2097152")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(peer_addr(peer)));
    request
}

async fn send(service: &Router, request: Request<Body>) -> StatusCode {
    let response: Response<Body> = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn init_logging() {
    // The example server's JSON format, written nowhere (`STACK_LOG=stderr`
    // shows the lines). Global, so the threads of `threads/*` log too.
    // `STACK_LOG=off`: no subscriber at all (`admitted/*` then measures the
    // layers alone, like `admitted_no_log/*`; so does `threads/*`).
    if std::env::var("STACK_LOG").as_deref() == Ok("off") {
        return;
    }
    let to_stderr = std::env::var("STACK_LOG").as_deref() == Ok("stderr");
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::sink())
        }
    };
    // `STACK_SUBSCRIBER=json-log` (feature `json-log`): the same line
    // written by this crate's formatter, `telemetry::json_log`.
    #[cfg(feature = "json-log")]
    if std::env::var("STACK_SUBSCRIBER").as_deref() == Ok("json-log") {
        let subscriber = tower_harden::telemetry::json_log::subscriber()
            .with_writer(writer)
            .with_max_level(Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        return;
    }
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .with_max_level(Level::INFO)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn stacks() -> [(&'static str, Router); 3] {
    [
        ("a_bare", ready(routes())),
        ("b_harden", harden()),
        ("c_peer", peer()),
    ]
}

fn all_stacks() -> [(&'static str, Router); 4] {
    let [bare, harden, peer] = stacks();
    [bare, harden, peer, ("d_peer_same_log", peer_same_log())]
}

fn single_request(c: &mut Criterion) {
    init_logging();
    let runtime = runtime();
    let mut group = c.benchmark_group("stack");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);

    for (label, service) in all_stacks() {
        let mut next = 0u32;
        group.bench_function(BenchmarkId::new("admitted", label), |b| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % PEERS;
                let request = get_root(next);
                let service = &service;
                async move { assert_eq!(send(service, request).await, StatusCode::OK) }
            })
        });
    }
    // The preset with this crate's formatter (feature `json-log`) on this
    // thread, beside the runs above (tracing-subscriber's JSON).
    #[cfg(feature = "json-log")]
    if std::env::var("STACK_LOG").as_deref() != Ok("off") {
        let to_stderr = std::env::var("STACK_LOG").as_deref() == Ok("stderr");
        let subscriber = tower_harden::telemetry::json_log::subscriber()
            .with_writer(move || -> Box<dyn std::io::Write> {
                if to_stderr {
                    Box::new(std::io::stderr())
                } else {
                    Box::new(std::io::sink())
                }
            })
            .with_max_level(Level::INFO)
            .finish();
        let _json_log = tracing::subscriber::set_default(subscriber);
        let service = harden();
        let mut next = 0u32;
        group.bench_function(BenchmarkId::new("admitted", "b_harden_json_log"), |b| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % PEERS;
                let request = get_root(next);
                let service = &service;
                async move { assert_eq!(send(service, request).await, StatusCode::OK) }
            })
        });
    }
    {
        // The layers' own cost: no subscriber on this thread.
        let _no_logging =
            tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        for (label, service) in stacks() {
            let mut next = 0u32;
            group.bench_function(BenchmarkId::new("admitted_no_log", label), |b| {
                b.to_async(&runtime).iter(|| {
                    next = (next + 1) % PEERS;
                    let request = get_root(next);
                    let service = &service;
                    async move { assert_eq!(send(service, request).await, StatusCode::OK) }
                })
            });
        }
    }

    let spent_quota = [
        ("b_harden", harden_spent_quota()),
        ("c_peer", peer_with_quota(Duration::from_secs(3600), 1)),
    ];
    for ((label, service), (_, spent_quota)) in stacks().into_iter().skip(1).zip(spent_quota) {
        group.bench_function(BenchmarkId::new("refused_413", label), |b| {
            b.to_async(&runtime).iter(|| {
                let service = &service;
                async move {
                    let status = send(service, oversized(PEERS + 1)).await;
                    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
                }
            })
        });
        // One peer address, its burst spent: every request is refused.
        let spent = PEERS + 2;
        runtime.block_on(async {
            assert_eq!(send(&spent_quota, get_root(spent)).await, StatusCode::OK);
        });
        group.bench_function(BenchmarkId::new("refused_429", label), |b| {
            b.to_async(&runtime).iter(|| {
                let service = &spent_quota;
                async move {
                    let status = send(service, get_root(spent)).await;
                    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                }
            })
        });
    }
    group.finish();
}

/// Sends `per_thread` admitted requests on each of `threads` threads, each
/// with its own runtime and its own peer addresses; returns the wall time.
fn run_threads(service: &Router, threads: u32, per_thread: u64, offset: &mut u32) -> Duration {
    let start_offset = *offset;
    *offset = offset.wrapping_add(per_thread as u32);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let service = service.clone();
            scope.spawn(move || {
                runtime().block_on(async {
                    for i in 0..per_thread {
                        // Thread t uses the peers t, t + threads, ...: no
                        // two threads share a key.
                        let n = (start_offset.wrapping_add(i as u32) % (PEERS / threads)) * threads
                            + thread;
                        assert_eq!(send(&service, get_root(n)).await, StatusCode::OK);
                    }
                })
            });
        }
    });
    start.elapsed()
}

fn scaling(c: &mut Criterion) {
    init_logging();
    let mut group = c.benchmark_group("threads");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for (label, service) in stacks().into_iter().skip(1) {
        for threads in [1u32, 2] {
            let mut offset = 0u32;
            group.bench_function(BenchmarkId::new(label, threads), |b| {
                b.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(u64::from(threads));
                    run_threads(&service, threads, per_thread, &mut offset)
                })
            });
        }
    }
    group.finish();
}

/// `STACK_PROFILE=b_harden:20000` sends that many admitted requests through
/// that stack and exits, for a profiler: under
/// `valgrind --tool=callgrind`, the instruction count of N requests minus
/// that of 0 requests, over N, is the stack's per-request cost in
/// instructions, free of timing noise. `STACK_LOG=off` leaves logging off,
/// to see the layers' own cost; `STACK_LOG=stderr` prints the log lines.
fn profile(spec: &str) {
    let (label, count) = spec.split_once(':').expect("STACK_PROFILE=LABEL:COUNT");
    let count: u32 = count.parse().expect("a request count");
    init_logging();
    // `STACK_REQUEST=413`: oversized requests instead of admitted ones;
    // `STACK_REQUEST=429`: requests from one peer whose quota is spent;
    // `STACK_REQUEST=panic`: requests whose handler panics;
    // `STACK_REQUEST=503`: requests shed by a full in-flight limit at once,
    // `503-queued`: after waiting in its queue (b_harden only).
    let request = std::env::var("STACK_REQUEST").unwrap_or_default();
    let service = if request == "429" {
        match label {
            "b_harden" => harden_spent_quota(),
            "c_peer" => peer_with_quota(Duration::from_secs(3600), 1),
            _ => panic!("STACK_REQUEST=429 profiles b_harden or c_peer"),
        }
    } else if request.starts_with("503") {
        assert_eq!(label, "b_harden", "STACK_REQUEST=503 profiles b_harden");
        harden_saturated(request == "503-queued")
    } else {
        // Only the stack profiled is built: governor calibrates its clock
        // when a peer stack is built, spinning on wall time, which would
        // add a varying count to every profile.
        match label {
            "a_bare" => ready(routes()),
            "b_harden" => harden(),
            "c_peer" => peer(),
            "d_peer_same_log" => peer_same_log(),
            _ => panic!("a_bare, b_harden, c_peer or d_peer_same_log"),
        }
    };
    // A flood of failures on paused time: it all falls within one second,
    // so the log throttle writes its first lines and leaves out the rest
    // whatever the speed of the run (under callgrind, tens of times
    // slower, the written share would otherwise depend on the run's wall
    // time). The difference of two profiles is then the cost of a failure
    // whose line is left out: the flood's steady state.
    let runtime = if request.is_empty() {
        runtime()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    };
    runtime.block_on(async {
        if request == "429" {
            // Spend the quota; the profile's difference of two counts
            // leaves this one admitted request out.
            assert_eq!(send(&service, get_root(PEERS + 2)).await, StatusCode::OK);
        }
        if request.starts_with("503") {
            // The one slot, held for the whole run.
            let holder = service.clone();
            tokio::spawn(async move { send(&holder, get_path("/hold", PEERS + 3)).await });
            tokio::task::yield_now().await;
        }
        for n in 0..count {
            match request.as_str() {
                "413" => {
                    let status = send(&service, oversized(n % PEERS)).await;
                    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
                }
                "429" => {
                    let status = send(&service, get_root(PEERS + 2)).await;
                    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                }
                "panic" => {
                    let status = send(&service, get_path("/panic", n % PEERS)).await;
                    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                }
                "503" | "503-queued" => {
                    let status = send(&service, get_root(n % PEERS)).await;
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                }
                _ => assert_eq!(send(&service, get_root(n % PEERS)).await, StatusCode::OK),
            }
        }
    });
}

criterion_group!(benches, single_request, scaling);

fn main() {
    if let Ok(spec) = std::env::var("STACK_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
