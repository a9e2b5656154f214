//! The connection cap: the accept loop takes a connection only with a free
//! slot, and the drain waits for every slot to come back.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection cap: one slot per connection served. A connection holds
/// its [`Slot`] until its task ends; with every slot taken the loop accepts
/// nothing, and further connections wait in the listener's backlog.
pub(super) struct ConnectionCap {
    slots: Arc<Semaphore>,
    /// `max_connections`, which `ServerSettings::bounded` keeps within
    /// 1..=u32::MAX (what `Semaphore::acquire_many` takes).
    max: u32,
}

/// One connection's place under the [`ConnectionCap`], given back on drop.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ConnectionCap {
    pub(super) fn new(max_connections: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_connections)),
            max: u32::try_from(max_connections).unwrap_or(u32::MAX),
        }
    }

    /// Waits for a free slot.
    pub(super) async fn slot(&self) -> Slot {
        let permit = self.slots.clone().acquire_owned().await;
        Slot {
            _permit: permit.expect("the semaphore is never closed"),
        }
    }

    /// Completes once every connection has given its slot back.
    pub(super) async fn all_closed(&self) {
        let _ = self.slots.acquire_many(self.max).await;
    }
}
