//! The identity of a request and of its peer, shared by every layer: request
//! id, trace context, peer address, trusted networks, arrival time, the time
//! budget (and the scope that hands it to outbound calls), and the header
//! names this crate reads and writes.
//!
//! This room imports nothing else from the crate; every other room may use
//! it. The observe layer fills these values in (as request extensions), the
//! deadline, rate-limit and outbound layers read them, and problem bodies
//! name the request with them.

mod budget;
mod client_key;
mod extensions;
mod headers;
mod networks;
mod peer;
mod request;
mod request_id;
mod time;
mod trace_context;

pub use budget::{current_budget, current_request, scope, Budget, BudgetOrigin};
pub(crate) use budget::{current_trace, in_scope, sync_in_scope, Scope};
pub use client_key::ClientKey;
pub(crate) use extensions::make_room;
pub(crate) use headers::declared_length;
pub use headers::{
    BAGGAGE_HEADER, REQUEST_DEADLINE_HEADER, REQUEST_ID_HEADER, TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
};
pub(crate) use networks::parse_network;
pub use networks::{InvalidCidr, TrustedNetworks, EVERYONE, PRIVATE_NETWORKS};
pub(crate) use peer::peer_addr;
pub use peer::PeerAddr;
pub use request::RequestContext;
pub use request_id::{RequestId, RequestIdRefusal};
pub(crate) use time::instant_after;
pub use time::Arrival;
pub(crate) use trace_context::{traceparent, Hex};
pub use trace_context::{
    SpanId, TraceContext, TraceId, TraceParent, TraceParentRefusal, TraceState, TraceStateRefusal,
};
