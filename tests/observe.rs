//! The observe layer: correlation ids, trace context, one outcome event per
//! request with the whole error chain, escaping, panics, metrics.
//!
//! Each test captures the log of its own thread (`tracing::subscriber::set_default`
//! on a current-thread runtime, so the server's tasks log there too) and
//! asserts on the JSON fields.

mod common;

use common::logs::{capture_json, capture_text};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use http::StatusCode;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::{Layer, Service, ServiceExt};
use tower_harden::context::{
    RequestId, RequestIdRefusal, TraceContext, TraceId, TraceParent, TraceParentRefusal,
};
use tower_harden::error::{HandlerError, Problem, Refusal, RefusalContext, PROBLEM_JSON};
use tower_harden::input::BodyLimitLayer;
use tower_harden::observe::ObserveLayer;

// ---------------------------------------------------------------------------
// The app under test

#[derive(Debug, thiserror::Error)]
#[error("connecting to {url}")]
struct ConnectError {
    url: String,
    source: std::io::Error,
}

const SECRET_URL: &str = "postgres://app:hunter2@db.internal/app";

async fn fail() -> Result<String, HandlerError> {
    Err(ConnectError {
        url: SECRET_URL.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
    })?
}

/// A refusal of the kind a rate limiter or deadline layer makes.
#[derive(Debug, thiserror::Error)]
#[error("policy {policy} refused the request")]
struct TestRefusal {
    policy: &'static str,
}

impl Refusal for TestRefusal {
    fn problem(&self) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            "Quota exceeded",
        )
        .with_detail("too many requests")
    }

    fn context(&self) -> RefusalContext {
        RefusalContext::new("rate_limit")
            .limit(10)
            .observed(11)
            .policy(self.policy)
            .key("k:3f2a9c")
            .budget(Duration::from_millis(250))
            .elapsed(Duration::from_millis(12))
            .retry_after(Duration::from_secs(2))
    }
}

async fn panicking_handler() -> &'static str {
    panic!("boom at the handler")
}

fn app(layer: ObserveLayer) -> Router {
    Router::new()
        .route(
            "/id",
            get(|Extension(id): Extension<RequestId>, Extension(trace): Extension<TraceId>| async move {
                tracing::info!("inside the handler");
                format!("{id} {trace}")
            }),
        )
        .route("/users/{id}", get(|| async { "user" }))
        .route("/fail", get(fail))
        .route(
            "/unprocessable",
            get(|| async { Err::<(), _>(HandlerError::unprocessable("name is empty")) }),
        )
        .route(
            "/dirty",
            get(|| async {
                Err::<(), _>(HandlerError::internal(std::io::Error::other(
                    "bad\r\n{\"level\":\"INFO\",\"fields\":{\"message\":\"forged\"}}\n\x1b[2J\x1b[31mred",
                )))
            }),
        )
        .route(
            "/limited",
            get(|request: Request| async move {
                Problem::refuse::<Body, _>(TestRefusal { policy: "per-ip" }, request.extensions())
                    .into_response()
            }),
        )
        .route(
            "/echo",
            post(|body: String| async move { body }).layer(BodyLimitLayer::new(16)),
        )
        .route("/panic", get(panicking_handler))
        .route(
            "/gone",
            get(|| async {
                Problem::new(StatusCode::GONE, "gone", "Gone").with_detail("this item was deleted")
            }),
        )
        .route(
            "/panic-any",
            get(|| async {
                std::panic::panic_any(42_i32);
                #[allow(unreachable_code)]
                ""
            }),
        )
        .layer(layer)
        // A caller on loopback, trusted with its ids and trace context by
        // default (tests/logs.rs has the untrusted ones).
        .layer(Extension(tower_harden::context::PeerAddr(
            "127.0.0.1:40000".parse().unwrap(),
        )))
}

async fn send(app: &Router, request: http::Request<Body>) -> (Response, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn get_request(uri: &str) -> http::request::Builder {
    http::Request::get(uri)
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

fn assert_generated(id: &str) {
    let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("not a UUID: {id:?}"));
    assert_eq!(uuid.get_version_num(), 7, "{id}");
}

// ---------------------------------------------------------------------------
// Correlation

#[tokio::test]
async fn a_plain_request_id_is_kept_echoed_and_given_to_every_event() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(
        &app,
        get_request("/id")
            .header("x-request-id", "req-42.a:b_c")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-request-id"), "req-42.a:b_c");
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("req-42.a:b_c "), "{body}");

    let events = log.events();
    let inside = events
        .iter()
        .find(|e| e["fields"]["message"] == "inside the handler")
        .expect("the handler's event");
    assert_eq!(inside["span"]["request_id"], "req-42.a:b_c");
    assert_eq!(inside["span"]["trace_id"].as_str().unwrap().len(), 32);
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "INFO");
    assert_eq!(outcome["span"]["request_id"], "req-42.a:b_c");
    assert_eq!(outcome["fields"]["http.response.status_code"], 200);
    assert_eq!(outcome["fields"]["http.response.body.size"], body.len());
    // Only an incomplete body is worth a field.
    assert!(outcome["fields"]
        .get("http.response.body.complete")
        .is_none());
    assert!(outcome["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(outcome["span"]["trace_id"], body.split(' ').nth(1).unwrap());
}

#[tokio::test]
async fn unsafe_request_ids_are_replaced_by_generated_ones() {
    let ten_kb = HeaderValue::from_str(&"a".repeat(10 * 1024)).unwrap();
    let empty = HeaderValue::from_static("");
    let non_ascii = HeaderValue::from_bytes("réq-1".as_bytes()).unwrap();
    // `http` refuses ESC in a header value (see below); TAB is the control
    // character it lets through.
    let tab = HeaderValue::from_static("req\t1\t{\"level\":\"ERROR\"}");
    let cases = [
        (ten_kb, "more than 128"),
        (empty, "empty"),
        (non_ascii, "outside"),
        (tab, "outside"),
    ];
    for (value, reason) in cases {
        let (log, _guard) = capture_json();
        let app = app(ObserveLayer::new());
        let (response, body) = send(
            &app,
            get_request("/id")
                .header("x-request-id", value.clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let echoed = header(&response, "x-request-id").to_owned();
        assert_generated(&echoed);
        assert!(String::from_utf8(body).unwrap().starts_with(&echoed));
        let outcome = log.only_outcome();
        assert_eq!(outcome["span"]["request_id"], echoed.as_str());
        let refused = outcome["fields"]["request_id.refused"].as_str().unwrap();
        assert!(refused.contains(reason), "{refused}");
        let text = log.text();
        assert!(!text.contains('\x1b'), "raw ESC in the log: {text:?}");
        assert!(
            !text.contains("aaaaaaaaaaaaaaaa"),
            "the 10 KB id reached the log"
        );
    }
}

#[tokio::test]
async fn an_esc_laden_request_id_never_reaches_a_log() {
    // The parser refuses it, typed ...
    assert_eq!(
        RequestId::try_parse(b"req\x1b[31m-1\x1b[0m", 128),
        Err(RequestIdRefusal::InvalidByte { position: 3 })
    );
    // ... and over the wire hyper refuses the request before any layer runs;
    // either way nothing of it is logged.
    let (log, _guard) = capture_json();
    let addr = common::spawn_axum(app(ObserveLayer::new())).await;
    let response = common::raw_request(
        addr,
        b"GET /id HTTP/1.1\r\nHost: x\r\nx-request-id: req\x1b[31m-1\x1b[0m\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 400);
    assert!(response.header("x-request-id").is_none());
    assert!(!log.text().contains('\x1b'));
    assert!(log.outcomes().is_empty());
}

#[tokio::test]
async fn generated_request_ids_are_time_ordered_and_an_untrusting_layer_ignores_inbound_ones() {
    let (_log, _guard) = capture_json();
    let app = app(ObserveLayer::new().trust_inbound_request_id(false));
    let mut previous = String::new();
    for _ in 0..3 {
        let (response, _) = send(
            &app,
            get_request("/users/1")
                .header("x-request-id", "plain-but-untrusted")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        let id = header(&response, "x-request-id").to_owned();
        assert_generated(&id);
        assert!(id > previous, "{id} after {previous}");
        previous = id;
    }
}

const VALID_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_valid_traceparent_is_continued() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (_, body) = send(
        &app,
        get_request("/id")
            .header("traceparent", VALID_TRACEPARENT)
            .header("tracestate", "rojo=00f067aa0ba902b7")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.ends_with(" 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{body}"
    );
    let outcome = log.only_outcome();
    assert_eq!(
        outcome["span"]["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(outcome["fields"].get("traceparent.refused").is_none());

    // A tracestate that is no list at all is dropped; the trace still
    // continues.
    let captured = Arc::new(Mutex::new(None));
    let seen = captured.clone();
    let service = tower::service_fn(move |request: http::Request<Body>| {
        *seen.lock().unwrap() = request.extensions().get::<TraceContext>().cloned();
        async { Ok::<_, std::convert::Infallible>(Response::new(Body::empty())) }
    });
    ObserveLayer::new()
        .trust_inbound_context(tower_harden::context::TrustedNetworks::everyone())
        .layer(service)
        .oneshot(
            get_request("/")
                .header("traceparent", VALID_TRACEPARENT)
                .header("tracestate", "no list at all")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let context = captured.lock().unwrap().clone().unwrap();
    assert_eq!(
        context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(context.parent_id().unwrap().to_string(), "00f067aa0ba902b7");
    assert!(context.trace_state().is_none());
    let outbound = TraceParent::parse(&context.traceparent()).unwrap();
    assert_eq!(outbound.trace_id(), context.trace_id());
    assert_eq!(outbound.parent_id(), context.span_id());
    assert!(outbound.sampled());
}

#[tokio::test]
async fn the_inner_error_type_is_kept_and_its_failure_logged_once() {
    let (log, _guard) = capture_json();
    let service = tower::service_fn(|_request: http::Request<Body>| async {
        Err::<Response, tower::BoxError>("upstream pool exhausted\r\nforged".into())
    });
    let error: tower::BoxError = ObserveLayer::new()
        .layer(service)
        .oneshot(get_request("/").body(Body::empty()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "upstream pool exhausted\r\nforged");
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "ERROR");
    assert_eq!(outcome["fields"]["error.type"], "service");
    assert_eq!(
        outcome["fields"]["error.message"],
        "upstream pool exhausted\\r\\nforged"
    );
}

#[tokio::test]
async fn malformed_traceparents_start_a_new_trace() {
    let cases = [
        "00-1-2-01",
        // a 40-character, zero-padded trace id
        "00-000000004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-+4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
    ];
    for value in cases {
        let (log, _guard) = capture_json();
        let app = app(ObserveLayer::new());
        let (response, body) = send(
            &app,
            get_request("/fail")
                .header("traceparent", value)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 500);
        let problem: Value = serde_json::from_slice(&body).unwrap();
        let trace_id = problem["trace_id"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert!(!value.contains(&trace_id[..16]), "{value} was continued");
        assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let outcome = log.only_outcome();
        assert_eq!(outcome["span"]["trace_id"], trace_id);
        assert!(
            outcome["fields"]["traceparent.refused"].is_string(),
            "{value}: {outcome:#}"
        );
    }
}

#[test]
fn traceparent_refusals_are_typed() {
    use TraceParentRefusal::*;
    type Expected = fn(TraceParentRefusal) -> bool;
    let cases: [(&str, Expected); 7] = [
        ("00-1-2-01", |r| matches!(r, WrongLength { .. })),
        (
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            |r| matches!(r, NotLowercaseHex { position: 4 }),
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            |r| r == ForbiddenVersion,
        ),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            |r| r == ZeroTraceId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            |r| r == ZeroParentId,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            |r| matches!(r, WrongLength { len: 56, .. }),
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            |r| matches!(r, MissingDash { position: 55 }),
        ),
    ];
    for (value, expected) in cases {
        let refusal = TraceParent::parse(value).unwrap_err();
        assert!(expected(refusal), "{value}: {refusal:?}");
    }
    // A later version is read by its first 55 characters.
    let future = TraceParent::parse(
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
    )
    .unwrap();
    assert_eq!(future.version(), 0xcc);
    assert!(future.sampled());
}

#[test]
fn tracestate_is_bounded() {
    use tower_harden::context::{TraceState, TraceStateRefusal};
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert!(matches!(
        TraceState::parse(&members.join(","), 4096),
        Err(TraceStateRefusal::TooManyMembers { max: 32 })
    ));
    assert!(TraceState::parse(&members[..32].join(","), 4096).is_ok());
    assert!(matches!(
        TraceState::parse(&format!("a={}", "b".repeat(600)), 512),
        Err(TraceStateRefusal::TooLong { .. })
    ));
    // A duplicated key is passed on as the caller sent it.
    assert_eq!(
        TraceState::parse("a=1,a=2", 512).unwrap().as_str(),
        "a=1,a=2"
    );
    assert!(TraceState::parse("a=1\r\nb=2", 512).is_err());
    assert!(TraceState::parse("tenant@vendor=x y", 512).is_ok());
}

// ---------------------------------------------------------------------------
// The span and the outcome event

#[tokio::test]
async fn span_fields_follow_opentelemetry_names_with_bounded_values() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    send(
        &app,
        get_request("/users/1234?token=abc")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    send(
        &app,
        get_request("/no/such/route").body(Body::empty()).unwrap(),
    )
    .await;
    send(
        &app,
        http::Request::builder()
            .method("BREW")
            .uri("/users/1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 3);
    // The span holds what every event in the request needs (the ids); the
    // outcome event holds the rest, and the request id again, so that the
    // line can be found where spans are not written.
    let span = &outcomes[0]["span"];
    let fields = &outcomes[0]["fields"];
    assert_eq!(span["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(span["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(fields["request_id"], span["request_id"]);
    assert!(fields.get("trace_id").is_none());
    for moved in [
        "url.path",
        "http.route",
        "http.request.method",
        "http.response.status_code",
    ] {
        assert!(span.get(moved).is_none(), "{moved} on the span");
    }
    assert_eq!(fields["http.request.method"], "GET");
    assert_eq!(fields["http.route"], "/users/{id}");
    assert_eq!(fields["url.path"], "/users/1234");
    assert_eq!(fields["span_id"].as_str().unwrap().len(), 16);
    assert!(fields.get("url.query").is_none());
    assert!(
        !log.text().contains("token=abc"),
        "the query string was logged"
    );
    assert_eq!(outcomes[0]["fields"]["http.response.status_code"], 200);
    assert_eq!(outcomes[0]["level"], "INFO");

    let unmatched = &outcomes[1];
    assert_eq!(unmatched["fields"]["http.route"], "_unmatched");
    assert_eq!(unmatched["fields"]["http.response.status_code"], 404);
    assert_eq!(unmatched["level"], "WARN");

    let brew = &outcomes[2];
    assert_eq!(brew["fields"]["http.request.method"], "_OTHER");
    assert_eq!(brew["fields"]["http.response.status_code"], 405);
}

#[tokio::test]
async fn a_full_span_carries_method_route_and_status_as_opentelemetry_does() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new().full_span(true));
    send(&app, get_request("/users/9").body(Body::empty()).unwrap()).await;
    let outcome = log.only_outcome();
    let span = &outcome["span"];
    assert_eq!(span["http.request.method"], "GET");
    assert_eq!(span["http.route"], "/users/{id}");
    assert_eq!(span["http.response.status_code"], 200);
    assert_eq!(span["url.path"], "/users/9");
    assert_eq!(span["request_id"].as_str().unwrap().len(), 36);
    // The event holds the status and request id too, and does not repeat
    // the rest of the span.
    let fields = &outcome["fields"];
    assert_eq!(fields["http.response.status_code"], 200);
    assert_eq!(fields["request_id"], span["request_id"]);
    for on_the_span in ["http.route", "http.request.method", "url.path"] {
        assert!(fields.get(on_the_span).is_none(), "{on_the_span} repeated");
    }
}

#[tokio::test]
async fn the_event_is_self_contained_when_a_filter_drops_the_span() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new().span_level(tracing::Level::TRACE));
    send(
        &app,
        get_request("/users/5")
            .header("x-request-id", "req-5")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let outcome = log.only_outcome();
    assert!(outcome.get("span").is_none(), "{outcome:#}");
    let fields = &outcome["fields"];
    assert_eq!(fields["http.request.method"], "GET");
    assert_eq!(fields["http.route"], "/users/{id}");
    assert_eq!(fields["url.path"], "/users/5");
    assert_eq!(fields["request_id"], "req-5");
    assert_eq!(fields["http.response.status_code"], 200);
}

#[tokio::test]
async fn client_address_comes_from_the_connection() {
    let (log, _guard) = capture_json();
    let addr = common::spawn_axum(app(ObserveLayer::new())).await;
    let response = common::get(addr, "/users/7").await;
    assert_eq!(response.status, 200);
    assert_generated(response.header("x-request-id").unwrap());
    let outcome = log.only_outcome();
    assert_eq!(outcome["fields"]["client.address"], "127.0.0.1");
}

#[tokio::test]
async fn control_characters_in_the_path_do_not_forge_log_lines() {
    // http::Uri refuses raw CR, LF and ESC; it lets NEL (a line break for
    // some viewers) and bidi overrides through, and percent-escapes arrive as
    // they are.
    let path = "/x\u{85}\u{202e}%0d%0a%1b[31m{\"level\":\"ERROR\"}";
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    send(&app, get_request(path).body(Body::empty()).unwrap()).await;
    let outcome = log.only_outcome();
    assert_eq!(
        outcome["fields"]["url.path"],
        "/x\\u{85}\\u{202e}%0d%0a%1b[31m{\"level\":\"ERROR\"}"
    );
    assert_eq!(log.events().len(), 1);

    // Over TCP, raw CR and ESC in the request line never reach the service.
    let (log, _guard) = capture_json();
    let addr = common::spawn_axum(app.clone()).await;
    let mut request =
        b"GET /a\x1b[31m\rFORGED HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec();
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, &request)
            .await
            .unwrap();
        common::read_response(&mut stream).await
    })
    .await
    .expect("must not hang");
    if let Ok(Some(response)) = response {
        assert_eq!(response.status, 400);
    }
    assert!(!log.text().contains('\x1b'));
    assert!(!log.text().contains("FORGED"));
    request.clear();
}

#[tokio::test]
async fn error_text_cannot_forge_lines_under_the_text_formatter() {
    let (log, _guard) = capture_text();
    let app = app(ObserveLayer::new());
    let (response, _) = send(&app, get_request("/dirty").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 500);
    let text = log.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.contains('\r'), "{text:?}");
    assert!(
        text.contains("\\\\r\\\\n") || text.contains("\\r\\n"),
        "{text}"
    );

    // And under the JSON formatter the chain is there, escaped.
    let (log, _guard) = capture_json();
    send(&app, get_request("/dirty").body(Body::empty()).unwrap()).await;
    let outcome = log.only_outcome();
    let chain = outcome["fields"]["error.chain"].as_str().unwrap();
    assert!(chain.contains("bad\\r\\n{\"level\""), "{chain}");
    assert!(chain.contains("\\u{1b}[2J"), "{chain}");
}

#[tokio::test]
async fn a_handler_error_keeps_its_secret_out_of_the_body_and_its_chain_in_the_log() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(
        &app,
        get_request("/fail")
            .header("x-request-id", "req-fail-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 500);
    assert_eq!(header(&response, "content-type"), PROBLEM_JSON);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("postgres"), "{text}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["detail"], "internal error");
    assert_eq!(problem["request_id"], "req-fail-1");
    assert_eq!(problem["status"], 500);

    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "ERROR");
    let fields = &outcome["fields"];
    assert_eq!(outcome["span"]["request_id"], "req-fail-1");
    assert!(fields["error.type"]
        .as_str()
        .unwrap()
        .ends_with("ConnectError"));
    assert_eq!(fields["error.message"], "the handler failed");
    // The whole chain, with the URL's password redacted.
    assert_eq!(
        fields["error.chain"],
        "the handler failed: connecting to postgres://app:[REDACTED]@db.internal/app: connection refused"
    );
    assert_eq!(fields["refusal.layer"], "handler");
    assert_eq!(fields["http.response.body.size"], text.len());
    // Logged once: one event in the whole log mentions the failure, and
    // none the password.
    let mentions = log
        .text()
        .lines()
        .filter(|l| l.contains("db.internal"))
        .count();
    assert_eq!(mentions, 1);
    assert!(!log.text().contains("hunter2"), "{}", log.text());
}

#[tokio::test]
async fn a_client_error_carries_its_deliberate_detail() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(
        &app,
        get_request("/unprocessable").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 422);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["detail"], "name is empty");
    assert_eq!(problem["request_id"], header(&response, "x-request-id"));
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "WARN");
    assert_eq!(
        outcome["fields"]["error.message"],
        "the handler refused the request: name is empty"
    );
}

#[tokio::test]
async fn a_problem_returned_by_a_handler_gets_the_request_id() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(
        &app,
        get_request("/gone")
            .header("x-request-id", "req-gone-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 410);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["request_id"], "req-gone-1");
    assert_eq!(problem["detail"], "this item was deleted");
    assert_eq!(problem["trace_id"], log.only_outcome()["span"]["trace_id"]);
}

#[tokio::test]
async fn long_paths_are_capped_and_levels_and_query_logging_are_configurable() {
    let (log, _guard) = capture_json();
    let layer = ObserveLayer::new()
        .max_field_len(64)
        .log_query(true)
        .levels(
            tracing::Level::DEBUG,
            tracing::Level::INFO,
            tracing::Level::WARN,
        );
    let app = app(layer);
    let long = format!("/{}?q=%1b{}", "p".repeat(10 * 1024), "q".repeat(1024));
    send(&app, get_request(&long).body(Body::empty()).unwrap()).await;
    send(
        &app,
        get_request("/users/1?page=2").body(Body::empty()).unwrap(),
    )
    .await;
    send(&app, get_request("/fail").body(Body::empty()).unwrap()).await;
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 3);
    let path = outcomes[0]["fields"]["url.path"].as_str().unwrap();
    assert!(path.len() < 100, "{path}");
    assert!(path.ends_with("…(+10177 bytes)"), "{path}");
    let query = outcomes[0]["fields"]["url.query"].as_str().unwrap();
    assert!(
        query.starts_with("q=%1bqqq") && query.len() < 100,
        "{query}"
    );
    assert_eq!(outcomes[0]["level"], "INFO");
    assert_eq!(outcomes[1]["fields"]["url.query"], "page=2");
    assert_eq!(outcomes[1]["level"], "DEBUG");
    assert_eq!(outcomes[2]["level"], "WARN");
}

#[tokio::test]
async fn authorization_and_cookies_never_reach_the_log() {
    let (log, _guard) = capture_json();
    let layer = ObserveLayer::new()
        .log_header(AUTHORIZATION)
        .log_header(COOKIE)
        .log_header(HeaderName::from_static("x-api-key"))
        .log_header(HeaderName::from_static("x-forwarded-for"));
    let app = app(layer);
    send(
        &app,
        get_request("/fail")
            .header(AUTHORIZATION, "Bearer sk-live-0123456789")
            .header(COOKIE, "session=cookie-secret-42")
            .header("x-api-key", "apikey-secret-99")
            .header("x-forwarded-for", "203.0.113.9")
            .header(
                "user-agent",
                HeaderValue::from_bytes("curl/8.5 \u{e9}".as_bytes()).unwrap(),
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let text = log.text();
    for secret in ["sk-live-0123456789", "cookie-secret-42", "apikey-secret-99"] {
        assert!(!text.contains(secret), "{secret} reached the log: {text}");
    }
    let outcome = log.only_outcome();
    assert_eq!(
        outcome["fields"]["http.request.headers"],
        "x-forwarded-for: 203.0.113.9"
    );
}

// ---------------------------------------------------------------------------
// Refusals: exactly one event, with the refusing layer's context

#[tokio::test]
async fn an_oversized_body_produces_one_event_with_the_input_context() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(
        &app,
        http::Request::post("/echo")
            .header("content-length", "100")
            .header("x-request-id", "req-big")
            .body(Body::from(vec![b'x'; 100]))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(header(&response, "x-request-id"), "req-big");
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["request_id"], "req-big");
    assert_eq!(log.events().len(), 1, "{}", log.text());
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "WARN");
    let fields = &outcome["fields"];
    assert_eq!(fields["refusal.layer"], "input");
    assert_eq!(fields["refusal.limit"], 16);
    assert_eq!(fields["refusal.observed"], 100);
    assert_eq!(outcome["fields"]["http.route"], "/echo");
    // A fixed name per case, not the type's (module-dependent) name.
    assert_eq!(fields["error.type"], "declared_body_too_large");

    // A streamed body crossing the limit: also one event.
    let (log, _guard) = capture_json();
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789"))),
    );
    let (response, _) = send(
        &app,
        http::Request::post("/echo")
            .body(Body::from_stream(chunks))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert_eq!(log.events().len(), 1, "{}", log.text());
    assert_eq!(log.only_outcome()["fields"]["refusal.limit"], 16);
}

#[tokio::test]
async fn a_rate_limit_style_refusal_produces_one_event_with_its_context() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    let (response, body) = send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 429);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["request_id"], header(&response, "x-request-id"));
    assert_eq!(log.events().len(), 1);
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "WARN");
    let fields = &outcome["fields"];
    assert_eq!(fields["refusal.layer"], "rate_limit");
    assert_eq!(fields["refusal.limit"], 10);
    assert_eq!(fields["refusal.observed"], 11);
    assert_eq!(fields["refusal.policy"], "per-ip");
    assert_eq!(fields["refusal.key"], "k:3f2a9c");
    assert_eq!(fields["refusal.budget_ms"], 250.0);
    assert_eq!(fields["refusal.elapsed_ms"], 12.0);
    assert_eq!(fields["refusal.retry_after_ms"], 2000.0);
    assert_eq!(fields["error.message"], "policy per-ip refused the request");
    assert!(fields["error.type"]
        .as_str()
        .unwrap()
        .ends_with("TestRefusal"));
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_produces_one_event_with_its_budget() {
    // A stand-in for the deadline layer: it refuses with its budget and the
    // elapsed time, and must not log on its own.
    #[derive(Debug, thiserror::Error)]
    #[error("the request ran past its deadline")]
    struct Late {
        budget: Duration,
    }
    impl Refusal for Late {
        fn problem(&self) -> Problem {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "deadline-exceeded",
                "Deadline exceeded",
            )
        }
        fn context(&self) -> RefusalContext {
            RefusalContext::new("deadline")
                .budget(self.budget)
                .elapsed(self.budget)
        }
    }
    let (log, _guard) = capture_json();
    let app: Router = Router::new()
        .route(
            "/slow",
            get(|request: Request| async move {
                let budget = Duration::from_millis(100);
                let slow = tokio::time::sleep(Duration::from_secs(60));
                match tokio::time::timeout(budget, slow).await {
                    Ok(()) => "done".into_response(),
                    Err(_) => Problem::refuse::<Body, _>(Late { budget }, request.extensions())
                        .into_response(),
                }
            }),
        )
        .layer(ObserveLayer::new());
    let (response, _) = send(&app, get_request("/slow").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(log.events().len(), 1);
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "ERROR");
    assert_eq!(outcome["fields"]["refusal.layer"], "deadline");
    assert_eq!(outcome["fields"]["refusal.budget_ms"], 100.0);
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_before_its_response_still_logs_one_event() {
    let (log, _guard) = capture_json();
    let app: Router = Router::new()
        .route(
            "/forever",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .layer(
            ObserveLayer::new()
                .trust_inbound_context(tower_harden::context::TrustedNetworks::everyone()),
        );
    let call = app.oneshot(
        get_request("/forever")
            .header("x-request-id", "req-gone")
            .body(Body::empty())
            .unwrap(),
    );
    assert!(tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .is_err());
    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "WARN");
    assert_eq!(outcome["span"]["request_id"], "req-gone");
    assert_eq!(outcome["fields"]["error.type"], "cancelled");
    assert!(outcome["fields"].get("http.response.status_code").is_none());
}

// ---------------------------------------------------------------------------
// Panics

#[tokio::test]
async fn a_panic_is_one_error_event_with_the_request_id_and_the_server_keeps_serving() {
    let (log, _guard) = capture_json();
    let addr = common::spawn_axum(app(ObserveLayer::new())).await;
    let response = common::raw_request(
        addr,
        b"GET /panic HTTP/1.1\r\nHost: x\r\nx-request-id: req-panic\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 500);
    assert_eq!(response.header("x-request-id"), Some("req-panic"));
    let problem = response.json();
    assert_eq!(problem["request_id"], "req-panic");
    assert_eq!(problem["detail"], "internal error");
    assert!(!String::from_utf8_lossy(&response.body).contains("boom"));

    let outcome = log.only_outcome();
    assert_eq!(outcome["level"], "ERROR");
    let fields = &outcome["fields"];
    assert_eq!(outcome["span"]["request_id"], "req-panic");
    assert_eq!(fields["error.type"], "panic");
    assert_eq!(fields["error.message"], "boom at the handler");
    let location = fields["panic.location"].as_str().unwrap();
    assert!(location.contains("tests/observe.rs:"), "{location}");
    let errors = log
        .events()
        .into_iter()
        .filter(|e| e["level"] == "ERROR")
        .count();
    assert_eq!(errors, 1);

    // Still serving.
    assert_eq!(common::get(addr, "/users/1").await.status, 200);
    let any = common::get(addr, "/panic-any").await;
    assert_eq!(any.status, 500);
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[2]["fields"]["error.message"], "42");
}

#[tokio::test]
async fn a_panic_in_call_is_caught_too() {
    let (log, _guard) = capture_json();
    let service = tower::service_fn(|request: http::Request<Body>| {
        if request.uri().path() == "/call-panic" {
            panic!("panicked in call");
        }
        async { Ok::<_, std::convert::Infallible>(Response::new(Body::from("ok"))) }
    });
    let mut service = tower::ServiceBuilder::new()
        .layer(ObserveLayer::new())
        .service(service);
    let response = service
        .ready()
        .await
        .unwrap()
        .call(get_request("/call-panic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let id = header_value(&response);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["request_id"], id.as_str());
    let outcome = log.only_outcome();
    assert_eq!(outcome["fields"]["error.message"], "panicked in call");
    assert_eq!(outcome["span"]["request_id"], id.as_str());
    assert_eq!(outcome["fields"]["http.route"], "_unmatched");
}

fn header_value<B>(response: &http::Response<B>) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Metrics

#[cfg(feature = "metrics")]
mod metrics_cardinality {
    use super::*;
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::collections::HashSet;

    #[derive(Default)]
    struct SeriesRecorder {
        series: Mutex<HashSet<Key>>,
    }

    impl Recorder for SeriesRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.series.lock().unwrap().insert(key.clone());
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            self.series.lock().unwrap().insert(key.clone());
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            self.series.lock().unwrap().insert(key.clone());
            Histogram::noop()
        }
    }

    /// Counts `http.server.requests` increments.
    #[derive(Default)]
    struct CountingRecorder {
        requests: Arc<std::sync::atomic::AtomicU64>,
    }

    struct Count(Arc<std::sync::atomic::AtomicU64>);

    impl metrics::CounterFn for Count {
        fn increment(&self, by: u64) {
            self.0.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
        }
        fn absolute(&self, _: u64) {}
    }

    impl Recorder for CountingRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            if key.name() == tower_harden::telemetry::metrics::names::REQUESTS {
                Counter::from_arc(Arc::new(Count(self.requests.clone())))
            } else {
                Counter::noop()
            }
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_throttled_flood_is_counted_whole_in_metrics() {
        let recorder = CountingRecorder::default();
        let (log, _guard) = capture_json();
        metrics::with_local_recorder(&recorder, || {
            // Paused: the whole flood falls within one second.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let app = app(ObserveLayer::new().failure_lines_per_second(1));
                for _ in 0..20 {
                    send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
                }
            });
        });
        assert_eq!(log.outcomes().len(), 1, "the flood was throttled");
        let counted = recorder.requests.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(counted, 20);
    }

    #[test]
    fn ten_thousand_random_404_paths_add_no_series() {
        let recorder = SeriesRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async {
                let app = app(ObserveLayer::new());
                send(
                    &app,
                    get_request("/nothing-here").body(Body::empty()).unwrap(),
                )
                .await;
                send(&app, get_request("/users/1").body(Body::empty()).unwrap()).await;
                let before = recorder.series.lock().unwrap().len();
                for i in 0..10_000u32 {
                    let path = format!("/{:08x}/{}", i.wrapping_mul(2_654_435_761), i);
                    let (response, _) =
                        send(&app, get_request(&path).body(Body::empty()).unwrap()).await;
                    assert_eq!(response.status(), 404);
                }
                send(&app, get_request("/users/99").body(Body::empty()).unwrap()).await;
                let series = recorder.series.lock().unwrap();
                assert_eq!(series.len(), before, "{series:#?}");
                let duration = series
                    .iter()
                    .find(|key| {
                        key.name() == "http.server.request.duration"
                            && key
                                .labels()
                                .any(|l| l.key() == "http.route" && l.value() == "/users/{id}")
                    })
                    .expect("a duration series for the route template");
                assert!(duration
                    .labels()
                    .any(|l| l.key() == "http.response.status_code" && l.value() == "200"));
                assert!(series.iter().any(|key| key.name() == "http.server.requests"
                    && key.labels().any(|l| l.value() == "_unmatched")));
            });
        });
    }
}

// ---------------------------------------------------------------------------
// Parsers

const PLAIN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-";

proptest! {
    #[test]
    fn request_id_parser_accepts_exactly_the_plain_short_ids(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        max_len in 1usize..200,
    ) {
        let plain = !bytes.is_empty()
            && bytes.len() <= max_len
            && bytes.iter().all(|b| PLAIN.as_bytes().contains(b));
        match RequestId::try_parse(&bytes, max_len) {
            Ok(id) => {
                prop_assert!(plain);
                prop_assert_eq!(id.as_str().as_bytes(), &bytes[..]);
            }
            Err(RequestIdRefusal::Empty) => prop_assert!(bytes.is_empty()),
            Err(RequestIdRefusal::TooLong { len, max_len: max }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert!(len > max);
            }
            Err(RequestIdRefusal::InvalidByte { position }) => {
                prop_assert!(!PLAIN.as_bytes().contains(&bytes[position]));
            }
            Err(other) => prop_assert!(false, "unknown refusal {other:?}"),
        }
    }

    #[test]
    fn request_id_parser_accepts_generated_ids(_ in 0..10u8) {
        let id = RequestId::generate();
        prop_assert_eq!(RequestId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn traceparent_parser_never_panics_on_any_text(text in "\\PC{0,80}") {
        let _ = TraceParent::parse(&text);
    }

    #[test]
    fn traceparent_parser_never_panics_on_near_misses(
        version in "[0-9a-fA-F+-]{2}",
        trace in "[0-9a-fA-F+ -]{30,34}",
        parent in "[0-9a-fA-F+-]{15,17}",
        flags in "[0-9a-fA-F]{1,3}",
        tail in "(-.{0,5})?",
    ) {
        let value = format!("{version}-{trace}-{parent}-{flags}{tail}");
        if let Ok(parsed) = TraceParent::parse(&value) {
            prop_assert!(version.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(version != "ff");
            prop_assert_eq!(parsed.trace_id().to_string(), &value[3..35]);
            prop_assert_eq!(parsed.parent_id().to_string(), &value[36..52]);
            if version == "00" {
                prop_assert_eq!(value.len(), 55);
            }
        }
    }

    #[test]
    fn valid_traceparents_round_trip(
        trace in any::<[u8; 16]>(),
        parent in any::<[u8; 8]>(),
        flags in any::<u8>(),
    ) {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let value = format!("00-{}-{}-{:02x}", hex(&trace), hex(&parent), flags);
        match TraceParent::parse(&value) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.trace_id().to_bytes(), trace);
                prop_assert_eq!(parsed.parent_id().to_bytes(), parent);
                prop_assert_eq!(parsed.flags(), flags);
                let continued = TraceContext::continue_from(parsed, None);
                let outbound = TraceParent::parse(&continued.traceparent()).unwrap();
                prop_assert_eq!(outbound.trace_id(), parsed.trace_id());
            }
            Err(TraceParentRefusal::ZeroTraceId) => prop_assert_eq!(trace, [0; 16]),
            Err(TraceParentRefusal::ZeroParentId) => prop_assert_eq!(parent, [0; 8]),
            Err(other) => prop_assert!(false, "refused {value}: {other:?}"),
        }
        let upper = value.to_uppercase();
        if upper != value {
            prop_assert!(TraceParent::parse(&upper).is_err());
        }
    }
}

#[tokio::test]
async fn a_repeated_request_id_or_traceparent_is_trusted_in_neither_copy() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for header_name in ["x-request-id", "traceparent"] {
        let (log, _guard) = capture_json();
        let app = app(ObserveLayer::new());
        let value = if header_name == "traceparent" {
            traceparent
        } else {
            "req-twice"
        };
        let (response, body) = send(
            &app,
            get_request("/fail")
                .header(header_name, value)
                .header(header_name, value)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), 500);
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_ne!(problem["request_id"], "req-twice");
        assert_ne!(problem["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let outcome = log.only_outcome();
        let refused_field = if header_name == "traceparent" {
            "traceparent.refused"
        } else {
            "request_id.refused"
        };
        assert_eq!(
            outcome["fields"][refused_field], "repeated header",
            "{outcome:#}"
        );
    }
    // Absent: nothing refused.
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new());
    send(&app, get_request("/fail").body(Body::empty()).unwrap()).await;
    let outcome = log.only_outcome();
    assert!(outcome["fields"].get("request_id.refused").is_none());
    assert!(outcome["fields"].get("traceparent.refused").is_none());
}

/// The outcome's error fields are made lazily, when the event is written:
/// filters that decide by span (`[request]=warn`) or by kind of callsite
/// (events only), per layer or global, must still get them. The refusal is
/// found while the response body streams, outside the request's span.
#[test]
fn a_refusals_fields_reach_a_line_however_the_subscriber_filters() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{filter, EnvFilter, Layer as _};

    async fn refused_413() {
        let app = Router::new()
            .route(
                "/echo",
                post(|body: String| async move { body }).layer(BodyLimitLayer::new(16)),
            )
            .layer(ObserveLayer::new());
        let response = app
            .oneshot(
                http::Request::post("/echo")
                    .header("content-length", "100")
                    .body(Body::from(vec![b'x'; 100]))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        response.into_body().collect().await.unwrap();
    }
    fn block_on(future: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future);
    }
    fn assert_fields(text: &str, case: &str) {
        let outcome: Value = text
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|line| line["fields"]["message"] == "request completed")
            .unwrap_or_else(|| panic!("{case}: no outcome in {text}"));
        let fields = &outcome["fields"];
        assert_eq!(
            fields["error.type"], "declared_body_too_large",
            "{case}: {text}"
        );
        assert_eq!(fields["refusal.layer"], "input", "{case}: {text}");
        assert_eq!(fields["refusal.limit"], 16, "{case}: {text}");
        assert!(fields["error.message"].is_string(), "{case}: {text}");
    }

    let span_directive = || EnvFilter::new("error,[request]=warn");
    let events_only = || filter::filter_fn(|metadata| metadata.is_event());

    // Per-layer filters.
    fn per_layer<F>(filter: F, case: &str)
    where
        F: tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let captured = common::logs::Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(captured.clone())
            .with_filter(filter);
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        block_on(refused_413());
        drop(guard);
        assert_fields(&captured.text(), case);
    }
    per_layer(span_directive(), "per-layer span directive");
    per_layer(events_only(), "per-layer events only");
    // Global filters.
    fn global<L>(filter: L, case: &str)
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        let captured = common::logs::Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(captured.clone());
        let subscriber = tracing_subscriber::registry().with(filter).with(layer);
        let guard = tracing::subscriber::set_default(subscriber);
        block_on(refused_413());
        drop(guard);
        assert_fields(&captured.text(), case);
    }
    global(span_directive(), "global span directive");
    global(events_only(), "global events only");
}

// ---------------------------------------------------------------------------
// Floods: failure lines are throttled per `error.type`

/// The `suppressed` field of an outcome, if any.
fn suppressed(outcome: &Value) -> Option<u64> {
    outcome["fields"]["suppressed"].as_u64()
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_failures_writes_its_budget_then_one_line_with_the_count_left_out() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new().failure_lines_per_second(3));
    for _ in 0..10 {
        let (response, _) = send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), 429);
    }
    for _ in 0..5 {
        let (response, _) = send(&app, get_request("/panic").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), 500);
    }
    // Successes are never throttled.
    for _ in 0..5 {
        let (response, _) = send(&app, get_request("/users/1").body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), 200);
    }
    let outcomes = log.outcomes();
    let of_type = |outcomes: &[Value], kind: &str| -> Vec<Value> {
        outcomes
            .iter()
            .filter(|o| o["fields"]["error.type"] == kind)
            .cloned()
            .collect()
    };
    // Within the second: each kind writes its budget, no more.
    assert_eq!(
        of_type(&outcomes, "observe::TestRefusal").len(),
        3,
        "{outcomes:#?}"
    );
    assert_eq!(of_type(&outcomes, "panic").len(), 3);
    assert_eq!(outcomes.len(), 3 + 3 + 5);
    assert!(outcomes.iter().all(|o| suppressed(o).is_none()));

    // The next second's first line of each kind says how many were left out.
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
    send(&app, get_request("/panic").body(Body::empty()).unwrap()).await;
    send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
    let outcomes = log.outcomes();
    let refused = of_type(&outcomes, "observe::TestRefusal");
    assert_eq!(refused.len(), 5);
    assert_eq!(suppressed(&refused[3]), Some(10 - 3));
    assert_eq!(suppressed(&refused[4]), None);
    let panics = of_type(&outcomes, "panic");
    assert_eq!(panics.len(), 4);
    assert_eq!(suppressed(&panics[3]), Some(5 - 3));
    // The summary line is a whole outcome line of its own request.
    assert_eq!(panics[3]["fields"]["error.message"], "boom at the handler");
}

#[tokio::test(start_paused = true)]
async fn no_throttle_writes_every_failure_line() {
    let (log, _guard) = capture_json();
    let app = app(ObserveLayer::new().failure_lines_per_second(0));
    for _ in 0..50 {
        send(&app, get_request("/limited").body(Body::empty()).unwrap()).await;
    }
    let outcomes = log.outcomes();
    assert_eq!(outcomes.len(), 50);
    assert!(outcomes.iter().all(|o| suppressed(o).is_none()));
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_layer_share_the_budget_and_another_layer_has_its_own() {
    let (log, _guard) = capture_json();
    let layer = ObserveLayer::new().failure_lines_per_second(2);
    let (one, two) = (app(layer.clone()), app(layer));
    let other = app(ObserveLayer::new().failure_lines_per_second(2));
    for app in [&one, &two, &one, &two, &other, &other, &other] {
        send(app, get_request("/limited").body(Body::empty()).unwrap()).await;
    }
    assert_eq!(log.outcomes().len(), 2 + 2);
}
