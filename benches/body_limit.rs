//! Overhead of `BodyLimitLayer` on a small request, beside tower-http's
//! `RequestBodyLimitLayer` in the same run.
//!
//! Each iteration builds a request with a 64-byte body, calls the service,
//! and the inner service reads the whole body, so the body wrapper's cost is
//! measured as well as the layer's.
//!
//! `BODY_LIMIT_PROFILE=LABEL:COUNT` (LABEL one of `bare`, `tower_http`,
//! `ours`, `head_and_body`) sends COUNT requests through that service and
//! exits, for callgrind: the instructions of 3000 requests minus those of
//! 1000, over 2000, are the per-request cost, free of timing noise.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};

async fn read_all<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
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

fn request() -> Request<Full<Bytes>> {
    Request::post("/echo")
        .header("content-length", "64")
        .body(Full::new(Bytes::from_static(&[b'a'; 64])))
        .unwrap()
}

async fn drive<S, B>(service: &mut S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap();
    let _ = response.into_body().collect().await.unwrap();
}

fn bare() -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>
{
    tower::service_fn(read_all)
}

macro_rules! peer {
    () => {
        ServiceBuilder::new()
            .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
            .service_fn(read_all)
    };
}

macro_rules! ours {
    () => {
        ServiceBuilder::new()
            .layer(tower_harden::input::BodyLimitLayer::new(1024 * 1024))
            .service_fn(read_all)
    };
}

macro_rules! head_and_body {
    () => {
        ServiceBuilder::new()
            .layer(tower_harden::input::HeadLimitLayer::new())
            .layer(tower_harden::input::BodyLimitLayer::new(1024 * 1024))
            .service_fn(read_all)
    };
}

async fn repeat<S, B>(mut service: S, count: u32)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..count {
        drive(&mut service).await;
    }
}

fn profile(spec: &str) {
    let (label, count) = spec
        .split_once(':')
        .expect("BODY_LIMIT_PROFILE=LABEL:COUNT");
    let count: u32 = count.parse().expect("a request count");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        match label {
            "bare" => repeat(bare(), count).await,
            "tower_http" => repeat(peer!(), count).await,
            "ours" => repeat(ours!(), count).await,
            "head_and_body" => repeat(head_and_body!(), count).await,
            other => panic!("unknown label {other:?}: bare, tower_http, ours or head_and_body"),
        }
    });
}

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("body_limit/small_request");
    group.measurement_time(std::time::Duration::from_secs(3));

    let mut bare = bare();
    group.bench_function("bare", |b| b.iter(|| runtime.block_on(drive(&mut bare))));

    let mut peer = peer!();
    group.bench_function("tower_http::RequestBodyLimit", |b| {
        b.iter(|| runtime.block_on(drive(&mut peer)))
    });

    let mut ours = ours!();
    group.bench_function("tower_harden::BodyLimit", |b| {
        b.iter(|| runtime.block_on(drive(&mut ours)))
    });

    let mut head = head_and_body!();
    group.bench_function("tower_harden::HeadLimit+BodyLimit", |b| {
        b.iter(|| runtime.block_on(drive(&mut head)))
    });
    group.finish();
}

criterion_group!(benches, overhead);

fn main() {
    if let Ok(spec) = std::env::var("BODY_LIMIT_PROFILE") {
        return profile(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
