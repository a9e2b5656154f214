//! [`OutboundLayer`] and its service, [`Outbound`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{OutboundError, OutboundErrorKind};
use crate::context::{
    current_budget, current_request, current_trace, declared_length, instant_after, traceparent,
    BudgetOrigin, SpanId, BAGGAGE_HEADER, REQUEST_DEADLINE_HEADER, REQUEST_ID_HEADER,
    TRACEPARENT_HEADER, TRACESTATE_HEADER,
};

use crate::error::BoxError;

/// The default timeout of an outbound call made outside any request's scope:
/// 10 s, the same as [`DEFAULT_REQUEST_DEADLINE`](crate::deadline::DEFAULT_REQUEST_DEADLINE).
pub const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The default margin kept from the caller's remaining budget: 50 ms, time
/// for the caller to turn a failed call into its own answer before its own
/// deadline passes.
pub const DEFAULT_OUTBOUND_MARGIN: Duration = Duration::from_millis(50);

/// The default largest response body read: 1 MiB, the same bound the
/// [body limit](crate::input::BodyLimitLayer) sets on requests by default.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Bounds the outbound HTTP calls of a service by its own timeout and by the
/// budget of the request it serves, forwards the request's deadline, id and
/// trace, and reads the response body within a size limit.
///
/// Works over any HTTP client that is a `tower::Service<Request<B>>` (for
/// example hyper-util's `Client`).
///
/// - **Timeout**: `min(own timeout, caller's remaining budget - margin)`,
///   covering the response head and the whole body. The caller's budget is
///   [`current_budget()`](crate::context::current_budget), set by the deadline layers; no budget
///   left means the call is not made at all.
/// - **Headers** (each only if the request has none yet):
///   [`REQUEST_DEADLINE_HEADER`] with the timeout in milliseconds, the
///   inbound request's id in the observe layer's request-id header
///   (`x-request-id` unless configured otherwise), `traceparent` carrying
///   the inbound trace with this call's own span id as the parent-id (each
///   call a distinct one, logged at `DEBUG` as `span_id` with the server
///   span's `parent_span_id`), and the inbound `tracestate` and `baggage`
///   (the latter only ever taken from trusted peers).
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
/// use tower_harden::outbound::OutboundLayer;
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
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            deadline_header: REQUEST_DEADLINE_HEADER,
        }
    }

    /// Time kept from the caller's remaining budget. Default:
    /// [`DEFAULT_OUTBOUND_MARGIN`] (50 ms).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The largest response body read. Default:
    /// [`DEFAULT_MAX_RESPONSE_BYTES`] (1 MiB).
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
    inner_service_accessors!();
}

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
        let target = target_of(&request);
        let (budget, origin) = match self.layer.budget() {
            Ok(budget) => budget,
            Err(kind) => {
                let error = OutboundError {
                    target,
                    budget: Duration::ZERO,
                    origin: BudgetOrigin::Inherited,
                    elapsed: Duration::ZERO,
                    status: None,
                    kind,
                };
                return Box::pin(async move { Err(error) });
            }
        };
        // The call's own span: with the `opentelemetry` feature an exported
        // client span, child of the server span, whose id the callee sees
        // as its parent; without it, an id of its own, on a DEBUG event.
        #[cfg(feature = "opentelemetry")]
        let (span, call) = super::otel::client_span(&request);
        #[cfg(not(feature = "opentelemetry"))]
        let call = None;
        self.layer
            .forward_context(request.headers_mut(), budget, call);
        let limit = self.layer.max_response_bytes;
        let response = self.inner.call(request);
        let future = async move {
            let deadline = instant_after(started, budget);
            let result = read_response(response, deadline, limit).await;
            #[cfg(feature = "opentelemetry")]
            {
                let span = tracing::Span::current();
                match &result {
                    Ok(response) => {
                        span.record("http.response.status_code", response.status().as_u16());
                        if response.status().is_server_error() {
                            span.record("otel.status_code", "error");
                        }
                    }
                    Err(_) => {
                        span.record("otel.status_code", "error");
                    }
                }
            }
            result.map_err(|(status, kind)| OutboundError {
                target,
                budget,
                origin,
                elapsed: started.elapsed(),
                status,
                kind,
            })
        };
        #[cfg(feature = "opentelemetry")]
        let future = tracing::Instrument::instrument(future, span);
        Box::pin(future)
    }
}

impl OutboundLayer {
    /// The call's budget: the layer's own timeout, or the caller's remaining
    /// budget less the margin when that is shorter; none left is an error.
    fn budget(&self) -> Result<(Duration, BudgetOrigin), OutboundErrorKind> {
        let Some(caller) = current_budget() else {
            return Ok((self.timeout, BudgetOrigin::Configured));
        };
        let remaining = caller.remaining();
        let usable = remaining.saturating_sub(self.margin);
        if usable.is_zero() {
            Err(OutboundErrorKind::BudgetExhausted {
                remaining,
                margin: self.margin,
            })
        } else if usable < self.timeout {
            Ok((usable, BudgetOrigin::Inherited))
        } else {
            Ok((self.timeout, BudgetOrigin::Configured))
        }
    }

    /// Writes the deadline, and the inbound request's id and trace, into an
    /// outbound request's headers, each only where the caller set none.
    fn forward_context(&self, headers: &mut HeaderMap, budget: Duration, call: Option<SpanId>) {
        if !headers.contains_key(&self.deadline_header) {
            headers.insert(self.deadline_header.clone(), millis_header(budget));
        }
        let Some(inbound) = current_request() else {
            return;
        };
        let trace = current_trace();
        if let Some(id) = inbound.request_id {
            let name = trace
                .as_ref()
                .and_then(|trace| trace.request_id_header().cloned())
                .unwrap_or(REQUEST_ID_HEADER);
            if !headers.contains_key(&name) {
                if let Ok(value) = HeaderValue::from_str(id.as_str()) {
                    headers.insert(name, value);
                }
            }
        }
        if headers.contains_key(&TRACEPARENT_HEADER) {
            return;
        }
        // The call is a span of its own (a client span), child of this
        // server's span: its id is the parent-id the callee sees, so that
        // every call names a distinct parent. With the caller's sampling
        // decision, `tracestate` and `baggage`; without the observe layer's
        // context, a span of the inbound trace, not sampled (we did not
        // decide to sample).
        let call = call.unwrap_or_else(SpanId::generate);
        let (parent, trace_state, baggage) = match trace {
            Some(trace) => {
                tracing::debug!(
                    target: "tower_harden::outbound",
                    trace_id = %trace.trace_id(),
                    span_id = %call,
                    parent_span_id = %trace.span_id(),
                    "outbound call"
                );
                (
                    Some(trace.traceparent_for(call)),
                    trace.trace_state().cloned(),
                    trace.baggage().map(str::to_owned),
                )
            }
            None => (
                inbound.trace_id.map(|trace| traceparent(trace, call, 0)),
                None,
                None,
            ),
        };
        if let Some(Ok(value)) = parent.map(HeaderValue::try_from) {
            headers.insert(TRACEPARENT_HEADER, value);
        }
        if let Some(Ok(value)) = trace_state.map(|state| HeaderValue::from_str(state.as_str())) {
            headers.insert(TRACESTATE_HEADER, value);
        }
        if !headers.contains_key(&BAGGAGE_HEADER) {
            if let Some(Ok(value)) = baggage.map(HeaderValue::try_from) {
                headers.insert(BAGGAGE_HEADER, value);
            }
        }
    }
}

/// Waits for the response head and reads its body whole, both by
/// `deadline`, the body within `limit` bytes. A failure is the status (once
/// known) and what went wrong.
async fn read_response<F, ResBody, E>(
    response: F,
    deadline: Instant,
    limit: u64,
) -> Result<Response<Bytes>, (Option<StatusCode>, OutboundErrorKind)>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    E: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    let response = match tokio::time::timeout_at(deadline, response).await {
        Err(_) => return Err((None, OutboundErrorKind::TimedOut)),
        Ok(Err(error)) => return Err((None, OutboundErrorKind::Transport(error.into()))),
        Ok(Ok(response)) => response,
    };
    let status = Some(response.status());
    if let Some(declared) = declared_length(response.headers()).filter(|length| *length > limit) {
        let kind = OutboundErrorKind::BodyTooLarge {
            limit,
            declared: Some(declared),
        };
        return Err((status, kind));
    }
    let (parts, body) = response.into_parts();
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let collected =
        tokio::time::timeout_at(deadline, Limited::new(body, limit_usize).collect()).await;
    match collected {
        Err(_) => Err((status, OutboundErrorKind::BodyTimedOut)),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err((
            status,
            OutboundErrorKind::BodyTooLarge {
                limit,
                declared: None,
            },
        )),
        Ok(Err(error)) => Err((status, OutboundErrorKind::BodyRead(error))),
        Ok(Ok(body)) => Ok(Response::from_parts(parts, body.to_bytes())),
    }
}
