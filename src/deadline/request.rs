use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, CONNECTION};
use http::{HeaderName, Request, Response, StatusCode, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{BodyTimeouts, BodyWatch, MinDataRate, TimedBody};
use super::inbound::{inbound_deadline, peer_ip};
use super::{DeadlineExceeded, DeadlineRefusal};
use crate::context::Budget;
use crate::context::{in_scope, sync_in_scope, Scope};
use crate::context::{RequestContext, TrustedNetworks, REQUEST_DEADLINE_HEADER};
use crate::error::{Problem, ProblemOr, Refused};

/// The default request deadline: 10 s.
///
/// Long enough for any interactive request we know of, and well inside the
/// idle timeouts of the proxies in front of most services (60 s on AWS ALB
/// and nginx's `proxy_read_timeout`), so the client hears a 503 problem from
/// us rather than a bare 504 from the proxy after the work was wasted anyway.
pub const DEFAULT_REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// The default body idle timeout: 60 s, nginx's `client_body_timeout` (the
/// time allowed between two successive reads of the body).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A deadline for the whole HTTP request, handler and body reading included,
/// and a defence against clients that send their body too slowly.
///
/// - **Slow handler**: when the deadline passes, the inner future is dropped
///   (the handler stops at its next `.await`) and the client gets a problem,
///   503 `deadline-exceeded` by default ([`status`](Self::status)). If the
///   body was not read to its end, the answer also says `Connection: close`.
/// - **Slow client**: while the handler waits for body bytes, no byte for the
///   [idle timeout](Self::body_idle_timeout), or an average rate under the
///   [minimum](Self::min_body_rate) after its grace period, fails the read and
///   the answer is 408 `request-timeout` with `Connection: close`, whatever
///   the handler made of the failed read.
/// - **Budget**: handlers see the [`Budget`] as a request extension and
///   through [`current_budget()`](crate::context::current_budget); the inbound request's id and trace
///   go with it, for the [`OutboundLayer`](crate::outbound::OutboundLayer).
/// - **Caller's deadline**: a [trusted caller](Self::trust_inbound) may send
///   its remaining budget in [`REQUEST_DEADLINE_HEADER`]; a shorter one
///   replaces the configured deadline (it can never lengthen it). From anyone
///   else, or malformed, the header is ignored.
///
/// The inner service's error type is kept.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Extension, Router};
/// use tower_harden::deadline::RequestDeadlineLayer;
/// use tower_harden::context::Budget;
///
/// let app: Router = Router::new()
///     .route("/", get(|Extension(budget): Extension<Budget>| async move {
///         format!("{} ms left", budget.remaining().as_millis())
///     }))
///     .layer(RequestDeadlineLayer::new(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone)]
pub struct RequestDeadlineLayer {
    timeout: Duration,
    status: StatusCode,
    timeouts: BodyTimeouts,
    trusted: TrustedNetworks,
    header: HeaderName,
}

impl Default for RequestDeadlineLayer {
    fn default() -> Self {
        Self::new(DEFAULT_REQUEST_DEADLINE)
    }
}

impl RequestDeadlineLayer {
    /// A deadline of `timeout` for every request (see
    /// [`DEFAULT_REQUEST_DEADLINE`] for the default of [`Default`]).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            status: StatusCode::SERVICE_UNAVAILABLE,
            timeouts: BodyTimeouts {
                idle: Some(DEFAULT_BODY_IDLE_TIMEOUT),
                min_rate: Some(MinDataRate::KESTREL),
            },
            trusted: TrustedNetworks::nobody(),
            header: REQUEST_DEADLINE_HEADER,
        }
    }

    /// The status answered when the deadline passes. Default: 503 Service
    /// Unavailable (the server could not finish in time; RFC 9110 §15.6.4).
    /// A gateway may prefer 504.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Ends the request with 408 when the client sends no body bytes for
    /// `timeout` while the handler waits for them; `None` turns it off.
    /// Default: [`DEFAULT_BODY_IDLE_TIMEOUT`] (60 s, nginx's
    /// `client_body_timeout`).
    pub fn body_idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeouts.idle = timeout.into();
        self
    }

    /// Ends the request with 408 when, after `grace` spent waiting for the
    /// body, the client has sent fewer than `bytes_per_second` on average.
    /// Default: [`MinDataRate::KESTREL`] (240 bytes/s after 5 s, Kestrel's
    /// `MinRequestBodyDataRate`).
    pub fn min_body_rate(mut self, bytes_per_second: u64, grace: Duration) -> Self {
        self.timeouts.min_rate = Some(MinDataRate {
            bytes_per_second,
            grace,
        });
        self
    }

    /// Turns the minimum body data rate off.
    pub fn no_min_body_rate(mut self) -> Self {
        self.timeouts.min_rate = None;
        self
    }

    /// Lets these callers shorten the deadline with
    /// [`REQUEST_DEADLINE_HEADER`]. The peer address comes from the
    /// [`PeerAddr`](crate::context::PeerAddr) extension that [`serve`](crate::serve())
    /// sets, or axum's `ConnectInfo<SocketAddr>`; without either, nobody is
    /// trusted. Default: [`TrustedNetworks::nobody`].
    pub fn trust_inbound(mut self, trusted: TrustedNetworks) -> Self {
        self.trusted = trusted;
        self
    }

    /// The header a trusted caller's deadline is read from. Default:
    /// [`REQUEST_DEADLINE_HEADER`] (`x-request-deadline-ms`).
    pub fn inbound_header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The configured deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S> Layer<S> for RequestDeadlineLayer {
    type Service = RequestDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequestDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct RequestDeadline<S> {
    inner: S,
    layer: RequestDeadlineLayer,
}

impl<S> RequestDeadline<S> {
    inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestDeadline<S>
where
    S: Service<Request<TimedBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = RequestDeadlineFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let layer = &self.layer;
        let inbound = if layer.trusted.trusts_nobody() {
            None
        } else {
            peer_ip(&parts.extensions)
                .filter(|peer| layer.trusted.is_trusted(*peer))
                .and_then(|_| inbound_deadline(&parts.headers, &layer.header))
        };
        let arrived = parts
            .extensions
            .get::<crate::context::Arrival>()
            .map(|arrival| arrival.0);
        let budget = Budget::effective(layer.timeout, inbound, arrived);
        parts.extensions.insert(budget);
        let context = RequestContext::from_extensions(&parts.extensions);
        let trace = parts
            .extensions
            .get::<crate::context::TraceContext>()
            .cloned();
        let http1 = parts.version <= Version::HTTP_11;
        // A body that has already ended never makes the handler wait for
        // the client: nothing to watch, and it was read to its end.
        let watch = (!body.is_end_stream()).then(BodyWatch::new);
        let request =
            Request::from_parts(parts, TimedBody::new(body, watch.clone(), layer.timeouts));
        let scope = Scope {
            budget,
            request: context.clone(),
            trace,
        };
        let future = sync_in_scope(scope.clone(), || self.inner.call(request));
        RequestDeadlineFuture {
            state: State::Running {
                future: Box::pin(in_scope(scope, future)),
                sleep: None,
                budget,
                status: layer.status,
                watch,
                context,
                http1,
            },
        }
    }
}

pin_project! {
    /// The response future of [`RequestDeadline`].
    pub struct RequestDeadlineFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<F, B> {
        Running {
            // Boxed once here: otherwise the handler's future (and the
            // router's and the decompression's inside it) is moved again by
            // every layer outside, on every request; the allocation costs
            // less than the moves (callgrind, over HTTP: about 320
            // instructions a request less; a panicking request's unwind 5 %
            // cheaper, with fewer frames).
            future: Pin<Box<TaskLocalFuture<Scope, F>>>,
            // Made the first time the inner future waits: a request answered
            // at once never touches the timer, and the timer's bulk stays
            // off the future, which every layer outside moves.
            sleep: Option<Pin<Box<Sleep>>>,
            budget: Budget,
            status: StatusCode,
            watch: Option<Arc<BodyWatch>>,
            context: RequestContext,
            http1: bool,
        },
        Done { _body: std::marker::PhantomData<fn() -> B> },
    }
}

impl<F, B, E> Future for RequestDeadlineFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ProblemOr<B>>, E>;

    // Long for a reason: the deadline's state machine (running, refused,
    // done) in one match, so that each state's exit is seen beside the others.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (refused, close, context, http1) = match self.as_mut().project().state.project() {
            StateProj::Done { .. } => panic!("RequestDeadlineFuture polled after completion"),
            StateProj::Running {
                future,
                sleep,
                budget,
                status,
                watch,
                context,
                http1,
            } => {
                if let Poll::Ready(result) = future.as_mut().poll(cx) {
                    let response = result?;
                    let outcome = match watch.as_ref().and_then(|watch| watch.slot.get()) {
                        Some(refused) => {
                            let mut response = Problem::refuse_with(refused, context.clone());
                            if *http1 {
                                close_connection(&mut response);
                            }
                            response
                        }
                        None => response.map(ProblemOr::inner),
                    };
                    self.project().state.project_replace(State::Done {
                        _body: std::marker::PhantomData,
                    });
                    return Poll::Ready(Ok(outcome));
                }
                let sleep = sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(budget.deadline())));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // A slow-client refusal found before the handler answered
                // still names the client, not the deadline.
                let watch = watch.as_deref();
                let refused = watch.and_then(|watch| watch.slot.get()).unwrap_or_else(|| {
                    Refused::new(DeadlineRefusal::Exceeded {
                        exceeded: DeadlineExceeded::new(
                            budget,
                            watch.is_some_and(BodyWatch::is_waiting),
                        ),
                        status: *status,
                    })
                });
                let close = watch.is_some_and(|watch| !watch.is_finished());
                (refused, close, context.clone(), *http1)
            }
        };
        // Drops the handler's future now, before the answer is written.
        self.project().state.project_replace(State::Done {
            _body: std::marker::PhantomData,
        });
        let slow_client = matches!(
            refused.downcast_ref::<DeadlineRefusal>(),
            Some(DeadlineRefusal::BodyIdle { .. } | DeadlineRefusal::BodyTooSlow { .. })
        );
        let mut response = Problem::refuse_with(refused, context);
        if http1 && (close || slow_client) {
            close_connection(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}

/// An answer sent before the request body was read to its end: the rest of
/// the body is still on the connection, so it cannot carry another request.
fn close_connection<B>(response: &mut Response<B>) {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
}
