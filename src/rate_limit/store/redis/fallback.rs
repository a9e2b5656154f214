//! The local fallback: an in-process store that decides, with a share of
//! each quota, while Redis fails.

use std::time::Duration;

use super::super::memory::MemoryStore;
use super::super::{Check, Decisions};
use crate::rate_limit::gcra::Quota;

/// The in-process store a [`RedisStore`](crate::rate_limit::RedisStore) decides with while Redis fails.
///
/// Each instance then enforces `share` of every quota on its own (rate and
/// burst, the burst rounded up to at least 1): with `n` instances behind a
/// load balancer, a share of `1/n` keeps the total near the shared limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFallback {
    share: f64,
    max_keys: usize,
}

impl LocalFallback {
    /// `share` of each quota (in `(0, 1]`), in a [`MemoryStore`] of at most
    /// `max_keys` keys.
    pub fn new(share: f64, max_keys: usize) -> Self {
        Self { share, max_keys }
    }

    /// The share of each quota.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The quota an instance enforces alone.
    pub fn scale(&self, quota: Quota) -> Quota {
        scale_quota(quota, self.share)
    }
}

fn scale_quota(quota: Quota, share: f64) -> Quota {
    let interval = (quota.emission_interval_nanos() as f64 / share).min(u64::MAX as f64) as u64;
    let burst = (f64::from(quota.burst()) * share).ceil().max(1.0) as u32;
    Quota::with_period(Duration::from_nanos(interval.max(1)))
        .and_then(|scaled| scaled.with_burst(burst))
        .unwrap_or(quota)
}

/// The fallback store of a [`RedisStore`](crate::rate_limit::RedisStore)(crate::rate_limit::RedisStore).
pub(super) struct Fallback {
    share: f64,
    store: MemoryStore,
}

impl Fallback {
    pub(super) fn new(fallback: LocalFallback) -> Self {
        Self {
            share: fallback.share,
            store: MemoryStore::new(fallback.max_keys),
        }
    }

    /// Decides `checks` in process, each quota scaled to the share.
    pub(super) fn decide(&self, checks: &[Check]) -> Decisions {
        let scaled: Vec<Check> = checks
            .iter()
            .map(|check| Check {
                quota: scale_quota(check.quota, self.share),
                ..check.clone()
            })
            .collect();
        self.store.decide(&scaled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_quota_is_a_share_of_rate_and_burst() {
        let quota = Quota::per_second(100).unwrap();
        let half = LocalFallback::new(0.5, 10).scale(quota);
        assert_eq!(half.burst(), 50);
        assert_eq!(half.emission_interval(), Duration::from_millis(20));
        let tiny = LocalFallback::new(0.001, 10).scale(quota);
        assert_eq!(tiny.burst(), 1, "at least one request");
    }
}
