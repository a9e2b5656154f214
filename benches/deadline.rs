//! Overhead of `RequestDeadlineLayer` beside tower-http's `TimeoutLayer`, in
//! the same run: a bare service, each layer around it, with and without a
//! request body the handler reads.
//!
//! `cargo bench --bench deadline`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_harden::deadline::RequestDeadlineLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A handler that reads the whole request body and answers with its length.
async fn handler<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let body = request
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Ok(Response::new(Full::new(Bytes::from(
        body.len().to_string(),
    ))))
}

fn request(body: &Bytes) -> Request<Full<Bytes>> {
    Request::post("/")
        .body(Full::new(body.clone()))
        .expect("request")
}

async fn call<S, B>(service: &S, body: &Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request(body)).await.expect("call");
    let _ = response.into_body().collect().await.expect("response body");
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, body) in [
        ("empty_body", Bytes::new()),
        ("1KiB_body", Bytes::from(vec![b'x'; 1024])),
    ] {
        let mut group = c.benchmark_group(format!("deadline/{name}"));
        group
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .sample_size(30);

        let bare = service_fn(handler::<Full<Bytes>>);
        group.bench_function("bare", |b| {
            b.to_async(&runtime).iter(|| call(&bare, &body));
        });

        let timeout_only = TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, TIMEOUT)
            .layer(service_fn(handler::<Full<Bytes>>));
        group.bench_function("tower_http_timeout_layer", |b| {
            b.to_async(&runtime).iter(|| call(&timeout_only, &body));
        });

        let tower_http = TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, TIMEOUT)
            .layer(RequestBodyTimeoutLayer::new(TIMEOUT).layer(service_fn(
                handler::<tower_http::timeout::TimeoutBody<Full<Bytes>>>,
            )));
        group.bench_function("tower_http_timeout_and_body_timeout", |b| {
            b.to_async(&runtime).iter(|| call(&tower_http, &body));
        });

        let ours = RequestDeadlineLayer::new(TIMEOUT).layer(service_fn(
            handler::<tower_harden::deadline::TimedBody<Full<Bytes>>>,
        ));
        group.bench_function("tower_harden_deadline", |b| {
            b.to_async(&runtime).iter(|| call(&ours, &body));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
