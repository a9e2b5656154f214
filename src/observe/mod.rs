//! Correlation and observation: request ids, trace context, one span and one
//! outcome event per request.

mod request_id;
mod trace_context;

pub use request_id::RequestId;
pub use trace_context::TraceId;
