//! The observe layer beside its peer doing the same job: tower-http's
//! `SetRequestIdLayer` + `TraceLayer` + `PropagateRequestIdLayer`, each with a
//! JSON subscriber writing to `io::sink`, one span and one INFO event per
//! request, the request id generated and echoed.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_harden::observe::ObserveLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

async fn hello(_request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"hello, world",
    ))))
}

fn request() -> Request<Full<Bytes>> {
    Request::get("/users/42?page=1")
        .header("user-agent", "bench/1.0")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn round_trip<S, B>(service: S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = service.oneshot(request()).await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 12);
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_max_level(Level::INFO)
        .with_current_span(true)
        .with_span_list(true)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let observed = ServiceBuilder::new()
        .layer(ObserveLayer::new())
        .service_fn(hello);
    let peer = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Full<Bytes>>| {
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
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .service_fn(hello);

    // The same peer made to log what the observe layer logs: the same span
    // fields (trace and span ids made up, as it parses no traceparent), the
    // status recorded on the span, user agent, bytes and request id in the
    // event. The log lines of both then have the same shape and size.
    let peer_same_fields = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Full<Bytes>>| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let trace = uuid::Uuid::new_v4().simple().to_string();
                    tracing::info_span!(
                        "request",
                        http.request.method = %request.method(),
                        http.route = "_unmatched",
                        url.path = request.uri().path(),
                        http.response.status_code = tracing::field::Empty,
                        request_id,
                        trace_id = trace.as_str(),
                        span_id = &trace[..16],
                    )
                })
                .on_response(
                    |response: &Response<Full<Bytes>>, latency: Duration, span: &tracing::Span| {
                        span.record("http.response.status_code", response.status().as_u16());
                        let request_id = response
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok());
                        tracing::info!(
                            http.response.status_code = response.status().as_u16(),
                            http.response.body.size = 12u64,
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            user_agent.original = "bench/1.0",
                            request_id,
                            trace_id = "7ef857c359ac4ae192f8e769c51a1383",
                            "request completed"
                        );
                    },
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .service_fn(hello);

    let mut group = c.benchmark_group("observe");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);
    group.bench_function("bare service", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = hello(request()).await.unwrap();
            response.into_body().collect().await.unwrap()
        })
    });
    group.bench_function("tower-harden ObserveLayer", |b| {
        b.to_async(&runtime).iter(|| round_trip(observed.clone()))
    });
    group.bench_function("tower-http SetRequestId+Trace+PropagateRequestId", |b| {
        b.to_async(&runtime).iter(|| round_trip(peer.clone()))
    });
    group.bench_function("tower-http, same fields as ObserveLayer", |b| {
        b.to_async(&runtime)
            .iter(|| round_trip(peer_same_fields.clone()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
