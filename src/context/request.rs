//! The identity of the request a piece of code runs for.

use http::Extensions;

use super::{RequestId, TraceId};

/// The id and trace of one request, captured from its extensions (where the
/// observe layer puts them): what a problem body, an outbound call and a log
/// line need to name the request they belong to.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request id.
    pub request_id: Option<RequestId>,
    /// The trace id.
    pub trace_id: Option<TraceId>,
}

impl RequestContext {
    /// The context found in a request's extensions.
    pub fn from_extensions(extensions: &Extensions) -> Self {
        Self {
            request_id: extensions.get::<RequestId>().cloned(),
            trace_id: extensions.get::<TraceId>().copied(),
        }
    }
}
