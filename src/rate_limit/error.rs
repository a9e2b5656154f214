use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::headers::ceil_seconds;
use super::store::{KeyHash, StoreError};
use crate::error::{message_of, Problem, ProblemType, Refusal, RefusalContext};

/// Why the rate limiter refused a request.
///
/// `Display` is safe to show a client (policy names are chosen by the
/// operator; keys appear only as a short hash, in the log context).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitRefusal {
    /// One or more policies have no quota left for the request's key.
    #[error("rate limit exceeded (policy {}); retry in {} s", PolicyNames(.policies), ceil_seconds(*.retry_after).max(1))]
    QuotaExceeded {
        /// The policies that refused.
        policies: Vec<Arc<str>>,
        /// The key of the first refusing policy.
        key: KeyHash,
        /// The longest wait among the refusing policies.
        retry_after: Duration,
        /// The quota (burst) of the first refusing policy.
        limit: u32,
    },
    /// A policy found no usable key and is configured to refuse such
    /// requests ([`MissingKey::Refuse`](super::MissingKey::Refuse)).
    #[error("the request carries no usable key for rate-limit policy {policy}")]
    MissingKey {
        /// The policy.
        policy: Arc<str>,
        /// The 4xx status to answer with.
        status: StatusCode,
    },
    /// The store failed and the layer is configured to refuse then
    /// ([`StoreFailure::Closed`](super::StoreFailure::Closed)). When the
    /// store says when to ask again ([`StoreError::retry_after`]: the Redis
    /// store's breaker cool-down), the 503 carries it as `Retry-After`.
    #[error("rate limiting is unavailable")]
    StoreUnavailable {
        /// The store's error (for the log only).
        #[source]
        source: StoreError,
    },
}

/// Policy names separated by `, `, written without a joined copy.
struct PolicyNames<'a>(&'a [Arc<str>]);

impl std::fmt::Display for PolicyNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, policy) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(policy)?;
        }
        Ok(())
    }
}

impl Refusal for RateLimitRefusal {
    fn problem(&self) -> Problem {
        match self {
            Self::QuotaExceeded {
                policies,
                retry_after,
                ..
            } => Problem::of(ProblemType::QUOTA_EXCEEDED, StatusCode::TOO_MANY_REQUESTS)
                .with_detail(message_of(self))
                .with_member(
                    "violated_policies",
                    policies
                        .iter()
                        .map(|policy| serde_json::Value::from(&**policy))
                        .collect::<Vec<_>>(),
                )
                .with_member("retry_after", ceil_seconds(*retry_after).max(1)),
            Self::MissingKey { status, .. } => {
                Problem::of(ProblemType::INVALID_INPUT, *status).with_detail(message_of(self))
            }
            Self::StoreUnavailable { source } => {
                let problem = Problem::of(
                    ProblemType::SERVICE_UNAVAILABLE,
                    StatusCode::SERVICE_UNAVAILABLE,
                )
                .with_detail("the service is temporarily unavailable");
                match source.retry_after() {
                    Some(retry_after) => {
                        problem.with_member("retry_after", ceil_seconds(retry_after).max(1))
                    }
                    None => problem,
                }
            }
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::MissingKey { .. } => "missing_key",
            Self::StoreUnavailable { .. } => "store_unavailable",
        }
    }

    fn context(&self) -> RefusalContext {
        let context = RefusalContext::new("rate_limit");
        match self {
            Self::QuotaExceeded {
                policies,
                key,
                retry_after,
                limit,
            } => context
                .policy(message_of(&PolicyNames(policies)))
                .key(key.short())
                .retry_after(*retry_after)
                .limit(u64::from(*limit)),
            Self::MissingKey { policy, .. } => context.policy(policy.to_string()),
            Self::StoreUnavailable { source } => match source.retry_after() {
                Some(retry_after) => context.retry_after(retry_after),
                None => context,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_exceeded_problem_and_context() {
        let refusal = RateLimitRefusal::QuotaExceeded {
            policies: vec![Arc::from("per-ip"), Arc::from("global")],
            key: KeyHash([0xcd; 16]),
            retry_after: Duration::from_millis(200),
            limit: 100,
        };
        let problem = refusal.problem();
        assert_eq!(problem.status(), 429);
        assert_eq!(problem.slug(), "quota-exceeded");
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).unwrap();
        assert_eq!(json["violated_policies"][1], "global");
        assert_eq!(json["retry_after"], 1);
        let context = refusal.context();
        assert_eq!(context.layer, "rate_limit");
        assert_eq!(context.key.as_deref(), Some("cdcdcdcdcdcd"));
        assert_eq!(context.policy.as_deref(), Some("per-ip, global"));
        assert_eq!(refusal.error_type(), "quota_exceeded");
    }
}
