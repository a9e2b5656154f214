//! The routes of `examples/hardened_server.rs`, copied so the hostile suite
//! attacks the server a user would deploy, plus `/smuggled`, which counts
//! its calls: a request smuggled past the framing would show up there.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use tower_harden::observe::HandlerError;

/// The stand-in secret in `/fail`'s error chain: in the log, never in a
/// response.
pub const SECRET: &str = "hunter2";

async fn echo(request: Request) -> Result<Json<serde_json::Value>, HandlerError> {
    let mut body = request.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(HandlerError::internal)?;
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
struct LoadAccount(#[source] DatabaseUnreachable);

#[derive(Debug, thiserror::Error)]
#[error("connecting to {url}")]
struct DatabaseUnreachable {
    url: &'static str,
    source: std::io::Error,
}

async fn fail() -> Result<String, HandlerError> {
    let unreachable = DatabaseUnreachable {
        url: "postgres://app:hunter2@db.internal/app",
        source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
    };
    Err(LoadAccount(unreachable))?
}

/// The example server's routes; `smuggled` counts calls to `/smuggled`.
pub fn routes(smuggled: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/slow/{ms}", get(slow))
        .route("/panic", get(panics))
        .route("/fail", get(fail))
        .route(
            "/smuggled",
            get(move || async move {
                smuggled.fetch_add(1, Ordering::SeqCst);
                "smuggled"
            }),
        )
}
