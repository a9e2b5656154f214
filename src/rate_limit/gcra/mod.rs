//! GCRA, the generic cell rate algorithm, over integer nanoseconds.
//!
//! This module knows nothing of storage or HTTP: a store keeps one `u64` per
//! key, the key's *theoretical arrival time* (TAT), and hands it to
//! [`Quota::decide`] with the current time. Every backend (the in-process
//! [`MemoryStore`](crate::rate_limit::MemoryStore), a Redis script) runs the same
//! arithmetic, so they make the same decisions.
//!
//! The state is a single number, and a TAT at or before `now` means exactly
//! the same as no state at all: that is what makes lossless eviction of idle
//! keys possible. The algorithm itself is documented on [`Quota`].

use std::time::Duration;

mod clock;

pub use clock::{Clock, ManualClock, MonotonicClock};

/// Why a [`Quota`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// A burst of zero admits nothing, ever.
    #[error("the burst of a quota must be at least 1")]
    ZeroBurst,
    /// A rate of zero requests, or a period of zero.
    #[error("the rate of a quota must be positive and its period non-zero")]
    ZeroRate,
}

/// A rate and a burst: how many requests a key may make.
///
/// `burst` requests may arrive at once; after that, one more every
/// [`emission_interval`](Self::emission_interval). The bucket refills fully
/// in `burst × emission_interval`, which is the `w` (window) advertised in
/// the `RateLimit-Policy` header.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::rate_limit::Quota;
///
/// let quota = Quota::per_second(50).unwrap().with_burst(100).unwrap();
/// assert_eq!(quota.emission_interval(), Duration::from_millis(20));
/// assert_eq!(quota.burst(), 100);
/// assert_eq!(quota.window(), Duration::from_secs(2));
/// ```
///
/// # The algorithm (GCRA)
///
/// With emission interval `T` (nanoseconds per request) and a burst of `B`,
/// the tolerance is `τ = B·T`. A request of cost `c` at time `now` computes
/// `new_tat = max(tat, now) + c·T` and is admitted iff `new_tat - now ≤ τ`;
/// only an admitted request stores `new_tat`. So in any window of length `W`
/// at most `B + W/T` requests are admitted, requests spaced exactly `T` apart
/// are always admitted, and a refused request changes nothing.
///
/// All arithmetic saturates: no input (a huge cost, a clock read far in the
/// future, a TAT from a clock that went backwards) can overflow or panic. A
/// `now` smaller than a previous one only makes a decision stricter, never
/// more lenient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    emission_interval_ns: u64,
    burst: u32,
}

impl Quota {
    /// `count` requests per `period`, with a burst of `count` (the whole
    /// period's allowance may arrive at once).
    pub fn new(count: u32, period: Duration) -> Result<Self, QuotaError> {
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        if count == 0 || period_ns == 0 {
            return Err(QuotaError::ZeroRate);
        }
        let emission_interval_ns = (period_ns / u64::from(count)).max(1);
        Ok(Self {
            emission_interval_ns,
            burst: count,
        })
    }

    /// `count` requests per second, burst `count`.
    pub fn per_second(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute, burst `count`.
    pub fn per_minute(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// One request every `emission_interval` (at least 1 ns), burst 1.
    pub fn with_period(emission_interval: Duration) -> Result<Self, QuotaError> {
        let emission_interval_ns = u64::try_from(emission_interval.as_nanos()).unwrap_or(u64::MAX);
        if emission_interval_ns == 0 {
            return Err(QuotaError::ZeroRate);
        }
        Ok(Self {
            emission_interval_ns,
            burst: 1,
        })
    }

    /// The same rate with another burst.
    pub fn with_burst(mut self, burst: u32) -> Result<Self, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        self.burst = burst;
        Ok(self)
    }

    /// Nanoseconds between two requests at the sustained rate.
    pub fn emission_interval_nanos(&self) -> u64 {
        self.emission_interval_ns
    }

    /// Time between two requests at the sustained rate.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_interval_ns)
    }

    /// Requests admitted at once from a fresh state.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time in which an emptied bucket refills: `burst × interval`.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.tolerance_nanos())
    }

    /// τ = burst × interval, saturating.
    pub fn tolerance_nanos(&self) -> u64 {
        self.emission_interval_ns
            .saturating_mul(u64::from(self.burst))
    }

    /// Decides a request of `cost` at `now` against a key whose TAT is `tat`
    /// (0 for a key never seen). Returns the decision; the caller stores
    /// [`Decision::new_tat`] if, and only if, the request was admitted.
    ///
    /// A cost of 0 inspects the state without consuming anything. A `tat`
    /// more than the tolerance ahead of `now` (only a clock that stepped
    /// back makes one) counts as exactly the tolerance ahead: a refusal
    /// never asks for more than one increment's wait.
    pub fn decide(&self, tat: u64, now: u64, cost: u32) -> Decision {
        let tolerance = self.tolerance_nanos();
        let increment = self.emission_interval_ns.saturating_mul(u64::from(cost));
        // A TAT is stored at most `tolerance` ahead of the `now` that
        // admitted it, and `now` never goes backwards on a monotonic clock:
        // further ahead, the clock stepped back (a wall clock behind a
        // network store, a fail-over to a server whose clock is behind).
        // Read it as a bucket just emptied rather than a lock-out for the
        // size of the step.
        let base = tat.min(now.saturating_add(tolerance)).max(now);
        let new_tat = base.saturating_add(increment);
        let new_backlog = new_tat - now;
        if new_backlog <= tolerance {
            Decision {
                allowed: true,
                limit: self.burst,
                remaining: self.remaining_for(new_backlog),
                reset_after_ns: new_backlog,
                retry_after_ns: 0,
                new_tat,
            }
        } else {
            let backlog = base - now;
            Decision {
                allowed: false,
                limit: self.burst,
                remaining: self.remaining_for(backlog),
                reset_after_ns: backlog,
                retry_after_ns: new_backlog - tolerance,
                new_tat: tat,
            }
        }
    }

    fn remaining_for(&self, backlog: u64) -> u32 {
        let room = self.tolerance_nanos().saturating_sub(backlog);
        u32::try_from(room / self.emission_interval_ns).unwrap_or(u32::MAX)
    }
}

/// The outcome of one GCRA check: what the headers and the caller need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The quota's burst: requests a fresh key may make at once.
    pub limit: u32,
    /// Requests that could still be made right now, after this one.
    pub remaining: u32,
    /// Nanoseconds until the key's bucket is full again (its state idle).
    pub reset_after_ns: u64,
    /// Nanoseconds until this request would be admitted; 0 when admitted.
    pub retry_after_ns: u64,
    /// The key's TAT after the decision (unchanged when refused).
    pub new_tat: u64,
}

impl Decision {
    /// [`reset_after_ns`](Self::reset_after_ns) as a `Duration`.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after_ns)
    }

    /// [`retry_after_ns`](Self::retry_after_ns) as a `Duration`.
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quota(interval: u64, burst: u32) -> Quota {
        Quota::with_period(Duration::from_nanos(interval))
            .unwrap()
            .with_burst(burst)
            .unwrap()
    }

    #[test]
    fn burst_then_refusal_then_one_per_interval() {
        let quota = quota(10, 3);
        let mut tat = 0;
        for expected_remaining in [2, 1, 0] {
            let decision = quota.decide(tat, 100, 1);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = decision.new_tat;
        }
        let refused = quota.decide(tat, 100, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_ns, 10);
        assert_eq!(refused.reset_after_ns, 30);
        assert_eq!(refused.new_tat, tat);
        let later = quota.decide(tat, 110, 1);
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
    }

    #[test]
    fn idle_state_equals_fresh_state() {
        let quota = quota(10, 3);
        assert_eq!(quota.decide(50, 100, 1), quota.decide(0, 100, 1));
    }

    /// The issue's arithmetic: admitted at t0, checked at t0 - 1 h (the
    /// clock stepped back) asked for a wait of 3599.2 s. Now the state
    /// counts as a bucket just emptied: one increment's wait at most.
    #[test]
    fn a_backward_clock_step_costs_at_most_one_increment() {
        let hour = 3_600_000_000_000;
        let quota = quota(200_000_000, 5);
        let t0 = 10 * hour;
        let tat = quota.decide(0, t0, 1).new_tat;
        let stepped_back = quota.decide(tat, t0 - hour, 1);
        assert!(!stepped_back.allowed);
        assert_eq!(stepped_back.retry_after_ns, 200_000_000);
        assert_eq!(stepped_back.reset_after_ns, quota.tolerance_nanos());
        assert_eq!(stepped_back.new_tat, tat, "a refusal stores nothing");
        // A store that writes the state back as read (the Redis script
        // does, for a clamped state) admits one increment later.
        let repaired = tat.min(t0 - hour + quota.tolerance_nanos());
        assert_eq!(
            Decision {
                new_tat: tat,
                ..quota.decide(repaired, t0 - hour, 1)
            },
            stepped_back,
            "the repair changes no decision"
        );
        assert!(quota.decide(repaired, t0 - hour + 200_000_000, 1).allowed);
        // A state within the tolerance is read as it is.
        assert_eq!(quota.decide(tat, t0, 1).remaining, 3);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let quota = quota(u64::MAX, u32::MAX);
        let _ = quota.decide(u64::MAX, 0, u32::MAX);
        let _ = quota.decide(0, u64::MAX, u32::MAX);
        let small = self::quota(1, 1);
        let _ = small.decide(u64::MAX, u64::MAX, u32::MAX);
        assert!(Quota::new(0, Duration::from_secs(1)).is_err());
        assert!(Quota::per_second(1).unwrap().with_burst(0).is_err());
    }

    proptest! {
        /// In any window [t_i, t_j], admitted ≤ burst + (t_j - t_i) / T.
        #[test]
        fn no_window_admits_more_than_burst_plus_rate(
            interval in 1u64..1_000,
            burst in 1u32..20,
            gaps in proptest::collection::vec(0u64..2_000, 1..200),
        ) {
            let quota = quota(interval, burst);
            let mut tat = 0;
            let mut now = 0;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                let decision = quota.decide(tat, now, 1);
                if decision.allowed {
                    tat = decision.new_tat;
                    admitted.push(now);
                }
            }
            for i in 0..admitted.len() {
                for j in i..admitted.len() {
                    let count = (j - i + 1) as u64;
                    let bound = u64::from(burst) + (admitted[j] - admitted[i]) / interval;
                    prop_assert!(count <= bound, "{count} admitted in a window allowing {bound}");
                }
            }
        }

        /// Requests spaced exactly one interval apart are always admitted,
        /// whatever the state left by an earlier burst of them.
        #[test]
        fn requests_at_the_rate_are_always_admitted(
            interval in 1u64..1_000_000,
            burst in 1u32..50,
            start in 0u64..1_000_000_000,
            count in 1usize..500,
        ) {
            let quota = quota(interval, burst);
            let mut tat = 0;
            for i in 0..count as u64 {
                let decision = quota.decide(tat, start + i * interval, 1);
                prop_assert!(decision.allowed);
                tat = decision.new_tat;
            }
        }

        /// A refused request leaves the state exactly as it was.
        #[test]
        fn a_refusal_changes_no_state(
            interval in 1u64..1_000,
            burst in 1u32..20,
            tat in 0u64..100_000,
            now in 0u64..100_000,
            cost in 0u32..40,
        ) {
            let quota = quota(interval, burst);
            let decision = quota.decide(tat, now, cost);
            // A state further ahead than the tolerance (a clock stepped
            // back) reads as exactly the tolerance ahead.
            let as_read = tat.min(now + quota.tolerance_nanos());
            prop_assert_eq!(decision, Decision { new_tat: decision.new_tat, ..quota.decide(as_read, now, cost) });
            if !decision.allowed {
                prop_assert_eq!(decision.new_tat, tat);
                prop_assert!(decision.retry_after_ns > 0);
                prop_assert!(decision.retry_after_ns <= quota.emission_interval_nanos() * u64::from(cost.max(1)));
                // Retrying exactly after retry_after is admitted.
                let retry = quota.decide(as_read, now + decision.retry_after_ns, cost);
                prop_assert!(retry.allowed || cost > burst);
            } else {
                prop_assert!(decision.new_tat >= as_read);
            }
        }
    }
}
