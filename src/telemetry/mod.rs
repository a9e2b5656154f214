//! What every layer needs to report safely: escaping of untrusted text,
//! redaction of secrets, metrics, the one log throttle, and (feature
//! `json-log`) a cheaper formatter for the JSON log line.
//!
//! This room imports only [`context`](crate::context).

mod escape;
#[cfg(feature = "json-log")]
#[cfg_attr(docsrs, doc(cfg(feature = "json-log")))]
pub mod json_log;
pub mod metrics;
mod redact;
mod throttle;

pub(crate) use escape::{escape, escape_bytes};
pub(crate) use throttle::{FloodGate, FloodGateLease, LogThrottle};

pub(crate) use redact::redact_escape;
pub use redact::{InvalidPattern, Redactor, REDACTED};

#[cfg(feature = "json-log")]
pub use json_log::{JsonLog, JsonLogFields};
