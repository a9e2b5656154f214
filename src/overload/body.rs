use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::shared::{Lease, Permit};

pin_project! {
    /// A response body that holds its request's in-flight slot until it
    /// ends (or is dropped), except while a frame it gave is not yet taken
    /// by the client: from a frame to the next poll, the server waits on
    /// its client (a reader that does not read, a full socket or flow
    /// control window), so the slot is lent back and the wait left out of
    /// the latency sample, as for a slow upload.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
        lease: Option<Arc<Lease>>,
        lent: bool,
    }
}

impl<B> InFlightBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self {
            inner,
            permit,
            lease: None,
            lent: false,
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightBody")
            .field("inner", &self.inner)
            .field("holds_slot", &self.permit.is_some())
            .finish()
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.lent {
            // Polled again: the client took the last frame.
            *this.lent = false;
            if let Some(lease) = this.lease.as_ref() {
                lease.retake(Instant::now());
            }
        }
        let mut inner = this.inner;
        let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            None => {
                if let Some(permit) = this.permit.take() {
                    permit.complete();
                }
            }
            Some(Ok(_)) => {
                if inner.is_end_stream() {
                    if let Some(permit) = this.permit.take() {
                        permit.complete();
                    }
                } else if let Some(permit) = this.permit.as_mut() {
                    // Until the next poll the frame waits on the client.
                    let lease = this.lease.get_or_insert_with(|| permit.lease());
                    lease.lend(Instant::now());
                    *this.lent = true;
                }
            }
            // A failed body frees its slot and is no sample.
            Some(Err(_)) => drop(this.permit.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
