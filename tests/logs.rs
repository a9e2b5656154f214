//! Logs that can be shipped: secrets redacted, secret headers never logged,
//! inbound ids and trace context believed only from trusted peers, and
//! trace context passed on the way W3C Trace Context has it. Over TCP
//! against the example's routes through the preset where it shows there.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use common::logs::capture_json;
use common::raw_request;
use common::routes::{routes, SECRET};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use serde_json::Value;
use tokio::net::TcpListener;
use tower::{service_fn, Layer, ServiceExt};
use tower_harden::context::{PeerAddr, TraceParent, TrustedNetworks};
use tower_harden::deadline::RequestDeadlineLayer;
use tower_harden::observe::ObserveLayer;
use tower_harden::outbound::OutboundLayer;
use tower_harden::telemetry::Redactor;
use tower_harden::{Harden, HardenConfig};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The example's routes behind the preset built from `config`, served by
/// `Harden::serve` on a free loopback port.
async fn serve(config: &str) -> SocketAddr {
    let config = HardenConfig::from_toml(config).unwrap();
    let harden = Harden::from_config(&config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(Arc::new(AtomicUsize::new(0))).layer(harden.clone().into_layer());
    let server = harden.serve(listener, app);
    tokio::spawn(async move { server.await.unwrap() });
    addr
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> common::RawResponse {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    raw_request(addr, request.as_bytes()).await
}

fn fields(outcome: &Value) -> &Value {
    &outcome["fields"]
}

/// The one outcome event, once the server task has written it (it may
/// finish the response body after the client has read it).
async fn only_outcome(log: &common::logs::Captured) -> Value {
    for _ in 0..10_000 {
        if !log.outcomes().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    log.only_outcome()
}

/// The trace id of an outcome: on the span, or on the event when a filter
/// dropped the span (tests running side by side share callsites).
fn trace_id(outcome: &Value) -> &Value {
    match &outcome["span"]["trace_id"] {
        Value::Null => &outcome["fields"]["trace_id"],
        trace_id => trace_id,
    }
}

#[tokio::test]
async fn the_fail_route_logs_its_whole_chain_with_the_password_redacted() {
    let (log, _guard) = capture_json();
    let addr = serve("").await;
    let response = get_with(addr, "/fail", &[]).await;
    assert_eq!(response.status, 500);
    let outcome = only_outcome(&log).await;
    assert_eq!(
        fields(&outcome)["error.chain"],
        "the handler failed: failed to load the account: connecting to postgres://app:[REDACTED]@db.internal/app: connection refused"
    );
    assert!(!log.text().contains(SECRET), "{}", log.text());
}

#[tokio::test]
async fn logged_header_values_are_redacted_and_secret_headers_never_logged() {
    let (log, _guard) = capture_json();
    let addr = serve(
        r#"
[observe]
log_headers = ["referer", "x-auth-token", "x-api_key", "x-amzn-oidc-data", "x-goog-iap-jwt-assertion"]
"#,
    )
    .await;
    let response = get_with(
        addr,
        "/",
        &[
            "Referer: https://bob:hunter2@app.example/?token=abc123",
            "X-Auth-Token: tok-secret-1",
            "X-Api_Key: key-secret-2",
            "X-Amzn-Oidc-Data: oidc-secret-3",
            "X-Goog-Iap-Jwt-Assertion: jwt-secret-4",
        ],
    )
    .await;
    assert_eq!(response.status, 200);
    let outcome = only_outcome(&log).await;
    assert_eq!(
        fields(&outcome)["http.request.headers"],
        "referer: https://bob:[REDACTED]@app.example/?token=[REDACTED]"
    );
    for secret in [
        "hunter2",
        "abc123",
        "tok-secret-1",
        "key-secret-2",
        "oidc-secret-3",
        "jwt-secret-4",
    ] {
        assert!(!log.text().contains(secret), "{secret} in {}", log.text());
    }
}

#[tokio::test]
async fn user_redaction_rules_from_config_and_redaction_off() {
    let config = HardenConfig::from_toml(
        r#"
[observe.redact]
keys = ["pin"]
patterns = ['acct-\d+']
"#,
    )
    .unwrap();
    assert_eq!(config.observe.redact.keys, ["pin"]);
    Harden::from_config(&config).unwrap();
    let bad = HardenConfig::from_toml("[observe.redact]\npatterns = ['(']").unwrap();
    let error = Harden::from_config(&bad).unwrap_err().to_string();
    assert!(error.contains("observe.redact.patterns[0]"), "{error}");

    // The panic message goes through the same rules.
    let (log, _guard) = capture_json();
    let app = Router::new()
        .route(
            "/panic",
            get(|| async {
                panic!("pin=1234 for acct-998877 with password=hunter2");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .layer(
            ObserveLayer::new().redactor(Redactor::new().key("pin").pattern(r"acct-\d+").unwrap()),
        );
    let response = app
        .oneshot(Request::get("/panic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    // The outcome is logged when the body is done.
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let outcome = log.only_outcome();
    assert_eq!(
        fields(&outcome)["error.message"],
        "pin=[REDACTED] for [REDACTED] with password=[REDACTED]"
    );
}

#[tokio::test]
async fn a_loopback_caller_is_trusted_with_its_ids_and_trace_by_default() {
    let (log, _guard) = capture_json();
    let addr = serve("").await;
    let response = get_with(
        addr,
        "/",
        &[
            "x-request-id: caller-id-1",
            &format!("traceparent: {TRACEPARENT}"),
        ],
    )
    .await;
    assert_eq!(response.header("x-request-id"), Some("caller-id-1"));
    let outcome = only_outcome(&log).await;
    assert_eq!(trace_id(&outcome), TRACE_ID);
    assert!(fields(&outcome).get("request_id.caller").is_none());
}

#[tokio::test]
async fn an_untrusted_caller_gets_a_new_id_and_a_new_unsampled_trace() {
    let (log, _guard) = capture_json();
    // Trusting nobody: the loopback test client stands for a public address.
    let addr = serve("[observe]\ntrusted_context = []").await;
    let response = get_with(
        addr,
        "/",
        &[
            "x-request-id: caller-id-2",
            &format!("traceparent: {TRACEPARENT}"),
        ],
    )
    .await;
    let id = response.header("x-request-id").unwrap();
    assert_ne!(id, "caller-id-2");
    let outcome = only_outcome(&log).await;
    assert!(trace_id(&outcome).is_string());
    assert_ne!(trace_id(&outcome), TRACE_ID);
    // The caller's id is kept as a log field, its traceparent said refused.
    assert_eq!(fields(&outcome)["request_id.caller"], "caller-id-2");
    assert_eq!(
        fields(&outcome)["traceparent.refused"],
        "not trusted from this peer"
    );
}

/// What the outbound client sent, for the request made with `peer` and
/// `headers`, through observe (configured with `observe`), the deadline
/// layer and the outbound layer.
async fn outbound_headers(
    observe: ObserveLayer,
    peer: &str,
    headers: &[(&str, &str)],
    calls: usize,
) -> Vec<HeaderMap> {
    // Every test of this file logs to a subscriber of its own: a callsite
    // first seen where none is set could be cached as never wanted.
    let (_log, _guard) = capture_json();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let client = OutboundLayer::new(Duration::from_secs(5)).layer(service_fn(
        move |request: Request<Full<Bytes>>| {
            recorded.lock().unwrap().push(request.headers().clone());
            async { Ok::<_, std::io::Error>(Response::new(Full::<Bytes>::default())) }
        },
    ));
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                for _ in 0..calls {
                    let request = Request::get("http://users.internal/users/7")
                        .body(Full::default())
                        .unwrap();
                    client.clone().oneshot(request).await.unwrap();
                }
                "ok"
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(5)))
        .layer(observe)
        .layer(Extension(PeerAddr(peer.parse().unwrap())));
    let mut request = Request::get("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let headers = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(headers.len(), calls);
    headers
}

#[tokio::test]
async fn trust_is_by_cidr_and_baggage_passes_from_trusted_peers_only() {
    let inbound = [
        ("traceparent", TRACEPARENT),
        ("x-request-id", "caller-id-3"),
        ("baggage", "userId=alice,tier=gold"),
    ];
    for (peer, trusted) in [
        ("127.0.0.1:1000", true),
        ("10.2.3.4:1000", true),
        ("172.20.0.9:1000", true),
        ("192.168.1.1:1000", true),
        ("[fd00::1]:1000", true),
        ("[::1]:1000", true),
        ("203.0.113.9:1000", false),
        ("[2001:db8::1]:1000", false),
    ] {
        let sent = outbound_headers(ObserveLayer::new(), peer, &inbound, 1).await;
        let sent = &sent[0];
        let parent = TraceParent::parse(sent["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(parent.trace_id().to_string() == TRACE_ID, trusted, "{peer}");
        // An untrusted caller cannot force sampling.
        assert_eq!(parent.sampled(), trusted, "{peer}");
        assert_eq!(sent["x-request-id"] == "caller-id-3", trusted, "{peer}");
        assert_eq!(
            sent.get("baggage").map(|v| v.to_str().unwrap()),
            trusted.then_some("userId=alice,tier=gold"),
            "{peer}"
        );
    }
    // Configurable both ways.
    let nobody = ObserveLayer::new().trust_inbound_context(TrustedNetworks::nobody());
    let sent = outbound_headers(nobody, "127.0.0.1:1", &inbound, 1).await;
    assert_ne!(sent[0]["x-request-id"], "caller-id-3");
    let everyone = ObserveLayer::new().trust_inbound_context(TrustedNetworks::everyone());
    let sent = outbound_headers(everyone, "203.0.113.9:1", &inbound, 1).await;
    assert_eq!(sent[0]["x-request-id"], "caller-id-3");
}

#[tokio::test]
async fn the_outbound_layer_forwards_the_id_in_the_configured_header() {
    let observe =
        ObserveLayer::new().request_id_header(http::HeaderName::from_static("x-correlation-id"));
    let sent = outbound_headers(observe, "10.0.0.1:1", &[("x-correlation-id", "corr-7")], 1).await;
    assert_eq!(sent[0]["x-correlation-id"], "corr-7");
    assert!(sent[0].get("x-request-id").is_none());
}

// ---------------------------------------------------------------------------
// W3C Trace Context, rule by rule

#[tokio::test]
async fn each_outbound_call_carries_its_own_parent_id() {
    let sent = outbound_headers(
        ObserveLayer::new(),
        "10.0.0.1:1",
        &[("traceparent", TRACEPARENT)],
        3,
    )
    .await;
    let parents: std::collections::HashSet<String> = sent
        .iter()
        .map(|headers| {
            let parent = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
            assert_eq!(parent.trace_id().to_string(), TRACE_ID);
            assert_ne!(parent.parent_id().to_string(), "00f067aa0ba902b7");
            parent.parent_id().to_string()
        })
        .collect();
    assert_eq!(parents.len(), 3);
}

#[tokio::test]
async fn several_tracestate_lines_are_combined_into_one_list() {
    let sent = outbound_headers(
        ObserveLayer::new(),
        "10.0.0.1:1",
        &[
            ("traceparent", TRACEPARENT),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        1,
    )
    .await;
    assert_eq!(
        sent[0]["tracestate"],
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    );
}

#[tokio::test]
async fn tracestate_is_passed_on_as_sent_unless_oversized_or_no_list() {
    let long_tenant = format!("{}@vendor=1", "t".repeat(250));
    for (state, passed_on) in [
        // A member this crate would not write, a duplicated key, a long
        // multi-tenant key: no reason to drop the others.
        ("Rojo=1,congo=2", true),
        ("congo=1,congo=2", true),
        (long_tenant.as_str(), true),
        ("rojo=1,,  congo=2 ", true),
        // No list at all, or over the size limit: dropped.
        ("garbage", false),
        (&format!("a={}", "b".repeat(600)), false),
    ] {
        let sent = outbound_headers(
            ObserveLayer::new(),
            "10.0.0.1:1",
            &[("traceparent", TRACEPARENT), ("tracestate", state)],
            1,
        )
        .await;
        let forwarded = sent[0].get("tracestate").map(|v| v.to_str().unwrap());
        let expected = passed_on.then(|| state.trim());
        assert_eq!(forwarded, expected, "{state}");
        // The trace continues either way.
        let parent = TraceParent::parse(sent[0]["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(parent.trace_id().to_string(), TRACE_ID);
    }
}

#[tokio::test]
async fn a_future_traceparent_version_is_parsed_as_the_spec_says() {
    for (value, continued) in [
        // A later version: its first 55 characters, then a dash or the end.
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
            true,
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            true,
        ),
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            false,
        ),
        // Shorter than 55, or version ff: a new trace.
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            false,
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            false,
        ),
        // Version 00 is exactly 55 characters.
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            false,
        ),
    ] {
        let sent = outbound_headers(
            ObserveLayer::new(),
            "10.0.0.1:1",
            &[("traceparent", value)],
            1,
        )
        .await;
        let parent = TraceParent::parse(sent[0]["traceparent"].to_str().unwrap()).unwrap();
        // What is sent on is always version 00.
        assert_eq!(parent.version(), 0);
        assert_eq!(
            parent.trace_id().to_string() == TRACE_ID,
            continued,
            "{value}"
        );
        // Of a later version's flags, only the sampled bit is kept.
        assert_eq!(parent.sampled(), continued, "{value}");
    }
}
