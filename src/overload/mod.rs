//! Overload: a limit on the requests in flight across every connection and
//! HTTP/2 stream, so that the service as a whole stays up when demand
//! exceeds its capacity.
//!
//! Every other layer bounds one request; this one bounds how many run at
//! once. Without it, the server's own limits (1,024 connections × 128
//! HTTP/2 streams) let 131,072 requests wait at once on a slow database:
//! latency climbs for everyone until the deadlines fire, and retries pile
//! on. With it, the requests the service can serve are served at their
//! usual latency, and the rest wait a little in a short bounded queue or
//! are refused with a 503 `overloaded` problem and `Retry-After`, cheaply,
//! while the client can still go elsewhere.
//!
//! | what | how | default |
//! |---|---|---|
//! | the limit | [`Limit::Adaptive`] (Gradient2, below) or [`Limit::Fixed`] | adaptive: starts at 20, between 8 and 1000 |
//! | excess | waits in a queue ([`InFlightLimitLayer::queue`]), newest served first, served only within its timeout; shed when the queue is full, or at the hold if no slot came: 503 [`overloaded`](crate::error::ProblemType::OVERLOADED), `Retry-After` | 256 requests, served within 10 ms, refused at 100 ms; `Retry-After` 1 s |
//! | a slot is held | from the call until the response body ends or is dropped, except while waiting on the client for request-body bytes ([`InFlightRequestBody`]) | — |
//! | reserved routes | [`InFlightLimitLayer::reserve`]: a share of the limit for path prefixes (health checks, critical paths) | none |
//! | streams | [`InFlightLimitLayer::long_lived`], 101 responses, `text/event-stream`: hold a slot, feed no latency | — |
//! | per client | [`InFlightLimitLayer::per_key`]: at most N in flight per client key, else 429 [`too-many-in-flight`](crate::error::ProblemType::TOO_MANY_IN_FLIGHT) | off |
//! | observable | [`OverloadStats`]: limit, in flight, queued, shed; metrics `tower_harden.overload.limit` (gauge), `tower_harden.overload.requests` (counter, by `result`: `acquired`, `rejected`) | — |
//!
//! # What counts as in flight
//!
//! The limit counts the requests the service is working on. Time a
//! request spends waiting on its *client* for request-body bytes is the
//! client's: while the request body is pending, the request gives its
//! slot back, and when bytes (or the end, or an error) come it takes the
//! slot back at once, over the limit if need be (an admitted request is
//! never shed halfway); its waits are subtracted from the latency sample.
//! So clients trickling bodies at a byte a second neither fill the limit
//! (every other request would be shed until the deadline's minimum body
//! rate answers them 408) nor lower it; `serve`'s connection defences and
//! the deadline deal with them. A request whose body has ended when it
//! is admitted (a `GET`) pays nothing for this, and a body the handler
//! never reads, or drops, leaves the slot held to the response's end.
//! The per-key limit ([`InFlightLimitLayer::per_key`]) counts the wait:
//! a client's own stalled uploads hold back only that client, and bound
//! what one client can make the server keep open.
//!
//! The response side is alike: from a frame the response body gave to the
//! next poll, the server waits on its client to take it (a full socket, a
//! shut HTTP/2 window), so the slot is lent back and the wait left out of
//! the sample; a response waiting on the *handler* (an event stream between
//! events) holds its slot. Slow readers (`slowhttptest -X` on a 1 MiB
//! download shed every other request for 11 of 22 s) thus meet `serve`'s
//! minimum response rate instead of filling the limit.
//!
//! # The queue, and why
//!
//! Shedding at once is the cheapest answer per request, but not per
//! client: a client refused at once often sends again at once (retry
//! loops, impatient users, a load balancer's next try), and a flood of
//! instant 503s becomes a busy loop between the clients and the server
//! that takes the CPU the admitted requests need (`benches/README.md`,
//! overload: clients that resend at once, with and without the queue). So
//! a request that finds every general slot taken joins a queue of at most
//! [`DEFAULT_QUEUE_LIMIT`] (256); a freed slot goes straight to the *newest*
//! waiter (adaptive LIFO, as in Facebook's "Fail at Scale"), and only to one
//! that has waited at most [`DEFAULT_QUEUE_TIMEOUT`] (10 ms), which is thus
//! all the queue adds to a success's latency. A waiter that got no slot in
//! that time stays, unserved, until [`DEFAULT_QUEUE_HOLD`] (100 ms) after
//! it joined, and is then shed: the hold is what slows a client that
//! resends at once to ten tries a second. A request that finds the queue
//! full is shed at once (pushing out an older one instead made every
//! request of an open-loop flood take a place, a timer and a connection
//! first). The time in the queue is not part of the latency sample, and the
//! deadline, counted from arrival, covers it.

//! # The algorithm, and why
//!
//! The adaptive limit is Netflix's **Gradient2** (concurrency-limits): each
//! window (at least 100 ms and 10 responses) the average latency `short` is
//! compared with a long-term exponential average `long` of the same
//! (about 600 windows, learnt first over 10 windows at the initial limit), and
//! `limit = limit × clamp(1.2 × long / short, 0.5, 1) + √limit`, smoothed
//! by 0.2 and clamped between the floor and the ceiling. While latency stays
//! within 1.2× its usual value the limit grows by about √limit; when
//! requests start to queue inside the service the limit falls,
//! proportionally. It does not grow while less than half of it is in use.
//! One change to Netflix's version: the long average does not learn from
//! windows in which the limit shed, whose concurrency the limit set rather
//! than demand; otherwise, under a long overload, the average learns the
//! limit's own queue as normal and the limit creeps up to its ceiling
//! (Gradient2's known drift; the unit tests show both).
//!
//! Why Gradient2 rather than Vegas: Vegas (like Gradient v1) compares each
//! latency with the *minimum* ever seen, the service's no-load latency. An
//! HTTP service mixes routes of very different cost (a 1 ms health check
//! beside a 50 ms query), so the minimum is its fastest route and every
//! slow route reads as a queue: the limit collapses to its floor, or needs
//! per-service tuning. Gradient2 compares the service with its own recent
//! past, whatever its mix, and needs no tuning; its known weakness, a long
//! average that creeps up under a long overload, is removed by the change
//! above.
//! AIMD reacts to errors only, which come far too late here (the deadline
//! is 10 s). Envoy's adaptive concurrency filter uses the same gradient,
//! with a periodic measurement of the minimum latency instead of the long
//! average.
//!
//! Why not a crate: tower's `ConcurrencyLimit` waits for a slot in
//! `poll_ready` (a queue without bound, first in first out, in front of
//! every connection), and
//! `LoadShed` over it sheds with an error, not a problem; the adaptive
//! crates (tower-acc, tower-resilience-adaptive) are shaped the same way.
//! This layer needs to shed with a problem, to hold the slot until
//! the response *body* ends, to reserve shares for routes and to leave
//! streams out of the signal, so the layer is written here and the
//! algorithm is a small pure function, tested on simulated latencies.
//!
//! # In the preset
//!
//! [`Harden`](crate::Harden) puts it after the rate limit and before the
//! deadline: abusive clients are refused by the rate limit first and do not
//! take slots or skew the latency signal, and the latency it measures is
//! the service's (the deadline's 503 after 10 s included, which is the
//! strongest signal of all).
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_harden::overload::{InFlightLimitLayer, Limit, AdaptiveLimit};
//!
//! let fixed = InFlightLimitLayer::fixed(64)
//!     .retry_after(Duration::from_secs(2))
//!     .queue(0, Duration::ZERO); // no queue: shed at once
//! let adaptive = InFlightLimitLayer::with_limit(Limit::Adaptive(
//!     AdaptiveLimit::default().min_limit(16).max_limit(512),
//! ))
//! .reserve("/healthz", 0.05);
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(adaptive);
//! # drop(fixed);
//! ```

mod algorithm;
mod body;
mod error;
mod layer;
mod per_key;
mod queue;
mod request_body;
mod service;
mod settings;
mod shared;

pub use algorithm::AdaptiveLimit;
pub use body::InFlightBody;
pub use error::{Overloaded, TooManyInFlight};
pub use layer::{InFlightLimitLayer, OverloadStats};
pub use request_body::InFlightRequestBody;
pub use service::{InFlightFuture, InFlightLimit};
pub use settings::{
    Limit, DEFAULT_QUEUE_HOLD, DEFAULT_QUEUE_LIMIT, DEFAULT_QUEUE_TIMEOUT, DEFAULT_RETRY_AFTER,
};
