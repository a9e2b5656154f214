//! The response body of a layer that may answer with a problem.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

pin_project! {
    /// A response body that is either the inner service's body or a problem
    /// written by one of this crate's layers.
    ///
    /// Each layer keeps the inner body type inside, so no body is boxed and
    /// the inner service's error type is kept.
    #[project = ProblemOrProj]
    #[allow(missing_docs)] // the fields are described by their variants
    pub enum ProblemOr<B> {
        /// The inner service's body, untouched.
        Inner { #[pin] body: B },
        /// A problem+json body.
        Problem { body: Full<Bytes> },
    }
}

impl<B> ProblemOr<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    /// A problem body.
    pub fn problem(json: Bytes) -> Self {
        Self::Problem {
            body: Full::new(json),
        }
    }
}

impl<B> Default for ProblemOr<B>
where
    B: Default,
{
    fn default() -> Self {
        Self::inner(B::default())
    }
}

impl<B> Body for ProblemOr<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ProblemOrProj::Inner { body } => body.poll_frame(cx),
            ProblemOrProj::Problem { body } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Problem { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Problem { body } => body.size_hint(),
        }
    }
}
