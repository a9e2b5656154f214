//! The one log throttle: floods write a bounded number of lines.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets one log event through per interval and counts the others.
pub(crate) struct LogThrottle {
    interval_ns: u64,
    next_at: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval_ns: u64) -> Self {
        Self {
            interval_ns,
            next_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last one)` if this event may be
    /// logged.
    pub(crate) fn allow(&self, now: u64) -> Option<u64> {
        let next_at = self.next_at.load(Ordering::Relaxed);
        if now >= next_at
            && self
                .next_at
                .compare_exchange(
                    next_at,
                    now.saturating_add(self.interval_ns),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn one_event_per_interval_then_the_count_of_the_others() {
        let throttle = LogThrottle::new(10);
        assert_eq!(throttle.allow(0), Some(0));
        assert_eq!(throttle.allow(3), None);
        assert_eq!(throttle.allow(9), None);
        assert_eq!(throttle.allow(10), Some(2));
        assert_eq!(throttle.allow(19), None);
        assert_eq!(throttle.allow(30), Some(1));
        assert_eq!(throttle.allow(35), None);
    }
}
