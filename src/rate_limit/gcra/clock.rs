//! Time for the algorithm: a monotonic nanosecond source, and a manual one
//! for tests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic source of nanoseconds. Never goes backwards.
///
/// The default is [`MonotonicClock`]; tests inject a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since the clock's own origin.
    fn now_nanos(&self) -> u64;
}

/// The default clock: nanoseconds since an [`Instant`] taken when the clock
/// was made.
///
/// `Instant` is monotonic on every tier-1 platform (`CLOCK_MONOTONIC` on
/// Linux), and `Instant::elapsed` saturates at zero, so this clock never goes
/// backwards (unlike the TSC-based clock governor uses by default, see
/// governor#299). `u64` nanoseconds last 584 years from the anchor.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    anchor: Instant,
}

impl MonotonicClock {
    /// A clock anchored now.
    pub fn new() -> Self {
        Self {
            anchor: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.anchor.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to: for tests and simulations.
///
/// Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use tower_harden::rate_limit::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now_nanos(), 5_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the clock to `nanos`, if that is not in its past (the clock never
    /// goes backwards).
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_never_go_backwards() {
        let manual = ManualClock::new();
        manual.set_nanos(100);
        manual.set_nanos(50);
        assert_eq!(manual.now_nanos(), 100);
        let monotonic = MonotonicClock::new();
        let mut last = 0;
        for _ in 0..1000 {
            let now = monotonic.now_nanos();
            assert!(now >= last);
            last = now;
        }
    }
}
