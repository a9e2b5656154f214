//! A hardened axum server: the whole `Harden` stack from one config file,
//! served by `tower_harden::serve` (header-read timeout, connection cap,
//! graceful shutdown).
//!
//! ```sh
//! cargo run --example hardened_server
//! HARDEN_ADDR=127.0.0.1:8080 HARDEN_CONFIG=examples/harden.toml cargo run --example hardened_server
//! # Rate limit shared through Redis (needs the `redis` feature and a secret
//! # every instance shares, named by `rate_limit.key_secret_env`):
//! REDIS_URL=redis://127.0.0.1:6379 RATE_LIMIT_SECRET=change-me \
//!     cargo run --example hardened_server --features redis
//! # ... or through a Redis Cluster (any of its nodes, comma-separated):
//! REDIS_CLUSTER_NODES=redis://127.0.0.1:7000,redis://127.0.0.1:7001 RATE_LIMIT_SECRET=change-me \
//!     cargo run --example hardened_server --features redis
//! ```
//!
//! Routes: `GET /` (200), `POST /echo` (streams the body through the limit and
//! replies `{"bytes": N}`), `GET /slow/{ms}` (sleeps, then 200), `GET /panic`
//! (panics: a 500 problem, logged with its request id), `GET /fail` (a handler
//! error whose source chain holds a stand-in secret: never in the response,
//! and redacted in the log, which keeps the rest of the chain), `GET
//! /bytes/{n}` (streams `n` bytes, at most 1 GiB, in 64 KiB chunks, as a
//! download would), `GET /db` (a query against a simulated database: a pool
//! of `HARDEN_DB_POOL` connections, default 16, each query holding one for
//! `HARDEN_DB_QUERY_MS`, default 20 ms, so about 800 queries/s; waiting for a
//! connection is part of the query, as with a real pool).
//!
//! With `--features metrics`, `GET /metrics` renders Prometheus metrics, the
//! request-duration histogram in OpenTelemetry's advised buckets.
//!
//! Logs are JSON lines when standard output is not a terminal, readable text
//! when it is. `RUST_LOG` filters them (default `info`). With the `json-log`
//! feature the JSON lines are written by `tower_harden::telemetry::json_log`
//! (the same bytes for fewer instructions);
//! `HARDEN_LOG_FORMATTER=tracing-subscriber` picks tracing-subscriber's JSON
//! formatter instead, for comparison.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use tower_harden::error::HandlerError;
use tower_harden::{Harden, HardenConfig};
use tracing_subscriber::EnvFilter;

/// Counts the body as it streams: never holds more than one frame. A body
/// refused by a limit ends the loop with an error; the layer that refused it
/// answers with its own 413 or 408 problem, whatever this handler returns.
async fn echo(request: Request) -> Result<Json<serde_json::Value>, HandlerError> {
    let mut body = request.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(HandlerError::internal)?;
        bytes += frame.data_ref().map_or(0, |data| data.len());
    }
    Ok(Json(serde_json::json!({ "bytes": bytes })))
}

/// A typed JSON body: axum rejects a body that is not JSON (400), not of
/// this shape (422) or not declared `application/json` (415); with
/// `[problems] map_rejections` each is a problem with the request id.
async fn create_user(Json(user): Json<NewUser>) -> (http::StatusCode, String) {
    (http::StatusCode::CREATED, format!("created {}", user.name))
}

#[derive(serde::Deserialize)]
struct NewUser {
    name: String,
}

/// A numeric path parameter: `/users/abc` is axum's 400 rejection.
async fn user(Path(id): Path<u32>) -> String {
    format!("user {id}")
}

async fn slow(Path(ms): Path<u64>) -> &'static str {
    // The request deadline (10 s by default) drops this future if it runs over.
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    "done"
}

async fn panics() -> &'static str {
    panic!("the handler panicked")
}

#[derive(Debug, thiserror::Error)]
#[error("failed to load the account")]
struct LoadAccount(#[source] DatabaseUnreachable);

#[derive(Debug, thiserror::Error)]
#[error("connecting to {url}")]
struct DatabaseUnreachable {
    url: &'static str,
    source: std::io::Error,
}

async fn fail() -> Result<String, HandlerError> {
    let unreachable = DatabaseUnreachable {
        // A stand-in secret: the log gets the chain with the password
        // redacted (`postgres://app:[REDACTED]@db.internal/app`), the client
        // gets "internal error" and the request id.
        url: "postgres://app:hunter2@db.internal/app",
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
    };
    Err(LoadAccount(unreachable))?
}

/// A simulated database: a pool of connections, each query holding one for
/// a fixed time. A query waits for a free connection first, without bound,
/// as a real pool's queue does: that wait is what an overload turns into
/// latency.
#[derive(Clone)]
struct Database {
    pool: Arc<tokio::sync::Semaphore>,
    query_time: Duration,
}

impl Database {
    /// `HARDEN_DB_POOL` connections (default 16, at least 1), each query
    /// `HARDEN_DB_QUERY_MS` long (default 20).
    fn from_env() -> Self {
        fn number(name: &str, default: u64) -> u64 {
            match std::env::var(name) {
                Ok(text) => text
                    .parse()
                    .unwrap_or_else(|_| panic!("{name} must be a whole number, not {text:?}")),
                Err(_) => default,
            }
        }
        let connections = number("HARDEN_DB_POOL", 16).clamp(1, 1 << 20) as usize;
        Self {
            pool: Arc::new(tokio::sync::Semaphore::new(connections)),
            query_time: Duration::from_millis(number("HARDEN_DB_QUERY_MS", 20)),
        }
    }

    async fn query(self) -> Result<&'static str, HandlerError> {
        let _connection = self.pool.acquire().await.map_err(HandlerError::internal)?;
        tokio::time::sleep(self.query_time).await;
        Ok("row")
    }
}

/// The routes, without the layers (the integration tests attack these very
/// routes through the preset).
pub fn routes() -> Router {
    let database = Database::from_env();
    Router::new()
        .route("/db", get(move || database.clone().query()))
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/slow/{ms}", get(slow))
        .route("/panic", get(panics))
        .route("/fail", get(fail))
        .route("/users", post(create_user))
        .route("/users/{id}", get(user))
        .route("/bytes/{n}", get(download))
}

/// The largest `/bytes/{n}` download: 1 GiB.
const MAX_DOWNLOAD: u64 = 1024 * 1024 * 1024;

/// One 64 KiB chunk every download is cut from.
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Streams `n` bytes (at most [`MAX_DOWNLOAD`]) in 64 KiB chunks, as a
/// download would: each chunk is made when the connection can take it, so
/// the response is never held whole and a client that reads slowly is sent
/// slowly.
async fn download(Path(n): Path<u64>) -> Result<axum::response::Response, HandlerError> {
    if n > MAX_DOWNLOAD {
        return Err(HandlerError::bad_request(format!(
            "at most {MAX_DOWNLOAD} bytes"
        )));
    }
    let chunks = futures_util::stream::unfold(n, |left| async move {
        let len = left.min(CHUNK.len() as u64) as usize;
        let chunk = axum::body::Bytes::from_static(&CHUNK[..len]);
        (left > 0).then_some((Ok::<_, std::convert::Infallible>(chunk), left - len as u64))
    });
    axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, n)
        .body(axum::body::Body::from_stream(chunks))
        .map_err(HandlerError::internal)
}

/// JSON lines on stdout (text on a terminal), written by another thread
/// than the one serving the request. With the `json-log` feature the lines
/// are this crate's formatter's (`HARDEN_LOG_FORMATTER=tracing-subscriber`
/// for tracing-subscriber's, the same bytes) and its `BatchWriter` writes
/// them: the serving thread copies its line into a buffer, and one write
/// carries every line of up to 10 ms (`HARDEN_LOG_WRITER=tracing-appender`
/// for tracing-appender's worker, which is woken for a line at a time).
/// Without the feature, tracing-subscriber's JSON through tracing-appender.
/// Neither is lossy here: when the writer falls behind, requests wait
/// rather than lines being dropped. The guard writes what is left when
/// `main` returns.
fn init_logging() -> Box<dyn std::any::Any> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let to_terminal = std::io::stdout().is_terminal();
    #[cfg(feature = "json-log")]
    if !to_terminal && std::env::var("HARDEN_LOG_WRITER").as_deref() != Ok("tracing-appender") {
        let (writer, guard) = tower_harden::telemetry::json_log::BatchWriter::builder()
            .lossy(false)
            .finish(std::io::stdout())
            .expect("the log writer thread starts");
        init_json_subscriber(writer, filter);
        return Box::new(guard);
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::new(std::io::stdout()));
    if to_terminal {
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_env_filter(filter)
            .init();
    } else {
        init_json_subscriber(writer, filter);
    }
    Box::new(guard)
}

/// The JSON line: this crate's formatter with `json-log` (unless
/// `HARDEN_LOG_FORMATTER=tracing-subscriber`), else tracing-subscriber's.
fn init_json_subscriber<W>(writer: W, filter: EnvFilter)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    #[cfg(feature = "json-log")]
    if std::env::var("HARDEN_LOG_FORMATTER").as_deref() != Ok("tracing-subscriber") {
        tower_harden::telemetry::json_log::subscriber()
            .with_writer(writer)
            .with_env_filter(filter)
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .with_env_filter(filter)
        .init();
}

/// The configuration: the file named by `HARDEN_CONFIG`, else the defaults
/// (the values listed in `examples/harden.toml`). `REDIS_URL` switches the
/// rate limiter to Redis, `REDIS_CLUSTER_NODES` (comma-separated node URLs)
/// to a Redis Cluster.
fn config() -> Result<HardenConfig, Box<dyn std::error::Error>> {
    let mut config = match std::env::var("HARDEN_CONFIG") {
        Ok(path) => HardenConfig::from_toml_file(path)?,
        Err(_) => HardenConfig::default(),
    };
    // axum's plain-text rejections (bad JSON, path, query, content type)
    // answered as problems too; off unless asked for.
    config.problems.map_rejections = true;
    let url = std::env::var("REDIS_URL").ok();
    let nodes = std::env::var("REDIS_CLUSTER_NODES").ok();
    if url.is_some() || nodes.is_some() {
        config.rate_limit.backend = tower_harden::config::Backend::Redis;
        // Both set: the configuration refuses it, by name.
        config.rate_limit.redis_url = url;
        if let Some(nodes) = nodes {
            config.rate_limit.redis_cluster_nodes = nodes
                .split(',')
                .map(|node| node.trim().to_owned())
                .collect();
        }
        config
            .rate_limit
            .key_secret_env
            .get_or_insert_with(|| "RATE_LIMIT_SECRET".into());
    }
    Ok(config)
}

/// With the crate's `metrics` feature: a Prometheus recorder whose
/// `http.server.request.duration` histogram has the bucket boundaries
/// OpenTelemetry's HTTP semantic conventions advise (the `metrics` facade
/// leaves buckets to the exporter), rendered at `GET /metrics`.
#[cfg(feature = "metrics")]
fn with_metrics(app: Router) -> Result<Router, Box<dyn std::error::Error>> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use tower_harden::telemetry::metrics::{names, REQUEST_DURATION_BUCKETS};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::REQUEST_DURATION.to_owned()),
            REQUEST_DURATION_BUCKETS,
        )?
        .install_recorder()?;
    Ok(app.route("/metrics", get(move || std::future::ready(handle.render()))))
}

/// Without the `metrics` feature there is nothing to export.
#[cfg(not(feature = "metrics"))]
fn with_metrics(app: Router) -> Result<Router, Box<dyn std::error::Error>> {
    Ok(app)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _log_writer = init_logging();
    // Every layer, in its order (see `tower_harden::Harden`):
    // observe (request id, trace, one span and one outcome event, panics)
    // -> head limits (431/414) -> body limit (413, declared before anything else)
    // -> rate limit (429, per client IP, 50/s burst 100) -> deadline (503 after
    // 10 s, 408 for slow bodies) -> decompression with a decoded limit (413/415).
    let harden = Harden::from_config(&config()?)?;
    let app = with_metrics(routes())?.layer(harden.clone().into_layer());

    let addr: SocketAddr = std::env::var("HARDEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // Header-read timeout, keep-alive, connection cap and drain timeout from
    // `[server]`; stops gracefully on Ctrl-C or SIGTERM (the default).
    harden.serve(listener, app).await?;
    Ok(())
}
