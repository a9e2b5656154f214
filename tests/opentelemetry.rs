//! OpenTelemetry end to end (feature `opentelemetry`), through the SDK's
//! in-memory exporter: the exported server span joins the trusted caller's
//! trace, an outbound call is a client span whose id its `traceparent`
//! carries, and an untrusted caller's `traceparent` is not adopted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::{service_fn, Layer, ServiceExt};
use tower_harden::context::{PeerAddr, TraceParent};
use tower_harden::deadline::RequestDeadlineLayer;
use tower_harden::observe::ObserveLayer;
use tower_harden::outbound::OutboundLayer;
use tracing_subscriber::layer::SubscriberExt;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Sends one request from `peer` through observe, the deadline layer and a
/// handler that makes one outbound call; returns the exported spans and
/// the headers of the outbound call.
async fn exported(peer: &str, traceparent: Option<&str>) -> (Vec<SpanData>, HeaderMap) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

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
            "/users/{id}",
            get(move || async move {
                let request = Request::get("http://users.internal:8080/users/7")
                    .body(Full::default())
                    .unwrap();
                client.oneshot(request).await.unwrap();
                "ok"
            }),
        )
        .layer(RequestDeadlineLayer::new(Duration::from_secs(5)))
        .layer(ObserveLayer::new().full_span(true))
        .layer(Extension(PeerAddr(peer.parse().unwrap())));
    let mut request = Request::get("/users/7").header("host", "api.example:8443");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let headers = seen.lock().unwrap().pop().expect("the call was made");
    (spans, headers)
}

fn one(spans: &[SpanData], kind: SpanKind) -> &SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.span_kind == kind).collect();
    assert_eq!(found.len(), 1, "{spans:#?}");
    found[0]
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn the_server_span_joins_a_trusted_callers_trace_with_the_conventions_name() {
    let (spans, _) = exported("10.0.0.7:4000", Some(TRACEPARENT)).await;
    let server = one(&spans, SpanKind::Server);
    assert_eq!(
        server.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        server.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert_eq!(server.name, "GET /users/{id}");
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(server, "http.route").as_deref(),
        Some("/users/{id}")
    );
    assert_eq!(attribute(server, "url.scheme").as_deref(), Some("http"));
    assert_eq!(attribute(server, "server.port").as_deref(), Some("8443"));
    assert_eq!(
        attribute(server, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
}

#[tokio::test]
async fn an_outbound_call_is_a_client_span_its_traceparent_names() {
    let (spans, headers) = exported("10.0.0.7:4000", Some(TRACEPARENT)).await;
    let server = one(&spans, SpanKind::Server);
    let client = one(&spans, SpanKind::Client);
    assert_eq!(client.parent_span_id, server.span_context.span_id());
    assert_eq!(
        client.span_context.trace_id(),
        server.span_context.trace_id()
    );
    let sent = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(
        sent.parent_id().to_bytes(),
        client.span_context.span_id().to_bytes()
    );
    assert_eq!(
        sent.trace_id().to_bytes(),
        server.span_context.trace_id().to_bytes()
    );
    assert_eq!(client.name, "GET");
    assert_eq!(
        attribute(client, "server.address").as_deref(),
        Some("users.internal")
    );
    assert_eq!(attribute(client, "server.port").as_deref(), Some("8080"));
}

#[tokio::test]
async fn an_untrusted_callers_traceparent_is_not_adopted() {
    let (spans, headers) = exported("203.0.113.9:4000", Some(TRACEPARENT)).await;
    let server = one(&spans, SpanKind::Server);
    assert_ne!(
        server.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(server.parent_span_id, SpanId::INVALID);
    // Logs, exported spans and the outbound call agree on the new trace.
    let sent = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(
        sent.trace_id().to_bytes(),
        server.span_context.trace_id().to_bytes()
    );
}
