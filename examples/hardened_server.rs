//! A hardened axum server: every layer this crate has, each visible here.
//!
//! ```sh
//! cargo run --example hardened_server
//! HARDEN_ADDR=127.0.0.1:8080 cargo run --example hardened_server
//! ```
//!
//! Routes: `GET /` (200), `POST /echo` (streams the body through the limit and
//! replies `{"bytes": N}`), `GET /slow/{ms}` (sleeps, then 200), `GET /panic`
//! (panics), `GET /fail` (a handler error carrying a secret in its source
//! chain: the client never sees it).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use tower::ServiceBuilder;
use tower_harden::input::{BodyLimitLayer, DecompressLayer, HeadLimitLayer, DEFAULT_BODY_LIMIT};
use tower_harden::problem::Problem;

/// Counts the body as it streams: never holds more than one frame.
async fn echo(request: Request) -> Result<Json<serde_json::Value>, Problem> {
    let mut body = request.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        // A body refused by a limit ends here; the layer answers with its
        // own 413 problem, whatever this handler returns.
        let frame = frame.map_err(|_| Problem::internal_error())?;
        bytes += frame.data_ref().map_or(0, |data| data.len());
    }
    Ok(Json(serde_json::json!({ "bytes": bytes })))
}

async fn slow(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    "done"
}

async fn panics() -> &'static str {
    panic!("the handler panicked")
}

#[derive(Debug, thiserror::Error)]
#[error("failed to load the account")]
struct LoadAccount(#[source] DatabaseError);

#[derive(Debug, thiserror::Error)]
#[error("connection to postgres://app:hunter2@db.internal/app refused")]
struct DatabaseError;

async fn fail() -> Result<&'static str, Problem> {
    let error = LoadAccount(DatabaseError);
    // The client gets "internal error"; the chain is for the log.
    eprintln!(
        "GET /fail: {error}: {}",
        std::error::Error::source(&error).unwrap()
    );
    Err(Problem::internal_error())
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/slow/{ms}", get(slow))
        .route("/panic", get(panics))
        .route("/fail", get(fail))
        .layer(
            ServiceBuilder::new()
                // 431 / 414: 100 header fields, 16 KiB of headers, 8 KiB URI.
                .layer(HeadLimitLayer::new())
                // 413: 1 MiB, declared or streamed.
                .layer(BodyLimitLayer::new(DEFAULT_BODY_LIMIT))
                // 413 on decoded bytes, 415 on unknown codings.
                .layer(DecompressLayer::new(DEFAULT_BODY_LIMIT)),
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("HARDEN_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app().into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
