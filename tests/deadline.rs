//! Deadlines: request deadline, slow-client defence, budget propagation, the
//! generic and outbound layers (paused clock), and the hardened `serve`
//! (real TCP).

mod common;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_harden::context::{
    self, Budget, BudgetOrigin, PeerAddr, RequestContext, RequestId, TraceId, TrustedNetworks,
};
use tower_harden::deadline::{
    CallDeadlineError, CallDeadlineLayer, DeadlineRefusal, RequestDeadlineLayer,
};
use tower_harden::error::{Refused, PROBLEM_JSON};
use tower_harden::outbound::{OutboundErrorKind, OutboundLayer};

/// A request body fed by the test, one chunk at a time.
fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    (sender, Body::from_stream(stream))
}

async fn json(response: Response<Body>) -> serde_json::Value {
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", String::from_utf8_lossy(&body)))
}

fn refusal(response: &Response<Body>) -> DeadlineRefusal {
    response
        .extensions()
        .get::<Refused>()
        .and_then(|refused| refused.downcast_ref::<DeadlineRefusal>())
        .cloned()
        .expect("a DeadlineRefusal in the response extensions")
}

fn echo_app(layer: RequestDeadlineLayer) -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .layer(layer)
}

fn post_with(body: Body) -> Request<Body> {
    Request::post("/echo").body(body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn slow_handler_gets_503_problem_and_is_dropped() {
    let dropped = Arc::new(AtomicBool::new(false));
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = dropped.clone();
    let app = Router::new()
        .route(
            "/slow",
            get(move || {
                let guard = SetOnDrop(flag.clone());
                async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(guard);
                    "too late"
                }
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(2)));
    let started = Instant::now();
    let response = app
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler future was dropped"
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    // The body was complete (none), so the connection may be reused.
    assert!(response.headers().get("connection").is_none());
    match refusal(&response) {
        DeadlineRefusal::Exceeded { exceeded, status } => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(exceeded.budget, Duration::from_secs(2));
            assert_eq!(exceeded.elapsed, Duration::from_secs(2));
            assert_eq!(exceeded.origin, BudgetOrigin::Configured);
            assert!(!exceeded.while_reading_body);
        }
        other => panic!("{other:?}"),
    }
    let problem = json(response).await;
    assert_eq!(problem["status"], 503);
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("#deadline-exceeded"));
    assert_eq!(problem["budget_ms"], 2000);
}

#[tokio::test(start_paused = true)]
async fn deadline_status_is_configurable() {
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .layer(
            RequestDeadlineLayer::new(Duration::from_secs(1)).status(StatusCode::GATEWAY_TIMEOUT),
        );
    let response = app
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(response).await["status"], 504);
}

#[tokio::test(start_paused = true)]
async fn deadline_hit_while_reading_the_body() {
    let app = echo_app(
        RequestDeadlineLayer::new(Duration::from_secs(3))
            .body_idle_timeout(None)
            .no_min_body_rate(),
    );
    let (sender, body) = channel_body();
    sender.send(Bytes::from_static(b"partial")).await.unwrap();
    let started = Instant::now();
    let response = app.oneshot(post_with(body)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The rest of the body is still on the wire: the connection must close.
    assert_eq!(response.headers()["connection"], "close");
    match refusal(&response) {
        DeadlineRefusal::Exceeded { exceeded, .. } => assert!(exceeded.while_reading_body),
        other => panic!("{other:?}"),
    }
    assert_eq!(json(response).await["status"], 503);
    drop(sender);
}

#[tokio::test(start_paused = true)]
async fn idle_body_gets_408_and_connection_close() {
    let app = echo_app(
        RequestDeadlineLayer::new(Duration::from_secs(60))
            .body_idle_timeout(Duration::from_secs(5))
            .no_min_body_rate(),
    );
    let (sender, body) = channel_body();
    sender.send(Bytes::from(vec![b'x'; 1000])).await.unwrap();
    let started = Instant::now();
    let response = app.oneshot(post_with(body)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()["connection"], "close");
    assert_eq!(
        refusal(&response),
        DeadlineRefusal::BodyIdle {
            idle_timeout: Duration::from_secs(5),
            received: 1000,
        }
    );
    let problem = json(response).await;
    assert_eq!(problem["status"], 408);
    assert!(problem["type"]
        .as_str()
        .unwrap()
        .ends_with("#request-timeout"));
    drop(sender);
}

#[tokio::test(start_paused = true)]
async fn trickle_under_the_minimum_rate_gets_408() {
    let app = echo_app(
        RequestDeadlineLayer::new(Duration::from_secs(60))
            .body_idle_timeout(Duration::from_secs(30))
            .min_body_rate(240, Duration::from_secs(5)),
    );
    let (sender, body) = channel_body();
    // One byte a second: never idle for long, far under 240 B/s.
    let trickle = tokio::spawn(async move {
        while sender.send(Bytes::from_static(b"x")).await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let started = Instant::now();
    let response = app.oneshot(post_with(body)).await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(7),
        "refused after the 5 s grace period, at {elapsed:?}"
    );
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(response.headers()["connection"], "close");
    match refusal(&response) {
        DeadlineRefusal::BodyTooSlow {
            min_rate,
            observed_rate,
            received,
            ..
        } => {
            assert_eq!(min_rate, 240);
            assert!(observed_rate < 240);
            assert!((5..=7).contains(&received), "{received}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(json(response).await["status"], 408);
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_body_at_a_good_rate_is_not_refused() {
    let app = echo_app(RequestDeadlineLayer::new(Duration::from_secs(60)));
    let (sender, body) = channel_body();
    // 1 KiB a second for 10 s: over the grace period, well above 240 B/s.
    tokio::spawn(async move {
        for _ in 0..10 {
            sender.send(Bytes::from(vec![b'y'; 1024])).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let response = app.oneshot(post_with(body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(body.len(), 10 * 1024);
}

/// An app whose handler reports the budget it sees, through the extension
/// and through the task-local lookup.
fn budget_app(layer: RequestDeadlineLayer) -> Router {
    Router::new()
        .route(
            "/budget",
            get(|Extension(budget): Extension<Budget>| async move {
                let current = context::current_budget().expect("a budget in scope");
                assert_eq!(current, budget);
                format!(
                    "{} {}",
                    budget.total().as_millis(),
                    budget.origin().as_str()
                )
            }),
        )
        .layer(layer)
}

async fn budget_seen(app: &Router, peer: &str, header: Option<&str>) -> String {
    let mut request = Request::get("/budget");
    if let Some(value) = header {
        request = request.header("x-request-deadline-ms", value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn trusted_inbound_deadline_shortens_the_budget_others_do_not() {
    let app = budget_app(
        RequestDeadlineLayer::new(Duration::from_secs(10))
            .trust_inbound(TrustedNetworks::cidrs(["10.0.0.0/8"]).unwrap()),
    );
    let trusted = "10.1.2.3:40000";
    assert_eq!(
        budget_seen(&app, trusted, Some("1500")).await,
        "1500 inbound"
    );
    // Never longer than the configured deadline.
    assert_eq!(
        budget_seen(&app, trusted, Some("60000")).await,
        "10000 configured"
    );
    assert_eq!(budget_seen(&app, trusted, None).await, "10000 configured");
    // Untrusted peer: ignored.
    assert_eq!(
        budget_seen(&app, "192.0.2.1:40000", Some("1500")).await,
        "10000 configured"
    );
    // Malformed: ignored, safely.
    for malformed in ["12abc", "-5", "1.5", "", " 100", "99999999999999", "1500ms"] {
        assert_eq!(
            budget_seen(&app, trusted, Some(malformed)).await,
            "10000 configured",
            "{malformed:?}"
        );
    }
    // The default trusts nobody.
    let default = budget_app(RequestDeadlineLayer::new(Duration::from_secs(10)));
    assert_eq!(
        budget_seen(&default, trusted, Some("1500")).await,
        "10000 configured"
    );
}

#[tokio::test(start_paused = true)]
async fn trusted_inbound_deadline_is_enforced() {
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "too late"
            }),
        )
        .layer(
            RequestDeadlineLayer::new(Duration::from_secs(10))
                .trust_inbound(TrustedNetworks::predicate(|ip| ip.is_loopback())),
        );
    let mut request = Request::get("/slow")
        .header("x-request-deadline-ms", "750")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(PeerAddr("127.0.0.1:5000".parse().unwrap()));
    let started = Instant::now();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(750));
    match refusal(&response) {
        DeadlineRefusal::Exceeded { exceeded, .. } => {
            assert_eq!(exceeded.budget, Duration::from_millis(750));
            assert_eq!(exceeded.origin, BudgetOrigin::Inbound);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn generic_service_gets_the_typed_error() {
    let slow = service_fn(|query: &'static str| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok::<_, std::io::Error>(query.len())
    });
    let bounded = CallDeadlineLayer::new(Duration::from_secs(2)).layer(slow);
    let started = Instant::now();
    let error = bounded.clone().oneshot("SELECT 1").await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let exceeded = error.exceeded().expect("Exceeded").clone();
    assert_eq!(exceeded.budget, Duration::from_secs(2));
    assert_eq!(exceeded.elapsed, Duration::from_secs(2));
    assert_eq!(exceeded.origin, BudgetOrigin::Configured);
    assert!(error.to_string().contains("2000 ms"), "{error}");

    // Inside a request with less time left, the request's budget runs out.
    let outer = Budget::new(Duration::from_millis(500), BudgetOrigin::Configured);
    let error = context::scope(
        outer,
        RequestContext::default(),
        bounded.clone().oneshot("q"),
    )
    .await
    .unwrap_err();
    match error {
        CallDeadlineError::Exceeded(exceeded) => {
            assert_eq!(exceeded.origin, BudgetOrigin::Inherited);
            assert_eq!(exceeded.budget, Duration::from_millis(500));
        }
        other => panic!("{other:?}"),
    }

    // Inner errors pass through, typed.
    let failing = CallDeadlineLayer::new(Duration::from_secs(2)).layer(service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("boom"))
    }));
    match failing.oneshot(()).await {
        Err(CallDeadlineError::Inner(error)) => assert_eq!(error.to_string(), "boom"),
        other => panic!("{other:?}"),
    }
}

/// A client that records each request's headers and never answers.
fn hanging_client(
    seen: Arc<Mutex<Vec<HeaderMap>>>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<Full<Bytes>>| {
        seen.lock().unwrap().push(request.headers().clone());
        async move {
            std::future::pending::<()>().await;
            Ok(Response::new(Full::default()))
        }
    })
}

fn get_user() -> Request<Full<Bytes>> {
    Request::get("http://users.internal:8080/users/7")
        .body(Full::default())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn client_layer_uses_the_smaller_of_own_timeout_and_remaining_budget() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let trace = TraceId::from_bytes([7; 16]).unwrap();
    let context = RequestContext {
        request_id: RequestId::parse("req-42"),
        trace_id: Some(trace),
    };

    // The caller has 2 s left; own timeout 5 s, margin 100 ms: 1.9 s.
    let client = OutboundLayer::new(Duration::from_secs(5))
        .margin(Duration::from_millis(100))
        .layer(hanging_client(seen.clone()));
    let caller = Budget::new(Duration::from_secs(2), BudgetOrigin::Configured);
    let started = Instant::now();
    let error = context::scope(caller, context.clone(), client.clone().oneshot(get_user()))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(1900));
    assert!(matches!(error.kind(), OutboundErrorKind::TimedOut));
    assert_eq!(error.budget(), Duration::from_millis(1900));
    assert_eq!(error.origin(), BudgetOrigin::Inherited);
    assert_eq!(error.elapsed(), Duration::from_millis(1900));
    assert_eq!(error.target(), "users.internal:8080");
    assert!(error.is_timeout());
    let headers = seen.lock().unwrap().pop().unwrap();
    assert_eq!(headers["x-request-deadline-ms"], "1900");
    assert_eq!(headers["x-request-id"], "req-42");
    let traceparent = headers["traceparent"].to_str().unwrap().to_owned();
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    assert_eq!(fields[1], trace.to_string());
    assert_eq!(fields[2].len(), 16);
    assert_ne!(fields[2], "0000000000000000");

    // The caller has 10 s left; own timeout 1 s wins.
    let client = OutboundLayer::new(Duration::from_secs(1)).layer(hanging_client(seen.clone()));
    let caller = Budget::new(Duration::from_secs(10), BudgetOrigin::Configured);
    let started = Instant::now();
    let error = context::scope(caller, context.clone(), client.clone().oneshot(get_user()))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(error.budget(), Duration::from_secs(1));
    assert_eq!(error.origin(), BudgetOrigin::Configured);
    assert_eq!(
        seen.lock().unwrap().pop().unwrap()["x-request-deadline-ms"],
        "1000"
    );

    // No budget left after the margin: the call is not made.
    let calls_before = seen.lock().unwrap().len();
    let caller = Budget::new(Duration::from_millis(30), BudgetOrigin::Configured);
    let error = context::scope(caller, context, client.oneshot(get_user()))
        .await
        .unwrap_err();
    assert!(matches!(
        error.kind(),
        OutboundErrorKind::BudgetExhausted { .. }
    ));
    assert_eq!(seen.lock().unwrap().len(), calls_before);
}

#[tokio::test(start_paused = true)]
async fn client_layer_bounds_the_response_body() {
    let huge = service_fn(|_: Request<Full<Bytes>>| async {
        // No Content-Length: only counting the stream catches it.
        let chunks =
            futures_util::stream::iter((0..64).map(|_| {
                Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(vec![0u8; 1024])))
            }));
        let mut response = Response::new(http_body_util::StreamBody::new(chunks));
        *response.status_mut() = StatusCode::OK;
        Ok::<_, std::io::Error>(response)
    });
    let client = OutboundLayer::new(Duration::from_secs(1))
        .max_response_bytes(4096)
        .layer(huge);
    let error = client.oneshot(get_user()).await.unwrap_err();
    assert!(matches!(
        error.kind(),
        OutboundErrorKind::BodyTooLarge {
            limit: 4096,
            declared: None
        }
    ));
    assert_eq!(error.status(), Some(StatusCode::OK));
    // The context chain is kept: outer context first, then the cause.
    let chain: Vec<String> = std::iter::successors(
        Some(&error as &(dyn std::error::Error + 'static)),
        |error| error.source(),
    )
    .map(ToString::to_string)
    .collect();
    assert!(chain[0].contains("users.internal:8080"), "{chain:?}");
    assert!(chain[0].contains("status 200"), "{chain:?}");
    assert!(chain[1].contains("4096 bytes"), "{chain:?}");
}

// ---- serve: real TCP ------------------------------------------------------

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn hello_app() -> Router {
    Router::new().route(
        "/",
        get(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
             Extension(PeerAddr(same)): Extension<PeerAddr>| async move {
                assert_eq!(peer, same);
                format!("hello {}", peer.ip())
            },
        ),
    )
}

#[tokio::test]
async fn slowloris_is_disconnected_after_the_header_read_timeout() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, hello_app())
            .header_read_timeout(Duration::from_secs(1))
            .into_future(),
    );
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One header byte per second, far more bytes than the timeout allows.
    let writer = tokio::spawn(async move {
        for byte in b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Padding: aaaaaaaaaaaa\r\n\r\n" {
            if writer.write_all(&[*byte]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        true
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the slow client was not disconnected within 10 s"
    );
    let text = String::from_utf8_lossy(&received);
    assert!(
        !text.contains("hello"),
        "the slow request was served: {text}"
    );
    writer.abort();
    // The server still serves well-behaved clients.
    let response = common::get(addr, "/").await;
    assert_eq!(response.status, 200);
    assert_eq!(String::from_utf8_lossy(&response.body), "hello 127.0.0.1");
}

#[tokio::test]
async fn connections_over_a_cap_of_working_connections_wait_and_are_served_once_one_ends() {
    let (listener, addr) = bind().await;
    let (started_tx, mut started_rx) = mpsc::channel::<()>(2);
    let release = Arc::new(tokio::sync::Notify::new());
    let app = hello_app().route(
        "/work",
        get({
            let release = release.clone();
            move || {
                let started_tx = started_tx.clone();
                let release = release.clone();
                async move {
                    started_tx.send(()).await.unwrap();
                    release.notified().await;
                    "done"
                }
            }
        }),
    );
    tokio::spawn(
        tower_harden::serve(listener, app)
            .max_connections(2)
            .into_future(),
    );
    // Two requests being handled take both slots; neither may be evicted.
    let first = tokio::spawn(common::get(addr, "/work"));
    let second = tokio::spawn(common::get(addr, "/work"));
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
            .await
            .expect("the handler did not start");
    }
    let third = tokio::spawn(common::get(addr, "/"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a connection over the cap was served while both slots were working"
    );
    release.notify_one();
    let response = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the waiting connection was not served within 10 s")
        .unwrap();
    assert_eq!(response.status, 200);
    release.notify_one();
    for handled in [first, second] {
        let response = tokio::time::timeout(Duration::from_secs(10), handled)
            .await
            .expect("a working connection did not finish")
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"done");
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let (listener, addr) = bind().await;
    let (started_tx, started_rx) = mpsc::channel::<()>(1);
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let app = Router::new().route(
        "/work",
        get(move || {
            let started_tx = started_tx.clone();
            let release_rx = release_rx.clone();
            async move {
                started_tx.send(()).await.unwrap();
                let release = release_rx.lock().await.take().unwrap();
                release.await.unwrap();
                "finished"
            }
        }),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tower_harden::serve(listener, app)
            .drain_timeout(Duration::from_secs(30))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let in_flight = tokio::spawn(common::get(addr, "/work"));
    let mut started_rx = started_rx;
    tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
        .await
        .expect("the handler did not start");
    stop_tx.send(()).unwrap();
    // The server keeps running while the request is in flight...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_finished(), "the server stopped before draining");
    // ...and no longer accepts new connections.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        match TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(mut stream) => {
                let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
                matches!(common::read_response(&mut stream).await, Ok(None) | Err(_))
            }
        }
    })
    .await
    .unwrap();
    assert!(refused, "a new connection was served during the drain");
    release_tx.send(()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(String::from_utf8_lossy(&response.body), "finished");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server did not stop after draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, hello_app())
            // Off, so that only the keep-alive idle timeout can close it.
            .header_read_timeout(None)
            .keep_alive_idle_timeout(Duration::from_secs(1))
            .into_future(),
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let response = common::read_response(&mut stream).await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 64];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection was not closed within 10 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_handler_passes_its_budget_id_and_trace_to_outbound_calls() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = OutboundLayer::new(Duration::from_secs(30))
        .margin(Duration::from_millis(100))
        .layer(hanging_client(seen.clone()));
    let app = Router::new()
        .route(
            "/profile",
            get(move || {
                let client = client.clone();
                async move {
                    let context = context::current_request().expect("a request in scope");
                    assert_eq!(context.request_id.unwrap().as_str(), "req-7");
                    // Half the budget is gone before the call.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let error = client.oneshot(get_user()).await.unwrap_err();
                    assert_eq!(error.origin(), BudgetOrigin::Inherited);
                    assert_eq!(error.budget(), Duration::from_millis(900));
                    (StatusCode::BAD_GATEWAY, "upstream timed out")
                }
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(2)));
    let mut request = Request::get("/profile").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(RequestId::parse("req-7").unwrap());
    request
        .extensions_mut()
        .insert(TraceId::from_bytes([9; 16]).unwrap());
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let headers = seen.lock().unwrap().pop().expect("the call was made");
    assert_eq!(headers["x-request-deadline-ms"], "900");
    assert_eq!(headers["x-request-id"], "req-7");
    assert!(headers["traceparent"]
        .to_str()
        .unwrap()
        .starts_with(&format!("00-{}-", TraceId::from_bytes([9; 16]).unwrap())));
}

#[tokio::test(start_paused = true)]
async fn outbound_calls_are_children_of_this_servers_span_with_the_callers_sampling() {
    use tower_harden::context::{TraceContext, TraceParent, TraceState};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = OutboundLayer::new(Duration::from_secs(30)).layer(hanging_client(seen.clone()));
    let app = Router::new()
        .route(
            "/profile",
            get(move || {
                let client = client.clone();
                async move {
                    // Three calls while serving one request.
                    let _ = tokio::join!(
                        client.clone().oneshot(get_user()),
                        client.clone().oneshot(get_user()),
                        client.oneshot(get_user()),
                    );
                    StatusCode::BAD_GATEWAY
                }
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(2)));
    for sampled in ["00", "01"] {
        let parent = TraceParent::parse(&format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{sampled}"
        ))
        .unwrap();
        let state = TraceState::parse("vendor=abc", 512).unwrap();
        let trace = TraceContext::continue_from(parent, Some(state));
        let mut request = Request::get("/profile").body(Body::empty()).unwrap();
        request.extensions_mut().insert(trace.trace_id());
        request.extensions_mut().insert(trace.clone());
        app.clone().oneshot(request).await.unwrap();
        let calls: Vec<HeaderMap> = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(calls.len(), 3);
        // Each call is a span of its own, child of this server's span: the
        // same trace and the caller's sampling decision (not forced on),
        // and a parent-id of its own, neither the caller's span nor this
        // server's, distinct from the other calls'.
        let mut parents = std::collections::HashSet::new();
        for headers in &calls {
            let sent = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
            assert_eq!(sent.trace_id(), trace.trace_id());
            assert_eq!(sent.flags(), u8::from(sampled == "01"));
            assert_ne!(sent.parent_id(), trace.span_id());
            assert_ne!(sent.parent_id(), parent.parent_id());
            parents.insert(sent.parent_id());
            assert_eq!(headers["tracestate"], "vendor=abc");
        }
        assert_eq!(parents.len(), 3, "three calls name three distinct parents");
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_counts_from_arrival_not_from_the_deadline_layer() {
    use tower_harden::context::Arrival;
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                let budget = context::current_budget().expect("a budget in scope");
                budget.remaining().as_millis().to_string()
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(1)));
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(Arrival(tokio::time::Instant::now()));
    // Outer layers (a rate-limit store's round trip, say) took 300 ms.
    tokio::time::advance(Duration::from_millis(300)).await;
    let response = app.clone().oneshot(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"700");
    // Without an arrival, the budget starts at the layer.
    let response = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"1000");
}

#[tokio::test]
async fn drain_timeout_ends_requests_that_never_finish() {
    let (listener, addr) = bind().await;
    let (started_tx, mut started_rx) = mpsc::channel::<()>(1);
    let app = Router::new().route(
        "/forever",
        get(move || {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).await.unwrap();
                std::future::pending::<()>().await;
                "never"
            }
        }),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tower_harden::serve(listener, app)
            .drain_timeout(Duration::from_secs(1))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /forever HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
        .await
        .expect("the handler did not start");
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server did not stop after the drain timeout")
        .unwrap()
        .unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(10), common::read_response(&mut stream))
            .await
            .expect("the connection was not closed");
    assert!(matches!(response, Ok(None) | Err(_)), "{response:?}");
}

#[tokio::test]
async fn silent_and_slow_preface_connections_are_dropped_after_the_header_read_timeout() {
    let (listener, addr) = bind().await;
    tokio::spawn(
        tower_harden::serve(listener, hello_app())
            .header_read_timeout(Duration::from_secs(1))
            .keep_alive_idle_timeout(None)
            .into_future(),
    );
    // One client sends nothing; the other drips the HTTP/2 preface, which
    // keeps hyper-util from choosing a protocol (and so from hyper's timer).
    let silent = TcpStream::connect(addr).await.unwrap();
    let dripping = TcpStream::connect(addr).await.unwrap();
    let (mut drip_reader, mut drip_writer) = dripping.into_split();
    let drip = tokio::spawn(async move {
        for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
            if drip_writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut silent = silent;
    for (name, closed) in [
        ("silent", read_to_close(&mut silent).await),
        ("dripping", {
            let mut buffer = [0u8; 256];
            tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(n) = drip_reader.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await
            .is_ok()
        }),
    ] {
        assert!(closed, "the {name} connection was not dropped within 10 s");
    }
    drip.abort();
}

async fn read_to_close(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 256];
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}
