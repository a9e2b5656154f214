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
}
