//! Each outbound call as an OpenTelemetry client span (feature
//! `opentelemetry`): a `tracing` span, child of the current (server) span,
//! whose id the call's `traceparent` carries.

use http::Request;
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::context::SpanId;

/// The client span of one call, started, and its id when an OpenTelemetry
/// layer gave it one.
pub(super) fn client_span<B>(request: &Request<B>) -> (Span, Option<SpanId>) {
    let method = request.method().as_str();
    let name = match request.method() {
        &http::Method::GET
        | &http::Method::HEAD
        | &http::Method::POST
        | &http::Method::PUT
        | &http::Method::DELETE
        | &http::Method::CONNECT
        | &http::Method::OPTIONS
        | &http::Method::TRACE
        | &http::Method::PATCH => method,
        _ => "HTTP",
    };
    let authority = request.uri().authority();
    let span = tracing::info_span!(
        target: "tower_harden::outbound",
        "outbound",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = name,
        server.address = authority.map(|a| a.host()),
        server.port = authority.and_then(|a| a.port_u16()).or_else(|| match request.uri().scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        }),
        http.response.status_code = tracing::field::Empty,
    );
    let otel = span.context().span().span_context().clone();
    let id = otel
        .is_valid()
        .then(|| SpanId::from_bytes(otel.span_id().to_bytes()))
        .flatten();
    (span, id)
}
