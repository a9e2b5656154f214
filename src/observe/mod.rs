//! Correlation and observation: request ids, trace context, one span and one
//! outcome event per request, caught panics, a handler error type, metrics.
//!
//! [`ObserveLayer`] is the one layer to add; see its documentation for what
//! it does for each request. [`HandlerError`] is the error type for handlers
//! whose failures should reach the log whole and the client safe.
//!
//! # What a failed request looks like in the log
//!
//! One event per request, at `ERROR` for a 5xx (JSON formatter, trimmed):
//!
//! ```json
//! {"level":"ERROR","target":"tower_harden::observe","fields":{"message":"request completed",
//!  "http.request.method":"GET","http.route":"/fail","url.path":"/fail",
//!  "http.response.status_code":500,"latency_ms":0.41,"http.response.body.size":187,
//!  "request_id":"0192f5c1-7f4e-7c1a-9d1e-2b6a1c3f9e10","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",
//!  "error.type":"std::io::error::Error","error.message":"the handler failed",
//!  "error.chain":"the handler failed: connecting to postgres://app:hunter2@db.internal/app: connection refused",
//!  "refusal.layer":"handler"}}
//! ```
//!
//! Every piece of untrusted text in it (path, query, header values, ids,
//! error messages) is escaped (control characters, line separators, bidi
//! overrides) and capped before any formatter sees it, so neither the JSON nor
//! the text formatter can be made to print a forged line.

mod body;
mod escape;
mod future;
mod handler_error;
mod layer;
pub mod metrics;
mod outcome;
mod panic;
mod request_id;
mod trace_context;

pub use body::ObservedBody;
pub use future::ResponseFuture;
pub use handler_error::HandlerError;
pub use layer::{Observe, ObserveLayer, REQUEST_ID_HEADER, TARGET};
pub use request_id::{RequestId, RequestIdRefusal};
pub use trace_context::{
    SpanId, TraceContext, TraceId, TraceParent, TraceParentRefusal, TraceState, TraceStateRefusal,
};
