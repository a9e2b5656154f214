use std::time::Duration;

use http::StatusCode;

use crate::context::BudgetOrigin;
use crate::error::{message_of, Problem, ProblemType, Refusal, RefusalContext};

/// A time budget ran out: which one, how large it was, and how long the work
/// had run.
///
/// `Display` is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request did not complete within its {origin} deadline of {} ms", budget.as_millis())]
#[non_exhaustive]
pub struct DeadlineExceeded {
    /// The budget that ran out.
    pub budget: Duration,
    /// How long the work had run when it was stopped.
    pub elapsed: Duration,
    /// Which budget it was: the configured one, a trusted caller's, or the
    /// enclosing request's.
    pub origin: BudgetOrigin,
    /// Whether the handler was waiting for request body bytes at that moment.
    pub while_reading_body: bool,
}

impl DeadlineExceeded {
    pub(crate) fn new(budget: &crate::context::Budget, while_reading_body: bool) -> Self {
        Self {
            budget: budget.total(),
            elapsed: budget.elapsed(),
            origin: budget.origin(),
            while_reading_body,
        }
    }

    fn context(&self) -> RefusalContext {
        RefusalContext::new("deadline")
            .budget(self.budget)
            .elapsed(self.elapsed)
            .policy(self.origin.as_str())
    }
}

impl Refusal for DeadlineExceeded {
    fn problem(&self) -> Problem {
        deadline_problem(self, StatusCode::SERVICE_UNAVAILABLE)
    }

    fn error_type(&self) -> &'static str {
        "deadline_exceeded"
    }

    fn context(&self) -> RefusalContext {
        DeadlineExceeded::context(self)
    }
}

fn deadline_problem(exceeded: &DeadlineExceeded, status: StatusCode) -> Problem {
    Problem::of(ProblemType::DEADLINE_EXCEEDED, status)
        .with_detail(message_of(exceeded))
        .with_member("budget_ms", millis(exceeded.budget))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why [`RequestDeadlineLayer`](super::RequestDeadlineLayer) ended a request.
///
/// A slow handler and a slow client are told apart: the deadline answers
/// 503 (`deadline-exceeded`, configurable), a body that stalls or trickles
/// answers 408 (`request-timeout`) with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeadlineRefusal {
    /// The request's deadline passed before the response was ready.
    #[error("{exceeded}")]
    Exceeded {
        /// Which budget ran out.
        exceeded: DeadlineExceeded,
        /// The status answered (503 unless configured otherwise).
        status: StatusCode,
    },
    /// The client sent no body bytes for the idle timeout while the handler
    /// waited for them.
    #[error("the client sent no request body bytes for {} ms", idle_timeout.as_millis())]
    BodyIdle {
        /// The idle timeout.
        idle_timeout: Duration,
        /// Body bytes received before the client went silent.
        received: u64,
    },
    /// After the grace period, the client sent the body slower than the
    /// minimum data rate.
    #[error("the client sent the request body at {observed_rate} bytes/s, below the minimum of {min_rate} bytes/s")]
    BodyTooSlow {
        /// The minimum rate in bytes per second.
        min_rate: u64,
        /// The rate observed over the time spent waiting for the client.
        observed_rate: u64,
        /// Body bytes received.
        received: u64,
        /// Time the handler spent waiting for body bytes.
        waited: Duration,
    },
}

impl Refusal for DeadlineRefusal {
    fn problem(&self) -> Problem {
        match self {
            Self::Exceeded { exceeded, status } => deadline_problem(exceeded, *status),
            Self::BodyIdle { .. } | Self::BodyTooSlow { .. } => {
                Problem::of(ProblemType::REQUEST_TIMEOUT, StatusCode::REQUEST_TIMEOUT)
                    .with_detail(message_of(self))
            }
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::Exceeded { .. } => "deadline_exceeded",
            Self::BodyIdle { .. } => "body_idle",
            Self::BodyTooSlow { .. } => "body_too_slow",
        }
    }

    fn context(&self) -> RefusalContext {
        match self {
            Self::Exceeded { exceeded, .. } => exceeded.context(),
            Self::BodyIdle {
                idle_timeout,
                received,
            } => RefusalContext::new("deadline")
                .policy("body_idle")
                .budget(*idle_timeout)
                .elapsed(*idle_timeout)
                .observed(*received),
            Self::BodyTooSlow {
                min_rate,
                observed_rate,
                waited,
                ..
            } => RefusalContext::new("deadline")
                .policy("body_min_rate")
                .limit(*min_rate)
                .observed(*observed_rate)
                .elapsed(*waited),
        }
    }
}

/// The error of a [`CallDeadline`](super::CallDeadline) service: its budget ran out,
/// or the inner service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallDeadlineError<E> {
    /// The budget ran out; the inner future was dropped.
    #[error(transparent)]
    Exceeded(DeadlineExceeded),
    /// The inner service failed.
    #[error("the inner service failed")]
    Inner(#[source] E),
}

impl<E> CallDeadlineError<E> {
    /// The exceeded deadline, if that is what happened.
    pub fn exceeded(&self) -> Option<&DeadlineExceeded> {
        match self {
            Self::Exceeded(exceeded) => Some(exceeded),
            Self::Inner(_) => None,
        }
    }

    /// The inner service's error, if that is what happened.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            Self::Exceeded(_) => None,
        }
    }
}
