//! [`Refusal`]: a typed refusal and the context it carries.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Extensions, Response};

use super::{Problem, ProblemOr};
use crate::context::RequestContext;

/// A typed refusal of a request: an error that knows what the client may be
/// told and what the operator needs to know.
pub trait Refusal: StdError + Send + Sync + 'static {
    /// What the client is told. Must not contain internal error text.
    fn problem(&self) -> Problem;

    /// Structured context for the log event.
    fn context(&self) -> RefusalContext;

    /// The class of the error, logged as `error.type` (OpenTelemetry's
    /// name). Keep it of low cardinality: it is also a metric label.
    ///
    /// Default: the refusal's type name ([`std::any::type_name`]), which
    /// names the module the type is defined in and is not promised to stay
    /// the same across compiler versions: override it with a fixed name
    /// where logs or dashboards query it. This crate's refusals name the
    /// case, in snake case: `declared_body_too_large`, `body_too_large`,
    /// `decoded_body_too_large`, `unsupported_encoding`, `malformed_body`,
    /// `too_many_headers`, `headers_too_large`, `uri_too_long` (input);
    /// `deadline_exceeded`, `body_idle`, `body_too_slow` (deadline);
    /// `quota_exceeded`, `missing_key`, `store_unavailable` (rate limit);
    /// `overloaded` (overload).
    fn error_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A refusal's `Display` as a `String`, in one allocation for a message of
/// usual length (`to_string` regrows its buffer two or three times on the way
/// to 70 bytes, and every refusal formats its message twice: problem detail
/// and log).
pub(crate) fn message_of<T: fmt::Display + ?Sized>(refusal: &T) -> String {
    use fmt::Write;
    let mut message = String::with_capacity(128);
    let _ = write!(message, "{refusal}");
    message
}

/// Structured context of a refusal, logged as fields of the request's outcome
/// event. Every text field here is either a fixed name chosen by the code or
/// already escaped and bounded (a key is a short hash, never the raw key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalContext {
    /// The layer that refused: `input`, `deadline`, `rate_limit`, `handler`, ...
    pub layer: &'static str,
    /// The configured limit that was hit (bytes, count, requests), if any.
    pub limit: Option<u64>,
    /// What was observed against that limit, if known.
    pub observed: Option<u64>,
    /// The policy (or policies, comma-separated) that refused.
    pub policy: Option<String>,
    /// The rate-limit key, as a short hash.
    pub key: Option<String>,
    /// The time budget that ran out.
    pub budget: Option<Duration>,
    /// How long the request had run when it was refused.
    pub elapsed: Option<Duration>,
    /// When the client may try again.
    pub retry_after: Option<Duration>,
}

impl RefusalContext {
    /// A context naming the layer that refused.
    pub fn new(layer: &'static str) -> Self {
        Self {
            layer,
            ..Self::default()
        }
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the observed value.
    pub fn observed(mut self, observed: u64) -> Self {
        self.observed = Some(observed);
        self
    }

    /// Sets the policy name(s).
    pub fn policy(mut self, policy: impl Into<String>) -> Self {
        self.policy = Some(policy.into());
        self
    }

    /// Sets the (hashed) key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the budget.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Sets the elapsed time.
    pub fn elapsed(mut self, elapsed: Duration) -> Self {
        self.elapsed = Some(elapsed);
        self
    }

    /// Sets the retry-after time.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

/// A refusal stored in a response's extensions, for the logging layer.
#[derive(Clone)]
pub struct Refused(Arc<dyn Refusal>);

impl Refused {
    /// Wraps a refusal.
    pub fn new(refusal: impl Refusal) -> Self {
        Self(Arc::new(refusal))
    }

    /// The refusal.
    pub fn refusal(&self) -> &(dyn Refusal + 'static) {
        &*self.0
    }

    /// The refusal's `Display`, then the `Display` of each of its sources,
    /// outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn StdError + 'static)> {
        let first: &(dyn StdError + 'static) = &*self.0;
        std::iter::successors(Some(first), |error: &&(dyn StdError + 'static)| {
            (*error).source()
        })
    }

    /// The concrete refusal, if it is an `R`.
    pub fn downcast_ref<R: Refusal>(&self) -> Option<&R> {
        let error: &(dyn StdError + 'static) = &*self.0;
        error.downcast_ref::<R>()
    }
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Refused").field(&self.0.to_string()).finish()
    }
}

/// A refusal that happens while the request body streams (a body limit, a
/// body-read timeout): the body records it here, and the layer that owns the
/// slot replaces whatever response the inner service made of the failed read
/// (axum's extractors make a 400 or a plain-text 413 of it) with the refusal's
/// problem.
///
/// It lives inside the state the body and the future already share (one
/// allocation per request, not two).
#[derive(Default)]
pub(crate) struct RefusalSlot(OnceLock<Refused>);

impl RefusalSlot {
    /// Records a refusal; the first one wins.
    pub(crate) fn set(&self, refused: Refused) {
        let _ = self.0.set(refused);
    }

    /// The recorded refusal, if any.
    pub(crate) fn get(&self) -> Option<Refused> {
        self.0.get().cloned()
    }
}

// The refusal's side of `Problem`: here, so that a problem knows nothing of
// refusals and the two files do not import each other.
impl Problem {
    /// The response for a typed refusal of a request: its problem, with the
    /// request's id and trace, and the refusal itself in the response's
    /// extensions as [`Refused`] for the logging layer.
    pub fn refuse<B, R: Refusal>(refusal: R, request: &Extensions) -> Response<ProblemOr<B>> {
        Self::refuse_with(
            Refused::new(refusal),
            RequestContext::from_extensions(request),
        )
    }

    /// As [`Problem::refuse`], for a refusal already wrapped and a request
    /// context captured earlier (a refusal found after the request was handed
    /// on, such as a body limit crossed while the handler read the body).
    pub fn refuse_with<B>(refused: Refused, request: RequestContext) -> Response<ProblemOr<B>> {
        let mut response = refused
            .refusal()
            .problem()
            .with_request_context(request)
            .into_response();
        response.extensions_mut().insert(refused);
        response
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use http::StatusCode;

    use super::Refusal;
    use crate::context::BudgetOrigin;
    use crate::deadline::{DeadlineExceeded, DeadlineRefusal};
    use crate::input::InputRefusal;
    use crate::rate_limit::{KeyHash, RateLimitRefusal, StoreError};

    /// Every case of this crate's refusals has its own `error.type`, and the
    /// list in `Refusal::error_type`'s documentation is the list of them.
    #[test]
    fn every_refusal_case_has_a_distinct_documented_error_type() {
        let exceeded = DeadlineExceeded {
            budget: Duration::from_secs(1),
            elapsed: Duration::from_secs(1),
            origin: BudgetOrigin::Configured,
            while_reading_body: false,
        };
        let limit = 1;
        let observed = 2;
        let refusals: Vec<Box<dyn Refusal>> = vec![
            Box::new(InputRefusal::DeclaredBodyTooLarge {
                limit,
                declared: observed,
            }),
            Box::new(InputRefusal::BodyTooLarge { limit, observed }),
            Box::new(InputRefusal::DecodedBodyTooLarge { limit, observed }),
            Box::new(InputRefusal::UnsupportedEncoding),
            Box::new(InputRefusal::MalformedBody),
            Box::new(InputRefusal::TooManyHeaders { limit, observed }),
            Box::new(InputRefusal::HeadersTooLarge { limit, observed }),
            Box::new(InputRefusal::UriTooLong { limit, observed }),
            Box::new(DeadlineRefusal::Exceeded {
                exceeded: exceeded.clone(),
                status: StatusCode::SERVICE_UNAVAILABLE,
            }),
            Box::new(DeadlineRefusal::BodyIdle {
                idle_timeout: Duration::from_secs(1),
                received: 0,
            }),
            Box::new(DeadlineRefusal::BodyTooSlow {
                min_rate: 2,
                observed_rate: 1,
                received: 1,
                waited: Duration::from_secs(1),
            }),
            Box::new(RateLimitRefusal::QuotaExceeded {
                policies: vec![Arc::from("per-ip")],
                key: KeyHash([0; 16]),
                retry_after: Duration::from_secs(1),
                limit: 1,
            }),
            Box::new(RateLimitRefusal::MissingKey {
                policy: Arc::from("per-user"),
                status: StatusCode::BAD_REQUEST,
            }),
            Box::new(RateLimitRefusal::StoreUnavailable {
                source: StoreError::unavailable("down"),
            }),
        ];
        let names: Vec<&str> = refusals.iter().map(|r| r.error_type()).collect();
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        // DeadlineExceeded alone names the same case as DeadlineRefusal::Exceeded.
        assert_eq!(exceeded.error_type(), "deadline_exceeded");
        let documented = include_str!("refusal.rs");
        let documented = &documented[..documented.find("#[cfg(test)]").unwrap()];
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(
                documented.contains(&format!("`{name}`")),
                "{name} is not listed"
            );
        }
    }
}
