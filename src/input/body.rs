use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::InputRefusal;
use crate::context::RequestContext;
use crate::error::{BoxError, RefusalSlot, Refused};

/// The error of a [`LimitedBody`]: the limit was crossed, or the inner body
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body crossed its limit.
    #[error(transparent)]
    Refused(InputRefusal),
    /// The inner body failed (a transport error, for example).
    #[error("failed to read the request body")]
    Read(#[source] BoxError),
}

/// Which bytes a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Bytes as they arrive on the wire (after de-chunking).
    Wire,
    /// Bytes after decompression.
    Decoded,
}

/// The state one request's body limit shares between the layer's future, the
/// body, and a route-level override.
pub(crate) struct BodyGuard {
    limit: AtomicU64,
    /// The declared `Content-Length`, checked against the limit in force
    /// when the body is first read (a route may have changed the limit).
    declared: Option<u64>,
    /// The largest limit a route may raise this one to.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) ceiling: u64,
    pub(crate) counted: Counted,
    pub(crate) slot: RefusalSlot,
    /// The request's id and trace, for the problem that replaces the inner
    /// service's answer; kept here rather than in the response future so
    /// that the future stays small and cheap to move.
    pub(crate) context: RequestContext,
}

impl BodyGuard {
    pub(crate) fn new(
        limit: u64,
        ceiling: u64,
        counted: Counted,
        declared: Option<u64>,
        context: RequestContext,
    ) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicU64::new(limit),
            declared,
            ceiling: ceiling.max(limit),
            counted,
            slot: RefusalSlot::default(),
            context,
        })
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the limit for this request, clamped to the ceiling; returns the
    /// limit now in force.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn set_limit(&self, limit: u64) -> u64 {
        let limit = limit.min(self.ceiling);
        self.limit.store(limit, Ordering::Relaxed);
        limit
    }

    /// The refusal of a declared length over the limit now in force.
    pub(crate) fn declared_too_large(&self) -> Option<InputRefusal> {
        let limit = self.limit();
        self.declared
            .filter(|&declared| declared > limit)
            .map(|declared| InputRefusal::DeclaredBodyTooLarge { limit, declared })
    }

    fn too_large(&self, limit: u64, observed: u64) -> InputRefusal {
        match self.counted {
            Counted::Wire => InputRefusal::BodyTooLarge { limit, observed },
            Counted::Decoded => InputRefusal::DecodedBodyTooLarge { limit, observed },
        }
    }
}

pin_project! {
    /// A request body counted as it streams: once more bytes than the limit
    /// have arrived, the next read fails with [`BodyError::Refused`] and the
    /// layer answers 413. At most the limit plus one frame is ever held.
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        // `None` for a body that had already ended when the layer saw it
        // (`is_end_stream`): it has no byte to count and cannot fail, so it
        // needs no state shared with the layer's future.
        guard: Option<Arc<BodyGuard>>,
        seen: u64,
        failed: bool,
        started: bool,
    }
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, guard: Arc<BodyGuard>) -> Self {
        Self::with_guard(inner, Some(guard))
    }

    /// A body that had ended before it was limited: passed through as is.
    pub(crate) fn ended(inner: B) -> Self {
        Self::with_guard(inner, None)
    }

    fn with_guard(inner: B, guard: Option<Arc<BodyGuard>>) -> Self {
        Self {
            inner,
            guard,
            seen: 0,
            failed: false,
            started: false,
        }
    }
}

impl<B> std::fmt::Debug for LimitedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("LimitedBody");
        if let Some(guard) = &self.guard {
            debug.field("limit", &guard.limit());
        }
        debug.field("seen", &self.seen).finish_non_exhaustive()
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BodyError;

    // Long for a reason: every frame outcome counted against the limit in
    // one match on the request path (data, trailers, end, error).
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(guard) = this.guard else {
            // The body said it had ended; one that yields bytes anyway
            // breaks the `http_body` contract, and is not let through
            // uncounted.
            return match this.inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame)))
                    if frame.data_ref().is_some_and(|data| data.has_remaining()) =>
                {
                    Poll::Ready(Some(Err(BodyError::Read(
                        "the request body reported its end, then yielded data".into(),
                    ))))
                }
                polled => polled.map_err(|error| BodyError::Read(error.into())),
            };
        };
        let limit = guard.limit();
        if *this.failed {
            let refusal = match guard.slot.get() {
                Some(refused) => refused.downcast_ref::<InputRefusal>().cloned(),
                None => None,
            };
            let refusal = refusal.unwrap_or_else(|| guard.too_large(limit, *this.seen));
            return Poll::Ready(Some(Err(BodyError::Refused(refusal))));
        }
        if !*this.started {
            *this.started = true;
            // Before the first byte is read (and so before hyper sends
            // `100 Continue`): a declared length over the limit in force.
            if let Some(refusal) = guard.declared_too_large() {
                *this.failed = true;
                guard.slot.set(Refused::new(refusal.clone()));
                return Poll::Ready(Some(Err(BodyError::Refused(refusal))));
            }
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.remaining() as u64);
                    if *this.seen > limit {
                        *this.failed = true;
                        let refusal = guard.too_large(limit, *this.seen);
                        guard.slot.set(Refused::new(refusal.clone()));
                        return Poll::Ready(Some(Err(BodyError::Refused(refusal))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                // The body failed on its way in: broken chunked framing, a
                // corrupt compressed stream, a client that hung up mid-body.
                // The client's fault, so a 400 (not the 500 a handler that
                // bubbles the error up would answer); a layer outside this
                // one that refused first (413, 408) still answers with its
                // own refusal.
                // A refusal raised below the decoder (the zstd window, the
                // wire limit) reaches here as the decoder's error: it keeps
                // its own answer.
                let error: BoxError = error.into();
                let refusal = match error.downcast_ref::<BodyError>() {
                    Some(BodyError::Refused(refusal)) => refusal.clone(),
                    _ => InputRefusal::MalformedBody,
                };
                guard.slot.set(Refused::new(refusal));
                Poll::Ready(Some(Err(BodyError::Read(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    /// A body that claims to have ended and yields a frame anyway.
    struct Lying(Option<Bytes>);

    impl Body for Lying {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
        }

        fn is_end_stream(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_body_that_ended_and_then_yields_data_is_refused_not_passed_uncounted() {
        let mut lying = LimitedBody::ended(Lying(Some(Bytes::from_static(b"smuggled"))));
        let frame = lying.frame().await.expect("a frame or an error");
        assert!(matches!(frame, Err(BodyError::Read(_))));
        // An honest ended body passes through.
        let mut honest = LimitedBody::ended(Lying(None));
        assert!(honest.frame().await.is_none());
    }
}
