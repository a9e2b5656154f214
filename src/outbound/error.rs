//! [`OutboundError`]: where an outbound call went, within which budget, and
//! what went wrong.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::context::BudgetOrigin;
use crate::error::BoxError;

/// An outbound call failed: where to, within which budget, after how long,
/// with which status (if the response head arrived). The cause is the
/// `source()`.
#[derive(Debug, thiserror::Error)]
#[error("call to {target} failed after {} ms of a {} ms {origin} budget{}", elapsed.as_millis(), budget.as_millis(), StatusSuffix(*status))]
pub struct OutboundError {
    pub(super) target: String,
    pub(super) budget: Duration,
    pub(super) origin: BudgetOrigin,
    pub(super) elapsed: Duration,
    pub(super) status: Option<StatusCode>,
    #[source]
    pub(super) kind: OutboundErrorKind,
}

struct StatusSuffix(Option<StatusCode>);

impl fmt::Display for StatusSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, " (status {})", status.as_u16()),
            None => Ok(()),
        }
    }
}

/// What went wrong in an outbound call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboundErrorKind {
    /// The caller's budget, less the margin, was already spent: the call was
    /// not made.
    #[error("no budget left for the call ({} ms remained, the margin is {} ms)", remaining.as_millis(), margin.as_millis())]
    BudgetExhausted {
        /// What the caller had left.
        remaining: Duration,
        /// The margin kept from it.
        margin: Duration,
    },
    /// The response head did not arrive in time.
    #[error("timed out waiting for the response")]
    TimedOut,
    /// The response body did not arrive in time.
    #[error("timed out reading the response body")]
    BodyTimedOut,
    /// The client failed (connect, write, protocol).
    #[error("the request failed")]
    Transport(#[source] BoxError),
    /// The response body is larger than allowed.
    #[error("the response body exceeds {limit} bytes{}", declared.map(|declared| format!(" (declared {declared})")).unwrap_or_default())]
    BodyTooLarge {
        /// The limit.
        limit: u64,
        /// The declared `Content-Length`, if that is how it was known.
        declared: Option<u64>,
    },
    /// Reading the response body failed.
    #[error("reading the response body failed")]
    BodyRead(#[source] BoxError),
}

impl OutboundError {
    /// The target host (and port), from the request URI.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The time budget of the call.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Where the budget came from: the layer's own timeout
    /// ([`BudgetOrigin::Configured`]) or the caller's
    /// ([`BudgetOrigin::Inherited`]).
    pub fn origin(&self) -> BudgetOrigin {
        self.origin
    }

    /// How long the call ran.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The response status, if the head arrived.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// What went wrong.
    pub fn kind(&self) -> &OutboundErrorKind {
        &self.kind
    }

    /// Whether the budget ran out (before or during the call).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            OutboundErrorKind::TimedOut
                | OutboundErrorKind::BodyTimedOut
                | OutboundErrorKind::BudgetExhausted { .. }
        )
    }
}
