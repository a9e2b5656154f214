use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{HeaderName, USER_AGENT};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Level, Span};

use super::body::ObservedBody;
use super::fields::{client_address, ip_text, method_name, RouteTemplate, TARGET};
use super::future::ObserveFuture;
use super::outcome::{Outcome, OutcomeConfig};
use super::panic::{install_hook, payload_message, Catching};
use super::route::RouteClassifier;
use crate::context::{
    RequestContext, RequestId, TraceContext, TraceParent, TraceState, TrustedNetworks,
    BAGGAGE_HEADER, REQUEST_ID_HEADER, TRACEPARENT_HEADER, TRACESTATE_HEADER,
};
use crate::telemetry::{escape, redact_escape, FloodGateLease, Redactor};

/// Observes every request: correlation ids, one span, one outcome event,
/// panics caught, metrics.
///
/// For each request it
/// - takes the inbound `x-request-id` if it is short and plain, or generates a
///   UUIDv7, puts it in the request's extensions (as [`RequestId`]) and on the
///   response;
/// - continues the caller's trace from a valid `traceparent` (and a valid
///   `tracestate`), or starts a new one, and puts [`TraceContext`] and
///   [`TraceId`](crate::context::TraceId) in the request's extensions;
/// - opens a span holding `request_id` and `trace_id` (and, with
///   [`full_span`](ObserveLayer::full_span), OpenTelemetry's HTTP fields), in
///   which the inner service runs, so every event it logs carries them;
/// - catches a panic in `call` or in the response future, and answers 500
///   with a problem that holds the request id;
/// - logs one outcome event when the response body is done (latency and
///   bytes), at a level by status, with the error chain and refusal context
///   of a [`Refused`](crate::error::Refused) found in the response.
///
/// With axum, add it with `Router::layer`: axum runs it for each route after
/// routing (and for the fallback), so `http.route` is the matched route
/// template, or `_unmatched`. Around the whole router (`ServiceBuilder` over
/// a `Router`) routing has not happened yet and every request logs
/// `_unmatched`.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_harden::observe::ObserveLayer;
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "hello" }))
///     .layer(ObserveLayer::new());
/// ```
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_request_id_len: usize,
    pub(crate) trust_request_id: bool,
    pub(crate) trust_trace_context: bool,
    /// Peers whose request id, `traceparent`, `tracestate` and `baggage`
    /// are believed.
    pub(crate) trusted_context: TrustedNetworks,
    /// The request-id header when it is not `x-request-id`, handed to
    /// outbound calls with the trace context.
    pub(crate) custom_request_id_header: Option<HeaderName>,
    pub(crate) max_trace_state_len: usize,
    pub(crate) logged_headers: Vec<HeaderName>,
    pub(crate) span_level: Level,
    /// [`ObserveLayer::route_classifier`].
    pub(crate) route_classifier: Option<RouteClassifier>,
    /// What each request's outcome takes a copy of.
    pub(crate) outcome: OutcomeConfig,
    /// Owns the gate `outcome.flood_gate` points to.
    pub(crate) flood_gate: Arc<FloodGateLease>,
}

impl Default for ObserveLayer {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of header names that mark a header as secret: a header whose
/// name contains one never reaches a log, whatever the allowlist says.
const SECRET_HEADER_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "key",
    "session",
    "cookie",
    "password",
    "credential",
    // Identity assertions proxies add: `x-amzn-oidc-data`,
    // `x-goog-iap-jwt-assertion`, SAML and signatures.
    "jwt",
    "oidc",
    "saml",
    "assertion",
    "signature",
];

/// Whether a header is never logged: its name contains one of
/// [`SECRET_HEADER_PARTS`] (names are lowercase).
fn is_secret_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    SECRET_HEADER_PARTS.iter().any(|part| name.contains(part))
}

impl ObserveLayer {
    /// The layer with its defaults (each builder method names its own).
    ///
    /// Installs, once per process, a panic hook chained to the previous one
    /// (see [`ObserveLayer::forward_caught_panics`]).
    pub fn new() -> Self {
        install_hook();
        let flood_gate = FloodGateLease::new(Self::DEFAULT_FAILURE_LINES_PER_SECOND);
        Self {
            config: Arc::new(Config {
                max_request_id_len: RequestId::DEFAULT_MAX_LEN,
                trust_request_id: true,
                trust_trace_context: true,
                trusted_context: TrustedNetworks::private(),
                custom_request_id_header: None,
                max_trace_state_len: TraceState::DEFAULT_MAX_LEN,
                logged_headers: Vec::new(),
                span_level: Level::ERROR,
                route_classifier: None,
                outcome: OutcomeConfig {
                    flood_gate: Some(flood_gate.gate()),
                    ..OutcomeConfig::default()
                },
                flood_gate: Arc::new(flood_gate),
            }),
        }
    }

    /// [`ObserveLayer::failure_lines_per_second`]'s default.
    pub const DEFAULT_FAILURE_LINES_PER_SECOND: u32 = 20;

    /// At most this many outcome lines per second for each `error.type`
    /// (refusals, sheds, panics, handler and service errors; never a
    /// success), so that a flood of cheap failures cannot make the log the
    /// bottleneck. The first line written in a later second carries the
    /// field `suppressed`: how many lines of its `error.type` were left out
    /// since the last one written. Metrics count every request. A panic's
    /// backtrace is captured only when its line will be written. Counted
    /// per layer (its clones share the count). `0` writes every line.
    /// Default [`DEFAULT_FAILURE_LINES_PER_SECOND`](Self::DEFAULT_FAILURE_LINES_PER_SECOND).
    pub fn failure_lines_per_second(mut self, lines: u32) -> Self {
        let flood_gate = FloodGateLease::new(lines);
        let config = self.config();
        config.outcome.flood_gate = (lines > 0).then(|| flood_gate.gate());
        config.flood_gate = Arc::new(flood_gate);
        self
    }

    pub(super) fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The header that carries the request id, in and out. Default
    /// `x-request-id`, the de facto name (nginx, Heroku, tower-http).
    pub fn request_id_header(mut self, name: HeaderName) -> Self {
        // A name parsed at run time (from a config file) is reference
        // counted, and every request clones it: one shared counter that all
        // threads write. The default name, however it was made, becomes the
        // static one, whose clones write nothing.
        let custom = (name != REQUEST_ID_HEADER).then(|| name.clone());
        self.config().custom_request_id_header = custom;
        self.config().outcome.request_id_header = if name == REQUEST_ID_HEADER {
            REQUEST_ID_HEADER
        } else {
            name
        };
        self
    }

    /// The peers whose inbound request id, `traceparent`, `tracestate` and
    /// `baggage` are believed, decided on the connection's peer address
    /// ([`PeerAddr`](crate::context::PeerAddr) or axum's `ConnectInfo`; a
    /// request without one is from nobody trusted). Default
    /// [`TrustedNetworks::private()`]: loopback, RFC 1918 and IPv6 unique
    /// local addresses, where service meshes and internal callers live.
    ///
    /// From any other peer a request gets a generated id (the caller's, if
    /// plain, is logged as `request_id.caller`) and a new trace, not
    /// sampled whatever its `traceparent` says (which is logged as
    /// `traceparent.refused`), and its `baggage` is not passed on.
    /// [`TrustedNetworks::everyone()`] believes every peer.
    pub fn trust_inbound_context(mut self, trusted: TrustedNetworks) -> Self {
        self.config().trusted_context = trusted;
        self
    }

    /// The longest inbound request id accepted. Default 128
    /// ([`RequestId::DEFAULT_MAX_LEN`]): room for any UUID, ULID or
    /// prefixed id, no room for a payload.
    pub fn max_request_id_len(mut self, max_len: usize) -> Self {
        self.config().max_request_id_len = max_len;
        self
    }

    /// Whether to accept a plain inbound request id at all, from the
    /// [trusted peers](Self::trust_inbound_context). Default `true`;
    /// switch it off on an edge server whose clients are not trusted to
    /// choose ids, so every request gets a generated one.
    pub fn trust_inbound_request_id(mut self, trust: bool) -> Self {
        self.config().trust_request_id = trust;
        self
    }

    /// Whether to continue the caller's trace from `traceparent`, for the
    /// [trusted peers](Self::trust_inbound_context). Default `true`; when
    /// off, every request starts a new trace.
    pub fn trust_inbound_trace_context(mut self, trust: bool) -> Self {
        self.config().trust_trace_context = trust;
        self
    }

    /// The longest `tracestate` kept; a longer one is dropped (the trace
    /// still continues). Default 512, the length W3C Trace Context asks
    /// every vendor to propagate.
    pub fn max_trace_state_len(mut self, max_len: usize) -> Self {
        self.config().max_trace_state_len = max_len;
        self
    }

    /// The cap, in bytes, on each piece of untrusted request text in the log
    /// (path, query, header values). Default 256.
    pub fn max_field_len(mut self, max_len: usize) -> Self {
        self.config().outcome.max_field_len = max_len;
        self
    }

    /// The cap, in bytes, on each error message and on the whole error
    /// chain in the log. Default 2048.
    pub fn max_error_len(mut self, max_len: usize) -> Self {
        self.config().outcome.max_error_len = max_len;
        self
    }

    /// Logs this request header (escaped and capped) in the outcome event's
    /// `http.request.headers` field. Default: none (besides `User-Agent`,
    /// always logged as `user_agent.original`). A header whose name
    /// contains `auth`, `token`, `secret`, `key`, `session`, `cookie`,
    /// `password`, `credential`, `jwt`, `oidc`, `saml`, `assertion` or
    /// `signature` (`Authorization`, `Cookie`, `X-Api_Key`,
    /// `X-Amzn-Oidc-Data`, ...) is never logged: asking for it is ignored.
    /// The values of the others go through the
    /// [redactor](Self::redactor), as error text does.
    pub fn log_header(mut self, name: HeaderName) -> Self {
        if !is_secret_header(&name) && !self.config.logged_headers.contains(&name) {
            self.config().logged_headers.push(name);
        }
        self
    }

    /// The redaction run on every error message, error chain, panic
    /// message and logged header value before it is escaped and capped.
    /// Default [`Redactor::new()`]: credentials in URLs, key-value secrets,
    /// `Bearer`/`Basic` credentials; [`Redactor::off()`] turns it off.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.config().outcome.redactor = redactor;
        self
    }

    /// Whether to log the query string (escaped and capped) as `url.query`.
    /// Default `false`: query strings often carry tokens and personal data.
    pub fn log_query(mut self, log: bool) -> Self {
        self.config().outcome.log_query = log;
        self
    }

    /// The level of the request's span. Default `ERROR`, so the span (and
    /// the `request_id` it gives every event inside it) is kept by any filter
    /// that keeps any event; lower it to filter the span out on its own.
    pub fn span_level(mut self, level: Level) -> Self {
        self.config().span_level = level;
        self
    }

    /// The levels of the outcome event for 1xx/2xx/3xx, 4xx, and 5xx (or an
    /// inner service error). Default `INFO`, `WARN`, `ERROR`.
    pub fn levels(mut self, success: Level, client_error: Level, server_error: Level) -> Self {
        let config = self.config();
        config.outcome.success_level = success;
        config.outcome.client_error_level = client_error;
        config.outcome.server_error_level = server_error;
        self
    }

    /// Whether a panic caught inside a request also goes to the panic hook
    /// that was installed before this layer's (by default, the one printing
    /// to stderr). Default `false`: the panic is reported once, as the
    /// request's outcome event, with its message and location.
    pub fn forward_caught_panics(mut self, forward: bool) -> Self {
        self.config().outcome.forward_panics = forward;
        self
    }

    /// Whether the request's span also carries `http.request.method`,
    /// `http.route`, `url.path` and `client.address`, and records
    /// `http.response.status_code` when the response is ready, as
    /// OpenTelemetry's HTTP server span does (the outcome event then leaves
    /// them to the span, but for the status). Default `false`: the span holds
    /// the request and trace ids, which every event inside the request
    /// needs, and the one outcome event holds the rest. A JSON
    /// `tracing-subscriber` writes a span's fields when it opens and parses
    /// them back for every event, so a field on the span costs it several
    /// times one on the event (`benches/README.md` has the figures), and
    /// a field recorded after the span opened costs it a parse and a rewrite
    /// of all of them. Switch it on when spans are exported
    /// (`tracing-opentelemetry`).
    pub fn full_span(mut self, full: bool) -> Self {
        self.config().outcome.full_span = full;
        self
    }
}

// The builder methods of the opt-in features that live in their own files
// (`route.rs`, `rejection.rs`), here so that those files need not import
// the layer.
impl ObserveLayer {
    /// Names the route template of a request axum did not route (a service
    /// that is not an axum `Router`, or this layer put around one with
    /// `ServiceBuilder`): `http.route` in the log and the `route` label of
    /// metrics. `None`, or no classifier (the default), is `_unmatched`.
    /// Return templates, not paths: every distinct value is a metrics series.
    ///
    /// ```
    /// use std::borrow::Cow;
    /// use tower_harden::observe::ObserveLayer;
    ///
    /// let layer = ObserveLayer::new().route_classifier(|_method, uri| {
    ///     let path = uri.path();
    ///     if path == "/health" {
    ///         Some(Cow::Borrowed("/health"))
    ///     } else if path.starts_with("/users/") {
    ///         Some(Cow::Borrowed("/users/{id}"))
    ///     } else {
    ///         None
    ///     }
    /// });
    /// # drop(layer);
    /// ```
    pub fn route_classifier<F>(mut self, classify: F) -> Self
    where
        F: Fn(&http::Method, &http::Uri) -> Option<std::borrow::Cow<'static, str>>
            + Send
            + Sync
            + 'static,
    {
        self.config().route_classifier = Some(RouteClassifier(Arc::new(classify)));
        self
    }

    /// Whether axum's plain-text extractor rejections become problems: a
    /// `text/plain` response of status 400, 413, 415 or 422 (what axum's
    /// `Json`, `Form`, `Path`, `Query` and `RawForm` rejections answer, and
    /// a missing or wrong `Content-Type`) is answered as an
    /// `application/problem+json` body with the request id, the text kept
    /// as `detail` (it describes the client's own input: "Failed to parse
    /// the request body as JSON: ..."). Other statuses, and responses with
    /// any other content type, keep their body: a handler's own error
    /// response stays its own. Default `false`.
    ///
    /// Without it (or for what it leaves alone), handlers can take the
    /// rejection themselves (`Result<Json<T>, JsonRejection>`) and answer
    /// with [`HandlerError`](crate::error::HandlerError).
    ///
    /// Empty 404 and 405 responses (axum's fallback for an unknown route and
    /// a method the route does not take) are always answered as problems,
    /// whatever this setting: they have no body to keep.
    ///
    /// ```
    /// use axum::{routing::post, Json, Router};
    /// use tower_harden::observe::ObserveLayer;
    ///
    /// async fn create(Json(user): Json<serde_json::Value>) -> String {
    ///     user.to_string()
    /// }
    ///
    /// // A body that is not JSON gets a 400 problem, a missing content
    /// // type a 415 problem, both with the request id.
    /// let app: Router = Router::new()
    ///     .route("/users", post(create))
    ///     .layer(ObserveLayer::new().problems_for_rejections(true));
    /// ```
    pub fn problems_for_rejections(mut self, map: bool) -> Self {
        self.config().outcome.map_rejections = map;
        self
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Observe<S> {
    inner_service_accessors!();
}

// A `HeaderName`, not a `&str`: a string name is parsed again on every
// lookup.
/// A single-valued header as a request carries it.
enum SingleHeader<'a> {
    Absent,
    /// Two values or more: trust neither.
    Repeated,
    Once(&'a [u8]),
}

fn only_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> SingleHeader<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => SingleHeader::Absent,
        (Some(_), Some(_)) => SingleHeader::Repeated,
        (Some(value), None) => SingleHeader::Once(value.as_bytes()),
    }
}

impl Config {
    /// The request's id, why the caller's was refused, and the caller's
    /// when it came from a peer not trusted.
    fn request_id(
        &self,
        request: &Request<impl Sized>,
        trusted: bool,
    ) -> (RequestId, Option<String>, Option<RequestId>) {
        if let Some(id) = request.extensions().get::<RequestId>() {
            return (id.clone(), None, None);
        }
        if !self.trust_request_id {
            return (RequestId::generate(), None, None);
        }
        match only_header(request.headers(), &self.outcome.request_id_header) {
            SingleHeader::Repeated => (
                RequestId::generate(),
                Some("repeated header".to_owned()),
                None,
            ),
            SingleHeader::Absent => (RequestId::generate(), None, None),
            SingleHeader::Once(value) => match RequestId::try_parse(value, self.max_request_id_len)
            {
                Ok(id) if trusted => (id, None, None),
                // Plain, so safe to log; never echoed nor forwarded.
                Ok(id) => (RequestId::generate(), None, Some(id)),
                Err(refusal) => (RequestId::generate(), Some(refusal.to_string()), None),
            },
        }
    }

    fn trace_context(
        &self,
        request: &Request<impl Sized>,
        trusted: bool,
    ) -> (TraceContext, Option<String>) {
        if let Some(context) = request.extensions().get::<TraceContext>() {
            return (context.clone(), None);
        }
        if !self.trust_trace_context {
            return (TraceContext::new_root(), None);
        }
        let headers = request.headers();
        if !trusted {
            // A new trace, not sampled: the caller cannot graft this
            // request into a trace of its choosing nor force sampling.
            let refused = headers
                .contains_key(&TRACEPARENT_HEADER)
                .then(|| "not trusted from this peer".to_owned());
            return (TraceContext::new_root(), refused);
        }
        let value = match only_header(headers, &TRACEPARENT_HEADER) {
            SingleHeader::Absent => return (TraceContext::new_root(), None),
            SingleHeader::Repeated => {
                return (TraceContext::new_root(), Some("repeated header".to_owned()))
            }
            SingleHeader::Once(value) => value,
        };
        match TraceParent::parse_bytes(value) {
            Ok(parent) => {
                let joined = headers
                    .get_all(&TRACESTATE_HEADER)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("\u{0}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let state = (!joined.is_empty())
                    .then(|| TraceState::parse(&joined, self.max_trace_state_len).ok())
                    .flatten();
                let mut context = TraceContext::continue_from(parent, state);
                if headers.contains_key(&BAGGAGE_HEADER) {
                    let baggage = headers
                        .get_all(&BAGGAGE_HEADER)
                        .iter()
                        .map(|v| v.to_str().unwrap_or("\u{0}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    context = context.with_baggage(&baggage);
                }
                (context, None)
            }
            Err(refusal) => (TraceContext::new_root(), Some(refusal.to_string())),
        }
    }

    fn logged_headers(&self, headers: &HeaderMap) -> Option<String> {
        let mut logged = String::new();
        for name in &self.logged_headers {
            for value in headers.get_all(name) {
                if !logged.is_empty() {
                    logged.push_str("; ");
                }
                logged.push_str(name.as_str());
                logged.push_str(": ");
                let max = self.outcome.max_field_len;
                match value.to_str() {
                    // The same redaction as error text: `X-Forwarded-Client-Cert`,
                    // a `Via` or `Referer` may carry credentials in a URL.
                    Ok(text) => logged.push_str(&redact_escape(text, max, &self.outcome.redactor)),
                    Err(_) => logged.push_str(&redact_escape(
                        &String::from_utf8_lossy(value.as_bytes()),
                        max,
                        &self.outcome.redactor,
                    )),
                }
            }
        }
        (!logged.is_empty()).then_some(logged)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display,
    ResBody: Body<Data = bytes::Bytes>,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let config = &self.config;
        let client_address = client_address(request.extensions());
        let trusted = config.trusted_context.is_trusted_peer(client_address);
        let (request_id, request_id_refused, caller_request_id) =
            config.request_id(&request, trusted);
        let (mut trace, trace_refused) = config.trace_context(&request, trusted);
        if let Some(name) = &config.custom_request_id_header {
            trace = trace.with_request_id_header(name.clone());
        }

        let method = method_name(request.method());
        let mut route = RouteTemplate::of(request.extensions());
        if let Some(classify) = &config.route_classifier {
            if !route.is_matched() {
                route.classified = classify.0(request.method(), request.uri());
            }
        }
        let headers = config.logged_headers(request.headers());

        let span = if cfg!(feature = "opentelemetry") && config.outcome.full_span {
            // OpenTelemetry's HTTP server span, with its name and kind.
            #[cfg(feature = "opentelemetry")]
            let span = super::otel::server_span(
                config.span_level,
                &request,
                method,
                route.as_str(),
                client_address,
                &request_id,
                &trace,
                config.outcome.max_field_len,
            );
            #[cfg(not(feature = "opentelemetry"))]
            let span = Span::none();
            span
        } else {
            let full = config.outcome.full_span.then(|| FullSpan {
                method,
                route: escape(route.as_str(), config.outcome.max_field_len),
                path: escape(request.uri().path(), config.outcome.max_field_len),
                client_address: client_address.map(ip_text),
            });
            make_span(config.span_level, full.as_ref(), &request_id, &trace)
        };
        // With an OpenTelemetry layer, the exported span's parent is the
        // trusted caller's, and its ids are the ones this request goes by.
        #[cfg(feature = "opentelemetry")]
        let trace = super::otel::join(&span, trace);

        let extensions = request.extensions_mut();
        // Behind this crate's server the map has room already.
        crate::context::make_room(extensions);
        extensions.insert(crate::context::Arrival(tokio::time::Instant::now()));
        extensions.insert(request_id.clone());
        extensions.insert(trace.trace_id());
        extensions.insert(trace.clone());
        // What only the outcome event needs is kept as it came (reference
        // counted, unescaped): escaped when, and only if, the event is
        // written.
        let outcome = Outcome {
            config: config.outcome.clone(),
            span: span.clone(),
            start,
            method,
            route,
            uri: request.uri().clone(),
            client_address,
            user_agent: request.headers().get(USER_AGENT).cloned(),
            headers,
            context: RequestContext {
                request_id: Some(request_id.clone()),
                trace_id: Some(trace.trace_id()),
            },
            request_id,
            request_id_refused,
            caller_request_id,
            trace_id: trace.trace_id(),
            span_id: trace.span_id(),
            trace_refused,
            status: None,
            failure: None,
        };

        let called = {
            let _entered = span.enter();
            let catching =
                Catching::enter(config.outcome.forward_panics, config.outcome.flood_gate);
            catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
                .map_err(|payload| (payload_message(&*payload), catching.take_site()))
        };
        ObserveFuture::new(called, span, Box::new(outcome))
    }
}

/// The fields [`ObserveLayer::full_span`] adds to the span.
struct FullSpan<'a> {
    method: &'static str,
    route: std::borrow::Cow<'a, str>,
    path: std::borrow::Cow<'a, str>,
    client_address: Option<String>,
}

/// The request's span. It holds what every event inside it needs to be
/// found (the request and trace ids), and with `full` what OpenTelemetry's
/// HTTP server span holds too (see [`ObserveLayer::full_span`]); the rest of
/// the request goes on the one outcome event, written once.
fn make_span(
    level: Level,
    full: Option<&FullSpan<'_>>,
    request_id: &RequestId,
    trace: &TraceContext,
) -> Span {
    // Field values are evaluated only for a span that is enabled.
    macro_rules! span_at {
        ($level:expr) => {
            match full {
                Some(full) => tracing::span!(
                    target: TARGET,
                    $level,
                    "request",
                    http.request.method = full.method,
                    http.route = full.route.as_ref(),
                    url.path = full.path.as_ref(),
                    client.address = full.client_address.as_deref(),
                    request_id = request_id.as_str(),
                    trace_id = trace.trace_id().hex().as_str(),
                    http.response.status_code = tracing::field::Empty,
                ),
                None => tracing::span!(
                    target: TARGET,
                    $level,
                    "request",
                    request_id = request_id.as_str(),
                    trace_id = trace.trace_id().hex().as_str(),
                ),
            }
        };
    }
    super::at_level!(level, span_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers_are_denied_by_name_pattern() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api_key",
            "x-api-key",
            "x-auth-token",
            "x-forwarded-authorization",
            "x-amzn-oidc-data",
            "x-amzn-oidc-accesstoken",
            "x-goog-iap-jwt-assertion",
            "x-session-id",
            "x-client-credential",
            "x-hub-signature-256",
        ] {
            let name = HeaderName::from_static(name);
            assert!(is_secret_header(&name), "{name}");
            let layer = ObserveLayer::new().log_header(name.clone());
            assert!(layer.config.logged_headers.is_empty(), "{name}");
        }
        for name in ["x-forwarded-for", "accept", "via", "x-tenant", "keep-alive"] {
            assert!(!is_secret_header(&HeaderName::from_static(name)), "{name}");
        }
    }
}
