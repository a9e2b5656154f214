use std::sync::Arc;
use std::time::Duration;

use super::AdaptiveLimit;

/// How many requests may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Limit {
    /// Found from the service's latency (Gradient2). The default.
    Adaptive(AdaptiveLimit),
    /// A fixed number, tuned by hand.
    Fixed(usize),
    /// No limit: every request is admitted (and counted).
    Unlimited,
}

/// The default `Retry-After` of a shed request: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The default bound of the queue in front of the limit: 256 requests.
pub const DEFAULT_QUEUE_LIMIT: usize = 256;

/// The default longest wait in the queue for a slot: 10 ms.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_millis(10);

/// The default time at which a queued request that got no slot is
/// answered with its 503: 100 ms after it joined the queue.
pub const DEFAULT_QUEUE_HOLD: Duration = Duration::from_millis(100);

/// What the layer was built with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) limit: Limit,
    pub(crate) retry_after: Duration,
    /// Path prefixes and the share of the limit reserved for them.
    pub(crate) reserved: Vec<(Arc<str>, f64)>,
    /// Path prefixes whose durations are no latency signal.
    pub(crate) long_lived: Vec<Arc<str>>,
    /// Requests in flight per client key, if limited.
    pub(crate) per_key: Option<usize>,
    /// Requests that may wait for a general slot (0: none).
    pub(crate) queue_limit: usize,
    /// How long one may wait for a slot.
    pub(crate) queue_timeout: Duration,
    /// When one that got no slot is answered.
    pub(crate) queue_hold: Duration,
}
