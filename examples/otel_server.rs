//! Exports every request's span over OTLP/HTTP to the collector at
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`), as
//! OpenTelemetry's HTTP server span, joined to the caller's trace when the
//! caller is trusted (loopback and private ranges by default); logs stay
//! JSON lines on stdout. Needs the `opentelemetry` feature.
//!
//! ```sh
//! docker run --rm -p 4318:4318 -p 16686:16686 jaegertracing/all-in-one   # UI on :16686
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \
//!     cargo run --example otel_server --features opentelemetry
//! curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     http://127.0.0.1:3000/users/7
//! ```
//!
//! `GET /users/{id}` calls a stand-in upstream (`GET /upstream/{id}` on this
//! same server) through the `OutboundLayer`: the exported trace shows the
//! server span, its client span, and the upstream's server span as the
//! client span's child. The OTLP exporter is this example's dependency only;
//! the crate depends on `opentelemetry` and `tracing-opentelemetry` alone.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tower::{Layer, ServiceExt};
use tower_harden::error::HandlerError;
use tower_harden::outbound::OutboundLayer;
use tower_harden::Harden;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The OTLP/HTTP exporter (endpoint from `OTEL_EXPORTER_OTLP_ENDPOINT`), a
/// batch processor, and the subscriber: the OpenTelemetry layer plus JSON
/// lines on stdout.
///
/// The request-duration histogram, with the `metrics` feature, goes to the
/// metrics exporter of your choice: give it
/// `tower_harden::telemetry::metrics::REQUEST_DURATION_BUCKETS`, the
/// boundaries OpenTelemetry's HTTP conventions advise.
fn init_tracing() -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter.build()?)
        .with_resource(Resource::builder().with_service_name("otel-server").build())
        .build();
    let tracer = provider.tracer("tower-harden");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        )
        .init();
    Ok(provider)
}

type Upstream = tower_harden::outbound::Outbound<
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
>;

async fn user(
    State((client, addr)): State<(Upstream, SocketAddr)>,
    Path(id): Path<u32>,
) -> Result<String, HandlerError> {
    let request = http::Request::get(format!("http://{addr}/upstream/{id}"))
        .body(Full::default())
        .map_err(HandlerError::internal)?;
    let response = client
        .oneshot(request)
        .await
        .map_err(HandlerError::internal)?;
    Ok(format!(
        "user {id}: {}",
        String::from_utf8_lossy(response.body())
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = init_tracing()?;
    // `full_span`: the span carries OpenTelemetry's HTTP server name, kind
    // and attributes (with the `opentelemetry` feature).
    let mut config = tower_harden::HardenConfig::default();
    config.observe.full_span = true;
    let harden = Harden::from_config(&config)?;
    let addr: SocketAddr = std::env::var("HARDEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let client = OutboundLayer::new(Duration::from_secs(2))
        .layer(Client::builder(TokioExecutor::new()).build_http());
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route(
            "/upstream/{id}",
            get(|Path(id): Path<u32>| async move { format!("{{\"id\":{id}}}") }),
        )
        .with_state((client, addr))
        .layer(harden.clone().into_layer());
    println!("listening on http://{addr}");
    harden
        .serve(listener, app)
        .with_graceful_shutdown(tower_harden::serve::shutdown_signal())
        .await?;
    // Exports what the batch still holds.
    provider.shutdown()?;
    Ok(())
}
