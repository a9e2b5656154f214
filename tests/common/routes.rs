//! The routes of `examples/hardened_server.rs` -- the example's own code,
//! included here, so the hostile suite attacks the server a user would
//! deploy -- plus `/smuggled`, which counts its calls: a request smuggled
//! past the framing would show up there.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

#[path = "../../examples/hardened_server.rs"]
#[allow(dead_code, unused_imports)]
mod example;

/// The stand-in secret in `/fail`'s error chain: never in a response, and
/// redacted from the log.
pub const SECRET: &str = "hunter2";

/// The example server's routes; `smuggled` counts calls to `/smuggled`.
pub fn routes(smuggled: Arc<AtomicUsize>) -> Router {
    example::routes().route(
        "/smuggled",
        get(move || async move {
            smuggled.fetch_add(1, Ordering::SeqCst);
            "smuggled"
        }),
    )
}
