//! The error model: every refusal is a typed value that carries its
//! context, and becomes an RFC 9457 problem for the client.
//!
//! A layer that refuses a request builds a value of its own error type (for
//! example [`InputRefusal`](crate::input::InputRefusal)), which implements
//! [`Refusal`]: it knows its client-safe [`Problem`] and its [`RefusalContext`]
//! (which layer, which limit, what was observed, which key, which budget).
//! [`Problem::refuse`] turns it into the response and stores it in the
//! response's extensions as [`Refused`], where the observe layer finds it and
//! logs it once, with its whole `source()` chain.
//!
//! Handlers can take part with their own errors: implement [`Refusal`] for
//! them, or return [`HandlerError`].
//!
//! # Problem bodies
//!
//! Every layer of this crate that refuses a request answers with an
//! `application/problem+json` body built here:
//!
//! ```json
//! {"type":"https://docs.rs/tower-harden/latest/tower_harden/error/index.html#payload-too-large",
//!  "title":"Payload too large","status":413,
//!  "detail":"the request body exceeds the limit of 1048576 bytes",
//!  "request_id":"0192f5c1-..."}
//! ```
//!
//! The `type` URI points at this page, so a client that follows it finds the
//! meaning of each problem type below ([`ProblemType`] lists them in code). `detail` is written for the client and
//! never holds internal error text: a 5xx always says only what failed in
//! general terms, while the typed [`Refusal`] that caused it rides in the
//! response's extensions (as [`Refused`]) for the logging layer.
//!
//! # Problem types
//!
//! | `type` fragment | status | raised by |
//! |---|---|---|
//! | <span id="payload-too-large">`payload-too-large`</span> | 413 | body limit, declared or streamed, wire or decoded |
//! | <span id="unsupported-encoding">`unsupported-encoding`</span> | 415 | a `Content-Encoding` the server does not decode |
//! | <span id="malformed-body">`malformed-body`</span> | 400 | a body that could not be read: broken framing, a corrupt compressed stream |
//! | <span id="headers-too-large">`headers-too-large`</span> | 431 | too many header fields or too many header bytes |
//! | <span id="uri-too-long">`uri-too-long`</span> | 414 | request target longer than the limit |
//! | <span id="request-timeout">`request-timeout`</span> | 408 | the client sent its body too slowly |
//! | <span id="deadline-exceeded">`deadline-exceeded`</span> | 503 | the server could not answer within the request deadline |
//! | <span id="quota-exceeded">`quota-exceeded`</span> | 429 | a rate-limit policy refused the request |
//! | <span id="invalid-input">`invalid-input`</span> | 400/422 | a handler refused the content of a request |
//! | <span id="internal-error">`internal-error`</span> | 500 | a handler failed or panicked |
//! | <span id="service-unavailable">`service-unavailable`</span> | 503 | a dependency (for example the rate-limit store) is unavailable |
//! | <span id="overloaded">`overloaded`</span> | 503 | the in-flight limit shed the request: the service had as many requests in flight as it can take; `Retry-After` says when to try again |

mod body;
mod future;
mod handler_error;
mod json;
mod problem;
mod problem_type;
mod refusal;

pub use body::ProblemOr;
pub use future::RefuseOr;
pub use handler_error::HandlerError;
pub(crate) use problem::ProblemAwaitingContext;
pub use problem::{Problem, PROBLEM_JSON};
pub use problem_type::{ProblemType, TYPE_BASE};
pub(crate) use refusal::{message_of, RefusalSlot};
pub use refusal::{Refusal, RefusalContext, Refused};

/// A type-erased error: the inner error of a body, a client or a store, kept
/// whole as a `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
