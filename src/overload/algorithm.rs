//! The adaptive limit's arithmetic: Netflix's Gradient2, pure (no clock, no
//! atomics), so that tests drive it with simulated latencies.

use std::time::Duration;

/// Settings of the adaptive limit (see [`Adaptive`](super::Limit::Adaptive)).
///
/// ```
/// use tower_harden::overload::AdaptiveLimit;
///
/// let adaptive = AdaptiveLimit::default().min_limit(4).max_limit(256);
/// assert_eq!(adaptive.initial(), 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    pub(crate) initial: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) window: Duration,
    pub(crate) window_samples: u32,
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 8,
            max: 1000,
            tolerance: 1.2,
            smoothing: 0.2,
            window: Duration::from_millis(100),
            window_samples: 10,
        }
    }
}

impl AdaptiveLimit {
    /// The limit at start. Default 20 (Netflix's): low enough that the first
    /// latencies, which become the baseline, are measured without a queue.
    pub fn initial_limit(mut self, limit: usize) -> Self {
        self.initial = limit;
        self
    }

    /// The floor: the limit never falls below it. Default 8.
    pub fn min_limit(mut self, limit: usize) -> Self {
        self.min = limit;
        self
    }

    /// The ceiling: the limit never rises above it. Default 1000.
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max = limit;
        self
    }

    /// How much slower than its long-term average the service may answer
    /// before the limit falls. Default 1.2 (Netflix's Gradient2 has 1.5,
    /// which lets the queue double the latency of a saturated service).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The shortest time over which latencies are averaged into one update
    /// (an update also needs 10 samples). Default 100 ms.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The initial limit.
    pub fn initial(&self) -> usize {
        self.initial
    }

    /// The floor.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Netflix's Gradient2: the limit follows the ratio of the service's
/// long-term average latency to its latency now. Two changes: the average
/// does not learn from windows in which the limit shed, and a window that
/// shed while latency stayed within tolerance grows the limit by a quarter
/// (a slow start; see `update`).
#[derive(Debug, Clone)]
pub(crate) struct Gradient2 {
    settings: AdaptiveLimit,
    limit: f64,
    /// Exponential average of the window latencies, in seconds.
    long_rtt: f64,
    /// Updates seen, for the average's warm-up (a plain mean at first).
    updates: u32,
}

/// The long average spans about this many updates (about a minute at one
/// update per 100 ms window).
const LONG_WINDOW: f64 = 600.0;
/// The first updates make a plain mean, so the baseline is not one sample.
const WARMUP: u32 = 3;
/// The growth per window of a limit that shed while latency stayed within
/// tolerance.
const SLOW_START: f64 = 1.25;

impl Gradient2 {
    pub(crate) fn new(mut settings: AdaptiveLimit) -> Self {
        // Builders take any numbers; a floor above the ceiling wins.
        settings.min = settings.min.max(1);
        settings.max = settings.max.max(settings.min);
        let limit = settings.initial.clamp(settings.min, settings.max) as f64;
        Self {
            settings,
            limit,
            long_rtt: 0.0,
            updates: 0,
        }
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit as usize
    }

    /// One update: `rtt` is the average latency of a window, `in_flight` the
    /// most requests in flight during it, `shed` whether the limit refused
    /// any request in it. Returns the new limit.
    pub(crate) fn update(&mut self, rtt: Duration, in_flight: usize, shed: bool) -> usize {
        let short = rtt.as_secs_f64().max(1e-9);
        self.updates = self.updates.saturating_add(1);
        if self.updates <= WARMUP {
            // The baseline is learnt at the initial limit, before it moves.
            let n = f64::from(self.updates);
            self.long_rtt += (short - self.long_rtt) / n;
            return self.limit();
        } else if !shed || short < self.long_rtt {
            // A window in which the limit shed had its concurrency set by the
            // limit, not by demand: learning from it would teach the average
            // that the limit's own queue is normal, and the limit would creep
            // up for as long as the overload lasts (Gradient2's known drift).
            self.long_rtt += (short - self.long_rtt) * (2.0 / (LONG_WINDOW + 1.0));
        }
        // After a long overload the average sits high: bring it back faster
        // than its window would, so the limit recovers.
        if self.long_rtt / short > 2.0 {
            self.long_rtt *= 0.95;
        }
        // A service not using half its limit says nothing about a higher one.
        if (in_flight as f64) < self.limit / 2.0 {
            return self.limit();
        }
        let gradient = (self.settings.tolerance * self.long_rtt / short).clamp(0.5, 1.0);
        let next = if shed && gradient >= 1.0 {
            // Demand above the limit and latency within tolerance: the limit,
            // not the service, refused. Grow by a quarter per window (a slow
            // start): Gradient2's smoothed square-root step takes tens of
            // seconds to admit a healthy service's concurrency, shedding
            // most of its traffic meanwhile.
            self.limit * SLOW_START
        } else {
            let queue = self.limit.sqrt();
            let target = self.limit * gradient + queue;
            let smoothing = self.settings.smoothing;
            self.limit * (1.0 - smoothing) + target * smoothing
        };
        self.limit = next.clamp(self.settings.min as f64, self.settings.max as f64);
        self.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A service with `capacity` workers of `service_ms` each, fed with as
    /// much as the limit lets through: its latency is the service time plus
    /// the queue in front of the workers.
    fn latency_at(limit: usize, capacity: usize, service_ms: u64) -> Duration {
        let queued = limit.saturating_sub(capacity) as u64;
        ms(service_ms + service_ms * queued / capacity as u64)
    }

    /// A service whose latency does not change with concurrency (handlers
    /// that wait on something with room to spare) under more demand than
    /// the initial limit: the limit reaches the demand within a few
    /// windows of the warm-up, not tens of seconds.
    #[test]
    fn a_healthy_service_gets_its_concurrency_within_a_second() {
        let mut g = Gradient2::new(AdaptiveLimit::default());
        let demand = 64;
        let mut windows = 0;
        while g.limit() < demand {
            let limit = g.limit();
            g.update(ms(5), limit, true);
            windows += 1;
            assert!(
                windows <= WARMUP + 10,
                "limit {} after {windows} windows",
                g.limit()
            );
        }
        // Demand met: no more shedding, and the limit holds.
        for _ in 0..100 {
            g.update(ms(5), demand, false);
        }
        assert!(g.limit() >= demand, "{}", g.limit());
    }

    #[test]
    fn the_limit_finds_the_capacity_of_a_saturated_service() {
        let mut g = Gradient2::new(AdaptiveLimit::default());
        // Demand far over capacity for 2,000 windows (over 3 minutes): the
        // limit is always full and always sheds.
        for _ in 0..2_000 {
            let limit = g.limit();
            g.update(latency_at(limit, 16, 20), limit, true);
        }
        let limit = g.limit();
        // No drift: the queue stays within the tolerance of the latency
        // learnt at the start (25 ms at the initial limit of 20).
        assert!((16..=34).contains(&limit), "{limit}");
        assert!(latency_at(limit, 16, 20) <= ms(40));
    }

    #[test]
    fn the_limit_falls_when_latency_rises_and_recovers_when_it_falls() {
        let mut g = Gradient2::new(AdaptiveLimit::default().initial_limit(100));
        for _ in 0..100 {
            g.update(ms(10), 100, false);
        }
        let before = g.limit();
        assert!(before >= 100, "{before}");
        for _ in 0..20 {
            g.update(ms(50), before, true);
        }
        let during = g.limit();
        assert!(during < before / 2, "{during} vs {before}");
        for _ in 0..300 {
            let limit = g.limit();
            g.update(ms(10), limit, false);
        }
        assert!(g.limit() > before, "{} vs {before}", g.limit());
    }

    #[test]
    fn never_below_the_floor_never_above_the_ceiling() {
        let settings = AdaptiveLimit::default().min_limit(5).max_limit(40);
        let mut g = Gradient2::new(settings);
        for _ in 0..20 {
            g.update(ms(1), 20, false);
        }
        for _ in 0..60 {
            g.update(ms(1000), 40, true);
            assert!(g.limit() >= 5);
        }
        assert_eq!(g.limit(), 5);
        let mut g = Gradient2::new(settings);
        for _ in 0..5_000 {
            g.update(ms(1), 40, false);
            assert!(g.limit() <= 40);
        }
        assert_eq!(g.limit(), 40);
    }

    #[test]
    fn an_idle_service_does_not_raise_its_limit() {
        let mut g = Gradient2::new(AdaptiveLimit::default());
        for _ in 0..1_000 {
            g.update(ms(1), 3, false);
        }
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn a_floor_above_the_ceiling_does_not_panic() {
        let mut g = Gradient2::new(AdaptiveLimit::default().min_limit(50).max_limit(10));
        assert_eq!(g.limit(), 50);
        g.update(ms(1), 50, false);
    }

    #[test]
    fn the_initial_limit_is_clamped() {
        let g = Gradient2::new(AdaptiveLimit::default().initial_limit(1).min_limit(4));
        assert_eq!(g.limit(), 4);
    }
}
