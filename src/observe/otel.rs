//! The server span as an OpenTelemetry span (feature `opentelemetry`): its
//! parent is the trusted inbound `traceparent`, and this crate's trace
//! context takes the ids the tracer gave it.

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
    TraceState as OtelTraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::context::{SpanId, TraceContext, TraceId};

/// Makes the caller's span (when the trace was continued from a trusted
/// `traceparent`) the parent of `span`, starts it, and returns `trace` with
/// the ids the tracer gave it. Without an OpenTelemetry layer in the
/// subscriber, `trace` is returned as it is.
pub(super) fn join(span: &Span, trace: TraceContext) -> TraceContext {
    if span.is_disabled() {
        return trace;
    }
    if let Some(parent) = trace.parent_id() {
        let state = trace
            .trace_state()
            .and_then(|state| state.as_str().parse::<OtelTraceState>().ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            OtelTraceId::from_bytes(trace.trace_id().to_bytes()),
            OtelSpanId::from_bytes(parent.to_bytes()),
            if trace.sampled() {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            state,
        );
        // Fails only without the OpenTelemetry layer: nothing to join then.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let started = span.context();
    let otel = started.span().span_context().clone();
    match (
        TraceId::from_bytes(otel.trace_id().to_bytes()),
        SpanId::from_bytes(otel.span_id().to_bytes()),
    ) {
        (Some(trace_id), Some(span_id)) if otel.is_valid() => {
            if trace_id != trace.trace_id() {
                // A trace started here: the tracer chose its id.
                span.record("trace_id", trace_id.hex().as_str());
            }
            trace.with_span_ids(trace_id, span_id, otel.is_sampled())
        }
        _ => trace,
    }
}

/// The server span with the HTTP semantic conventions' name
/// (`{method} {http.route}`), kind and attributes, for
/// `tracing-opentelemetry` to export.
#[allow(clippy::too_many_arguments)]
pub(super) fn server_span<B>(
    level: tracing::Level,
    request: &http::Request<B>,
    method: &'static str,
    route: &str,
    client_address: Option<std::net::IpAddr>,
    request_id: &crate::context::RequestId,
    trace: &TraceContext,
    max_len: usize,
) -> Span {
    use crate::telemetry::escape;
    let name = if route == "_unmatched" {
        method.to_owned()
    } else {
        format!("{method} {}", escape(route, max_len))
    };
    let route = (route != "_unmatched").then(|| escape(route, max_len));
    let path = escape(request.uri().path(), max_len);
    let scheme = request.uri().scheme_str().unwrap_or("http");
    let authority = request.uri().authority().cloned().or_else(|| {
        let host = request.headers().get(http::header::HOST)?;
        host.to_str().ok()?.parse::<http::uri::Authority>().ok()
    });
    let server_address = authority.as_ref().map(|a| escape(a.host(), max_len));
    let server_port = authority.as_ref().map(|a| {
        a.port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 })
    });
    let version = match request.version() {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let client_address = client_address.map(super::fields::ip_text);
    macro_rules! span_at {
        ($level:expr) => {
            tracing::span!(
                target: super::fields::TARGET,
                $level,
                "request",
                otel.name = name.as_str(),
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                http.request.method = method,
                http.route = route.as_deref(),
                url.path = path.as_ref(),
                url.scheme = scheme,
                server.address = server_address.as_deref(),
                server.port = server_port,
                network.protocol.version = version,
                client.address = client_address.as_deref(),
                request_id = request_id.as_str(),
                trace_id = trace.trace_id().hex().as_str(),
                http.response.status_code = tracing::field::Empty,
            )
        };
    }
    super::at_level!(level, span_at)
}
