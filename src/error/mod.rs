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
//! | <span id="too-many-in-flight">`too-many-in-flight`</span> | 429 | the client already had as many requests in flight as one client may (`per_key`); `Retry-After` says when to try again |
//! | <span id="not-found">`not-found`</span> | 404 | no route matches the path (an empty 404, answered by the observe layer) |
//! | <span id="method-not-allowed">`method-not-allowed`</span> | 405 | the route does not take the request's method (an empty 405, answered by the observe layer) |
//! | <span id="unsupported-media-type">`unsupported-media-type`</span> | 415 | the body lacks the content type the handler reads (a mapped axum rejection) |
//!
//! # The `type` URI: this crate's, the service's, or `about:blank`
//!
//! By default `type` is [`TYPE_BASE`] followed by the slug, an anchor of the
//! table above. A service that documents its errors itself calls
//! [`set_type_base`] (or sets `type_base` in the `[problems]` section of the
//! configuration) with its own page, or with [`ABOUT_BLANK`] for no page at
//! all (RFC 9457, section 4.2.1: the `title` is then the status phrase).
//! Its own problem types are [`Problem::new`] with a slug under that base,
//! or [`Problem::with_type_uri`] with a URI of their own; both take owned
//! strings.
//!
//! # Every error response a problem
//!
//! | response | answered as a problem | how |
//! |---|---|---|
//! | a refusal of this crate's layers | always | the layer |
//! | [`HandlerError`], a handler's [`Problem`] | always | their `IntoResponse` |
//! | a panic | always | the observe layer |
//! | axum's empty 404 (no route) and 405 (wrong method) | always, behind the observe layer | the observe layer |
//! | axum's plain-text rejections: JSON, form, path, query, missing content type (400, 413, 415, 422) | when [`ObserveLayer::problems_for_rejections`](crate::observe::ObserveLayer::problems_for_rejections) (or `[problems] map_rejections`) is on | the observe layer, keeping the text as `detail` |
//! | a handler's own error response with a body | never: its body is the handler's | – |
//!
//! A handler's own error type can still hand its cause to the log without
//! changing its body: see [`Refused::cause`].

mod body;
mod future;
mod handler_error;
mod json;
mod problem;
mod problem_type;
mod refusal;
mod type_base;

pub use body::ProblemOr;
pub use future::RefuseOr;
pub use handler_error::HandlerError;
pub(crate) use problem::ProblemAwaitingContext;
pub use problem::{Problem, PROBLEM_JSON};
pub use problem_type::ProblemType;
pub(crate) use refusal::{message_of, RefusalSlot};
pub use refusal::{Refusal, RefusalContext, Refused};
pub(crate) use type_base::check_type_base;
pub use type_base::{set_type_base, type_base, TypeBaseError, ABOUT_BLANK, TYPE_BASE};

/// A type-erased error: the inner error of a body, a client or a store, kept
/// whole as a `source()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
