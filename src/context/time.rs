//! When a request arrived, and deadline arithmetic that cannot overflow.

use std::time::Duration;

use tokio::time::Instant;

/// `start + duration`, saturating at about 30 years from now instead of
/// panicking: durations come from configuration and builders, and an
/// `Instant` overflow must never take a request (or a connection) down.
pub(crate) fn instant_after(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30))
}

/// When a request arrived, as a request extension. The outermost layer
/// ([`ObserveLayer`](crate::observe::ObserveLayer), first in
/// [`Harden`](crate::Harden)) sets it, so the request deadline counts from
/// arrival, not from when the request reached the deadline layer: time spent
/// in the layers before it (a rate-limit store's round trip) is part of the
/// budget a caller gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival(pub Instant);
