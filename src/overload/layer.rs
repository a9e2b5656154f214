use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::settings::{
    Limit, Settings, DEFAULT_QUEUE_HOLD, DEFAULT_QUEUE_LIMIT, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_RETRY_AFTER,
};
use super::shared::Shared;
use super::{AdaptiveLimit, InFlightLimit};

/// A limit on the requests in flight across every connection and HTTP/2
/// stream: what is over the limit waits in a short bounded queue
/// ([`queue`](Self::queue)) or is shed with a 503 `overloaded` problem and
/// `Retry-After`, never queued without bound.
///
/// Every clone of the layer (and every service it makes) shares one limit:
/// build it once and apply it around the whole router. A request holds its
/// slot until its response body ends (or is dropped), except while it waits
/// on its client for request-body bytes
/// ([`InFlightRequestBody`](super::InFlightRequestBody)).
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_harden::overload::InFlightLimitLayer;
///
/// let limit = InFlightLimitLayer::new() // adaptive
///     .reserve("/healthz", 0.05)        // answered under overload
///     .long_lived("/events");           // streams: no latency signal
/// let stats = limit.stats();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "ok" }))
///     .layer(limit);
/// assert_eq!(stats.limit(), 20);
/// ```
#[derive(Debug, Clone)]
pub struct InFlightLimitLayer {
    shared: Arc<Shared>,
}

impl Default for InFlightLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl InFlightLimitLayer {
    /// The adaptive limit with its defaults ([`AdaptiveLimit::default`]).
    pub fn new() -> Self {
        Self::with_limit(Limit::Adaptive(AdaptiveLimit::default()))
    }

    /// A fixed limit of `limit` requests in flight (at least 1).
    pub fn fixed(limit: usize) -> Self {
        Self::with_limit(Limit::Fixed(limit))
    }

    /// The given kind of limit.
    pub fn with_limit(limit: Limit) -> Self {
        Self::from_settings(Settings {
            limit,
            retry_after: DEFAULT_RETRY_AFTER,
            reserved: Vec::new(),
            long_lived: Vec::new(),
            per_key: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT,
            queue_hold: DEFAULT_QUEUE_HOLD,
        })
    }

    fn from_settings(settings: Settings) -> Self {
        Self {
            shared: Arc::new(Shared::new(settings)),
        }
    }

    fn settings(&self) -> Settings {
        self.shared.settings.clone()
    }

    /// The `Retry-After` of a shed request (rounded up to whole seconds, at
    /// least 1). Default: [`DEFAULT_RETRY_AFTER`], 1 s.
    pub fn retry_after(self, retry_after: Duration) -> Self {
        let mut settings = self.settings();
        settings.retry_after = retry_after;
        Self::from_settings(settings)
    }

    /// Reserves `share` (0 to 1) of the limit, at least one slot, for
    /// requests whose path is `prefix` or below it (`/healthz` covers
    /// `/healthz/db`, not `/healthzz`): they are answered while the rest is
    /// shed, and take a free general slot when their share is full. Other
    /// requests never use the reserved slots. Default: none.
    pub fn reserve(self, prefix: impl Into<Arc<str>>, share: f64) -> Self {
        let mut settings = self.settings();
        settings
            .reserved
            .push((prefix.into(), share.clamp(0.0, 1.0)));
        Self::from_settings(settings)
    }

    /// Requests whose path is `prefix` or below it stream for long (event
    /// streams, downloads): they hold a slot, but their durations do not feed
    /// the adaptive limit. Responses with status 101 (upgrades) or of type
    /// `text/event-stream` are never a sample either. Default: none.
    pub fn long_lived(self, prefix: impl Into<Arc<str>>) -> Self {
        let mut settings = self.settings();
        settings.long_lived.push(prefix.into());
        Self::from_settings(settings)
    }

    /// At most `max` requests in flight (at least 1) for each client key, so
    /// that one client cannot hold every slot with slow requests; over it, a
    /// 429 [`too-many-in-flight`](crate::error::ProblemType::TOO_MANY_IN_FLIGHT)
    /// problem with `Retry-After` ([`TooManyInFlight`](super::TooManyInFlight)),
    /// before any slot of the limit is taken. The key is the request's
    /// [`ClientKey`](crate::context::ClientKey), which the rate limiter puts
    /// there for its first policy
    /// ([`publish_client_key`](crate::rate_limit::RateLimitLayer::publish_client_key),
    /// which [`Harden`](crate::Harden) turns on with this); a request without
    /// one is not counted per key. Unlike the limit, the count per key
    /// includes the time waiting on the client for body bytes: a client's
    /// stalled uploads hold back that client only. Counted per instance; memory is one entry
    /// per client with requests in flight. Default: no limit per key.
    pub fn per_key(self, max: usize) -> Self {
        let mut settings = self.settings();
        settings.per_key = Some(max);
        Self::from_settings(settings)
    }

    /// The queue in front of the limit: at most `max` requests that find
    /// every general slot taken wait up to `timeout` for one, the newest
    /// served first. A request that finds the queue full is shed at once;
    /// one that got no slot within `timeout` stays in the queue, unserved,
    /// and is shed at the [hold](Self::queue_hold). `max` or `timeout`
    /// zero: no queue, the excess is shed at once. Reserved shares do not
    /// queue (a reserved route over its share queues for a general slot).
    /// Default: [`DEFAULT_QUEUE_LIMIT`] (256), [`DEFAULT_QUEUE_TIMEOUT`]
    /// (10 ms).
    ///
    /// Why: clients refused at once often send again at once, a busy loop
    /// that takes the CPU the admitted requests need; a client waiting in
    /// the queue does not send again. Newest first because under a lasting
    /// overload a first-in-first-out queue makes every admitted request
    /// wait its whole turn, while the newest have barely waited (adaptive
    /// LIFO, as in Facebook's "Fail at Scale"). `timeout` is the most the
    /// queue adds to the latency of a success; the time waited is not part
    /// of the adaptive limit's latency sample.
    pub fn queue(self, max: usize, timeout: Duration) -> Self {
        let mut settings = self.settings();
        settings.queue_limit = max;
        settings.queue_timeout = timeout;
        Self::from_settings(settings)
    }

    /// When a queued request that got no slot is answered with its 503,
    /// counted from when it joined the queue (at least the queue's
    /// `timeout`). Holding the refusal, rather than answering it at the
    /// timeout, is what keeps a client that resends at once from resending
    /// hundreds of times a second. Default: [`DEFAULT_QUEUE_HOLD`] (100 ms).
    pub fn queue_hold(self, hold: Duration) -> Self {
        let mut settings = self.settings();
        settings.queue_hold = hold;
        Self::from_settings(settings)
    }

    /// The limit's live figures: the limit now, the requests in flight, the
    /// requests shed.
    pub fn stats(&self) -> OverloadStats {
        OverloadStats {
            shared: self.shared.clone(),
        }
    }
}

impl<S> Layer<S> for InFlightLimitLayer {
    type Service = InFlightLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InFlightLimit::new(inner, self.shared.clone())
    }
}

/// The live figures of an [`InFlightLimitLayer`]: cheap to clone, to read
/// from a metrics endpoint or a test.
#[derive(Debug, Clone)]
pub struct OverloadStats {
    shared: Arc<Shared>,
}

impl OverloadStats {
    /// The limit in force now (for the adaptive limit, where it stands).
    pub fn limit(&self) -> usize {
        self.shared.limit()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Requests shed since the layer was built.
    pub fn shed(&self) -> u64 {
        self.shared.shed_count()
    }

    /// Requests admitted since the layer was built.
    pub fn admitted(&self) -> u64 {
        self.shared.admitted_count()
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}
