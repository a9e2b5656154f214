//! Observation: one span and one outcome event per request, request ids and
//! trace context taken in (or made), caught panics.
//!
//! [`ObserveLayer`] is the one layer to add; see its documentation for what
//! it does for each request. The values it puts on each request
//! ([`RequestId`](crate::context::RequestId),
//! [`TraceContext`](crate::context::TraceContext)) live in
//! [`context`](crate::context); the error type for handlers whose failures
//! should reach the log whole and the client safe is
//! [`HandlerError`](crate::error::HandlerError).
//!
//! # What a failed request looks like in the log
//!
//! One event per request, at `ERROR` for a 5xx (JSON formatter with
//! `flatten_event(true)` and `with_current_span(true)`):
//!
//! ```json
//! {"timestamp":"2026-11-27T17:41:50.182448Z","level":"ERROR","message":"request completed",
//!  "http.request.method":"GET","http.route":"/fail","url.path":"/fail",
//!  "http.response.status_code":500,"http.response.body.size":255,"latency_ms":0.344,
//!  "user_agent.original":"curl/8.5.0","request_id":"01a21e19-63e6-752d-bbf6-08fc595dc584",
//!  "span_id":"9fd3dee3fb2bd955","error.type":"app::ConnectError","error.message":"the handler failed",
//!  "error.chain":"the handler failed: connecting to postgres://app:[REDACTED]@db.internal/app: connection refused",
//!  "refusal.layer":"handler","target":"tower_harden::observe",
//!  "span":{"request_id":"01a21e19-63e6-752d-bbf6-08fc595dc584",
//!   "trace_id":"218ded79dd7f42d79123e11d756d155a","name":"request"}}
//! ```
//!
//! The span holds what every event inside the request needs to be found
//! (the request and trace ids); the outcome event holds the rest, and the
//! request id again. The span's other fields are repeated in the event only
//! when a filter dropped the span. [`ObserveLayer::full_span`] puts
//! OpenTelemetry's HTTP server fields on the span too, for span exporters.
//!
//! Every piece of untrusted text in it (path, query, header values, ids,
//! error messages) is escaped (control characters, line separators, bidi
//! overrides) and capped before any formatter sees it, so neither the JSON nor
//! the text formatter can be made to print a forged line. Error chains, error
//! and panic messages and logged header values are first redacted
//! ([`Redactor`](crate::telemetry::Redactor)): the password above is
//! `[REDACTED]`, the rest of the chain is kept. The request id and trace
//! context a caller sends are believed only from trusted peers
//! ([`ObserveLayer::trust_inbound_context`]).

/// Calls `$emit!(Level::X)` for the runtime `level`: tracing's macros need a
/// level known at compile time.
macro_rules! at_level {
    ($level:expr, $emit:ident) => {
        if $level == tracing::Level::ERROR {
            $emit!(tracing::Level::ERROR)
        } else if $level == tracing::Level::WARN {
            $emit!(tracing::Level::WARN)
        } else if $level == tracing::Level::INFO {
            $emit!(tracing::Level::INFO)
        } else if $level == tracing::Level::DEBUG {
            $emit!(tracing::Level::DEBUG)
        } else {
            $emit!(tracing::Level::TRACE)
        }
    };
}
use at_level;

mod body;
mod fields;
mod future;
mod layer;
#[cfg(feature = "opentelemetry")]
mod otel;
mod outcome;
mod panic;
mod rejection;
mod route;

pub use body::ObservedBody;
pub use fields::TARGET;
pub use future::ObserveFuture;
pub use layer::{Observe, ObserveLayer};
