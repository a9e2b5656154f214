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
use super::per_key::KeyPermit;
use super::request_body::InFlightRequestBody;
use super::shared::{Admission, Permit, Shared, Ticket};
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
    S: Service<Request<InFlightRequestBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ProblemOr<InFlightBody<ResBody>>>;
    type Error = S::Error;
    type Future = InFlightFuture<S, ReqBody, S::Future, ResBody>;

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
            Admission::Admitted(mut permit) => {
                permit.key = key_permit;
                let (future, permit) = admit(&mut self.inner, request, permit);
                InFlightFuture {
                    state: State::Admitted {
                        future,
                        permit: Some(permit),
                    },
                }
            }
            Admission::Queued(ticket) => {
                // The service was made ready for this request: the clone
                // takes its place, and this one waits with the request
                // (tower's advice for a service called later).
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                let sleep = tokio::time::sleep_until(ticket.deadline());
                InFlightFuture {
                    state: State::Queued {
                        waiting: Box::pin(Waiting {
                            ticket,
                            sleep,
                            service,
                            request: Some(request),
                            key_permit,
                        }),
                    },
                }
            }
            Admission::Shed(overloaded) => {
                let seconds = retry_seconds(overloaded.retry_after);
                shed(overloaded, seconds, &request)
            }
        }
    }
}

/// Calls the service with an admitted request: the future, and the permit
/// it holds to the end of the response.
fn admit<S, ReqBody>(
    service: &mut S,
    request: Request<ReqBody>,
    mut permit: Permit,
) -> (S::Future, Permit)
where
    S: Service<Request<InFlightRequestBody<ReqBody>>>,
    ReqBody: Body,
{
    // A request whose body is still to come shares its slot with the body,
    // which lends it back while the client is slow to send; one with no
    // body to wait for pays nothing.
    let request = request.map(|body| {
        let lease = (!body.is_end_stream()).then(|| permit.lease());
        InFlightRequestBody::new(body, lease)
    });
    (service.call(request), permit)
}

/// A refusal answered at once: its problem and `Retry-After`.
fn shed<S, ReqBody, F, B, ReqB>(
    refusal: impl crate::error::Refusal,
    retry_after_seconds: u64,
    request: &Request<ReqB>,
) -> InFlightFuture<S, ReqBody, F, B> {
    InFlightFuture {
        state: State::Shed {
            response: Some(refusal_response(refusal, retry_after_seconds, request)),
        },
    }
}

fn refusal_response<B, ReqB>(
    refusal: impl crate::error::Refusal,
    retry_after_seconds: u64,
    request: &Request<ReqB>,
) -> Response<ProblemOr<B>> {
    let mut response = Problem::refuse(refusal, request.extensions());
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

pin_project! {
    /// A request waiting in the queue: its slot, or its refusal at the
    /// timeout.
    struct Waiting<S, ReqBody> {
        ticket: Ticket,
        #[pin]
        sleep: tokio::time::Sleep,
        service: S,
        request: Option<Request<ReqBody>>,
        key_permit: Option<KeyPermit>,
    }
}

pin_project! {
    /// The response future of [`InFlightLimit`].
    pub struct InFlightFuture<S, ReqBody, F, B> {
        #[pin]
        state: State<S, ReqBody, F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, F, B> {
        Shed { response: Option<Response<ProblemOr<InFlightBody<B>>>> },
        // Boxed: a waiting request is the exception, and the common
        // admitted future stays small.
        Queued { waiting: Pin<Box<Waiting<S, ReqBody>>> },
        Admitted { #[pin] future: F, permit: Option<Permit> },
    }
}

impl<S, ReqBody, B, E> Future for InFlightFuture<S, ReqBody, S::Future, B>
where
    S: Service<Request<InFlightRequestBody<ReqBody>>, Response = Response<B>, Error = E>,
    ReqBody: Body,
    B: Body,
{
    type Output = Result<Response<ProblemOr<InFlightBody<B>>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Shed { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("InFlightFuture polled after completion")))
                }
                StateProj::Queued { waiting } => {
                    let waiting = waiting.as_mut().project();
                    let outcome = match waiting.ticket.poll_slot(cx) {
                        Poll::Ready(outcome) => outcome,
                        Poll::Pending => match waiting.sleep.poll(cx) {
                            Poll::Ready(()) => waiting.ticket.give_up(),
                            Poll::Pending => return Poll::Pending,
                        },
                    };
                    let request = waiting
                        .request
                        .take()
                        .expect("InFlightFuture polled after completion");
                    match outcome {
                        Ok(mut permit) => {
                            permit.key = waiting.key_permit.take();
                            let (future, permit) = admit(waiting.service, request, permit);
                            State::Admitted {
                                future,
                                permit: Some(permit),
                            }
                        }
                        Err(overloaded) => {
                            let seconds = retry_seconds(overloaded.retry_after);
                            State::Shed {
                                response: Some(refusal_response(overloaded, seconds, &request)),
                            }
                        }
                    }
                }
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
                    return Poll::Ready(Ok(response.map(|body| {
                        let permit = if body.is_end_stream() {
                            permit.complete();
                            None
                        } else {
                            Some(permit)
                        };
                        ProblemOr::inner(InFlightBody::new(body, permit))
                    })));
                }
            };
            self.as_mut().project().state.set(next);
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
