use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::InFlightBody;
use super::error::retry_seconds;
use super::error::TooManyInFlight;
use super::request_body::InFlightRequestBody;
use super::shared::{Permit, Shared};
use crate::context::ClientKey;
use crate::error::{Problem, ProblemOr};

/// The service of [`InFlightLimitLayer`](super::InFlightLimitLayer).
#[derive(Debug, Clone)]
pub struct InFlightLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> InFlightLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InFlightLimit<S>
where
    S: Service<Request<InFlightRequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ProblemOr<InFlightBody<ResBody>>>;
    type Error = S::Error;
    type Future = InFlightFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The client's own share first: a client over it takes no slot of
        // the limit.
        let mut key_permit = None;
        if let Some(per_key) = &self.shared.per_key {
            if let Some(&key) = request.extensions().get::<ClientKey>() {
                match per_key.acquire(key) {
                    Ok(permit) => key_permit = Some(permit),
                    Err(_) => {
                        let retry_after = self.shared.settings.retry_after;
                        let refused = TooManyInFlight {
                            limit: per_key.max(),
                            key,
                            retry_after,
                        };
                        return shed(refused, retry_seconds(retry_after), &request);
                    }
                }
            }
        }
        match self.shared.acquire(request.uri().path()) {
            Ok(mut permit) => {
                permit.key = key_permit;
                // A request whose body is still to come shares its slot
                // with the body, which lends it back while the client is
                // slow to send; one with no body to wait for pays nothing.
                let request = request.map(|body| {
                    let lease = (!body.is_end_stream()).then(|| permit.lease());
                    InFlightRequestBody::new(body, lease)
                });
                InFlightFuture {
                    state: State::Admitted {
                        future: self.inner.call(request),
                        permit: Some(permit),
                    },
                }
            }
            Err(overloaded) => {
                let seconds = retry_seconds(overloaded.retry_after);
                shed(overloaded, seconds, &request)
            }
        }
    }
}

/// A refusal answered at once: its problem and `Retry-After`.
fn shed<F, B, ReqBody>(
    refusal: impl crate::error::Refusal,
    retry_after_seconds: u64,
    request: &Request<ReqBody>,
) -> InFlightFuture<F, B> {
    let mut response = Problem::refuse(refusal, request.extensions());
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    InFlightFuture {
        state: State::Shed {
            response: Some(response),
        },
    }
}

pin_project! {
    /// The response future of [`InFlightLimit`].
    pub struct InFlightFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Shed { response: Option<Response<ProblemOr<InFlightBody<B>>>> },
        Admitted { #[pin] future: F, permit: Option<Permit> },
    }
}

impl<F, B, E> Future for InFlightFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ProblemOr<InFlightBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("InFlightFuture polled after completion"))),
            StateProj::Admitted { future, permit } => {
                // An error drops the permit here: the slot is free, and a
                // failure is no latency sample.
                let response = std::task::ready!(future.poll(cx))?;
                let mut permit = permit
                    .take()
                    .expect("InFlightFuture polled after completion");
                if is_stream(&response) {
                    permit.no_sample();
                }
                Poll::Ready(Ok(response.map(|body| {
                    let permit = if body.is_end_stream() {
                        permit.complete();
                        None
                    } else {
                        Some(permit)
                    };
                    ProblemOr::inner(InFlightBody::new(body, permit))
                })))
            }
        }
    }
}

/// An upgrade or an event stream: its duration is the client's, not the
/// service's.
fn is_stream<B>(response: &Response<B>) -> bool {
    response.status() == StatusCode::SWITCHING_PROTOCOLS
        || response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"))
}
