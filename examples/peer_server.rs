//! BENCHMARK PEER, not this crate's way: the routes of `hardened_server`
//! behind the stack a user assembles by hand from tower-http 0.7 and
//! tower_governor, doing the nearest same job as the `Harden` preset, so
//! that every HTTP benchmark (`benches/load.sh`, `benches/http_instructions.sh`,
//! `benches/overload.sh`) runs it beside the preset.
//!
//! ```sh
//! PEER_ADDR=127.0.0.1:3200 cargo run --release --example peer_server
//! ```
//!
//! The stack, outermost first: `SetRequestId` (a UUID in `x-request-id`
//! unless the request has one), `TraceLayer` (a span with the method, path
//! and request id, and one INFO line per response: JSON through
//! tracing-subscriber, written by tracing-appender's worker as the example
//! server does), `PropagateRequestId`, `CatchPanic` (a 500), a request body
//! limit of 1 MiB (413), a timeout of 10 s (503), and tower_governor keyed
//! by the peer IP (50/s, burst 100: the preset's default quota).
//!
//! `PEER_LIMIT` adds one of tower's concurrency limits inside the
//! governor (the place of the preset's in-flight limit), for
//! `benches/overload.sh`:
//! - `queue:N`: `GlobalConcurrencyLimit` of N: the excess waits for a slot,
//!   in a queue without bound, until the timeout;
//! - `shed:N`: `LoadShed` over the same: the excess is refused at once with
//!   a plain 503.
//!
//! `PEER_QUOTA=PER_SECOND:BURST` changes the governor's quota (the load
//! benchmarks need one a single address cannot spend). `RUST_LOG` filters
//! the log (default `info`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::Router;
use http::StatusCode;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_governor::GovernorLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing_subscriber::EnvFilter;

#[path = "hardened_server.rs"]
#[allow(dead_code, unused_imports)]
mod hardened;

/// One JSON line per request on stdout, written by tracing-appender's
/// worker thread, not lossy: the example server's writer.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stdout()));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .with_env_filter(filter)
        .init();
    guard
}

/// `PEER_QUOTA=PER_SECOND:BURST`, default `50:100`.
fn quota() -> Result<(u64, u32), Box<dyn std::error::Error>> {
    let spec = std::env::var("PEER_QUOTA").unwrap_or_else(|_| "50:100".into());
    let (per_second, burst) = spec.split_once(':').ok_or("PEER_QUOTA=PER_SECOND:BURST")?;
    Ok((per_second.parse()?, burst.parse()?))
}

/// `PEER_LIMIT`: tower's concurrency limit (queueing or shedding), if any.
fn with_limit(app: Router) -> Result<Router, Box<dyn std::error::Error>> {
    let Ok(spec) = std::env::var("PEER_LIMIT") else {
        return Ok(app);
    };
    let (kind, max) = spec.split_once(':').ok_or("PEER_LIMIT=queue:N or shed:N")?;
    let max: usize = max.parse()?;
    // Global: `Router::layer` wraps each route on its own, and the limit
    // must be one for the whole server.
    Ok(match kind {
        "queue" => app.layer(GlobalConcurrencyLimitLayer::new(max)),
        "shed" => app.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .layer(LoadShedLayer::new())
                .layer(GlobalConcurrencyLimitLayer::new(max)),
        ),
        _ => return Err("PEER_LIMIT=queue:N or shed:N".into()),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _log_writer = init_logging();
    let (per_second, burst) = quota()?;
    let governor = GovernorConfigBuilder::default()
        .period(Duration::from_secs(1) / per_second.max(1) as u32)
        .burst_size(burst)
        .key_extractor(PeerIpKeyExtractor)
        .finish()
        .ok_or("PEER_QUOTA: a quota of at least 1/s and a burst of at least 1")?;
    let app = with_limit(hardened::routes())?.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &Request| {
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
            .layer(CatchPanicLayer::new())
            .layer(RequestBodyLimitLayer::new(1024 * 1024))
            // Inside the body limit: its error response needs a body type
            // with `Default`.
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(10),
            ))
            .layer(GovernorLayer::new(governor)),
    );

    let addr: SocketAddr = std::env::var("PEER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3200".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
