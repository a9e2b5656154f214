//! The connection cap, fair: with every slot taken, a new connection evicts
//! the connection doing the least instead of waiting behind it, and above
//! 80 % of the cap the connections' timeouts shrink.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::progress::{ConnectionState, Doing};

/// How long a new connection waits for the slot of the connection it
/// evicted (its task only has to run once) before choosing again.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// How often a new connection that found nobody to evict looks again:
/// connections go idle or stall without telling the cap.
const RESCAN: Duration = Duration::from_millis(100);

/// How long a connection waits for its first or next request head before
/// it may be evicted (at most; less when the stall time is shorter).
const FRESH: Duration = Duration::from_secs(1);

/// What the cap needs to judge a connection as stalled.
#[derive(Debug, Clone, Copy)]
pub(super) struct StallRule {
    /// A write waiting on the client this long, or a request body below
    /// `min_rate` after this long, makes a connection evictable.
    pub(super) after: Duration,
    /// Bytes per second; 0 judges no request body by its rate.
    pub(super) min_rate: u64,
}

/// The connection cap: one slot per connection served. A connection holds
/// its [`Slot`] until its task ends.
pub(super) struct ConnectionCap {
    slots: Arc<Semaphore>,
    /// `max_connections`, which `ServerSettings::bounded` keeps within
    /// 1..=u32::MAX (what `Semaphore::acquire_many` takes).
    max: u32,
    registry: Arc<Registry>,
    stall: StallRule,
    max_requests: Option<u64>,
}

/// The connections holding slots, bounded by the cap.
struct Registry {
    epoch: Instant,
    max: usize,
    entries: Mutex<(u64, HashMap<u64, Arc<ConnectionState>>)>,
    pressure: watch::Sender<bool>,
}

/// One connection's place under the [`ConnectionCap`], given back on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    id: u64,
    state: Arc<ConnectionState>,
    registry: Arc<Registry>,
}

impl Slot {
    /// The connection's shared state.
    pub(super) fn state(&self) -> Arc<ConnectionState> {
        self.state.clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut entries) = self.registry.entries.lock() {
            entries.1.remove(&self.id);
            self.registry.update_pressure(entries.1.len());
        }
    }
}

impl Registry {
    /// Pressure starts at 80 % of the cap and ends below 70 %, so that a
    /// cap hovering at the threshold does not wake every connection on
    /// each accept.
    fn update_pressure(&self, in_use: usize) {
        let on = in_use.saturating_mul(5) >= self.max.saturating_mul(4);
        let off = in_use.saturating_mul(10) < self.max.saturating_mul(7);
        self.pressure.send_if_modified(|pressure| {
            let next = if *pressure { !off } else { on };
            std::mem::replace(pressure, next) != next
        });
    }
}

impl ConnectionCap {
    pub(super) fn new(max_connections: usize, stall: StallRule, max_requests: Option<u64>) -> Self {
        let (pressure, _) = watch::channel(false);
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            max: u32::try_from(max_connections).unwrap_or(u32::MAX),
            registry: Arc::new(Registry {
                epoch: Instant::now(),
                max: max_connections,
                entries: Mutex::new((0, HashMap::new())),
                pressure,
            }),
            stall,
            max_requests,
        }
    }

    /// Whether more than 80 % of the slots are taken (true from 80 %, false
    /// again below 70 %), as a watch the connections follow.
    pub(super) fn pressure(&self) -> watch::Receiver<bool> {
        self.registry.pressure.subscribe()
    }

    /// A slot for a connection already accepted: a free one, else the slot
    /// of the connection doing the least, evicted for it. With nobody to
    /// evict (every connection working at a healthy pace) it waits.
    pub(super) async fn admit(&self, peer: SocketAddr) -> Slot {
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return self.register(permit, peer);
            }
            let wait = if self.evict_one() {
                EVICTION_WAIT
            } else {
                RESCAN
            };
            if let Ok(permit) = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await
            {
                return self.register(permit.expect("the semaphore is never closed"), peer);
            }
        }
    }

    fn register(&self, permit: OwnedSemaphorePermit, peer: SocketAddr) -> Slot {
        let state = Arc::new(ConnectionState::new(
            self.registry.epoch,
            peer,
            self.max_requests,
        ));
        let mut entries = self
            .registry
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.0 += 1;
        let id = entries.0;
        entries.1.insert(id, state.clone());
        self.registry.update_pressure(entries.1.len());
        Slot {
            _permit: permit,
            id,
            state,
            registry: self.registry.clone(),
        }
    }

    /// Evicts the connection doing the least: waiting for a request head
    /// before stalled, and of those the one waiting or stalled longest.
    /// Returns false when every connection is working.
    fn evict_one(&self) -> bool {
        let now = Instant::now();
        let fresh = self.stall.after.min(FRESH);
        let chosen = {
            let Ok(entries) = self.registry.entries.lock() else {
                return false;
            };
            entries
                .1
                .values()
                .filter(|state| !state.is_evicting())
                .map(|state| {
                    (
                        state.doing(now, self.stall.after, self.stall.min_rate),
                        state,
                    )
                })
                .filter(|(doing, _)| match doing {
                    // A connection just admitted has had no time to send
                    // its head: evicting it would let a flood of new
                    // connections evict every newcomer before it speaks.
                    Doing::Waiting(since) => now.saturating_duration_since(*since) >= fresh,
                    Doing::Stalled(_) => true,
                    Doing::Working => false,
                })
                .min_by_key(|(doing, state)| (*doing, state.accepted()))
                .map(|(doing, state)| (doing, state.clone()))
        };
        match chosen {
            Some((doing, state)) => {
                tracing::debug!(
                    peer = %state.peer(),
                    ?doing,
                    bytes_written = state.bytes_written(),
                    "connection cap full: evicting the connection doing the least"
                );
                state.evict()
            }
            None => false,
        }
    }

    /// Completes once every connection has given its slot back.
    pub(super) async fn all_closed(&self) {
        let _ = self.slots.acquire_many(self.max).await;
    }
}
