use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::context::ClientKey;
use crate::error::{message_of, Problem, ProblemType, Refusal, RefusalContext};

/// The in-flight limit shed a request: the service already had as many
/// requests in flight as it can take.
///
/// `Display` is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the service is overloaded; retry in {} s", retry_seconds(*.retry_after))]
#[non_exhaustive]
pub struct Overloaded {
    /// The limit in force when the request was shed (of its partition, for
    /// a reserved route).
    pub limit: usize,
    /// Requests in flight at that moment (in its partition).
    pub in_flight: usize,
    /// The partition: `"default"`, or the path prefix of a reserved route.
    pub partition: Arc<str>,
    /// When the client may try again (`Retry-After`).
    pub retry_after: Duration,
    /// How long the request waited in the queue before it was shed: zero
    /// when it was shed at once (no queue, or the queue full).
    pub queued: Duration,
}

/// The client already had as many requests in flight as one client may
/// ([`InFlightLimitLayer::per_key`](super::InFlightLimitLayer::per_key)).
///
/// A 429, not a 503: the service has room, this one client is over its
/// share. A 503 says the service is overloaded, which load balancers and
/// clients read as a reason to retry elsewhere or to take the instance out
/// of rotation; a 429 tells the one client to slow down, as a rate limit
/// does, with its own problem type (`too-many-in-flight`) to tell the two
/// apart.
///
/// `Display` is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many requests in flight from this client (at most {limit}); retry in {} s",
    retry_seconds(*.retry_after)
)]
#[non_exhaustive]
pub struct TooManyInFlight {
    /// Requests one client may have in flight.
    pub limit: usize,
    /// The client's key (a keyed hash, as the rate limiter logs it).
    pub key: ClientKey,
    /// When the client may try again (`Retry-After`).
    pub retry_after: Duration,
}

impl Refusal for TooManyInFlight {
    fn problem(&self) -> Problem {
        Problem::of(
            ProblemType::TOO_MANY_IN_FLIGHT,
            StatusCode::TOO_MANY_REQUESTS,
        )
        .with_detail(message_of(self))
        .with_member("retry_after", retry_seconds(self.retry_after))
    }

    fn error_type(&self) -> &'static str {
        "too_many_in_flight"
    }

    fn context(&self) -> RefusalContext {
        let key: String = self.key.0.iter().map(|b| format!("{b:02x}")).collect();
        RefusalContext::new("overload")
            .limit(self.limit as u64)
            .observed(self.limit as u64)
            .policy("per_key")
            .key(key)
            .retry_after(self.retry_after)
    }
}

pub(crate) fn retry_seconds(retry_after: Duration) -> u64 {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    seconds.max(1)
}

impl Refusal for Overloaded {
    fn problem(&self) -> Problem {
        Problem::of(ProblemType::OVERLOADED, StatusCode::SERVICE_UNAVAILABLE)
            .with_detail(message_of(self))
            .with_member("retry_after", retry_seconds(self.retry_after))
    }

    fn error_type(&self) -> &'static str {
        "overloaded"
    }

    fn context(&self) -> RefusalContext {
        let context = RefusalContext::new("overload")
            .limit(self.limit as u64)
            .observed(self.in_flight as u64)
            .policy(&*self.partition)
            .retry_after(self.retry_after);
        if self.queued.is_zero() {
            context
        } else {
            context.elapsed(self.queued)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shed_request_is_a_503_overloaded_problem() {
        let shed = Overloaded {
            limit: 20,
            in_flight: 20,
            partition: Arc::from("default"),
            retry_after: Duration::from_millis(1500),
            queued: Duration::ZERO,
        };
        let problem = shed.problem();
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem.slug(), "overloaded");
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(json["retry_after"], 2);
        assert_eq!(json["detail"], "the service is overloaded; retry in 2 s");
        assert_eq!(shed.context().limit, Some(20));
    }

    #[test]
    fn a_client_over_its_share_is_a_429_too_many_in_flight_problem() {
        let refused = TooManyInFlight {
            limit: 4,
            key: ClientKey([0xab; 16]),
            retry_after: Duration::from_secs(1),
        };
        let problem = refused.problem();
        assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(problem.slug(), "too-many-in-flight");
        assert_eq!(refused.context().key.as_deref(), Some(&*"ab".repeat(16)));
    }
}
