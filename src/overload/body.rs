use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::shared::Permit;

pin_project! {
    /// A response body that holds its request's in-flight slot until it
    /// ends (or is dropped).
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B> InFlightBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self { inner, permit }
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
