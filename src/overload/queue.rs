//! The short queue in front of the limit: requests that find every general
//! slot taken wait here, a bounded number for a bounded time, newest served
//! first.
//!
//! Why a queue at all, when shedding at once is cheaper per request: a
//! client refused at once often sends again at once, so a flood of instant
//! refusals is a busy loop between the clients and the server, and on a
//! small machine it takes the CPU the admitted requests need to be woken on
//! time. A client that waits in the queue does not send again.
//!
//! Two times, because the two jobs of the queue want different ones. A
//! request is *served* from the queue only within `timeout` (10 ms by
//! default) of joining it: that is all the queue ever adds to the latency
//! of a success. A request that got no slot is *answered* with its refusal
//! at `hold` (100 ms): held, not served, so that a client that resends at
//! once resends ten times a second, not a thousand. With one time for
//! both, a long one let some successes wait the whole of it (at 4x the
//! capacity the p99 of the successes doubled), and a short one gave the
//! busy loop back.
//!
//! Why newest first (adaptive LIFO, as in Facebook's "Fail at Scale"): under
//! a lasting overload the queue is never empty, and first-in-first-out would
//! make every admitted request wait its whole turn. Served newest first, the
//! requests that get a slot have barely waited, and those left below meet
//! their time. A full queue refuses a new request at once rather than push
//! out an older one: under a flood of new requests (an open loop) the excess
//! then costs what an instant refusal costs, instead of each taking a place,
//! a timer and a connection before being pushed out (it cost 1.7x the
//! server's CPU). The queue never holds more than its bound nor keeps a
//! request longer than `hold`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Waiting requests, the oldest first, each the sending half of the channel
/// its slot will come through.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    pub(crate) max: usize,
    /// The longest a request waits for a slot: one that has waited longer
    /// is not served.
    pub(crate) timeout: Duration,
    /// When a request that got no slot is answered with its refusal,
    /// counted from when it joined (at least `timeout`).
    pub(crate) hold: Duration,
    /// Entries in `waiters` (those that gave up included, until removed),
    /// read without the lock by every release of a slot.
    entries: AtomicUsize,
    /// Requests waiting now: counted in by `wait`, out by `left`.
    waiting: AtomicUsize,
    waiters: Mutex<VecDeque<(Instant, oneshot::Sender<T>)>>,
}

/// What [`Queue::wait`] did with a request.
pub(crate) enum Wait<T> {
    /// The slot freed before the request joined the queue: it has it.
    Taken,
    /// It waits: its slot (or refusal) comes through this channel.
    Queued(oneshot::Receiver<T>),
    /// The queue is full: the request is refused at once.
    Full,
    /// The queue takes no one.
    Off,
}

impl<T> Queue<T> {
    pub(crate) fn new(max: usize, timeout: Duration, hold: Duration) -> Self {
        Self {
            max,
            timeout,
            hold: hold.max(timeout),
            entries: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, oneshot::Sender<T>)>> {
        // A panic while the lock was held left the deque whole (no code
        // here panics midway): the queue goes on.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a request that found no slot, unless `take` (tried again
    /// once the queue is announced) gets it one. A full queue takes no
    /// more: the request is refused at once.
    ///
    /// Why `take` runs again here: a release frees its slot and then looks
    /// for waiters without the lock; a request that found no slot and then
    /// joined the queue after that look would wait for the next release.
    /// Announcing the entry before trying again (both sequentially
    /// consistent, as is the release's) means either this try sees the
    /// freed slot or the release sees the entry.
    pub(crate) fn wait(&self, take: impl FnOnce() -> bool) -> Wait<T> {
        if self.max == 0 || self.timeout.is_zero() {
            return Wait::Off;
        }
        let mut waiters = self.lock();
        self.entries.store(waiters.len() + 1, Ordering::SeqCst);
        if take() {
            self.entries.store(waiters.len(), Ordering::SeqCst);
            return Wait::Taken;
        }
        if waiters.len() >= self.max {
            // Entries whose requests gave up make room first: those at
            // their timeout are the oldest, at the front (one gone for
            // another reason is removed when a hand-off reaches it).
            while waiters
                .front()
                .is_some_and(|(_, sender)| sender.is_closed())
            {
                waiters.pop_front();
            }
            if waiters.len() >= self.max {
                self.entries.store(waiters.len(), Ordering::SeqCst);
                return Wait::Full;
            }
        }
        let (sender, receiver) = oneshot::channel();
        waiters.push_back((Instant::now(), sender));
        self.entries.store(waiters.len(), Ordering::SeqCst);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Wait::Queued(receiver)
    }

    /// Requests waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A request that joined (`Wait::Queued`) stopped waiting: it has its
    /// slot, was refused, or is gone.
    pub(crate) fn left(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether anyone may be waiting (after a slot was freed, sequentially
    /// consistent: see [`Queue::wait`]).
    pub(crate) fn may_have_waiters(&self) -> bool {
        self.entries.load(Ordering::SeqCst) > 0
    }

    /// Gives slots to the newest waiters while `take` finds one free; `slot`
    /// makes what is sent, and gets back what a waiter that gave up did not
    /// take (the caller must let it go without releasing the slot again, as
    /// the lock is held: see `Handoff::defuse`). Stops at the first `take`
    /// that fails: another request got the slot first.
    pub(crate) fn hand_off(
        &self,
        mut take: impl FnMut() -> bool,
        mut slot: impl FnMut() -> T,
        mut not_taken: impl FnMut(T),
    ) {
        let mut waiters = self.lock();
        let now = Instant::now();
        while let Some((since, sender)) = waiters.pop_back() {
            if sender.is_closed() {
                continue;
            }
            // The newest has waited too long: so has everyone below it.
            if now.saturating_duration_since(since) > self.timeout || !take() {
                waiters.push_back((since, sender));
                break;
            }
            if let Err(unsent) = sender.send(slot()) {
                // It gave up between the check and the send.
                not_taken(unsent);
                continue;
            }
            break;
        }
        self.entries.store(waiters.len(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_the_next_and_serves_its_newest() {
        let queue = Queue::<u32>::new(2, Duration::from_secs(1), Duration::from_secs(1));
        let Wait::Queued(mut second) = queue.wait(|| false) else {
            panic!("not queued")
        };
        let Wait::Queued(mut third) = queue.wait(|| false) else {
            panic!("not queued")
        };
        assert!(matches!(queue.wait(|| false), Wait::Full));
        let mut given = 0;
        queue.hand_off(
            || true,
            || {
                given += 1;
                given
            },
            |_| unreachable!(),
        );
        assert_eq!(third.try_recv(), Ok(1));
        assert!(matches!(
            second.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(queue.may_have_waiters());
    }

    #[test]
    fn waiters_that_gave_up_make_room_in_a_full_queue() {
        let queue = Queue::<u32>::new(2, Duration::from_secs(1), Duration::from_secs(1));
        let Wait::Queued(gone) = queue.wait(|| false) else {
            panic!("not queued")
        };
        let Wait::Queued(_stays) = queue.wait(|| false) else {
            panic!("not queued")
        };
        drop(gone);
        let Wait::Queued(_newer) = queue.wait(|| false) else {
            panic!("no room made")
        };
        assert!(matches!(queue.wait(|| false), Wait::Full));
    }

    #[test]
    fn a_slot_freed_while_joining_is_taken_not_waited_for() {
        let queue = Queue::<u32>::new(4, Duration::from_secs(1), Duration::from_secs(1));
        assert!(matches!(queue.wait(|| true), Wait::Taken));
        assert!(!queue.may_have_waiters());
    }

    #[test]
    fn a_waiter_that_gave_up_is_skipped_and_its_slot_not_lost() {
        let queue = Queue::<u32>::new(4, Duration::from_secs(1), Duration::from_secs(1));
        let Wait::Queued(mut older) = queue.wait(|| false) else {
            panic!("not queued")
        };
        let Wait::Queued(newer) = queue.wait(|| false) else {
            panic!("not queued")
        };
        drop(newer);
        let mut taken = 0;
        queue.hand_off(
            || {
                taken += 1;
                true
            },
            || 7,
            |_| unreachable!(),
        );
        // The newer one was skipped before a slot was taken for it.
        assert_eq!(taken, 1);
        assert_eq!(older.try_recv(), Ok(7));
        assert!(!queue.may_have_waiters());
    }

    #[test]
    fn no_slot_free_leaves_the_waiter_in_place() {
        let queue = Queue::<u32>::new(4, Duration::from_secs(1), Duration::from_secs(1));
        let Wait::Queued(mut waiter) = queue.wait(|| false) else {
            panic!("not queued")
        };
        queue.hand_off(|| false, || 7, |_| unreachable!());
        assert!(matches!(
            waiter.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(queue.may_have_waiters());
    }

    #[test]
    fn a_queue_of_zero_takes_no_one() {
        let queue = Queue::<u32>::new(0, Duration::from_secs(1), Duration::from_secs(1));
        assert!(matches!(queue.wait(|| false), Wait::Off));
    }
}
