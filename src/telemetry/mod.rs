//! What every layer needs to report safely: escaping of untrusted text,
//! metrics, and the one log throttle.
//!
//! This room imports only [`context`](crate::context).

mod escape;
pub mod metrics;
mod throttle;

pub(crate) use escape::{escape, escape_bytes};
pub(crate) use throttle::LogThrottle;
