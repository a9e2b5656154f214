//! The local deny cache: a key Redis refused until `t` is refused here
//! until `t`, without a round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::super::{Check, Decisions, KeyHash};
use crate::rate_limit::gcra::{Decision, Quota};

/// At most one pass over a full deny cache per this many nanoseconds.
const DENY_SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// The local deny cache (see the module docs).
pub(super) struct DenyCache {
    max_keys: usize,
    entries: DashMap<(Arc<str>, KeyHash), DenyEntry>,
    next_sweep_at: AtomicU64,
}

/// What one refusal taught: every check of the refused request, as it
/// stood.
#[derive(Clone)]
struct DenyEntry {
    /// Local nanoseconds until which the key is refused.
    until: u64,
    snapshot: Arc<[Seen]>,
}

#[derive(Clone)]
struct Seen {
    policy: Arc<str>,
    key: KeyHash,
    quota: Quota,
    cost: u32,
    remaining: u32,
    /// Local nanoseconds when the key's bucket is full again.
    reset_at: u64,
    /// Local nanoseconds until which this check is refused (0: admitted).
    refused_until: u64,
}

impl DenyCache {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            entries: DashMap::new(),
            next_sweep_at: AtomicU64::new(0),
        }
    }

    /// The decisions of a request one of whose keys is known to be refused
    /// now, if the cache knows every check of it.
    pub(super) fn lookup(&self, checks: &[Check], now: u64) -> Option<Decisions> {
        if self.max_keys == 0 || self.entries.is_empty() {
            return None;
        }
        let entry = checks.iter().find_map(|check| {
            let entry = self.entries.get(&(check.policy.clone(), check.key))?;
            (entry.until > now).then(|| entry.clone())
        })?;
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            let seen = entry.snapshot.iter().find(|seen| {
                seen.key == check.key && seen.policy == check.policy && seen.quota == check.quota
            })?;
            let refused = seen.refused_until > now && check.cost >= seen.cost;
            if !refused && seen.refused_until > now {
                // A cheaper request than the refused one: Redis must decide.
                return None;
            }
            decisions.push(Decision {
                allowed: !refused,
                limit: check.quota.burst(),
                remaining: seen.remaining,
                reset_after_ns: seen.reset_at.saturating_sub(now),
                retry_after_ns: if refused { seen.refused_until - now } else { 0 },
                new_tat: 0,
            });
        }
        if decisions.iter().all(|decision| decision.allowed) {
            return None;
        }
        Some(match decisions.len() {
            1 => Decisions::one(decisions[0]),
            _ => Decisions::new(decisions),
        })
    }

    /// Remembers a refusal decided by Redis for a call sent at `sent_at`.
    pub(super) fn remember(&self, checks: &[Check], decisions: &[Decision], sent_at: u64) {
        if self.max_keys == 0 {
            return;
        }
        let snapshot: Arc<[Seen]> = checks
            .iter()
            .zip(decisions)
            .map(|(check, decision)| Seen {
                policy: check.policy.clone(),
                key: check.key,
                quota: check.quota,
                cost: check.cost,
                remaining: decision.remaining,
                // Never longer than the policy's tolerance from when Redis
                // decided: no true state asks for more, so a longer wait
                // comes from a Redis clock that stepped (or a script older
                // than the clamp), and must not outlive a corrected clock
                // here on the local one.
                reset_at: sent_at
                    .saturating_add(decision.reset_after_ns.min(check.quota.tolerance_nanos())),
                refused_until: if decision.allowed {
                    0
                } else {
                    sent_at
                        .saturating_add(decision.retry_after_ns.min(check.quota.tolerance_nanos()))
                },
            })
            .collect();
        for seen in snapshot.iter().filter(|seen| seen.refused_until != 0) {
            if self.entries.len() >= self.max_keys && !self.make_room(sent_at) {
                return;
            }
            self.entries.insert(
                (seen.policy.clone(), seen.key),
                DenyEntry {
                    until: seen.refused_until,
                    snapshot: snapshot.clone(),
                },
            );
        }
    }

    /// Keys cached now (expired ones included until dropped).
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops expired entries, at most once per sweep interval.
    fn make_room(&self, now: u64) -> bool {
        let next = self.next_sweep_at.load(Ordering::Relaxed);
        if now < next
            || self
                .next_sweep_at
                .compare_exchange(
                    next,
                    now.saturating_add(DENY_SWEEP_INTERVAL_NS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        self.entries.retain(|_, entry| entry.until > now);
        self.entries.len() < self.max_keys
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rate_limit::gcra::Clock;

    fn check(policy: &str, key: u8, cost: u32) -> Check {
        Check {
            policy: Arc::from(policy),
            key: KeyHash([key; 16]),
            quota: Quota::with_period(Duration::from_nanos(10))
                .unwrap()
                .with_burst(5)
                .unwrap(),
            cost,
        }
    }

    fn decision(allowed: bool, retry_after_ns: u64) -> Decision {
        Decision {
            allowed,
            limit: 5,
            remaining: if allowed { 3 } else { 0 },
            reset_after_ns: 50,
            retry_after_ns,
            new_tat: 0,
        }
    }

    #[test]
    fn the_deny_cache_refuses_until_the_retry_instant_and_no_longer() {
        let cache = DenyCache::new(10);
        let checks = [check("per-ip", 1, 1), check("global", 2, 1)];
        cache.remember(&checks, &[decision(false, 45), decision(true, 0)], 1_000);
        let local = cache.lookup(&checks, 1_040).expect("refused locally");
        assert!(!local.allowed());
        assert_eq!(local.as_slice()[0].retry_after_ns, 5);
        assert_eq!(local.as_slice()[0].reset_after_ns, 10);
        assert!(local.as_slice()[1].allowed);
        assert!(cache.lookup(&checks, 1_045).is_none(), "due: Redis decides");
        // A check the refusal did not see, or a cheaper request: Redis decides.
        let more = [check("per-ip", 1, 1), check("login", 2, 1)];
        assert!(cache.lookup(&more, 1_040).is_none());
        assert!(cache.lookup(&[check("per-ip", 1, 0)], 1_040).is_none());
        assert!(cache.lookup(&[check("per-ip", 3, 1)], 1_040).is_none());
    }

    /// Driven by an injected clock (the local nanoseconds passed in): a
    /// refusal asking for an hour (a Redis clock stepped back, or an older
    /// script) is held no longer than the policy's tolerance (5 × 10 ns
    /// here) from when it was decided.
    #[test]
    fn the_deny_cache_never_holds_a_refusal_past_the_tolerance() {
        let clock = crate::rate_limit::gcra::ManualClock::new();
        let cache = DenyCache::new(10);
        let checks = [check("per-ip", 1, 1)];
        let hour = 3_600_000_000_000;
        clock.set_nanos(1_000);
        cache.remember(&checks, &[decision(false, hour)], clock.now_nanos());
        clock.advance(Duration::from_nanos(49));
        let local = cache
            .lookup(&checks, clock.now_nanos())
            .expect("refused locally");
        assert_eq!(local.as_slice()[0].retry_after_ns, 1);
        assert!(local.as_slice()[0].reset_after_ns <= 50);
        clock.advance(Duration::from_nanos(1));
        assert!(
            cache.lookup(&checks, clock.now_nanos()).is_none(),
            "past the tolerance: Redis decides"
        );
    }

    #[test]
    fn the_deny_cache_stays_within_its_bound() {
        let cache = DenyCache::new(8);
        for key in 0..100u8 {
            let now = u64::from(key) * 1_000_000;
            cache.remember(&[check("per-ip", key, 1)], &[decision(false, 1_000)], now);
            assert!(cache.entries.len() <= 8);
        }
        let off = DenyCache::new(0);
        off.remember(&[check("per-ip", 1, 1)], &[decision(false, 1_000)], 0);
        assert!(off.entries.is_empty());
    }
}
