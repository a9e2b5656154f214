//! The circuit breaker: after repeated failures, Redis is left alone for a
//! cool-down, then probed by one request.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::super::StoreError;

/// The circuit breaker: healthy (`open_until == 0`) or degraded until
/// `open_until` (local nanoseconds, at least 1), then probed by one request.
pub(super) struct Breaker {
    threshold: u32,
    cool_down_ns: u64,
    /// What requests get while degraded, for the log.
    degraded_policy: &'static str,
    consecutive_failures: AtomicU32,
    pub(super) open_until: AtomicU64,
    probing: AtomicBool,
    pub(super) degradations: AtomicU64,
    pub(super) recoveries: AtomicU64,
}

/// The right to call Redis. A probe's ticket hands the probe back if its
/// request is dropped before Redis answered, so a cancelled probe never
/// leaves the store degraded for good.
pub(super) struct Ticket {
    breaker: Arc<Breaker>,
    probe: bool,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cool_down: Duration, degraded_policy: &'static str) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down_ns: u64::try_from(cool_down.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            degraded_policy,
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            degradations: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    /// Whether requests must not call Redis now (degraded, and the cool-down
    /// is not over or another request is probing).
    pub(super) fn is_cooling_down(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && (now < until || self.probing.load(Ordering::Acquire))
    }

    /// How long until Redis is asked again: the rest of the cool-down while
    /// degraded, a whole cool-down otherwise (a call just failed, and the
    /// next may open the circuit). What a fail-closed 503 says in
    /// `Retry-After`.
    pub(super) fn retry_after(&self, now: u64) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        let nanos = if until > now {
            until - now
        } else {
            self.cool_down_ns
        };
        Duration::from_nanos(nanos)
    }

    /// A ticket to call Redis, or `None` if the request must not.
    pub(super) fn admit(self: &Arc<Self>, now: u64) -> Option<Ticket> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Ticket {
                breaker: self.clone(),
                probe: false,
            });
        }
        if now < until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Ticket {
                breaker: self.clone(),
                probe: true,
            })
    }
}

fn redis_metric(kind: &'static str) {
    crate::telemetry::metrics::increment(
        crate::telemetry::metrics::names::RATE_LIMITING_STORE_EVENTS,
        &[(
            crate::telemetry::metrics::names::RATE_LIMITING_STORE_EVENT,
            kind,
        )],
        1,
    );
}

impl Ticket {
    pub(super) fn succeeded(mut self) {
        let breaker = &self.breaker;
        breaker.consecutive_failures.store(0, Ordering::Relaxed);
        // Only the probe closes the circuit: a late answer to a call sent
        // before Redis went down says nothing about Redis now.
        if self.probe && breaker.open_until.swap(0, Ordering::AcqRel) != 0 {
            breaker.recoveries.fetch_add(1, Ordering::Relaxed);
            redis_metric("recovered");
            tracing::info!("Redis rate-limit store recovered: deciding with Redis again");
        }
        self.release_probe();
    }

    pub(super) fn failed(mut self, now: u64, error: &StoreError) {
        let breaker = &self.breaker;
        let failures = breaker.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        redis_metric("call_failed");
        let reopen_at = now.saturating_add(breaker.cool_down_ns).max(1);
        if self.probe {
            // Still down: another cool-down, no new log line (the switch to
            // degraded was logged once).
            breaker.open_until.store(reopen_at, Ordering::Release);
        } else if failures >= breaker.threshold
            && breaker
                .open_until
                .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            breaker.degradations.fetch_add(1, Ordering::Relaxed);
            redis_metric("degraded");
            tracing::warn!(
                error = %error,
                reason = ?error,
                consecutive_failures = failures,
                cool_down_ms = breaker.cool_down_ns / 1_000_000,
                "Redis rate-limit store degraded: Redis is left alone during the cool-down, then probed; {}",
                breaker.degraded_policy
            );
        }
        self.release_probe();
    }

    fn release_probe(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release_probe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> StoreError {
        StoreError::unavailable("test")
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_probes_once_and_recovers() {
        let breaker = Arc::new(Breaker::new(3, Duration::from_nanos(100), "test"));
        for now in [1, 2] {
            breaker.admit(now).unwrap().failed(now, &error());
            assert!(!breaker.is_cooling_down(now));
        }
        breaker.admit(3).unwrap().failed(3, &error());
        assert!(breaker.is_cooling_down(3));
        assert_eq!(breaker.degradations.load(Ordering::Relaxed), 1);
        assert!(breaker.admit(102).is_none(), "cool-down until 103");
        // After the cool-down: one probe, and only one.
        let probe = breaker.admit(103).expect("a probe");
        assert!(breaker.admit(103).is_none());
        assert!(breaker.is_cooling_down(150), "a probe is in flight");
        probe.failed(150, &error());
        assert_eq!(
            breaker.degradations.load(Ordering::Relaxed),
            1,
            "logged once"
        );
        assert!(breaker.admit(249).is_none(), "a new cool-down until 250");
        // A dropped probe (a cancelled request) gives the probe back.
        drop(breaker.admit(250).expect("a probe"));
        let probe = breaker.admit(251).expect("the probe was given back");
        probe.succeeded();
        assert!(!breaker.is_cooling_down(251));
        assert_eq!(breaker.recoveries.load(Ordering::Relaxed), 1);
        // Healthy again: failures count from zero.
        breaker.admit(260).unwrap().failed(260, &error());
        assert!(!breaker.is_cooling_down(260));
        // A late success of a call sent before the circuit opened does not
        // close it.
        let early = breaker.admit(270).unwrap();
        for now in [271, 272] {
            breaker.admit(now).unwrap().failed(now, &error());
        }
        assert!(breaker.is_cooling_down(272));
        early.succeeded();
        assert!(breaker.is_cooling_down(273), "still degraded");
        assert_eq!(breaker.recoveries.load(Ordering::Relaxed), 1);
    }
}
