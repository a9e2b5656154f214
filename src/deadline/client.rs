use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderName, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::budget::current_request;
use super::inbound::REQUEST_DEADLINE_HEADER;
use super::{current, BudgetOrigin};
use crate::input::{BoxError, DEFAULT_BODY_LIMIT};

/// The request id header the outbound layer forwards.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C trace context header the outbound layer forwards.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// The default timeout of an outbound call made outside any request's scope:
/// 10 s, the same as [`DEFAULT_REQUEST_DEADLINE`](super::DEFAULT_REQUEST_DEADLINE).
pub const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The default margin kept from the caller's remaining budget: 50 ms, time
/// for the caller to turn a failed call into its own answer before its own
/// deadline passes.
pub const DEFAULT_OUTBOUND_MARGIN: Duration = Duration::from_millis(50);

/// Bounds the outbound HTTP calls of a service by its own timeout and by the
/// budget of the request it serves, forwards the request's deadline, id and
/// trace, and reads the response body within a size limit.
///
/// Works over any HTTP client that is a `tower::Service<Request<B>>` (for
/// example hyper-util's `Client`).
///
/// - **Timeout**: `min(own timeout, caller's remaining budget - margin)`,
///   covering the response head and the whole body. The caller's budget is
///   [`current()`](super::current), set by the deadline layers; no budget
///   left means the call is not made at all.
/// - **Headers** (each only if the request has none yet):
///   [`REQUEST_DEADLINE_HEADER`] with the timeout in milliseconds, the
///   inbound request's id in `x-request-id`, and `traceparent` carrying the
///   inbound trace id with a fresh span id.
/// - **Body**: read whole into [`Bytes`], at most
///   [`max_response_bytes`](Self::max_response_bytes); a declared
///   `Content-Length` over it fails before any byte is read.
/// - **Errors**: an [`OutboundError`] with the target, budget, elapsed time
///   and status (once known), and the cause as its `source()`. A non-2xx
///   status is not an error here: the response is returned for the caller
///   to judge.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, Layer, ServiceExt};
/// use tower_harden::deadline::OutboundLayer;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = service_fn(|request: Request<Full<Bytes>>| async move {
///     assert!(request.headers().contains_key("x-request-deadline-ms"));
///     Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from_static(b"{}"))))
/// });
/// let client = OutboundLayer::new(Duration::from_secs(2)).layer(client);
/// let response = client
///     .oneshot(Request::get("http://users.internal/users/7").body(Full::default()).unwrap())
///     .await
///     .unwrap();
/// assert_eq!(response.body(), "{}");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutboundLayer {
    timeout: Duration,
    margin: Duration,
    max_response_bytes: u64,
    deadline_header: HeaderName,
}

impl Default for OutboundLayer {
    fn default() -> Self {
        Self::new(DEFAULT_OUTBOUND_TIMEOUT)
    }
}

impl OutboundLayer {
    /// Outbound calls bounded by `timeout` and by the caller's budget.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            margin: DEFAULT_OUTBOUND_MARGIN,
            max_response_bytes: DEFAULT_BODY_LIMIT,
            deadline_header: REQUEST_DEADLINE_HEADER,
        }
    }

    /// Time kept from the caller's remaining budget. Default:
    /// [`DEFAULT_OUTBOUND_MARGIN`] (50 ms).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The largest response body read. Default: 1 MiB
    /// ([`DEFAULT_BODY_LIMIT`], the same bound as on requests).
    pub fn max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The header the deadline is forwarded in. Default:
    /// [`REQUEST_DEADLINE_HEADER`] (`x-request-deadline-ms`).
    pub fn deadline_header(mut self, header: HeaderName) -> Self {
        self.deadline_header = header;
        self
    }
}

impl<S> Layer<S> for OutboundLayer {
    type Service = Outbound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Outbound {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`OutboundLayer`].
#[derive(Debug, Clone)]
pub struct Outbound<S> {
    inner: S,
    layer: OutboundLayer,
}

impl<S> Outbound<S> {
    /// The inner client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// An outbound call failed: where to, within which budget, after how long,
/// with which status (if the response head arrived). The cause is the
/// `source()`.
#[derive(Debug, thiserror::Error)]
#[error("call to {target} failed after {} ms of a {} ms {origin} budget{}", elapsed.as_millis(), budget.as_millis(), StatusSuffix(*status))]
pub struct OutboundError {
    target: String,
    budget: Duration,
    origin: BudgetOrigin,
    elapsed: Duration,
    status: Option<StatusCode>,
    #[source]
    kind: OutboundErrorKind,
}

struct StatusSuffix(Option<StatusCode>);

impl fmt::Display for StatusSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, " (status {})", status.as_u16()),
            None => Ok(()),
        }
    }
}

/// What went wrong in an outbound call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundErrorKind {
    /// The caller's budget, less the margin, was already spent: the call was
    /// not made.
    #[error("no budget left for the call ({} ms remained, the margin is {} ms)", remaining.as_millis(), margin.as_millis())]
    BudgetExhausted {
        /// What the caller had left.
        remaining: Duration,
        /// The margin kept from it.
        margin: Duration,
    },
    /// The response head did not arrive in time.
    #[error("timed out waiting for the response")]
    TimedOut,
    /// The response body did not arrive in time.
    #[error("timed out reading the response body")]
    BodyTimedOut,
    /// The client failed (connect, write, protocol).
    #[error("the request failed")]
    Transport(#[source] BoxError),
    /// The response body is larger than allowed.
    #[error("the response body exceeds {limit} bytes{}", declared.map(|declared| format!(" (declared {declared})")).unwrap_or_default())]
    BodyTooLarge {
        /// The limit.
        limit: u64,
        /// The declared `Content-Length`, if that is how it was known.
        declared: Option<u64>,
    },
    /// Reading the response body failed.
    #[error("reading the response body failed")]
    BodyRead(#[source] BoxError),
}

impl OutboundError {
    /// The target host (and port), from the request URI.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The time budget of the call.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Where the budget came from: the layer's own timeout
    /// ([`BudgetOrigin::Configured`]) or the caller's
    /// ([`BudgetOrigin::Inherited`]).
    pub fn origin(&self) -> BudgetOrigin {
        self.origin
    }

    /// How long the call ran.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The response status, if the head arrived.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// What went wrong.
    pub fn kind(&self) -> &OutboundErrorKind {
        &self.kind
    }

    /// Whether the budget ran out (before or during the call).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            OutboundErrorKind::TimedOut
                | OutboundErrorKind::BodyTimedOut
                | OutboundErrorKind::BudgetExhausted { .. }
        )
    }
}

/// The host and port a request goes to, bounded (the URI authority is
/// already restricted to URI characters by `http`).
/// The target's host and port, for errors and logs: never the userinfo
/// (`user:password@`) an authority may carry.
fn target_of<B>(request: &Request<B>) -> String {
    match request.uri().authority() {
        Some(authority) => {
            let host: String = authority.host().chars().take(255).collect();
            match authority.port_u16() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        }
        None => "(no authority)".to_owned(),
    }
}

/// A fresh, non-zero W3C span id from the random bits of a UUIDv7.
fn fresh_span_id() -> u64 {
    let bytes = uuid::Uuid::now_v7().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[8..]);
    u64::from_be_bytes(span).max(1)
}

fn millis_header(duration: Duration) -> HeaderValue {
    let millis = u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 9_999_999_999);
    HeaderValue::from(millis)
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Outbound<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Bytes>;
    type Error = OutboundError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, OutboundError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| OutboundError {
            target: "(not yet known)".to_owned(),
            budget: self.layer.timeout,
            origin: BudgetOrigin::Configured,
            elapsed: Duration::ZERO,
            status: None,
            kind: OutboundErrorKind::Transport(error.into()),
        })
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = Instant::now();
        let layer = &self.layer;
        let target = target_of(&request);
        let (budget, origin) = match current() {
            Some(caller) => {
                let remaining = caller.remaining();
                let usable = remaining.saturating_sub(layer.margin);
                if usable.is_zero() {
                    let error = OutboundError {
                        target,
                        budget: Duration::ZERO,
                        origin: BudgetOrigin::Inherited,
                        elapsed: Duration::ZERO,
                        status: None,
                        kind: OutboundErrorKind::BudgetExhausted {
                            remaining,
                            margin: layer.margin,
                        },
                    };
                    return Box::pin(async move { Err(error) });
                }
                if usable < layer.timeout {
                    (usable, BudgetOrigin::Inherited)
                } else {
                    (layer.timeout, BudgetOrigin::Configured)
                }
            }
            None => (layer.timeout, BudgetOrigin::Configured),
        };
        let headers = request.headers_mut();
        if !headers.contains_key(&layer.deadline_header) {
            headers.insert(layer.deadline_header.clone(), millis_header(budget));
        }
        if let Some(inbound) = current_request() {
            if let Some(id) = inbound.request_id {
                if !headers.contains_key(&REQUEST_ID_HEADER) {
                    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
                        headers.insert(REQUEST_ID_HEADER, value);
                    }
                }
            }
            if !headers.contains_key(&TRACEPARENT_HEADER) {
                // This server's span is the parent of the call, with the
                // caller's sampling decision and `tracestate`; without the
                // observe layer's context, a fresh span of the inbound trace,
                // not sampled (we did not decide to sample).
                let (traceparent, trace_state) = match super::budget::current_trace() {
                    Some(trace) => (
                        trace.traceparent(),
                        trace.trace_state().map(|state| state.as_str().to_owned()),
                    ),
                    None => match inbound.trace_id {
                        Some(trace) => (format!("00-{trace}-{:016x}-00", fresh_span_id()), None),
                        None => (String::new(), None),
                    },
                };
                if let Ok(value) = HeaderValue::from_str(&traceparent) {
                    if !traceparent.is_empty() {
                        headers.insert(TRACEPARENT_HEADER, value);
                    }
                }
                if let Some(Ok(value)) = trace_state.map(|state| HeaderValue::from_str(&state)) {
                    headers.insert(http::header::HeaderName::from_static("tracestate"), value);
                }
            }
        }
        let limit = layer.max_response_bytes;
        let response = self.inner.call(request);
        Box::pin(async move {
            let deadline = super::budget::instant_after(started, budget);
            let fail = |status, kind| OutboundError {
                target: target.clone(),
                budget,
                origin,
                elapsed: started.elapsed(),
                status,
                kind,
            };
            let response = match tokio::time::timeout_at(deadline, response).await {
                Err(_) => return Err(fail(None, OutboundErrorKind::TimedOut)),
                Ok(Err(error)) => {
                    return Err(fail(None, OutboundErrorKind::Transport(error.into())))
                }
                Ok(Ok(response)) => response,
            };
            let status = Some(response.status());
            let declared = crate::input::declared_length(response.headers());
            if let Some(declared) = declared.filter(|declared| *declared > limit) {
                return Err(fail(
                    status,
                    OutboundErrorKind::BodyTooLarge {
                        limit,
                        declared: Some(declared),
                    },
                ));
            }
            let (parts, body) = response.into_parts();
            let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
            let collected =
                tokio::time::timeout_at(deadline, Limited::new(body, limit_usize).collect()).await;
            match collected {
                Err(_) => Err(fail(status, OutboundErrorKind::BodyTimedOut)),
                Ok(Err(error)) if error.is::<LengthLimitError>() => Err(fail(
                    status,
                    OutboundErrorKind::BodyTooLarge {
                        limit,
                        declared: None,
                    },
                )),
                Ok(Err(error)) => Err(fail(status, OutboundErrorKind::BodyRead(error))),
                Ok(Ok(body)) => Ok(Response::from_parts(parts, body.to_bytes())),
            }
        })
    }
}
