//! [`Harden`]: the whole stack, in its right order, from one config.
//!
//! # The order, outermost first, and why
//!
//! 1. **Observe** ([`ObserveLayer`]): request id (validated or generated),
//!    trace context, one span and one outcome event, panics caught. It is
//!    outermost so that *every* refusal below it is answered with the request
//!    id in header and body, logged once inside the request's span, and timed
//!    from the first moment; a panic anywhere below becomes a 500 logged with
//!    its request id, never a dropped connection.
//! 2. **Head limits** ([`HeadLimitLayer`]): URI length, header count and
//!    bytes. The cheapest checks there are, on what is already in memory;
//!    they run before anything allocates per-request state or reads a byte
//!    of body.
//! 3. **Body limit** ([`BodyLimitLayer`]): a declared `Content-Length` over
//!    the limit is refused here, before rate limiting, so an oversized
//!    request costs no quota and no store round trip (with Redis, the flood
//!    of oversized requests never reaches Redis), and the honest client that
//!    sent it learns its real problem (413, not 429). Streamed bodies are
//!    counted from here on as they arrive.
//! 4. **Rate limit** ([`RateLimitLayer`]): after the cheap structural
//!    checks, before anything costly (timers, decompression, the handler).
//!    Its store call has its own small budget, so it sits outside the
//!    request deadline: a slow store is bounded by its own timeout and
//!    failure policy, not by the handler's budget.
//! 5. **In-flight limit** ([`InFlightLimitLayer`]): after the rate limit,
//!    so that abusive clients are refused there first and neither take a
//!    slot nor skew the latency signal; before the deadline, so that a shed
//!    request costs no deadline timer and the latency it learns from is the
//!    service's, deadline included (the deadline counts from arrival, so a
//!    request's wait in the limit's queue is within it). What the service
//!    cannot take waits in a short queue (served within 10 ms, newest
//!    first) or is shed (503 `overloaded`, `Retry-After`; at its hold, 100
//!    ms, so that clients that resend at once do not spin), adaptively by
//!    default.
//!    With `[overload] per_key_limit`, it also caps each client's requests
//!    in flight (429 `too-many-in-flight`), by the key the rate limiter,
//!    just before it, found for its first policy: that is why it sits after
//!    the rate limit rather than only beside it.
//! 6. **Deadline** ([`RequestDeadlineLayer`]): enforces the request's
//!    budget over the handler and its reading of the body; slow clients get
//!    408, slow handlers 503. The budget counts from the request's arrival,
//!    which the observe layer records ([`Arrival`](crate::context::Arrival)),
//!    so what the layers above spent (a store round trip) comes out of a
//!    caller's `x-request-deadline-ms` instead of being added to it. Its body
//!    timer sees the wire bytes, so the minimum data rate measures the
//!    client, not the decompressor.
//! 7. **Decompression with a decoded limit** ([`DecompressLayer`]):
//!    innermost, closest to the handler that reads the body, so decoded
//!    bytes are counted against their own limit and the deadline covers the
//!    inflation.
//! 8. The user's service.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_harden::Harden;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(Harden::new().into_layer());
//! ```

use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_layer::{Layer, Stack};

use crate::config::{build, ConfigErrors, HardenConfig};
use crate::deadline::{RequestDeadline, RequestDeadlineLayer};
use crate::input::{
    BodyLimit, BodyLimitLayer, Decompress, DecompressLayer, HeadLimit, HeadLimitLayer,
};
use crate::observe::{Observe, ObserveLayer};
use crate::overload::{InFlightLimit, InFlightLimitLayer, OverloadStats};
use crate::rate_limit::{AnyStore, RateLimit, RateLimitLayer, RateLimitStore};
use crate::serve::{Serve, ShutdownSignal};

/// The whole hardened stack. Build it from code ([`Harden::new`] and its
/// builder methods, which start from the defaults) or from a
/// [`HardenConfig`] ([`Harden::from_config`]), then apply
/// [`Harden::into_layer`] to a router or a `ServiceBuilder`.
///
/// See the [module documentation](crate::preset) for the order of the layers and why.
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_harden::deadline::RequestDeadlineLayer;
/// use tower_harden::{Harden, HardenConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = HardenConfig::from_toml_file("harden.toml")?; // every key optional
/// let harden = Harden::from_config(&config)?
///     .deadline(RequestDeadlineLayer::new(Duration::from_secs(5))); // code wins over the file
/// let app = Router::new()
///     .route("/", get(|| async { "ok" }))
///     .layer(harden.clone().into_layer());
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
/// harden.serve(listener, app).await?; // `[server]` settings; drains on SIGTERM
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Harden {
    /// The layers and server settings, as the configuration's one builder
    /// makes them; the builder methods below replace one each.
    stack: build::Stack,
}

impl Default for Harden {
    fn default() -> Self {
        Self::new()
    }
}

impl Harden {
    /// The stack with every default (the values of
    /// [`HardenConfig::default`], listed in `examples/harden.toml`).
    pub fn new() -> Self {
        Self::from_config(&HardenConfig::default()).expect("the default configuration is valid")
    }

    /// The stack described by `config`, every value checked: every
    /// problem is reported, together, with its key path (and, for a
    /// configuration read from a file, its line and column).
    pub fn from_config(config: &HardenConfig) -> Result<Self, ConfigErrors> {
        build::build(config).map(|stack| Self { stack })
    }

    /// Replaces the observe layer (request ids, logging).
    pub fn observe(mut self, layer: ObserveLayer) -> Self {
        self.stack.observe = layer;
        self
    }

    /// Replaces the head limits. Default: [`HeadLimitLayer::new`].
    pub fn head_limits(mut self, layer: HeadLimitLayer) -> Self {
        self.stack.head = layer;
        self
    }

    /// Replaces the body limit. Default: 1 MiB.
    pub fn body_limit(mut self, layer: BodyLimitLayer) -> Self {
        self.stack.body = layer;
        self
    }

    /// Replaces the rate limiter. Default: `per-ip`, 50 per second, burst
    /// 100, in process, 100,000 keys. A layer over any store is taken as it
    /// is (the preset holds it as [`RateLimitLayer::into_any_store`] makes
    /// it).
    ///
    /// ```
    /// use tower_harden::rate_limit::{MemoryStore, Policy, RateLimitLayer, TrustedProxies};
    /// use tower_harden::Harden;
    ///
    /// let harden = Harden::new().rate_limit(
    ///     RateLimitLayer::new(MemoryStore::new(10_000))
    ///         .policy(Policy::per_client_ip(TrustedProxies::none())),
    /// );
    /// # drop(harden);
    /// ```
    pub fn rate_limit<St: RateLimitStore>(mut self, layer: RateLimitLayer<St>) -> Self {
        self.stack.rate_limit = layer.into_any_store();
        self
    }

    /// Replaces the in-flight limit. Default: adaptive
    /// ([`InFlightLimitLayer::new`]).
    pub fn in_flight_limit(mut self, layer: InFlightLimitLayer) -> Self {
        self.stack.in_flight = layer;
        self
    }

    /// The in-flight limit's live figures: the limit now, requests in
    /// flight, requests shed.
    pub fn overload_stats(&self) -> OverloadStats {
        self.stack.in_flight.stats()
    }

    /// Replaces the request deadline. Default: 10 s.
    pub fn deadline(mut self, layer: RequestDeadlineLayer) -> Self {
        self.stack.deadline = layer;
        self
    }

    /// Replaces the decoded-body limit. Default: 1 MiB.
    pub fn decompress(mut self, layer: DecompressLayer) -> Self {
        self.stack.decompress = layer;
        self
    }

    /// The rate limiter, for its store's counters.
    pub fn rate_limiter(&self) -> &RateLimitLayer<AnyStore> {
        &self.stack.rate_limit
    }

    /// The layer, for `Router::layer` or `ServiceBuilder::layer`.
    ///
    /// It wraps any service, and keeps its error type. What the compiler
    /// says when the wrapped service does not fit, and why:
    ///
    /// - with `Router::layer`: *`Hardened<Route>` ... `Service<Request<Body>>`
    ///   is not satisfied*, when a layer between this one and the routes
    ///   changed the response body into one that is not axum's `Body`
    ///   (map it back with `axum::body::Body::new`);
    /// - with [`serve()`](crate::serve()): see there, for the bounds the
    ///   served service needs;
    /// - around a `Router` with `ServiceBuilder`, it compiles, but routing has
    ///   not happened yet: `http.route` is `_unmatched` and the empty 404
    ///   is still mapped. Prefer `Router::layer`, or give a non-axum service
    ///   its route templates with
    ///   [`ObserveLayer::route_classifier`](crate::observe::ObserveLayer::route_classifier).
    pub fn into_layer(self) -> HardenLayer {
        HardenLayer { harden: self }
    }

    /// Serves `service` with the connection settings of this stack's
    /// configuration (`[server]`): header-read timeout, keep-alive, header
    /// and HTTP/2 limits, connection cap, drain timeout, PROXY protocol. It stops gracefully
    /// on Ctrl-C or SIGTERM unless
    /// [`Serve::with_graceful_shutdown`] gives it another signal. The bounds
    /// on `service` are [`serve()`](crate::serve())'s, where the usual
    /// compile errors are explained.
    pub fn serve<S, B>(&self, listener: TcpListener, service: S) -> Serve<S, ShutdownSignal>
    where
        S: tower_service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<B>,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<crate::error::BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<crate::error::BoxError>,
    {
        crate::serve(listener, service).settings(self.stack.server.clone())
    }
}

/// The service type the preset wraps around `S`, outermost first.
pub type Hardened<S> = Observe<
    HeadLimit<BodyLimit<RateLimit<InFlightLimit<RequestDeadline<Decompress<S>>>, AnyStore>>>,
>;

/// [`Harden`] as a [`Layer`].
#[derive(Debug, Clone)]
pub struct HardenLayer {
    harden: Harden,
}

impl<S> Layer<S> for HardenLayer {
    type Service = Hardened<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let harden = &self.harden;
        let stack: Stack<_, _> = ServiceBuilder::new()
            .layer(harden.stack.observe.clone())
            .layer(harden.stack.head)
            .layer(harden.stack.body)
            .layer(harden.stack.rate_limit.clone())
            .layer(harden.stack.in_flight.clone())
            .layer(harden.stack.deadline.clone())
            .layer(harden.stack.decompress)
            .into_inner();
        stack.layer(inner)
    }
}
