//! The one log throttle: floods write a bounded number of lines.
//!
//! [`LogThrottle`] lets a budget of events through per interval and counts
//! the others; the first event let through in a later interval carries
//! that count, so nothing is lost from the log's arithmetic.
//! [`FloodGate`] keeps one such throttle per kind of event (the outcome
//! event's `error.type`), for a layer whose requests read it without a
//! reference count (see [`FloodGateLease`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Lets `budget` log events through per interval and counts the others.
pub(crate) struct LogThrottle {
    interval_ns: u64,
    budget: u64,
    /// When the current interval ends (0: none opened yet).
    next_at: AtomicU64,
    /// Events let through in the current interval.
    written: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    /// One event per interval.
    pub(crate) fn new(interval_ns: u64) -> Self {
        Self::with_budget(interval_ns, 1)
    }

    /// `budget` events per interval (at least one).
    pub(crate) fn with_budget(interval_ns: u64, budget: u64) -> Self {
        Self {
            interval_ns,
            budget: budget.max(1),
            next_at: AtomicU64::new(0),
            written: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events suppressed since the last one let through)` if this
    /// event may be logged, at `now` (nanoseconds on any monotonic clock).
    ///
    /// Every event is either let through or counted, and each count is
    /// handed out once: under races, an event may be counted in the next
    /// interval's report rather than this one's, never lost.
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
            self.written.store(1, Ordering::Relaxed);
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < self.budget {
            return Some(0);
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Whether an event at `now` would be let through, without counting it.
    pub(crate) fn would_allow(&self, now: u64) -> bool {
        now >= self.next_at.load(Ordering::Relaxed)
            || self.written.load(Ordering::Relaxed) < self.budget
    }
}

/// One [`LogThrottle`] per kind of event, each letting a budget of lines
/// through per second.
pub(crate) struct FloodGate {
    /// Lines per second for each kind; 0: no throttle.
    lines_per_second: AtomicU64,
    by_kind: RwLock<HashMap<&'static str, KindThrottle>>,
}

impl std::fmt::Debug for FloodGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodGate")
            .field("lines_per_second", &self.lines_per_second)
            .finish_non_exhaustive()
    }
}

const SECOND_NS: u64 = 1_000_000_000;

/// A kind's throttle, on its own clock: nanoseconds since its first line,
/// on tokio's clock (which tests pause and advance).
struct KindThrottle {
    epoch: tokio::time::Instant,
    throttle: LogThrottle,
}

impl KindThrottle {
    fn now(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl FloodGate {
    fn new(lines_per_second: u32) -> Self {
        Self {
            lines_per_second: AtomicU64::new(u64::from(lines_per_second)),
            by_kind: RwLock::new(HashMap::new()),
        }
    }

    /// `Some(lines of this kind suppressed since the last one written)` if a
    /// line of `kind` may be written now.
    pub(crate) fn allow(&self, kind: &'static str) -> Option<u64> {
        self.allow_at(kind, None)
    }

    /// [`FloodGate::allow`] at `now` (nanoseconds since the kind's first
    /// line; `None`: tokio's clock).
    fn allow_at(&self, kind: &'static str, now: Option<u64>) -> Option<u64> {
        let lines = self.lines_per_second.load(Ordering::Relaxed);
        if lines == 0 {
            return Some(0);
        }
        // Kinds are `&'static str`: a program has a fixed set of them, so
        // the map is bounded; a new kind takes the write lock once.
        let allow = |kind: &KindThrottle| kind.throttle.allow(now.unwrap_or_else(|| kind.now()));
        if let Some(throttle) = self.read().get(kind) {
            return allow(throttle);
        }
        let mut by_kind = self.by_kind.write().unwrap_or_else(|e| e.into_inner());
        allow(by_kind.entry(kind).or_insert_with(|| KindThrottle {
            epoch: tokio::time::Instant::now(),
            throttle: LogThrottle::with_budget(SECOND_NS, lines),
        }))
    }

    /// Whether a line of `kind` would be written now, without counting it.
    pub(crate) fn would_allow(&self, kind: &'static str) -> bool {
        if self.lines_per_second.load(Ordering::Relaxed) == 0 {
            return true;
        }
        self.read()
            .get(kind)
            .is_none_or(|kind| kind.throttle.would_allow(kind.now()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<&'static str, KindThrottle>> {
        self.by_kind.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gates given back by dropped leases, for the next layer built.
static FREE_GATES: Mutex<Vec<&'static FloodGate>> = Mutex::new(Vec::new());

/// A [`FloodGate`] for one layer, reachable from each of its requests as a
/// plain `&'static` reference: a request copies it instead of counting a
/// reference (two atomic writes per request on a cache line every thread
/// shares), and a panic hook can reach it through a thread-local.
///
/// The gate lives for the whole process; a dropped lease gives it back for
/// the next layer built, so memory is bounded by the number of layers alive
/// at once. A request still running when its layer is dropped may count
/// against the gate's next user: a log line more or less, never a fault.
#[derive(Debug)]
pub(crate) struct FloodGateLease(&'static FloodGate);

impl FloodGateLease {
    /// A gate letting `lines_per_second` lines of each kind through (0: all).
    pub(crate) fn new(lines_per_second: u32) -> Self {
        let reused = FREE_GATES.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let gate = match reused {
            Some(gate) => {
                gate.lines_per_second
                    .store(u64::from(lines_per_second), Ordering::Relaxed);
                gate.by_kind
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
                gate
            }
            None => Box::leak(Box::new(FloodGate::new(lines_per_second))),
        };
        Self(gate)
    }

    pub(crate) fn gate(&self) -> &'static FloodGate {
        self.0
    }
}

impl Drop for FloodGateLease {
    fn drop(&mut self) {
        FREE_GATES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::{FloodGate, LogThrottle, SECOND_NS};

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

    #[test]
    fn a_budget_per_interval_then_the_count_of_the_others() {
        let throttle = LogThrottle::with_budget(10, 3);
        assert_eq!(throttle.allow(0), Some(0));
        assert_eq!(throttle.allow(1), Some(0));
        assert!(throttle.would_allow(1));
        assert_eq!(throttle.allow(2), Some(0));
        assert!(!throttle.would_allow(2));
        for now in 3..10 {
            assert_eq!(throttle.allow(now), None);
        }
        assert!(throttle.would_allow(10));
        assert_eq!(throttle.allow(10), Some(7));
        assert_eq!(throttle.allow(11), Some(0));
    }

    #[test]
    fn each_kind_has_its_own_budget_and_zero_is_no_throttle() {
        let gate = FloodGate::new(2);
        assert_eq!(gate.allow_at("a", Some(0)), Some(0));
        assert_eq!(gate.allow_at("a", Some(1)), Some(0));
        assert_eq!(gate.allow_at("a", Some(2)), None);
        assert_eq!(gate.allow_at("b", Some(2)), Some(0));
        assert_eq!(gate.allow_at("a", Some(SECOND_NS)), Some(1));
        let open = FloodGate::new(0);
        for now in 0..100 {
            assert_eq!(open.allow_at("a", Some(now)), Some(0));
        }
    }

    #[test]
    fn every_event_is_written_or_reported_once_across_threads() {
        let throttle = std::sync::Arc::new(LogThrottle::with_budget(1_000, 5));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let throttle = throttle.clone();
                std::thread::spawn(move || {
                    let (mut written, mut reported) = (0u64, 0u64);
                    for i in 0..10_000u64 {
                        // Simulated time: each thread walks its own clock.
                        if let Some(suppressed) = throttle.allow(i * 7 + thread) {
                            written += 1;
                            reported += suppressed;
                        }
                    }
                    (written, reported)
                })
            })
            .collect();
        let (written, reported) = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |(w, r), (tw, tr)| (w + tw, r + tr));
        // What is still pending goes to the next line let through.
        let pending = throttle.allow(u64::MAX - 1).unwrap();
        assert_eq!(written + reported + pending, 40_000);
    }
}
