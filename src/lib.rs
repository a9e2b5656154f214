//! # tower-harden
//!
//! Composable [tower] layers that make any HTTP service production-ready: the
//! code that works on the happy path and then falls over at 2 AM when real
//! traffic arrives. Each layer wraps any `Service<http::Request<B>>`, keeps the
//! inner service's error type (axum never needs `HandleErrorLayer`), composes
//! with `tower::ServiceBuilder` and works on an axum `Router` with
//! `Router::layer`. [`Harden`] puts them all together, in the right order,
//! from one [`HardenConfig`].
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tower_harden::Harden;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let harden = Harden::new(); // or Harden::from_config(&HardenConfig::from_toml_file("harden.toml")?)?
//! let app = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(harden.clone().into_layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! harden.serve(listener, app).await?; // axum::serve plus connection-level limits
//! # Ok(())
//! # }
//! ```
//!
//! # What each layer defends against
//!
//! | layer | defends against | answer | default |
//! |---|---|---|---|
//! | [`observe::ObserveLayer`] | failures nobody can trace; forged log lines; secrets in logs; forged trace context; lost panics | one span and one outcome event per request, redacted, `x-request-id`, 500 for a panic, problems for axum's empty 404 and 405 (and, [on request](observe::ObserveLayer::problems_for_rejections), its plain-text rejections) | ids up to 128 plain characters and trace context accepted from loopback and private networks |
//! | [`input::HeadLimitLayer`] | header floods, huge headers and URIs | 431 / 414 | 96 fields, 16 KiB, 8 KiB URI |
//! | [`input::BodyLimitLayer`] | huge or endless bodies, lying `Content-Length` | 413, before any byte is read when declared | 1 MiB |
//! | [`rate_limit::RateLimitLayer`] | floods from one client, key spoofing, memory blow-up from random keys | 429 with `Retry-After` and `RateLimit` headers | 50/s, burst 100 per client IP; 100,000 keys |
//! | [`overload::InFlightLimitLayer`] | demand over capacity: a slow dependency, a retry storm | a short queue (256, served within 10 ms), then 503 `overloaded` with `Retry-After` | adaptive (Gradient2), 20 at start, 8 to 1000; refused at 100 ms |
//! | [`deadline::RequestDeadlineLayer`] | slow handlers; slowloris bodies | 503 / 408 | 10 s; body idle 60 s; 240 B/s after 5 s |
//! | [`input::DecompressLayer`] | compression bombs, zstd windows over 8 MiB, unknown or nested codings | 413 / 415 | decoded limit 1 MiB, window 8 MiB |
//! | [`serve()`] | slow headers, idle connections, connection floods; requests cut off by a deploy; forged PROXY headers | connection closed; graceful drain on Ctrl-C or SIGTERM | 30 s header read, 75 s keep-alive, 1024 connections, 25 s drain; PROXY protocol off |
//! | [`outbound::OutboundLayer`] | upstream calls that outlive the caller's budget | typed [`outbound::OutboundError`] | min(10 s, remaining budget) |
//!
//! Every refusal is a typed value implementing [`error::Refusal`]: the
//! client gets an RFC 9457 `application/problem+json` body
//! ([`error::Problem`]) with the request id and no internals; the [`observe`]
//! layer logs the refusal's context (layer, limit, observed size, policy,
//! hashed key, budget) once.
//!
//! # Where each concern lives
//!
//! A base every layer stands on, the layers (none imports another), and the
//! assembly on top; `tests/layering.rs` fails when an import breaks that.
//!
//! | room | owns | imports |
//! |---|---|---|
//! | [`context`] | who the request is: request id, trace context, peer address, trusted networks, arrival, time budget, header names | nothing of the crate |
//! | [`error`] | refusals and problems: `Refusal`, `Problem`, the problem types, `HandlerError`, the problem body and future | `context` |
//! | [`telemetry`] | reporting safely: escaping and redacting untrusted text, metrics, the log throttle, the JSON line's formatter | `context` |
//! | [`input`] | bounded input: body (wire and decoded), headers, URI | the base |
//! | [`deadline`] | request deadline, slow bodies, deadlines for any service | the base |
//! | [`outbound`] | the client layer: budget, ids and trace forwarded | the base |
//! | [`overload`] | requests in flight: fixed or adaptive limit, load shedding, reserved routes | the base |
//! | [`rate_limit`] | keyed rate limiting: policy, keys, GCRA, stores (memory, Redis) | the base |
//! | [`observe`] | the request's span, its outcome event, panics | the base |
//! | [`serve`](mod@serve) | accept loop and connection limits and timers | the base, the layers |
//! | [`config`] | the serde model and the one place that builds layers and server settings from it | all below |
//! | [`preset`] | [`Harden`]: the whole stack in its order | all |
//!
//! # Features
//!
//! - `axum` (default): matched routes in logs, `ConnectInfo` peers, axum's
//!   own body limit handed over to ours, `IntoResponse` for problems.
//! - `toml` (default): [`HardenConfig::from_toml`].
//! - `redis`: [`rate_limit::RedisStore`], one limit shared by many instances.
//! - `metrics`: request duration and counts through the `metrics` facade
//!   ([`telemetry::metrics`]).
//! - `opentelemetry`: spans a collector can join, through
//!   `tracing-opentelemetry`: with
//!   [`full_span`](observe::ObserveLayer::full_span) the request's span is
//!   OpenTelemetry's HTTP server span (`{method} {http.route}`, kind server,
//!   the conventions' attributes), its parent the trusted caller's
//!   `traceparent`; each [`outbound`] call is a client span whose id its
//!   `traceparent` carries. `examples/otel_server.rs` exports over OTLP.
//! - `json-log`: `telemetry::json_log`, tracing-subscriber's JSON log line
//!   (flattened event, current span) byte for byte, written for a fraction
//!   of the instructions; it plugs into tracing-subscriber's own builder.
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

// The base: every room may use these, they use nothing above them.
pub mod context;
pub mod error;
pub mod telemetry;

// The layers: each stands alone on the base; none imports another.
pub mod deadline;
pub mod input;
pub mod observe;
pub mod outbound;
pub mod overload;
pub mod rate_limit;

// The assembly on top.
pub mod config;
pub mod preset;
pub mod serve;

pub use config::HardenConfig;
pub use preset::Harden;
pub use serve::serve;
