use std::borrow::Cow;
use std::fmt::Write;
use std::time::{Duration, Instant};

use http::StatusCode;
use tracing::Span;

use super::fields::{ip_text, RouteTemplate, TARGET};
use super::panic::PanicSite;
use crate::context::{RequestContext, RequestId, SpanId, TraceId, REQUEST_ID_HEADER};
use crate::error::Refused;
use crate::telemetry::metrics::{record_request, RequestLabels};
use crate::telemetry::{escape, escape_bytes, redact_escape, FloodGate, Redactor};
use http::HeaderName;
use tracing::Level;

/// What went wrong with a request, for its outcome event.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A refusal (ours or a handler's) carried by the response.
    Refused(Refused),
    /// A panic in `call` or in the response future.
    Panic {
        message: String,
        site: Option<PanicSite>,
    },
    /// The inner service returned an error instead of a response.
    Service(String),
    /// The response body failed while streaming.
    Body(String),
    /// The response future was dropped before it finished: the client went
    /// away, or a layer outside this one gave up on it.
    Cancelled,
}

impl Failure {
    /// The `error.type` of the failure (also a metric label).
    fn error_type(&self) -> &'static str {
        match self {
            Failure::Refused(refused) => refused.refusal().error_type(),
            Failure::Panic { .. } => "panic",
            Failure::Service(_) => "service",
            Failure::Body(_) => "response_body",
            Failure::Cancelled => "cancelled",
        }
    }
}

/// Everything the outcome event of one request needs, gathered as the
/// request goes and emitted once.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) config: OutcomeConfig,
    pub(crate) span: Span,
    pub(crate) start: Instant,
    pub(crate) method: &'static str,
    pub(crate) route: RouteTemplate,
    pub(crate) uri: http::Uri,
    pub(crate) client_address: Option<std::net::IpAddr>,
    pub(crate) user_agent: Option<http::HeaderValue>,
    pub(crate) headers: Option<String>,
    pub(crate) context: RequestContext,
    pub(crate) request_id: RequestId,
    pub(crate) request_id_refused: Option<String>,
    /// The caller's plain request id, not believed (its peer is not
    /// trusted): logged, never echoed nor forwarded.
    pub(crate) caller_request_id: Option<RequestId>,
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) trace_refused: Option<String>,
    pub(crate) status: Option<StatusCode>,
    pub(crate) failure: Option<Failure>,
}

/// The part of the layer's configuration the outcome of a request needs:
/// each request takes a copy rather than sharing the layer's `Arc`, which
/// would be two atomic writes per request on one cache line that threads
/// serving requests side by side take from each other.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeConfig {
    pub(crate) request_id_header: HeaderName,
    pub(crate) max_field_len: usize,
    pub(crate) max_error_len: usize,
    pub(crate) log_query: bool,
    pub(crate) success_level: Level,
    pub(crate) client_error_level: Level,
    pub(crate) server_error_level: Level,
    pub(crate) forward_panics: bool,
    pub(crate) full_span: bool,
    /// [`ObserveLayer::problems_for_rejections`](super::ObserveLayer::problems_for_rejections).
    pub(crate) map_rejections: bool,
    /// Runs on error and panic text before it is escaped and capped.
    pub(crate) redactor: Redactor,
    /// Throttles the lines of failures, per `error.type`; `None`: every
    /// line is written. A plain reference: copied, not counted.
    pub(crate) flood_gate: Option<&'static FloodGate>,
}

impl OutcomeConfig {
    /// `Some(the count to report)` if a failure's line of `kind` is written
    /// (out of line: successes, the common case, never come here).
    #[inline(never)]
    fn let_through(&self, kind: &'static str) -> Option<Option<u64>> {
        match self.flood_gate {
            Some(gate) => gate
                .allow(kind)
                .map(|suppressed| (suppressed > 0).then_some(suppressed)),
            None => Some(None),
        }
    }
}

impl Default for OutcomeConfig {
    /// The observe layer's defaults.
    fn default() -> Self {
        Self {
            request_id_header: REQUEST_ID_HEADER,
            max_field_len: 256,
            max_error_len: 2048,
            log_query: false,
            success_level: Level::INFO,
            client_error_level: Level::WARN,
            server_error_level: Level::ERROR,
            forward_panics: false,
            full_span: false,
            map_rejections: false,
            redactor: Redactor::new(),
            flood_gate: None,
        }
    }
}

/// Milliseconds, to the microsecond (no float noise in the log).
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// The error fields of the outcome event.
#[derive(Default)]
struct ErrorFields<'a> {
    message: Option<Cow<'a, str>>,
    chain: Option<Cow<'a, str>>,
    layer: Option<&'static str>,
    limit: Option<u64>,
    observed: Option<u64>,
    policy: Option<Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
    budget_ms: Option<f64>,
    elapsed_ms: Option<f64>,
    retry_after_ms: Option<f64>,
    panic_location: Option<Cow<'a, str>>,
    panic_backtrace: Option<Cow<'a, str>>,
}

impl<'a> ErrorFields<'a> {
    #[inline]
    fn of_refusal(refused: &'a Refused, config: &OutcomeConfig) -> Self {
        let max = config.max_error_len;
        let refusal = refused.refusal();
        let context = refusal.context();
        let message = crate::error::message_of(refusal);
        // The chain is the message followed by each source; without
        // a source (most refusals) it would only repeat the message.
        let escaped_chain = refused.chain().nth(1).is_some().then(|| {
            let mut chain = message.clone();
            for error in refused.chain().skip(1) {
                if chain.len() >= max {
                    chain.push_str(": …");
                    break;
                }
                chain.push_str(": ");
                let _ = write!(chain, "{error}");
            }
            Cow::Owned(redact_escape(&chain, max, &config.redactor).into_owned())
        });
        // Text that needs no escape is the message itself: no copy.
        let escaped_message: Cow<'a, str> = match redact_escape(&message, max, &config.redactor) {
            Cow::Borrowed(_) => Cow::Owned(message),
            Cow::Owned(escaped) => Cow::Owned(escaped),
        };
        Self {
            message: Some(escaped_message),
            chain: escaped_chain,
            layer: Some(context.layer),
            limit: context.limit,
            observed: context.observed,
            policy: context
                .policy
                .as_deref()
                .map(|p| Cow::Owned(escape(p, config.max_field_len).into_owned())),
            key: context
                .key
                .as_deref()
                .map(|k| Cow::Owned(escape(k, config.max_field_len).into_owned())),
            budget_ms: context.budget.map(millis),
            elapsed_ms: context.elapsed.map(millis),
            retry_after_ms: context.retry_after.map(millis),
            ..Self::default()
        }
    }

    fn of(failure: Option<&'a Failure>, config: &OutcomeConfig) -> Self {
        let max = config.max_error_len;
        match failure {
            None => Self::default(),
            Some(Failure::Refused(refused)) => Self::of_refusal(refused, config),
            Some(Failure::Panic { message, site }) => {
                let message = redact_escape(message, max, &config.redactor);
                Self {
                    message: Some(message),
                    panic_location: Some(
                        site.as_ref()
                            .map_or(Cow::Borrowed("unknown"), |site| escape(&site.location, max)),
                    ),
                    panic_backtrace: site
                        .as_ref()
                        .and_then(|site| site.backtrace.as_deref())
                        .map(|b| escape(b, 16 * max)),
                    ..Self::default()
                }
            }
            Some(Failure::Cancelled) => Self {
                message: Some(Cow::Borrowed(
                    "the request was dropped before its response was ready \
                     (the client went away or an outer layer gave up)",
                )),
                ..Self::default()
            },
            Some(Failure::Service(message)) | Some(Failure::Body(message)) => {
                let message = redact_escape(message, max, &config.redactor);
                Self {
                    message: Some(message),
                    ..Self::default()
                }
            }
        }
    }
}

impl Outcome {
    /// The level of the outcome event, by status and failure.
    #[inline]
    fn level(&self) -> Level {
        let config = &self.config;
        match self.status {
            // A panic while the body streamed, after a 2xx head went out.
            _ if matches!(self.failure, Some(Failure::Panic { .. })) => config.server_error_level,
            Some(status) if status.is_server_error() => config.server_error_level,
            Some(status) if status.is_client_error() => config.client_error_level,
            Some(_) => config.success_level,
            None if matches!(self.failure, Some(Failure::Cancelled)) => config.client_error_level,
            None => config.server_error_level,
        }
    }

    #[inline]
    fn record_metrics(
        &self,
        status: Option<u16>,
        error_type: Option<&'static str>,
        latency: Duration,
    ) {
        let is_error = error_type.is_some() || status.is_none_or(|s| s >= 500);
        record_request(
            &RequestLabels {
                method: self.method,
                route: self.route.as_str(),
                status,
                error_type: if is_error {
                    Some(error_type.unwrap_or("_server_error"))
                } else {
                    None
                },
            },
            latency.as_secs_f64(),
        );
    }

    /// Emits the request's one outcome event (and its metrics).
    ///
    /// Long for a reason: one `tracing::event!` with every field of the
    /// line, which the macro needs in one expression.
    pub(crate) fn emit(self, body_bytes: u64, body_complete: bool) {
        let config = &self.config;
        let level = self.level();
        let latency = self.start.elapsed();
        let error_type = self.failure.as_ref().map(Failure::error_type);
        let status = self.status.map(|s| s.as_u16());
        self.record_metrics(status, error_type, latency);
        // A failure's line may be left out of a flood (counted, and reported
        // by the next line of its kind written); a success's never is.
        let suppressed = match error_type {
            Some(kind) => match config.let_through(kind) {
                Some(suppressed) => suppressed,
                None => return,
            },
            None => None,
        };

        // The error's text (its message formatted, escaped, its chain) is
        // made on the first use of one of its fields: `event!` evaluates
        // field values only for an event that is written (to a subscriber or
        // through the `log` bridge), in its own callsite and span, which an
        // `enabled!` check made here could not match (span-scoped filters,
        // filters on the kind of callsite).
        let error_text = std::cell::OnceCell::new();
        let error = || error_text.get_or_init(|| ErrorFields::of(self.failure.as_ref(), config));

        // The request id is always on the event, so that the one line of a
        // request can be found from a problem body even where spans are not
        // written (a formatter without `with_current_span`, a log exporter).
        // What else the span carries is repeated only when a filter dropped
        // the span.
        let span_off = self.span.is_disabled();
        let max_field_len = config.max_field_len;
        let trace_id = span_off.then_some(&self.trace_id);
        let on_event = span_off || !config.full_span;
        let (method, route) = if on_event {
            (
                Some(self.method),
                Some(escape(self.route.as_str(), max_field_len)),
            )
        } else {
            (None, None)
        };
        macro_rules! outcome_at {
            ($level:expr) => {
                tracing::event!(
                    target: TARGET,
                    $level,
                    http.request.method = method,
                    http.route = route.as_deref(),
                    url.path = on_event
                        .then(|| escape(self.uri.path(), max_field_len))
                        .as_deref(),
                    url.query = config
                        .log_query
                        .then(|| self.uri.query().map(|q| escape(q, max_field_len)))
                        .flatten()
                        .as_deref(),
                    http.response.status_code = status,
                    http.response.body.size = body_bytes,
                    http.response.body.complete = (!body_complete).then_some(false),
                    latency_ms = millis(latency),
                    client.address = self
                        .client_address
                        .filter(|_| on_event)
                        .map(ip_text)
                        .as_deref(),
                    user_agent.original = self
                        .user_agent
                        .as_ref()
                        .map(|v| escape_bytes(v.as_bytes(), max_field_len))
                        .as_deref(),
                    http.request.headers = self.headers.as_deref(),
                    request_id = self.request_id.as_str(),
                    request_id.refused = self.request_id_refused.as_deref(),
                    request_id.caller = self.caller_request_id.as_ref().map(RequestId::as_str),
                    trace_id = trace_id.map(|id| id.hex()).as_ref().map(|hex| hex.as_str()),
                    span_id = self.span_id.hex().as_str(),
                    traceparent.refused = self.trace_refused.as_deref(),
                    error.type = error_type,
                    error.message = error().message.as_deref(),
                    error.chain = error().chain.as_deref(),
                    refusal.layer = error().layer,
                    refusal.limit = error().limit,
                    refusal.observed = error().observed,
                    refusal.policy = error().policy.as_deref(),
                    refusal.key = error().key.as_deref(),
                    refusal.budget_ms = error().budget_ms,
                    refusal.elapsed_ms = error().elapsed_ms,
                    refusal.retry_after_ms = error().retry_after_ms,
                    panic.location = error().panic_location.as_deref(),
                    panic.backtrace = error().panic_backtrace.as_deref(),
                    suppressed,
                    "request completed"
                )
            };
        }
        self.span.in_scope(|| super::at_level!(level, outcome_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputRefusal;

    fn config(max_error_len: usize) -> OutcomeConfig {
        OutcomeConfig {
            max_error_len,
            ..OutcomeConfig::default()
        }
    }

    fn refused() -> Failure {
        Failure::Refused(Refused::new(InputRefusal::DeclaredBodyTooLarge {
            limit: 10,
            declared: 20,
        }))
    }

    #[test]
    fn a_refusal_without_source_logs_its_message_and_no_chain() {
        let refused = refused();
        let fields = ErrorFields::of(Some(&refused), &config(2048));
        let expected = "the declared request body of 20 bytes exceeds the limit of 10 bytes";
        assert_eq!(fields.message.as_deref(), Some(expected));
        assert_eq!(fields.chain, None);
        assert_eq!(fields.layer, Some("input"));
    }

    /// A refusal with a source, as a store failure has.
    #[derive(Debug)]
    struct WithSource(std::io::Error);

    impl std::fmt::Display for WithSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the store failed")
        }
    }

    impl std::error::Error for WithSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl crate::error::Refusal for WithSource {
        fn problem(&self) -> crate::error::Problem {
            crate::error::Problem::internal_error()
        }
        fn context(&self) -> crate::error::RefusalContext {
            crate::error::RefusalContext::new("test")
        }
    }

    fn with_source() -> Failure {
        Failure::Refused(Refused::new(WithSource(std::io::Error::other(
            "connection refused",
        ))))
    }

    #[test]
    fn a_refusal_with_a_source_logs_the_chain() {
        let refused = with_source();
        let fields = ErrorFields::of(Some(&refused), &config(2048));
        assert_eq!(fields.message.as_deref(), Some("the store failed"));
        assert_eq!(
            fields.chain.as_deref(),
            Some("the store failed: connection refused")
        );
    }

    #[test]
    fn a_cap_applies_to_message_and_chain_alike() {
        let refused = refused();
        let fields = ErrorFields::of(Some(&refused), &config(8));
        assert_eq!(fields.message.as_deref(), Some("the decl…(+59 bytes)"));
        let refused = with_source();
        let fields = ErrorFields::of(Some(&refused), &config(8));
        assert_eq!(fields.message.as_deref(), Some("the stor…(+8 bytes)"));
        assert_eq!(fields.chain.as_deref(), Some("the stor…(+13 bytes)"));
        // With no room at all, the chain is cut before its first source.
        let fields = ErrorFields::of(Some(&refused), &config(0));
        assert_eq!(fields.message.as_deref(), Some("…(+16 bytes)"));
        assert_eq!(fields.chain.as_deref(), Some("…(+21 bytes)"));
    }
}
