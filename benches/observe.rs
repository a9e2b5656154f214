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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
