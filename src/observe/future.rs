use std::fmt::Display;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_LENGTH};
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use tracing::Span;

use super::body::ObservedBody;
use super::outcome::{Failure, Outcome};
use super::panic::{Catching, PanicSite};
use crate::error::{Problem, ProblemAwaitingContext, ProblemOr, Refused, PROBLEM_JSON};

pin_project! {
    /// The response future of [`Observe`](super::Observe).
    ///
    /// Dropped before it finishes (the client went away, an outer timeout
    /// gave up), it still logs the request's outcome event, as cancelled.
    pub struct ObserveFuture<F> {
        #[pin]
        state: State<F>,
        span: Span,
        outcome: Option<Box<Outcome>>,
    }

    impl<F> PinnedDrop for ObserveFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut outcome) = this.outcome.take() {
                outcome.failure = Some(Failure::Cancelled);
                outcome.emit(0, false);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        CallPanicked { panic: Option<(String, Option<PanicSite>)> },
    }
}

impl<F> ObserveFuture<F> {
    pub(crate) fn new(
        called: Result<F, (String, Option<PanicSite>)>,
        span: Span,
        outcome: Box<Outcome>,
    ) -> Self {
        let state = match called {
            Ok(future) => State::Called { future },
            Err(panic) => State::CallPanicked { panic: Some(panic) },
        };
        Self {
            state,
            span,
            outcome: Some(outcome),
        }
    }
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = bytes::Bytes>,
    E: Display,
{
    type Output = Result<Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let panic = match this.state.project() {
            StateProj::Called { future } => {
                let (forward, flood_gate) =
                    this.outcome.as_ref().map_or((false, None), |outcome| {
                        (outcome.config.forward_panics, outcome.config.flood_gate)
                    });
                let catching = Catching::enter(forward, flood_gate);
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => {
                        let outcome = this.outcome.take().expect("polled after completion");
                        return Poll::Ready(Ok(finish(response, outcome)));
                    }
                    Ok(Poll::Ready(Err(error))) => {
                        let mut outcome = this.outcome.take().expect("polled after completion");
                        outcome.failure = Some(Failure::Service(error.to_string()));
                        outcome.emit(0, false);
                        return Poll::Ready(Err(error));
                    }
                    Err(payload) => (
                        super::panic::payload_message(&*payload),
                        catching.take_site(),
                    ),
                }
            }
            StateProj::CallPanicked { panic } => panic.take().expect("polled after completion"),
        };
        let outcome = this.outcome.take().expect("polled after completion");
        Poll::Ready(Ok(panicked(panic, outcome)))
    }
}

fn request_id_value(outcome: &Outcome) -> HeaderValue {
    // A request id is plain ASCII by construction.
    HeaderValue::from_str(outcome.request_id.as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn finish<B: Body<Data = bytes::Bytes>>(
    response: Response<B>,
    mut outcome: Box<Outcome>,
) -> Response<ObservedBody<B>> {
    let (mut parts, body) = response.into_parts();
    let body = match parts.extensions.remove::<ProblemAwaitingContext>() {
        Some(ProblemAwaitingContext(problem)) => {
            // The body is ours now, whatever an inner layer made of the
            // handler's (compressed it, say): so are its representation
            // headers.
            parts.headers.remove(CONTENT_LENGTH);
            parts.headers.remove(http::header::CONTENT_ENCODING);
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(PROBLEM_JSON),
            );
            ProblemOr::problem(
                problem
                    .with_request_context(outcome.context.clone())
                    .to_json(),
            )
        }
        None if parts.status.is_client_error() => {
            // An error response without a problem body (axum's empty 404
            // and 405, or a mapped rejection): rare, and checked only here.
            match super::rejection::problem_for(
                parts.status,
                &parts.headers,
                body,
                outcome.config.map_rejections,
            ) {
                Ok(problem) => {
                    parts.headers.remove(CONTENT_LENGTH);
                    parts.headers.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(PROBLEM_JSON),
                    );
                    parts.headers.insert(
                        http::header::CACHE_CONTROL,
                        http::HeaderValue::from_static("no-store"),
                    );
                    ProblemOr::problem(
                        problem
                            .with_request_context(outcome.context.clone())
                            .to_json(),
                    )
                }
                Err(body) => ProblemOr::inner(body),
            }
        }
        None => ProblemOr::inner(body),
    };
    parts.headers.insert(
        outcome.config.request_id_header.clone(),
        request_id_value(&outcome),
    );
    outcome.status = Some(parts.status);
    if outcome.config.full_span {
        outcome
            .span
            .record("http.response.status_code", parts.status.as_u16());
        if parts.status.is_server_error() {
            outcome.span.record("otel.status_code", "error");
        }
    }
    outcome.failure = parts
        .extensions
        .get::<Refused>()
        .cloned()
        .map(Failure::Refused);
    Response::from_parts(parts, ObservedBody::new(body, outcome))
}

fn panicked<B: Body<Data = bytes::Bytes>>(
    (message, site): (String, Option<PanicSite>),
    mut outcome: Box<Outcome>,
) -> Response<ObservedBody<B>> {
    let mut response = Problem::internal_error()
        .with_request_context(outcome.context.clone())
        .into_response::<B>();
    response.headers_mut().insert(
        outcome.config.request_id_header.clone(),
        request_id_value(&outcome),
    );
    outcome.status = Some(response.status());
    if outcome.config.full_span {
        outcome.span.record("http.response.status_code", 500);
        outcome.span.record("otel.status_code", "error");
    }
    outcome.failure = Some(Failure::Panic { message, site });
    response.map(|body| ObservedBody::new(body, outcome))
}
