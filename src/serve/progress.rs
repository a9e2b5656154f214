//! What one connection is doing, shared between its task, its I/O and the
//! connection cap: requests in flight, bytes moved each way, whether it
//! waits on the client, and the signal that closes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A timestamp as milliseconds after the cap's epoch, plus one, so that 0
/// can mean "none" in an atomic.
type Stamp = u64;
const NONE: Stamp = 0;

/// One connection's state. The connection task, its I/O (`WatchedIo`) and
/// its response bodies write it; the cap reads it to choose whom to evict.
pub(super) struct ConnectionState {
    epoch: Instant,
    accepted: Instant,
    peer: SocketAddr,
    /// Requests in flight, and since when there have been none.
    requests: Mutex<(usize, Instant)>,
    begun: AtomicBool,
    /// Requests begun, and how many may begin before the connection ends.
    requests_begun: AtomicU64,
    max_requests: u64,
    last_request: Notify,
    upgraded: AtomicBool,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    /// When a byte last moved either way.
    last_progress: AtomicU64,
    /// When a write last found the socket full and nothing has been
    /// written since; `NONE` when writes are not waiting on the client.
    write_blocked_since: AtomicU64,
    /// Response bodies that handed data over which the connection has not
    /// taken yet (HTTP/2 flow control, or a full HTTP/1 buffer), and since
    /// when one has.
    bodies_waiting: AtomicUsize,
    body_waiting_since: AtomicU64,
    /// The request body being received, for judging its rate: when the
    /// request began, the bytes read by then, and the bytes it declared
    /// (`u64::MAX` when unknown; 0 for none).
    body_started: AtomicU64,
    body_read_at_start: AtomicU64,
    body_declared: AtomicU64,
    evicted: Notify,
    evicting: AtomicBool,
    /// Set when the server closes the connection's socket wherever it is
    /// (an upgraded one lives in the handler's task): its I/O fails from
    /// then on.
    closed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    /// The socket was dropped (by hyper, or by the upgrade's owner).
    io_dropped: Notify,
    io_alive: AtomicBool,
}

/// What a connection is doing, as the cap sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Doing {
    /// No request in flight: waiting for a first or next request head (or
    /// an upgraded socket with no traffic). Since when.
    Waiting(Instant),
    /// A request in flight whose body arrives below the minimum rate, or
    /// whose response waits on a client that does not read. Since when.
    Stalled(Instant),
    /// Working at a healthy pace: never evicted.
    Working,
}

impl ConnectionState {
    pub(super) fn new(epoch: Instant, peer: SocketAddr, max_requests: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            epoch,
            accepted: now,
            peer,
            requests: Mutex::new((0, now)),
            begun: AtomicBool::new(false),
            requests_begun: AtomicU64::new(0),
            max_requests: max_requests.unwrap_or(u64::MAX),
            last_request: Notify::new(),
            upgraded: AtomicBool::new(false),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            last_progress: AtomicU64::new(NONE),
            write_blocked_since: AtomicU64::new(NONE),
            bodies_waiting: AtomicUsize::new(0),
            body_waiting_since: AtomicU64::new(NONE),
            body_started: AtomicU64::new(NONE),
            body_read_at_start: AtomicU64::new(0),
            body_declared: AtomicU64::new(0),
            evicted: Notify::new(),
            evicting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            read_waker: AtomicWaker::new(),
            write_waker: AtomicWaker::new(),
            io_dropped: Notify::new(),
            io_alive: AtomicBool::new(true),
        }
    }

    fn stamp(&self, at: Instant) -> Stamp {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn instant(&self, stamp: Stamp) -> Option<Instant> {
        (stamp != NONE).then(|| self.epoch + Duration::from_millis(stamp - 1))
    }

    pub(super) fn accepted(&self) -> Instant {
        self.accepted
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Relaxed)
    }

    /// A request began; `declared_body` is the body length it announced
    /// (`Some(0)` for none, `None` when unknown).
    pub(super) fn begin(&self, declared_body: Option<u64>) {
        self.begun.store(true, Ordering::Relaxed);
        if self.requests_begun.fetch_add(1, Ordering::Relaxed) + 1 == self.max_requests {
            self.last_request.notify_one();
        }
        if let Ok(mut requests) = self.requests.lock() {
            requests.0 += 1;
            if requests.0 == 1 {
                self.body_read_at_start
                    .store(self.bytes_read.load(Ordering::Relaxed), Ordering::Relaxed);
                self.body_declared
                    .store(declared_body.unwrap_or(u64::MAX), Ordering::Relaxed);
                self.body_started
                    .store(self.stamp(Instant::now()), Ordering::Relaxed);
            }
        }
    }

    /// A request ended: its response body finished, or it was cancelled.
    pub(super) fn end(&self) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.0 = requests.0.saturating_sub(1);
            requests.1 = Instant::now();
            if requests.0 == 0 {
                self.body_started.store(NONE, Ordering::Relaxed);
            }
        }
    }

    /// Since when the connection has had no request in flight, if it has
    /// none.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let requests = self.requests.lock().ok()?;
        (requests.0 == 0).then_some(requests.1)
    }

    pub(super) fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    pub(super) fn last_progress(&self) -> Instant {
        self.instant(self.last_progress.load(Ordering::Relaxed))
            .unwrap_or(self.accepted)
    }

    pub(super) fn read(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_progress
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    pub(super) fn wrote(&self, bytes: usize) {
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.write_blocked_since.store(NONE, Ordering::Relaxed);
        self.last_progress
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    pub(super) fn write_blocked(&self) {
        if self.write_blocked_since.load(Ordering::Relaxed) == NONE {
            let now = self.stamp(Instant::now());
            self.write_blocked_since.store(now, Ordering::Relaxed);
        }
    }

    /// A response body handed data over; it waits until the connection
    /// asks for more.
    pub(super) fn body_waits(&self) {
        if self.bodies_waiting.fetch_add(1, Ordering::Relaxed) == 0 {
            let now = self.stamp(Instant::now());
            self.body_waiting_since.store(now, Ordering::Relaxed);
        }
    }

    /// The connection asked a waiting response body for more.
    pub(super) fn body_resumes(&self) {
        if self.bodies_waiting.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.body_waiting_since.store(NONE, Ordering::Relaxed);
        }
    }

    /// Since when the connection has waited on its client: its socket full,
    /// or a response body's data not taken, with no byte written since.
    pub(super) fn waiting_on_client_since(&self) -> Option<Instant> {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        let body = match self.body_waiting_since.load(Ordering::Relaxed) {
            NONE => NONE,
            since => since.max(self.last_progress.load(Ordering::Relaxed)),
        };
        let since = match (blocked, body) {
            (NONE, other) | (other, NONE) => other,
            (blocked, body) => blocked.min(body),
        };
        self.instant(since)
    }

    /// What the connection is doing at `now`. One that has waited on its
    /// client for `stall` is stalled; so is a request body arriving below
    /// `min_rate` bytes per second once `stall` has passed.
    pub(super) fn doing(&self, now: Instant, stall: Duration, min_rate: u64) -> Doing {
        if self.upgraded.load(Ordering::Relaxed) {
            let since = self.last_progress();
            return if now.saturating_duration_since(since) >= stall {
                Doing::Waiting(since)
            } else {
                Doing::Working
            };
        }
        if let Some(since) = self.idle_since() {
            return Doing::Waiting(if self.has_begun() {
                since
            } else {
                self.accepted
            });
        }
        if let Some(since) = self.waiting_on_client_since() {
            if now.saturating_duration_since(since) >= stall {
                return Doing::Stalled(since);
            }
        }
        if min_rate > 0 {
            if let Some(started) = self.instant(self.body_started.load(Ordering::Relaxed)) {
                let elapsed = now.saturating_duration_since(started);
                let declared = self.body_declared.load(Ordering::Relaxed);
                let received = self
                    .bytes_read
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.body_read_at_start.load(Ordering::Relaxed));
                // A body still arriving (by its declared length; an
                // undeclared one until the response begins) whose average
                // since the head is under the rate.
                let arriving = declared > 0
                    && received < declared
                    && (declared != u64::MAX || self.bytes_written() == 0);
                let expected = u64::try_from(elapsed.as_millis())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(min_rate)
                    / 1000;
                if arriving && elapsed >= stall && received < expected {
                    return Doing::Stalled(started);
                }
            }
        }
        Doing::Working
    }

    /// Tells the connection's task to close it. Returns false if it was
    /// told already.
    pub(super) fn evict(&self) -> bool {
        if self.evicting.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.evicted.notify_one();
        true
    }

    pub(super) fn is_evicting(&self) -> bool {
        self.evicting.load(Ordering::Relaxed)
    }

    /// Completes when the connection's last allowed request has begun.
    pub(super) async fn last_request_begun(&self) {
        self.last_request.notified().await;
    }

    /// Completes when the cap evicts the connection.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// The connection's socket went on to an upgrade's owner.
    pub(super) fn set_upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// Fails the socket's I/O from now on, wherever the socket is, and
    /// wakes whoever waits on it.
    pub(super) fn close_io(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    pub(super) fn io_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(super) fn register_read(&self, waker: &Waker) {
        self.read_waker.register(waker);
    }

    pub(super) fn register_write(&self, waker: &Waker) {
        self.write_waker.register(waker);
    }

    pub(super) fn io_is_alive(&self) -> bool {
        self.io_alive.load(Ordering::Relaxed)
    }

    pub(super) fn mark_io_dropped(&self) {
        self.io_alive.store(false, Ordering::Relaxed);
        self.io_dropped.notify_one();
    }

    /// Completes when the socket is dropped.
    pub(super) async fn io_dropped(&self) {
        self.io_dropped.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{advance, Instant};

    use super::{ConnectionState, Doing};

    const STALL: Duration = Duration::from_secs(2);

    fn state() -> ConnectionState {
        ConnectionState::new(Instant::now(), "127.0.0.1:1".parse().unwrap(), None)
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_head_then_working_then_idle() {
        let state = state();
        let accepted = Instant::now();
        advance(Duration::from_secs(1)).await;
        assert_eq!(
            state.doing(Instant::now(), STALL, 240),
            Doing::Waiting(accepted)
        );
        state.begin(Some(0));
        advance(Duration::from_secs(10)).await;
        // A handler at work for long, with no body to wait for: working.
        assert_eq!(state.doing(Instant::now(), STALL, 240), Doing::Working);
        state.end();
        let ended = Instant::now();
        advance(Duration::from_secs(1)).await;
        assert_eq!(
            state.doing(Instant::now(), STALL, 240),
            Doing::Waiting(ended)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_waiting_on_the_client_stall_after_the_stall_time() {
        let state = state();
        state.begin(Some(0));
        state.wrote(1000);
        state.write_blocked();
        let blocked = Instant::now();
        advance(STALL / 2).await;
        assert_eq!(state.doing(Instant::now(), STALL, 240), Doing::Working);
        advance(STALL).await;
        assert_eq!(
            state.doing(Instant::now(), STALL, 240),
            Doing::Stalled(blocked)
        );
        // A byte taken: flowing again.
        state.wrote(1);
        assert_eq!(state.doing(Instant::now(), STALL, 240), Doing::Working);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_body_below_the_rate_stalls_one_above_does_not() {
        let slow = state();
        let fast = state();
        slow.begin(Some(10_000));
        fast.begin(Some(10_000));
        let started = Instant::now();
        for _ in 0..3 {
            advance(Duration::from_secs(1)).await;
            slow.read(10);
            fast.read(1000);
        }
        let now = Instant::now();
        assert_eq!(slow.doing(now, STALL, 240), Doing::Stalled(started));
        assert_eq!(fast.doing(now, STALL, 240), Doing::Working);
        // A rate of 0 judges no body.
        assert_eq!(slow.doing(now, STALL, 0), Doing::Working);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_socket_works_while_it_has_traffic() {
        let state = state();
        state.begin(Some(0));
        state.end();
        state.set_upgraded();
        state.read(5);
        advance(STALL / 2).await;
        assert_eq!(state.doing(Instant::now(), STALL, 240), Doing::Working);
        let last = Instant::now() - STALL / 2;
        advance(STALL).await;
        assert_eq!(
            state.doing(Instant::now(), STALL, 240),
            Doing::Waiting(last)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_comes_before_stalled_and_older_before_newer() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut order = [
            Doing::Working,
            Doing::Stalled(now),
            Doing::Waiting(later),
            Doing::Waiting(now),
        ];
        order.sort();
        assert_eq!(
            order,
            [
                Doing::Waiting(now),
                Doing::Waiting(later),
                Doing::Stalled(now),
                Doing::Working
            ]
        );
    }
}
