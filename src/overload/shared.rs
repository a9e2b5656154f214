//! The state every clone of one layer shares: the limit, the counts in
//! flight, the adaptive algorithm and its window of samples.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::algorithm::Gradient2;
use super::per_key::{KeyPermit, PerKey};
use super::queue::{Queue, Wait};
use super::settings::{Limit, Settings};
use super::Overloaded;
use crate::telemetry::metrics;

/// The shared state of one [`InFlightLimitLayer`](super::InFlightLimitLayer).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    limit: AtomicUsize,
    /// Requests in flight outside any reserved share.
    general: AtomicUsize,
    /// Requests in flight in each reserved share, in the order of
    /// `settings.reserved`.
    reserved: Box<[AtomicUsize]>,
    adaptive: Option<Mutex<Adaptive>>,
    /// Requests waiting for a general slot.
    queue: Queue<Handoff>,
    shed: AtomicU64,
    /// Requests that found the limit full (shed or queued): a window with
    /// any is one whose concurrency the limit set, not demand.
    limited: AtomicU64,
    admitted: AtomicU64,
    /// Requests in flight per client key, if limited.
    pub(crate) per_key: Option<Arc<PerKey>>,
}

/// The adaptive algorithm and the window of samples it is fed.
#[derive(Debug)]
struct Adaptive {
    gradient: Gradient2,
    window: Duration,
    window_samples: u32,
    started: Option<Instant>,
    sum: Duration,
    count: u32,
    peak_in_flight: usize,
    /// The count of limited requests when the window started.
    limited_at_start: u64,
}

/// Where a request's slot was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    General,
    Reserved(usize),
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Self {
        let (limit, adaptive) = match settings.limit {
            Limit::Adaptive(adaptive) => {
                let gradient = Gradient2::new(adaptive);
                let limit = gradient.limit();
                let state = Adaptive {
                    gradient,
                    window: adaptive.window,
                    window_samples: adaptive.window_samples,
                    started: None,
                    sum: Duration::ZERO,
                    count: 0,
                    peak_in_flight: 0,
                    limited_at_start: 0,
                };
                (limit, Some(Mutex::new(state)))
            }
            Limit::Fixed(limit) => (limit.max(1), None),
            Limit::Unlimited => (usize::MAX, None),
        };
        let reserved = settings
            .reserved
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect();
        let per_key = settings.per_key.map(|max| Arc::new(PerKey::new(max)));
        let queue = Queue::new(
            settings.queue_limit,
            settings.queue_timeout,
            settings.queue_hold,
        );
        Self {
            settings,
            queue,
            limited: AtomicU64::new(0),
            limit: AtomicUsize::new(limit),
            general: AtomicUsize::new(0),
            reserved,
            adaptive,
            shed: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            per_key,
        }
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        let reserved: usize = self
            .reserved
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum();
        self.general.load(Ordering::Relaxed) + reserved
    }

    pub(crate) fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub(crate) fn admitted_count(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.waiting()
    }

    /// The slots of reserved share `index` at `limit`: at least one.
    fn reserved_slots(&self, index: usize, limit: usize) -> usize {
        let share = self.settings.reserved[index].1;
        ((limit as f64 * share).ceil() as usize).max(1)
    }

    /// The slots left to every other request at `limit`: at least one.
    fn general_slots(&self, limit: usize) -> usize {
        let reserved: usize = (0..self.reserved.len())
            .map(|index| self.reserved_slots(index, limit))
            .sum();
        limit.saturating_sub(reserved).max(1)
    }

    /// Takes a slot for a request to `path`, queues it, or says why not.
    pub(crate) fn acquire(self: &Arc<Self>, path: &str) -> Admission {
        let limit = self.limit();
        let partition = self
            .settings
            .reserved
            .iter()
            .position(|(prefix, _)| path_matches(path, prefix));
        if let Some(index) = partition {
            if take(&self.reserved[index], self.reserved_slots(index, limit)).is_ok() {
                return Admission::Admitted(self.permit(Slot::Reserved(index), path));
            }
        }
        let slots = self.general_slots(limit);
        let in_flight = match take(&self.general, slots) {
            Ok(()) => return Admission::Admitted(self.permit(Slot::General, path)),
            Err(in_flight) => in_flight,
        };
        self.limited.fetch_add(1, Ordering::Relaxed);
        match self.queue.wait(|| take(&self.general, slots).is_ok()) {
            Wait::Taken => Admission::Admitted(self.permit(Slot::General, path)),
            Wait::Queued(receiver) => Admission::Queued(Ticket {
                shared: self.clone(),
                receiver,
                sample: self.samples(path),
                since: Instant::now(),
                slots,
                in_flight,
                reserved: partition,
            }),
            Wait::Full | Wait::Off => {
                Admission::Shed(self.shed(slots, in_flight, partition, Duration::ZERO))
            }
        }
    }

    /// Counts a shed request and says why it was shed.
    fn shed(
        &self,
        slots: usize,
        in_flight: usize,
        partition: Option<usize>,
        queued: Duration,
    ) -> Overloaded {
        self.shed.fetch_add(1, Ordering::Relaxed);
        let kind = if partition.is_some() {
            "reserved"
        } else {
            "default"
        };
        metrics::increment(
            metrics::names::OVERLOAD_REQUESTS,
            &[
                (metrics::names::OVERLOAD_RESULT, "rejected"),
                (metrics::names::OVERLOAD_PARTITION, kind),
            ],
            1,
        );
        let name = match partition {
            Some(index) => self.settings.reserved[index].0.clone(),
            None => Arc::from("default"),
        };
        Overloaded {
            limit: slots,
            in_flight,
            partition: name,
            retry_after: self.settings.retry_after,
            queued,
        }
    }

    /// Whether a request to `path` feeds the adaptive limit.
    fn samples(&self, path: &str) -> bool {
        self.adaptive.is_some()
            && !self
                .settings
                .long_lived
                .iter()
                .any(|prefix| path_matches(path, prefix))
    }

    fn permit(self: &Arc<Self>, slot: Slot, path: &str) -> Permit {
        self.permit_sampled(slot, self.samples(path))
    }

    fn permit_sampled(self: &Arc<Self>, slot: Slot, sample: bool) -> Permit {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        metrics::increment(
            metrics::names::OVERLOAD_REQUESTS,
            &[(metrics::names::OVERLOAD_RESULT, "acquired")],
            1,
        );
        Permit {
            shared: self.clone(),
            key: None,
            slot,
            start: Instant::now(),
            sample,
            completed: false,
            lease: None,
        }
    }

    fn counter(&self, slot: Slot) -> &AtomicUsize {
        match slot {
            Slot::General => &self.general,
            Slot::Reserved(index) => &self.reserved[index],
        }
    }

    /// Gives a slot back; a general one goes to the newest waiter, if any.
    fn release(self: &Arc<Self>, slot: Slot) {
        // Sequentially consistent with the queue's check of its entries:
        // see `Queue::wait`.
        self.counter(slot).fetch_sub(1, Ordering::SeqCst);
        if slot == Slot::General && self.queue.may_have_waiters() {
            let slots = self.general_slots(self.limit());
            self.queue.hand_off(
                || take(&self.general, slots).is_ok(),
                || Handoff {
                    shared: Some(self.clone()),
                },
                |unsent| {
                    // The slot taken for it is given back here, not by its
                    // drop, which would take the queue's lock again.
                    unsent.defuse();
                    self.general.fetch_sub(1, Ordering::SeqCst);
                },
            );
        }
    }

    /// Takes back the slot of a request already admitted, over the limit if
    /// need be: a request is never shed halfway through.
    fn retake(&self, slot: Slot) {
        self.counter(slot).fetch_add(1, Ordering::Relaxed);
    }

    /// Feeds one latency to the adaptive limit.
    pub(crate) fn record(&self, latency: Duration, now: Instant) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        // A sample lost while another thread updates is no loss: the
        // window averages many.
        let Ok(mut state) = adaptive.try_lock() else {
            return;
        };
        let in_flight = self.in_flight();
        let started = *state.started.get_or_insert(now);
        state.sum += latency;
        state.count += 1;
        state.peak_in_flight = state.peak_in_flight.max(in_flight);
        if state.count < state.window_samples || now.duration_since(started) < state.window {
            return;
        }
        let average = state.sum / state.count;
        let peak = state.peak_in_flight;
        let limited_now = self.limited.load(Ordering::Relaxed);
        let limited = limited_now != state.limited_at_start;
        let limit = state.gradient.update(average, peak, limited);
        state.limited_at_start = limited_now;
        state.started = Some(now);
        state.sum = Duration::ZERO;
        state.count = 0;
        state.peak_in_flight = 0;
        drop(state);
        self.limit.store(limit, Ordering::Relaxed);
        metrics::gauge(metrics::names::OVERLOAD_LIMIT, limit as f64);
    }
}

/// What [`Shared::acquire`] did with a request.
pub(crate) enum Admission {
    /// It has a slot.
    Admitted(Permit),
    /// It waits in the queue.
    Queued(Ticket),
    /// It is refused.
    Shed(Overloaded),
}

/// A general slot handed from a request that ended to one waiting in the
/// queue: given back if the waiter is gone before it takes it.
#[derive(Debug)]
pub(crate) struct Handoff {
    shared: Option<Arc<Shared>>,
}

impl Handoff {
    /// The slot is someone else's now (the waiter's permit, or given back
    /// by the caller): dropping this gives nothing back.
    fn defuse(mut self) {
        self.shared = None;
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.release(Slot::General);
        }
    }
}

/// A request's place in the queue: a slot comes through it, or the
/// request is refused at the timeout.
#[derive(Debug)]
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    receiver: oneshot::Receiver<Handoff>,
    sample: bool,
    since: Instant,
    slots: usize,
    in_flight: usize,
    reserved: Option<usize>,
}

impl Ticket {
    /// When the request, if it got no slot, is answered with its refusal.
    pub(crate) fn deadline(&self) -> Instant {
        self.since + self.shared.queue.hold
    }

    /// The slot, once handed over; a refusal if the queue pushed the
    /// request out.
    pub(crate) fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Overloaded>> {
        match std::task::ready!(Pin::new(&mut self.receiver).poll(cx)) {
            Ok(handoff) => Poll::Ready(Ok(self.admit(handoff))),
            Err(_) => Poll::Ready(Err(self.refuse())),
        }
    }

    /// The hold is over: no slot after all, unless one came at the last
    /// moment.
    pub(crate) fn give_up(&mut self) -> Result<Permit, Overloaded> {
        self.receiver.close();
        match self.receiver.try_recv() {
            Ok(handoff) => Ok(self.admit(handoff)),
            Err(_) => Err(self.refuse()),
        }
    }

    fn admit(&self, handoff: Handoff) -> Permit {
        handoff.defuse();
        self.shared.permit_sampled(Slot::General, self.sample)
    }

    fn refuse(&self) -> Overloaded {
        self.shared.shed(
            self.slots,
            self.in_flight,
            self.reserved,
            self.since.elapsed(),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.queue.left();
    }
}

/// One more in `counter` if it is under `max`; else the count.
fn take(counter: &AtomicUsize, max: usize) -> Result<(), usize> {
    let mut current = counter.load(Ordering::Relaxed);
    loop {
        if current >= max {
            return Err(current);
        }
        match counter.compare_exchange_weak(
            current,
            current + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok(()),
            Err(actual) => current = actual,
        }
    }
}

/// Whether `path` is `prefix` or below it (`/health` covers `/health` and
/// `/health/db`, not `/healthy`).
pub(crate) fn path_matches(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// A request's slot: given back when dropped; a completed request's
/// latency feeds the adaptive limit.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    /// The client's slot, given back with this one (dropped after it).
    pub(crate) key: Option<KeyPermit>,
    slot: Slot,
    start: Instant,
    sample: bool,
    completed: bool,
    /// For a request with a body: the slot is lent back while the request
    /// waits on its client for body bytes.
    lease: Option<Arc<Lease>>,
}

impl Permit {
    /// Shares the slot with the request's body, which gives it back while
    /// it waits on the client ([`Lease`]), and with the response body,
    /// which gives it back while the client has not taken its last frame:
    /// one lease for both, made on first use.
    pub(crate) fn lease(&mut self) -> Arc<Lease> {
        if let Some(lease) = &self.lease {
            return lease.clone();
        }
        let lease = Arc::new(Lease {
            shared: self.shared.clone(),
            slot: self.slot,
            start: self.start,
            state: AtomicU8::new(HELD),
            waited: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
        });
        self.lease = Some(lease.clone());
        lease
    }

    /// The request's latency is not a signal (a stream, an upgrade).
    pub(crate) fn no_sample(&mut self) {
        self.sample = false;
    }

    /// The response ended normally: its latency is a sample.
    pub(crate) fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.completed && self.sample {
            let now = Instant::now();
            // The time the request waited on its client is the client's,
            // not the service's: a slow upload does not lower the limit.
            let client_wait = self
                .lease
                .as_ref()
                .map_or(Duration::ZERO, |lease| lease.client_wait(now));
            let latency = now
                .saturating_duration_since(self.start)
                .saturating_sub(client_wait);
            self.shared.record(latency, now);
        }
        match &self.lease {
            Some(lease) => lease.end(),
            None => self.shared.release(self.slot),
        }
    }
}

/// The slot is counted in flight.
const HELD: u8 = 0;
/// The slot is lent back while the request waits on its client.
const LENT: u8 = 1;
/// The request ended: its slot is given back for good.
const DONE: u8 = 2;

/// The slot of a request with a body, shared by its [`Permit`] and its body
/// ([`InFlightRequestBody`](super::InFlightRequestBody)): the body lends
/// the slot back while it waits on the client for bytes and takes it back
/// when they come; the permit gives it back for good at the end of the
/// response. Each move is one compare-and-swap of `state`, so the count
/// is exact whatever the order: a slot lent is never released again, and
/// nothing is taken back once the request has ended.
#[derive(Debug)]
pub(crate) struct Lease {
    shared: Arc<Shared>,
    slot: Slot,
    start: Instant,
    state: AtomicU8,
    /// The waits on the client that have ended, in nanoseconds.
    waited: AtomicU64,
    /// When the wait in progress began, in nanoseconds after `start`, plus
    /// one; 0 when the request is not waiting.
    waiting_since: AtomicU64,
}

impl Lease {
    fn nanos_since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The request waits on its client from `now`: its slot is free for
    /// another request.
    pub(crate) fn lend(&self, now: Instant) {
        let since = self.nanos_since_start(now).saturating_add(1);
        self.waiting_since.store(since, Ordering::Relaxed);
        if self
            .state
            .compare_exchange(HELD, LENT, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.shared.release(self.slot);
        }
    }

    /// The client's bytes came at `now` (or the body is no longer waited
    /// for): the request is the service's again, and takes its slot back
    /// even over the limit, since it was admitted.
    pub(crate) fn retake(&self, now: Instant) {
        let since = self.waiting_since.swap(0, Ordering::Relaxed);
        if since != 0 {
            let waited = self
                .nanos_since_start(now)
                .saturating_add(1)
                .saturating_sub(since);
            self.waited.fetch_add(waited, Ordering::Relaxed);
        }
        if self
            .state
            .compare_exchange(LENT, HELD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.shared.retake(self.slot);
        }
    }

    /// The time the request has waited on its client until `now`, the wait
    /// in progress included.
    fn client_wait(&self, now: Instant) -> Duration {
        let mut waited = self.waited.load(Ordering::Relaxed);
        let since = self.waiting_since.load(Ordering::Relaxed);
        if since != 0 {
            waited = waited.saturating_add(
                self.nanos_since_start(now)
                    .saturating_add(1)
                    .saturating_sub(since),
            );
        }
        Duration::from_nanos(waited)
    }

    /// The request ended: its slot is given back, unless it was lent.
    fn end(&self) {
        if self.state.swap(DONE, Ordering::AcqRel) == HELD {
            self.shared.release(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_wait_on_the_client_frees_the_slot_and_leaves_the_latency() {
        let shared = Arc::new(Shared::new(Settings {
            limit: Limit::Fixed(2),
            retry_after: Duration::from_secs(1),
            reserved: Vec::new(),
            long_lived: Vec::new(),
            per_key: None,
            queue_limit: 0,
            queue_timeout: Duration::ZERO,
            queue_hold: Duration::ZERO,
        }));
        let second = Duration::from_secs(1);
        let mut permit = admitted(shared.acquire("/"));
        let lease = permit.lease();
        tokio::time::advance(second).await;
        lease.lend(Instant::now());
        // Pending again while waiting: nothing more is given back.
        lease.lend(Instant::now());
        assert_eq!(shared.in_flight(), 0);
        tokio::time::advance(3 * second).await;
        assert_eq!(lease.client_wait(Instant::now()), 3 * second);
        lease.retake(Instant::now());
        lease.retake(Instant::now());
        assert_eq!(shared.in_flight(), 1);
        tokio::time::advance(second).await;
        lease.lend(Instant::now());
        tokio::time::advance(2 * second).await;
        // 7 s since the start, 5 of them the client's (2 still waiting).
        assert_eq!(lease.client_wait(Instant::now()), 5 * second);
        drop(permit);
        assert_eq!(shared.in_flight(), 0);
        // The request ended: a late body takes nothing back.
        lease.retake(Instant::now());
        lease.lend(Instant::now());
        assert_eq!(shared.in_flight(), 0);
        admitted(shared.acquire("/"));
    }

    fn admitted(admission: Admission) -> Permit {
        match admission {
            Admission::Admitted(permit) => permit,
            Admission::Queued(_) => panic!("queued, not admitted"),
            Admission::Shed(shed) => panic!("shed: {shed:?}"),
        }
    }

    fn queued(admission: Admission) -> Ticket {
        match admission {
            Admission::Queued(ticket) => ticket,
            Admission::Admitted(_) => panic!("admitted, not queued"),
            Admission::Shed(shed) => panic!("shed: {shed:?}"),
        }
    }

    fn one_slot_and_a_queue_of(max: usize) -> Arc<Shared> {
        Arc::new(Shared::new(Settings {
            limit: Limit::Fixed(1),
            retry_after: Duration::from_secs(1),
            reserved: Vec::new(),
            long_lived: Vec::new(),
            per_key: None,
            queue_limit: max,
            queue_timeout: Duration::from_millis(10),
            queue_hold: Duration::from_millis(100),
        }))
    }

    fn poll_slot(ticket: &mut Ticket) -> Poll<Result<Permit, Overloaded>> {
        let waker = futures_util::task::noop_waker();
        ticket.poll_slot(&mut Context::from_waker(&waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_newest_waiter_without_a_gap() {
        let shared = one_slot_and_a_queue_of(4);
        let first = admitted(shared.acquire("/"));
        let mut older = queued(shared.acquire("/"));
        let mut newer = queued(shared.acquire("/"));
        assert_eq!(shared.queued(), 2);
        assert!(poll_slot(&mut newer).is_pending());
        drop(first);
        // Handed over, never free in between: still one in flight.
        assert_eq!(shared.in_flight(), 1);
        let Poll::Ready(Ok(permit)) = poll_slot(&mut newer) else {
            panic!("the newest waiter has no slot")
        };
        assert!(poll_slot(&mut older).is_pending());
        drop(newer);
        assert_eq!(shared.queued(), 1);
        drop(permit);
        let Poll::Ready(Ok(permit)) = poll_slot(&mut older) else {
            panic!("the older waiter has no slot")
        };
        assert_eq!(shared.admitted_count(), 3);
        assert_eq!(shared.shed_count(), 0);
        drop(permit);
        assert_eq!(shared.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_shed_at_the_timeout_with_the_time_it_waited() {
        let shared = one_slot_and_a_queue_of(4);
        let _first = admitted(shared.acquire("/"));
        let mut ticket = queued(shared.acquire("/"));
        tokio::time::advance(Duration::from_millis(100)).await;
        let shed = ticket.give_up().unwrap_err();
        assert_eq!(shed.queued, Duration::from_millis(100));
        assert_eq!((shed.limit, shed.in_flight), (1, 1));
        assert_eq!(shared.shed_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_past_the_timeout_is_held_unserved_and_the_slot_goes_free() {
        let shared = one_slot_and_a_queue_of(4);
        let first = admitted(shared.acquire("/"));
        let mut stale = queued(shared.acquire("/"));
        tokio::time::advance(Duration::from_millis(11)).await;
        drop(first);
        // Not handed to the stale waiter: free for the next request.
        assert_eq!(shared.in_flight(), 0);
        assert!(poll_slot(&mut stale).is_pending());
        let _next = admitted(shared.acquire("/"));
        // Answered at the hold, 100 ms after it joined.
        assert_eq!(stale.deadline() - Instant::now(), Duration::from_millis(89));
        tokio::time::advance(Duration::from_millis(89)).await;
        let shed = stale.give_up().unwrap_err();
        assert_eq!(shed.queued, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_handed_over_at_the_timeout_is_taken_not_lost() {
        let shared = one_slot_and_a_queue_of(4);
        let first = admitted(shared.acquire("/"));
        let mut ticket = queued(shared.acquire("/"));
        drop(first);
        // Granted, but the waiter reaches its timeout before seeing it.
        let permit = ticket.give_up().expect("the slot handed over");
        assert_eq!(shared.in_flight(), 1);
        drop(permit);
        assert_eq!(shared.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gone_after_the_hand_over_gives_the_slot_back() {
        let shared = one_slot_and_a_queue_of(4);
        let first = admitted(shared.acquire("/"));
        let ticket = queued(shared.acquire("/"));
        drop(first);
        assert_eq!(shared.in_flight(), 1);
        drop(ticket);
        assert_eq!(shared.in_flight(), 0);
        assert_eq!(shared.queued(), 0);
        admitted(shared.acquire("/"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_the_next_at_once() {
        let shared = one_slot_and_a_queue_of(1);
        let _first = admitted(shared.acquire("/"));
        let mut waiting = queued(shared.acquire("/"));
        let Admission::Shed(shed) = shared.acquire("/") else {
            panic!("a full queue took one more")
        };
        assert_eq!(shed.queued, Duration::ZERO);
        assert_eq!(shared.shed_count(), 1);
        assert!(poll_slot(&mut waiting).is_pending());
    }

    #[test]
    fn no_queue_sheds_at_once() {
        let shared = one_slot_and_a_queue_of(0);
        let _first = admitted(shared.acquire("/"));
        assert!(matches!(shared.acquire("/"), Admission::Shed(_)));
    }

    #[test]
    fn a_prefix_covers_its_path_and_below_only() {
        assert!(path_matches("/health", "/health"));
        assert!(path_matches("/health/db", "/health"));
        assert!(!path_matches("/healthy", "/health"));
        assert!(path_matches("/static/a.css", "/static/"));
        assert!(!path_matches("/", "/health"));
    }
}
