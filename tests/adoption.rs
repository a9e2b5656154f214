//! An existing axum service adopting the preset: every error response a
//! problem with the request id (axum's 404, 405 and extractor rejections),
//! and the cause of a service's own errors in the log.
//!
//! Each test serves through the preset on 127.0.0.1:0 and speaks HTTP over
//! TCP; the server runs on the test's own thread, so the thread's captured
//! log holds its events.

mod common;

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::logs::capture_json;
use common::{raw_request, RawResponse};
use tower_harden::error::{HandlerError, Refused};
use tower_harden::observe::ObserveLayer;
use tower_harden::{Harden, HardenConfig};

#[derive(serde::Deserialize)]
struct NewUser {
    #[allow(dead_code)]
    name: String,
}

#[derive(serde::Deserialize)]
struct Page {
    #[allow(dead_code)]
    page: u32,
}

async fn create_user(Json(_user): Json<NewUser>) -> StatusCode {
    StatusCode::CREATED
}

async fn user(Path(id): Path<u32>) -> String {
    format!("user {id}")
}

async fn list(Query(_page): Query<Page>) -> &'static str {
    "[]"
}

/// A service's own error type with its own body, as existing services have.
#[derive(Debug)]
struct AppError(std::io::Error);

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("loading the order failed")
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::INTERNAL_SERVER_ERROR;
        let mut response =
            (status, Json(serde_json::json!({"error": "try later"}))).into_response();
        response
            .extensions_mut()
            .insert(Refused::cause(status, self));
        response
    }
}

async fn order() -> Result<String, AppError> {
    Err(AppError(std::io::Error::other("connection reset by db-7")))
}

fn load_with_anyhow() -> anyhow::Result<String> {
    use anyhow::Context;
    Err(std::io::Error::other("disk quota exceeded")).context("reading the invoice template")
}

async fn invoice() -> Result<String, HandlerError> {
    Ok(load_with_anyhow()?)
}

fn load_boxed() -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    Err("the cache is down".into())
}

async fn cached() -> Result<String, HandlerError> {
    Ok(load_boxed()?)
}

fn routes() -> Router {
    Router::new()
        .route("/users", get(list).post(create_user))
        .route("/users/{id}", get(user))
        .route("/orders", get(order))
        .route("/invoice", get(invoice))
        .route("/cached", get(cached))
        .route(
            "/teapot",
            get(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"mine": true})),
                )
            }),
        )
}

/// Serves `routes()` through `harden` on a free port.
async fn spawn(harden: Harden) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes().layer(harden.clone().into_layer());
    let server = harden
        .serve(listener, app)
        .with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

fn mapping() -> Harden {
    Harden::from_config(&HardenConfig::from_toml("[problems]\nmap_rejections = true\n").unwrap())
        .unwrap()
}

async fn send(addr: std::net::SocketAddr, head: &str, body: &str) -> RawResponse {
    let request = format!(
        "{head}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(addr, request.as_bytes()).await
}

/// A problem of `status` and `slug`, whose `request_id` is the response's
/// `x-request-id`; returns its body.
fn assert_problem(response: &RawResponse, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{response:?}"
    );
    let json = response.json();
    assert_eq!(json["status"], status);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(
        json["type"],
        format!("{}{slug}", tower_harden::error::TYPE_BASE)
    );
    let id = response.header("x-request-id").expect("a request id");
    assert_eq!(json["request_id"], id);
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str())
    );
    json
}

#[tokio::test]
async fn every_axum_rejection_is_a_problem_with_the_request_id() {
    let (_log, _guard) = capture_json();
    let addr = spawn(mapping()).await;
    let json = "Content-Type: application/json";

    let bad_json = send(
        addr,
        &format!("POST /users HTTP/1.1\r\n{json}"),
        "{\"name\":",
    )
    .await;
    let problem = assert_problem(&bad_json, 400, "invalid-input");
    assert!(
        problem["detail"].as_str().unwrap().contains("JSON"),
        "{problem}"
    );

    let wrong_shape = send(
        addr,
        &format!("POST /users HTTP/1.1\r\n{json}"),
        "{\"nom\":1}",
    )
    .await;
    let problem = assert_problem(&wrong_shape, 422, "invalid-input");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `name`"),
        "{problem}"
    );

    let no_type = send(addr, "POST /users HTTP/1.1", "{\"name\":\"a\"}").await;
    let problem = assert_problem(&no_type, 415, "unsupported-media-type");
    assert!(
        problem["detail"].as_str().unwrap().contains("Content-Type"),
        "{problem}"
    );

    let bad_path = send(addr, "GET /users/abc HTTP/1.1", "").await;
    let problem = assert_problem(&bad_path, 400, "invalid-input");
    assert!(
        problem["detail"].as_str().unwrap().contains("abc"),
        "{problem}"
    );

    let bad_query = send(addr, "GET /users?page=-1 HTTP/1.1", "").await;
    assert_problem(&bad_query, 400, "invalid-input");

    let unknown = send(addr, "GET /nowhere HTTP/1.1", "").await;
    assert_problem(&unknown, 404, "not-found");

    let wrong_method = send(addr, "DELETE /users HTTP/1.1", "").await;
    assert_problem(&wrong_method, 405, "method-not-allowed");
    let allow = wrong_method
        .header("allow")
        .expect("405 keeps its Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // What still works is untouched.
    let created = send(
        addr,
        &format!("POST /users HTTP/1.1\r\n{json}"),
        "{\"name\":\"a\"}",
    )
    .await;
    assert_eq!(created.status, 201);
    assert!(created.body.is_empty());
    // A handler's own error body stays its own.
    let own = send(addr, "GET /teapot HTTP/1.1", "").await;
    assert_eq!(own.status, 400);
    assert_eq!(own.header("content-type"), Some("application/json"));
    assert_eq!(own.json(), serde_json::json!({"mine": true}));
}

#[tokio::test]
async fn without_the_mapping_rejections_keep_their_text_but_404_and_405_are_problems() {
    let (_log, _guard) = capture_json();
    let addr = spawn(Harden::new()).await;
    let bad_json = send(
        addr,
        "POST /users HTTP/1.1\r\nContent-Type: application/json",
        "{",
    )
    .await;
    assert_eq!(bad_json.status, 400);
    assert!(bad_json
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_problem(
        &send(addr, "GET /nowhere HTTP/1.1", "").await,
        404,
        "not-found",
    );
    assert_problem(
        &send(addr, "PUT /users/1 HTTP/1.1", "").await,
        405,
        "method-not-allowed",
    );
}

#[tokio::test]
async fn a_layer_alone_maps_rejections_too() {
    let (_log, _guard) = capture_json();
    let app = routes().layer(ObserveLayer::new().problems_for_rejections(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tower_harden::serve(listener, app).with_graceful_shutdown(std::future::pending());
    tokio::spawn(async move { server.await.unwrap() });
    assert_problem(
        &send(addr, "GET /users/x HTTP/1.1", "").await,
        400,
        "invalid-input",
    );
}

#[tokio::test]
async fn a_service_error_type_keeps_its_body_and_logs_its_chain() {
    let (log, _guard) = capture_json();
    let addr = spawn(Harden::new()).await;
    let response = send(addr, "GET /orders HTTP/1.1", "").await;
    assert_eq!(response.status, 500);
    assert_eq!(response.json(), serde_json::json!({"error": "try later"}));
    wait_for_outcomes(&log, 1).await;
    let outcome = log.only_outcome();
    let fields = &outcome["fields"];
    assert_eq!(fields["error.type"], "adoption::AppError");
    let chain = fields["error.chain"].as_str().unwrap();
    assert!(chain.contains("loading the order failed"), "{chain}");
    assert!(chain.contains("connection reset by db-7"), "{chain}");
}

#[tokio::test]
async fn anyhow_and_boxed_errors_convert_with_question_mark_and_log_their_chain() {
    let (log, _guard) = capture_json();
    let addr = spawn(Harden::new()).await;
    let response = send(addr, "GET /invoice HTTP/1.1", "").await;
    let problem = assert_problem(&response, 500, "internal-error");
    assert_eq!(problem["detail"], "internal error");
    let response = send(addr, "GET /cached HTTP/1.1", "").await;
    assert_problem(&response, 500, "internal-error");
    wait_for_outcomes(&log, 2).await;
    let outcomes = log.outcomes();
    let anyhow_chain = outcomes[0]["fields"]["error.chain"].as_str().unwrap();
    assert!(
        anyhow_chain.contains("reading the invoice template")
            && anyhow_chain.contains("disk quota exceeded"),
        "{anyhow_chain}"
    );
    assert_eq!(outcomes[0]["fields"]["error.type"], "anyhow::Error");
    let boxed_chain = outcomes[1]["fields"]["error.chain"].as_str().unwrap();
    assert!(boxed_chain.contains("the cache is down"), "{boxed_chain}");
}

/// The outcome event is written when the response body is done, which can
/// be just after the client read it: yield to the server until it is.
async fn wait_for_outcomes(log: &common::logs::Captured, count: usize) {
    for _ in 0..1000 {
        if log.outcomes().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("expected {count} outcome events: {}", log.text());
}

/// A store of the service's own: counts its calls, decides with the
/// in-process store.
struct CountingStore {
    inner: tower_harden::rate_limit::MemoryStore,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tower_harden::rate_limit::RateLimitStore for CountingStore {
    type Future =
        <tower_harden::rate_limit::MemoryStore as tower_harden::rate_limit::RateLimitStore>::Future;

    fn check(&self, checks: &[tower_harden::rate_limit::Check]) -> Self::Future {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.check(checks)
    }

    fn try_check_now(
        &self,
        checks: &[tower_harden::rate_limit::Check],
    ) -> Option<Result<tower_harden::rate_limit::Decisions, tower_harden::rate_limit::StoreError>>
    {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.try_check_now(checks)
    }
}

#[tokio::test]
async fn the_preset_takes_a_rate_limiter_over_any_store() {
    use tower_harden::rate_limit::{MemoryStore, Policy, Quota, RateLimitLayer};
    let (_log, _guard) = capture_json();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let store = CountingStore {
        inner: MemoryStore::new(100),
        calls: calls.clone(),
    };
    let harden = Harden::new().rate_limit(
        RateLimitLayer::new(store).policy(Policy::global("all", Quota::per_second(1).unwrap())),
    );
    let addr = spawn(harden).await;
    assert_eq!(
        send(addr, "GET /users?page=1 HTTP/1.1", "").await.status,
        200
    );
    let refused = send(addr, "GET /users?page=1 HTTP/1.1", "").await;
    assert_problem(&refused, 429, "quota-exceeded");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_route_classifier_names_routes_of_a_service_that_is_not_a_router() {
    use tower::{Layer, ServiceExt};
    let (log, _guard) = capture_json();
    let service = tower::service_fn(|_request: http::Request<axum::body::Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::from("ok")))
    });
    let observed = ObserveLayer::new()
        .route_classifier(|_, uri| {
            uri.path()
                .starts_with("/users/")
                .then_some(std::borrow::Cow::Borrowed("/users/{id}"))
        })
        .layer(service);
    for path in ["/users/7", "/other"] {
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = observed.clone().oneshot(request).await.unwrap();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
    }
    let routes: Vec<_> = log
        .outcomes()
        .iter()
        .map(|outcome| outcome["fields"]["http.route"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(routes, ["/users/{id}", "_unmatched"]);
}
