//! Outbound calls that inherit the request's budget: [`OutboundLayer`]
//! wraps any HTTP client that is a `tower::Service` (hyper-util's `Client`,
//! for one).
//!
//! | defends against | answer | default |
//! |---|---|---|
//! | an upstream call that outlives the caller's budget | [`OutboundErrorKind::BudgetExhausted`] before the call, [`OutboundErrorKind::TimedOut`] during it | min(10 s, remaining budget - 50 ms) |
//! | a huge upstream answer | [`OutboundErrorKind::BodyTooLarge`] | 1 MiB |
//! | a trace or request id lost at the service boundary | the request's id, `traceparent` and `tracestate` forwarded | on |
//!
//! The budget comes from the [deadline](crate::deadline) layers
//! ([`current_budget()`](crate::context::current_budget)); the remaining deadline is
//! forwarded in [`REQUEST_DEADLINE_HEADER`](crate::context::REQUEST_DEADLINE_HEADER),
//! which a trusted server's request deadline layer reads.

mod error;
mod layer;
#[cfg(feature = "opentelemetry")]
mod otel;

pub use error::{OutboundError, OutboundErrorKind};
pub use layer::{
    Outbound, OutboundLayer, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_OUTBOUND_MARGIN,
    DEFAULT_OUTBOUND_TIMEOUT,
};
