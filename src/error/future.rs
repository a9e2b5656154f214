//! The response future of a layer that refuses at once or hands on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::ProblemOr;

pin_project! {
    /// The response future of a layer that either refuses a request at once
    /// or hands it to the inner service.
    pub struct RefuseOr<F, B> {
        #[pin]
        state: RefuseOrState<F, B>,
    }
}

pin_project! {
    #[project = RefuseOrProj]
    enum RefuseOrState<F, B> {
        Refused { response: Option<Response<ProblemOr<B>>> },
        Inner { #[pin] future: F },
    }
}

impl<F, B> RefuseOr<F, B> {
    /// A future that answers with this refusal.
    pub fn refused(response: Response<ProblemOr<B>>) -> Self {
        Self {
            state: RefuseOrState::Refused {
                response: Some(response),
            },
        }
    }

    /// A future that answers with the inner service's response.
    pub fn inner(future: F) -> Self {
        Self {
            state: RefuseOrState::Inner { future },
        }
    }
}

impl<F, B, E> Future for RefuseOr<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ProblemOr<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RefuseOrProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("RefuseOr polled after completion"))),
            RefuseOrProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(ProblemOr::inner))),
        }
    }
}
