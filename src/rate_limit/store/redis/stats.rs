//! The store's counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`RedisStore`](crate::rate_limit::RedisStore), for metrics. All count since the store
/// was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStoreStats {
    /// Script calls sent to Redis (one per request, or one per key with
    /// [`RedisStoreBuilder::cluster`](crate::rate_limit::RedisStoreBuilder::cluster)).
    pub redis_calls: u64,
    /// Calls that failed (timeouts included).
    pub redis_failures: u64,
    /// Calls that hit the store's timeout.
    pub redis_timeouts: u64,
    /// Times Redis had lost the script and it was sent again.
    pub script_reloads: u64,
    /// Requests answered without calling Redis because the store was
    /// degraded (cool-down).
    pub short_circuited: u64,
    /// Requests refused by the local deny cache, without a round trip.
    pub deny_cache_hits: u64,
    /// Requests decided by the local fallback store.
    pub fallback_decisions: u64,
    /// Switches from healthy to degraded.
    pub degradations: u64,
    /// Switches from degraded back to healthy.
    pub recoveries: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) redis_calls: AtomicU64,
    pub(super) redis_failures: AtomicU64,
    pub(super) redis_timeouts: AtomicU64,
    pub(super) script_reloads: AtomicU64,
    pub(super) short_circuited: AtomicU64,
    pub(super) deny_cache_hits: AtomicU64,
    pub(super) fallback_decisions: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
