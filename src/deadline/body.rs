use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::DeadlineRefusal;
use crate::error::{BoxError, RefusalSlot, Refused};

/// The error of a [`TimedBody`]: the client was too slow, or the inner body
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum TimedBodyError {
    /// The client stalled or sent the body too slowly.
    #[error(transparent)]
    Refused(DeadlineRefusal),
    /// The inner body failed (a transport error, for example).
    #[error("failed to read the request body")]
    Read(#[source] BoxError),
}

/// A minimum request body data rate: after `grace` spent waiting for the
/// client, fewer than `bytes_per_second` on average ends the request with 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRate {
    /// The minimum average rate, in bytes per second.
    pub bytes_per_second: u64,
    /// The time spent waiting for the client before the rate is enforced.
    pub grace: Duration,
}

impl MinDataRate {
    /// Kestrel's default `MinRequestBodyDataRate`: 240 bytes/s after a 5 s
    /// grace period.
    pub const KESTREL: Self = Self {
        bytes_per_second: 240,
        grace: Duration::from_secs(5),
    };
}

/// The slow-client limits of one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTimeouts {
    pub(crate) idle: Option<Duration>,
    pub(crate) min_rate: Option<MinDataRate>,
}

/// What one request's body tells the layer's future: a refusal, whether the
/// handler is waiting for bytes right now, and whether the body was read to
/// its end.
#[derive(Default)]
pub(crate) struct BodyWatch {
    pub(crate) slot: RefusalSlot,
    waiting: AtomicBool,
    finished: AtomicBool,
}

impl BodyWatch {
    /// The watch of a body that has not ended yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A request body timed while the handler waits for it: no bytes for the
    /// idle timeout, or an average rate under the minimum after the grace
    /// period, fails the read with [`TimedBodyError::Refused`] and the layer
    /// answers 408.
    ///
    /// Only time spent waiting for the client counts: a handler that reads
    /// slowly (or not at all) is never blamed on the client (Kestrel does the
    /// same).
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        // `None` for a body that had already ended when the layer saw it: it
        // never makes the handler wait, so it has nothing to tell the
        // layer's future (and costs no allocation).
        watch: Option<Arc<BodyWatch>>,
        timeouts: BodyTimeouts,
        timer: Option<Pin<Box<Sleep>>>,
        waiting_since: Option<Instant>,
        waited: Duration,
        received: u64,
        failed: Option<DeadlineRefusal>,
    }
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, watch: Option<Arc<BodyWatch>>, timeouts: BodyTimeouts) -> Self {
        Self {
            inner,
            watch,
            timeouts,
            timer: None,
            waiting_since: None,
            waited: Duration::ZERO,
            received: 0,
            failed: None,
        }
    }
}

impl<B> std::fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody")
            .field("received", &self.received)
            .field("waited", &self.waited)
            .finish_non_exhaustive()
    }
}

/// Which slow-client limit would end the wait, and when.
fn expiry(
    timeouts: &BodyTimeouts,
    since: Instant,
    waited: Duration,
    received: u64,
) -> Option<(Instant, bool)> {
    let idle = timeouts
        .idle
        .map(|idle| (crate::context::instant_after(since, idle), true));
    let rate = timeouts
        .min_rate
        .filter(|rate| rate.bytes_per_second > 0)
        .map(|rate| {
            // The received bytes pay for this much waiting at the minimum rate.
            let earned = Duration::from_secs_f64(received as f64 / rate.bytes_per_second as f64);
            let allowed = rate.grace.max(earned);
            (
                crate::context::instant_after(since, allowed.saturating_sub(waited)),
                false,
            )
        });
    match (idle, rate) {
        (Some(idle), Some(rate)) => Some(if rate.0 < idle.0 { rate } else { idle }),
        (idle, rate) => idle.or(rate),
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = TimedBodyError;

    // Long for a reason: one pass over the frame's outcomes (data, trailers,
    // end, error, pending) with the idle and rate timers beside each; split,
    // the timer state would travel through every helper.
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Some(refusal) = this.failed {
            return Poll::Ready(Some(Err(TimedBodyError::Refused(refusal.clone()))));
        }
        let polled = this.inner.poll_frame(cx);
        if polled.is_ready() {
            if let Some(since) = this.waiting_since.take() {
                *this.waited += since.elapsed();
                if let Some(watch) = this.watch {
                    watch.waiting.store(false, Ordering::Relaxed);
                }
            }
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received = this.received.saturating_add(data.remaining() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                Poll::Ready(Some(Err(TimedBodyError::Read(error.into()))))
            }
            Poll::Ready(None) => {
                if let Some(watch) = this.watch {
                    watch.finished.store(true, Ordering::Relaxed);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                if let Some(watch) = this.watch {
                    watch.waiting.store(true, Ordering::Relaxed);
                }
                let Some((at, idle)) = expiry(this.timeouts, since, *this.waited, *this.received)
                else {
                    return Poll::Pending;
                };
                if at > now {
                    let timer = match this.timer {
                        Some(timer) => {
                            if timer.deadline() != at {
                                timer.as_mut().reset(at);
                            }
                            timer
                        }
                        None => this.timer.insert(Box::pin(tokio::time::sleep_until(at))),
                    };
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                let waited = *this.waited + Instant::now().saturating_duration_since(since);
                let refusal = match (idle, *this.timeouts) {
                    (
                        false,
                        BodyTimeouts {
                            min_rate: Some(rate),
                            ..
                        },
                    ) => DeadlineRefusal::BodyTooSlow {
                        min_rate: rate.bytes_per_second,
                        observed_rate: observed_rate(*this.received, waited),
                        received: *this.received,
                        waited,
                    },
                    _ => DeadlineRefusal::BodyIdle {
                        idle_timeout: this.timeouts.idle.unwrap_or(waited),
                        received: *this.received,
                    },
                };
                if let Some(watch) = this.watch {
                    watch.waiting.store(false, Ordering::Relaxed);
                    watch.slot.set(Refused::new(refusal.clone()));
                }
                *this.failed = Some(refusal.clone());
                Poll::Ready(Some(Err(TimedBodyError::Refused(refusal))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn observed_rate(received: u64, waited: Duration) -> u64 {
    let seconds = waited.as_secs_f64();
    if seconds <= 0.0 {
        return received;
    }
    (received as f64 / seconds) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_expiry_grows_with_received_bytes() {
        let timeouts = BodyTimeouts {
            idle: None,
            min_rate: Some(MinDataRate::KESTREL),
        };
        let now = Instant::now();
        let (at, idle) = expiry(&timeouts, now, Duration::ZERO, 0).unwrap();
        assert_eq!((at - now, idle), (Duration::from_secs(5), false));
        // 2400 bytes pay for 10 s of waiting at 240 B/s; 3 s were used.
        let (at, _) = expiry(&timeouts, now, Duration::from_secs(3), 2400).unwrap();
        assert_eq!(at - now, Duration::from_secs(7));
        let both = BodyTimeouts {
            idle: Some(Duration::from_secs(2)),
            ..timeouts
        };
        assert_eq!(
            expiry(&both, now, Duration::ZERO, 0).unwrap(),
            (now + Duration::from_secs(2), true)
        );
    }
}
