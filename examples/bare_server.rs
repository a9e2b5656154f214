//! BENCHMARK BASELINE, not an example to copy: the routes of
//! `hardened_server` served by plain `axum::serve` with no tower-harden
//! layer at all (no request ids, no logging, no limits, no rate limit, no
//! deadline, panics drop the connection). `benches/load.sh` measures
//! `hardened_server` against it on the same machine.
//!
//! ```sh
//! BARE_ADDR=127.0.0.1:3100 cargo run --release --example bare_server
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;

async fn echo(request: Request) -> Result<Json<serde_json::Value>, StatusCode> {
    let mut body = request.into_body();
    let mut bytes = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
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

async fn fail() -> Result<String, StatusCode> {
    Err(StatusCode::INTERNAL_SERVER_ERROR)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(echo))
        .route("/slow/{ms}", get(slow))
        .route("/panic", get(panics))
        .route("/fail", get(fail));
    let addr: SocketAddr = std::env::var("BARE_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3100".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
