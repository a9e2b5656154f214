//! What every layer needs to report safely: escaping of untrusted text,
//! redaction of secrets, metrics, and the one log throttle.
//!
//! This room imports only [`context`](crate::context).

mod escape;
pub mod metrics;
mod redact;
mod throttle;

pub(crate) use escape::{escape, escape_bytes};
pub(crate) use throttle::{FloodGate, FloodGateLease, LogThrottle};

pub(crate) use redact::redact_escape;
pub use redact::{InvalidPattern, Redactor, REDACTED};
