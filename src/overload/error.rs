use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

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
        RefusalContext::new("overload")
            .limit(self.limit as u64)
            .observed(self.in_flight as u64)
            .policy(&*self.partition)
            .retry_after(self.retry_after)
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
        };
        let problem = shed.problem();
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(problem.slug(), "overloaded");
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(json["retry_after"], 2);
        assert_eq!(json["detail"], "the service is overloaded; retry in 2 s");
        assert_eq!(shed.context().limit, Some(20));
    }
}
