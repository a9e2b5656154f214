use std::fmt::Display;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::outcome::{Failure, Outcome};
use super::panic::Catching;
use crate::error::ProblemOr;

pin_project! {
    /// The response body of [`Observe`](super::Observe): the inner body (or a
    /// problem written by the layer), counted as it streams. The request's
    /// outcome event is emitted when the body ends, fails, or is dropped.
    pub struct ObservedBody<B> {
        #[pin]
        inner: ProblemOr<B>,
        bytes: u64,
        ended: bool,
        outcome: Option<Box<Outcome>>,
    }

    impl<B> PinnedDrop for ObservedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(outcome) = this.outcome.take() {
                outcome.emit(*this.bytes, *this.ended);
            }
        }
    }
}

impl<B: Body> ObservedBody<B> {
    pub(crate) fn new(inner: ProblemOr<B>, outcome: Box<Outcome>) -> Self
    where
        ProblemOr<B>: Body,
    {
        let ended = inner.is_end_stream();
        Self {
            inner,
            bytes: 0,
            ended,
            outcome: Some(outcome),
        }
    }
}

impl<B> Body for ObservedBody<B>
where
    ProblemOr<B>: Body,
    <ProblemOr<B> as Body>::Error: Display,
{
    type Data = <ProblemOr<B> as Body>::Data;
    type Error = <ProblemOr<B> as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let (forward, flood_gate) = this.outcome.as_ref().map_or((false, None), |outcome| {
            (outcome.config.forward_panics, outcome.config.flood_gate)
        });
        let catching = Catching::enter(forward, flood_gate);
        let polled = match catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll_frame(cx))) {
            Ok(polled) => polled,
            Err(payload) => {
                // The head is already sent: no 500 is possible any more. Log
                // the panic once, as the request's outcome, then let it go on
                // to the connection, which hyper aborts (the client sees a
                // truncated response, the server keeps serving).
                if let Some(mut outcome) = this.outcome.take() {
                    outcome.failure = Some(Failure::Panic {
                        message: super::panic::payload_message(&*payload),
                        site: catching.take_site(),
                    });
                    outcome.emit(*this.bytes, false);
                }
                drop(catching);
                std::panic::resume_unwind(payload);
            }
        };
        drop(catching);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.remaining() as u64;
                }
                if this.inner.is_end_stream() {
                    *this.ended = true;
                    if let Some(outcome) = this.outcome.take() {
                        outcome.emit(*this.bytes, true);
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(mut outcome) = this.outcome.take() {
                    if outcome.failure.is_none() {
                        outcome.failure = Some(Failure::Body(error.to_string()));
                    }
                    outcome.emit(*this.bytes, false);
                }
            }
            Poll::Ready(None) => {
                *this.ended = true;
                if let Some(outcome) = this.outcome.take() {
                    outcome.emit(*this.bytes, true);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> std::fmt::Debug for ObservedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedBody")
            .field("bytes", &self.bytes)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}
