//! Deadlines: for the whole request, for slow clients, for any service, and
//! for the outbound calls a request makes.
//!
//! A timeout that only races the response future answers a slow client the
//! same as a slow handler and forgets the caller's budget. These layers tell
//! them apart and pass the budget on:
//!
//! | layer | defends against | answer | default |
//! |---|---|---|---|
//! | [`RequestDeadlineLayer`] | slow handlers (and the body read they wait on) | 503 `deadline-exceeded` | 10 s |
//! | same, body idle timeout | a client that stops sending its body | 408 `request-timeout`, `Connection: close` | 60 s (nginx `client_body_timeout`) |
//! | same, minimum body rate | a client that trickles its body | 408 `request-timeout`, `Connection: close` | 240 B/s after 5 s (Kestrel) |
//! | [`CallDeadlineLayer`] | any slow `Service<Req>` (a query, a cache call) | [`CallDeadlineError::Exceeded`] | — |
//!
//! The request's [`Budget`](crate::context::Budget) is a request extension
//! and, for the code the request runs,
//! [`current_budget()`](crate::context::current_budget); the request's id and
//! trace ride along ([`current_request()`](crate::context::current_request))
//! so the
//! [`OutboundLayer`](crate::outbound::OutboundLayer) forwards them with the
//! remaining deadline in
//! [`REQUEST_DEADLINE_HEADER`](crate::context::REQUEST_DEADLINE_HEADER). A
//! trusted caller may shorten a request's deadline with that same header.
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::post, Router};
//! use tower_harden::context::TrustedNetworks;
//! use tower_harden::deadline::RequestDeadlineLayer;
//!
//! let app: Router = Router::new()
//!     .route("/echo", post(|body: String| async move { body }))
//!     .layer(
//!         RequestDeadlineLayer::new(Duration::from_secs(10))
//!             .min_body_rate(240, Duration::from_secs(5))
//!             .trust_inbound(TrustedNetworks::cidrs(["10.0.0.0/8"]).unwrap()),
//!     );
//! ```

mod body;
mod error;
mod inbound;
mod request;
mod service;

pub use body::{MinDataRate, TimedBody, TimedBodyError};
pub use error::{CallDeadlineError, DeadlineExceeded, DeadlineRefusal};
pub use request::{
    RequestDeadline, RequestDeadlineFuture, RequestDeadlineLayer, DEFAULT_BODY_IDLE_TIMEOUT,
    DEFAULT_REQUEST_DEADLINE,
};
pub use service::{CallDeadline, CallDeadlineFuture, CallDeadlineLayer};
