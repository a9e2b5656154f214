use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::shared::Lease;

pin_project! {
    /// A request body that gives its request's in-flight slot back while the
    /// service waits on the client for bytes, and takes it back when they
    /// come: time spent waiting on a slow client is the client's, so slow
    /// uploads neither hold slots nor lower the adaptive limit.
    ///
    /// A body that had ended when the request was admitted (a `GET`) holds
    /// nothing and costs nothing.
    pub struct InFlightRequestBody<B> {
        #[pin]
        inner: B,
        lease: Option<Arc<Lease>>,
        waiting: bool,
    }

    impl<B> PinnedDrop for InFlightRequestBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Nobody waits on the client any more: the request is the
            // service's until its response ends.
            if *this.waiting {
                if let Some(lease) = this.lease {
                    lease.retake(Instant::now());
                }
            }
        }
    }
}

impl<B> InFlightRequestBody<B> {
    pub(crate) fn new(inner: B, lease: Option<Arc<Lease>>) -> Self {
        Self {
            inner,
            lease,
            waiting: false,
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for InFlightRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightRequestBody")
            .field("inner", &self.inner)
            .field("waiting_on_client", &self.waiting)
            .finish()
    }
}

impl<B: Body> Body for InFlightRequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(lease) = this.lease {
            match (polled.is_ready(), *this.waiting) {
                (false, false) => {
                    lease.lend(Instant::now());
                    *this.waiting = true;
                }
                // Data, trailers, the end or an error: the wait is over.
                (true, true) => {
                    lease.retake(Instant::now());
                    *this.waiting = false;
                }
                _ => {}
            }
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
