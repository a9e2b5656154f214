//! Overhead of `RequestDeadlineLayer` beside tower-http's `TimeoutLayer`, in
//! the same run: a bare service, each layer around it, with and without a
//! request body the handler reads.
//!
//! `cargo bench --bench deadline`
//!
//! `DEADLINE_PROFILE=LABEL:BODY:COUNT` (LABEL one of `bare`,
//! `tower_http_timeout_layer`, `tower_http_timeout_and_body_timeout`,
//! `tower_harden_deadline`; BODY `empty` or `1k`) sends COUNT requests
//! through that service and exits, for callgrind: the instructions of 3000
//! requests minus those of 1000, over 2000, are the per-request cost, free
//! of timing noise.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
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

async fn repeat<S, B>(service: S, body: &Bytes, count: u32)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..count {
        call(&service, body).await;
    }
}

fn profile(spec: &str) {
    let mut fields = spec.split(':');
    let (Some(label), Some(body), Some(count), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        panic!("DEADLINE_PROFILE=LABEL:BODY:COUNT");
    };
    let body = match body {
        "empty" => Bytes::new(),
        "1k" => Bytes::from(vec![b'x'; 1024]),
        other => panic!("unknown body {other:?}: empty or 1k"),
    };
    let count: u32 = count.parse().expect("a request count");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match label {
            "bare" => repeat(service_fn(handler::<Full<Bytes>>), &body, count).await,
            "tower_http_timeout_layer" => {
                let service =
                    TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, TIMEOUT)
                        .layer(service_fn(handler::<Full<Bytes>>));
                repeat(service, &body, count).await
            }
            "tower_http_timeout_and_body_timeout" => {
                let service =
                    TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, TIMEOUT).layer(
                        RequestBodyTimeoutLayer::new(TIMEOUT).layer(service_fn(
                            handler::<tower_http::timeout::TimeoutBody<Full<Bytes>>>,
                        )),
                    );
                repeat(service, &body, count).await
            }
            "tower_harden_deadline" => {
                let service = RequestDeadlineLayer::new(TIMEOUT).layer(service_fn(
                    handler::<tower_harden::deadline::TimedBody<Full<Bytes>>>,
                ));
                repeat(service, &body, count).await
            }
            other => panic!("unknown label {other:?}"),
        }
    });
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

fn main() {
    if let Ok(spec) = std::env::var("DEADLINE_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
