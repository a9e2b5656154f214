//! What every service of one layer shares, and how it decides a request:
//! the checks of each policy, the store's answer, the verdict.

use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Request, Response};

use super::error::RateLimitRefusal;
use super::gcra::{Clock, Decision, MonotonicClock};
use super::headers::{ceil_seconds, policy_header_value, RateLimitHeaders, StatePrefixes};
use super::key::{KeyHasher, RequestHead};
use super::policy::{MissingKey, Policy, StoreFailure};
use super::store::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
use crate::context::ClientKey;
use crate::error::{Problem, ProblemOr};
use crate::telemetry::LogThrottle;

/// What every clone of a [`RateLimit`] service shares.
pub(super) struct Shared<St> {
    pub(super) store: Arc<St>,
    pub(super) policies: Arc<[Policy]>,
    pub(super) hasher: KeyHasher,
    pub(super) shadow: bool,
    pub(super) legacy_headers: bool,
    pub(super) store_failure: StoreFailure,
    /// Put the first check's key into admitted requests' extensions.
    pub(super) publish_client_key: bool,
    pub(super) clock: MonotonicClock,
    /// `RateLimit-Policy` for requests checked by every policy at its own
    /// quota.
    pub(super) default_policy_value: Option<http::HeaderValue>,
    /// The fixed text of each policy's `RateLimit` item.
    pub(super) state_prefixes: StatePrefixes,
    pub(super) shadow_log: LogThrottle,
    pub(super) missing_key_log: LogThrottle,
    pub(super) store_error_log: LogThrottle,
}

impl<St> Shared<St> {
    /// The state of the services of one layer (see `RateLimitLayer::layer`).
    pub(super) fn new(
        store: Arc<St>,
        policies: Arc<[Policy]>,
        hasher: KeyHasher,
        shadow: bool,
        legacy_headers: bool,
        store_failure: StoreFailure,
        publish_client_key: bool,
    ) -> Self {
        let default_checks: Vec<Check> = policies
            .iter()
            .map(|policy| Check {
                policy: policy.name.clone(),
                key: KeyHash([0; 16]),
                quota: policy.quota,
                cost: 1,
            })
            .collect();
        Self {
            default_policy_value: policy_header_value(&default_checks),
            state_prefixes: StatePrefixes::new(policies.iter().map(|policy| &*policy.name)),
            store,
            policies,
            hasher,
            shadow,
            legacy_headers,
            store_failure,
            publish_client_key,
            clock: MonotonicClock::new(),
            shadow_log: LogThrottle::new(1_000_000_000),
            missing_key_log: LogThrottle::new(10_000_000_000),
            store_error_log: LogThrottle::new(10_000_000_000),
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.clock.now_nanos()
    }
}

/// The checks of one request: inline for the common single policy, so a
/// request costs no allocation for them.
pub(super) enum CheckList {
    One([Check; 1]),
    Many(Vec<Check>),
}

impl std::ops::Deref for CheckList {
    type Target = [Check];

    fn deref(&self) -> &[Check] {
        match self {
            Self::One(one) => one,
            Self::Many(many) => many,
        }
    }
}

enum Prepared {
    /// The checks, and whether they are exactly the layer's policies with
    /// their own quotas (then the `RateLimit-Policy` value is ready-made).
    Checks(CheckList, bool),
    Unchecked,
    Refused(RateLimitRefusal),
}

pub(super) enum Verdict<B> {
    Admit(Option<RateLimitHeaders>),
    Refuse(Response<ProblemOr<B>>),
}

impl<St: RateLimitStore> Shared<St> {
    /// The checks of a request, one per policy, or an early refusal.
    fn prepare(&self, head: &RequestHead<'_>) -> Prepared {
        if let [policy] = &*self.policies {
            return match self.check_of(policy, head) {
                Ok(Some(check)) => {
                    let default_quota = check.quota == policy.quota;
                    Prepared::Checks(CheckList::One([check]), default_quota)
                }
                Ok(None) => Prepared::Unchecked,
                Err(refusal) => Prepared::Refused(refusal),
            };
        }
        let mut checks = Vec::with_capacity(self.policies.len());
        let mut default_quotas = true;
        for policy in self.policies.iter() {
            match self.check_of(policy, head) {
                Ok(Some(check)) => {
                    default_quotas &= check.quota == policy.quota;
                    checks.push(check);
                }
                Ok(None) => {}
                Err(refusal) => return Prepared::Refused(refusal),
            }
        }
        if checks.is_empty() {
            Prepared::Unchecked
        } else {
            let default_quotas = default_quotas && checks.len() == self.policies.len();
            Prepared::Checks(CheckList::Many(checks), default_quotas)
        }
    }

    /// One policy's check of a request; `Ok(None)` when the policy is
    /// skipped (a would-be refusal in shadow mode).
    fn check_of(
        &self,
        policy: &Policy,
        head: &RequestHead<'_>,
    ) -> Result<Option<Check>, RateLimitRefusal> {
        let key = match policy.key.key(head, &self.hasher) {
            Some(key) => key,
            None => match policy.missing_key {
                MissingKey::SharedBucket => {
                    if head.peer_addr().is_none() && policy.key.needs_peer() {
                        warn_no_peer_once(&policy.name);
                    }
                    if let Some(suppressed) = self.missing_key_log.allow(self.now()) {
                        tracing::warn!(
                            policy = %policy.name,
                            suppressed,
                            "request without a usable rate-limit key counted in the shared anonymous bucket"
                        );
                    }
                    self.hasher.anonymous()
                }
                MissingKey::Refuse(status) => {
                    let refusal = RateLimitRefusal::MissingKey {
                        policy: policy.name.clone(),
                        status,
                    };
                    if self.shadow {
                        self.log_shadow(&refusal);
                        return Ok(None);
                    }
                    return Err(refusal);
                }
            },
        };
        let quota = policy
            .resolver
            .as_ref()
            .and_then(|resolve| resolve(head))
            .unwrap_or(policy.quota);
        Ok(Some(Check {
            policy: policy.name.clone(),
            key,
            quota,
            cost: 1,
        }))
    }

    /// What the store's answer means for the request.
    pub(super) fn conclude<B>(
        &self,
        result: Result<Decisions, StoreError>,
        checks: &[Check],
        default_quotas: bool,
        request: &Extensions,
    ) -> Verdict<B> {
        let decisions = match result {
            Ok(decisions) => decisions,
            Err(error) => return self.store_failed(error, request),
        };
        let policy_value = if default_quotas {
            self.default_policy_value.clone()
        } else {
            None
        };
        let headers = RateLimitHeaders::with_policy_value(
            policy_value,
            Some(&self.state_prefixes),
            checks,
            decisions.as_slice(),
            self.legacy_headers,
        );
        let Some(retry_after) = decisions.retry_after() else {
            decision_metric("acquired");
            return Verdict::Admit(Some(headers));
        };
        let refusal = quota_exceeded(checks, decisions.as_slice(), retry_after);
        if self.shadow {
            decision_metric("shadow_rejected");
            self.log_shadow(&refusal);
            return Verdict::Admit(Some(headers));
        }
        decision_metric("rejected");
        let mut response = Problem::refuse(refusal, request);
        headers
            .with_retry_after(retry_after)
            .apply(response.headers_mut());
        Verdict::Refuse(response)
    }

    /// What a request gets when the store failed: the failure policy.
    fn store_failed<B>(&self, error: StoreError, request: &Extensions) -> Verdict<B> {
        decision_metric("store_failed");
        if self.shadow || self.store_failure == StoreFailure::Open {
            if let Some(suppressed) = self.store_error_log.allow(self.now()) {
                tracing::warn!(
                    error = %error,
                    reason = ?error,
                    suppressed,
                    "rate-limit store failed; request admitted unchecked"
                );
            }
            return Verdict::Admit(None);
        }
        let retry_after = error.retry_after();
        let mut response = Problem::refuse(
            RateLimitRefusal::StoreUnavailable { source: error },
            request,
        );
        if let Some(retry_after) = retry_after {
            // `append`: the problem response has no `Retry-After` yet, so
            // it is the same as `insert`; a second `insert::<HeaderName>`
            // call site changed how the logging path was inlined and cost
            // every logged request about 1,500 instructions
            // (benches/instructions.sh).
            response.headers_mut().append(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(ceil_seconds(retry_after).max(1)),
            );
        }
        Verdict::Refuse(response)
    }

    fn log_shadow(&self, refusal: &RateLimitRefusal) {
        if let Some(suppressed) = self.shadow_log.allow(self.now()) {
            let context = crate::error::Refusal::context(refusal);
            tracing::warn!(
                policy = context.policy.as_deref().unwrap_or(""),
                key = context.key.as_deref().unwrap_or(""),
                retry_after_ms = context.retry_after.map(|d| d.as_millis() as u64),
                suppressed,
                "rate limit (shadow mode): would refuse: {refusal}"
            );
        }
    }
}

/// What `call` learned before calling the inner service.
pub(super) enum Now<B> {
    /// Admitted: its headers, and the client key to publish, if asked for.
    Admit(Option<RateLimitHeaders>, Option<ClientKey>),
    Refuse(Response<ProblemOr<B>>),
    /// The store answers asynchronously.
    Later(CheckList, bool),
}

impl<St: RateLimitStore> Shared<St> {
    /// The client key of a request checked by `checks`, if asked for.
    pub(super) fn client_key(&self, checks: &[Check]) -> Option<ClientKey> {
        self.publish_client_key
            .then(|| checks.first().map(|check| ClientKey(check.key.0)))
            .flatten()
    }

    pub(super) fn decide_now<ReqBody, B>(&self, request: &Request<ReqBody>) -> Now<B> {
        let (checks, default_quotas) = match self.prepare(&RequestHead::of(request)) {
            Prepared::Checks(checks, default_quotas) => (checks, default_quotas),
            Prepared::Unchecked => return Now::Admit(None, None),
            Prepared::Refused(refusal) => {
                return Now::Refuse(Problem::refuse(refusal, request.extensions()))
            }
        };
        match self.store.try_check_now(&checks) {
            Some(result) => {
                match self.conclude(result, &checks, default_quotas, request.extensions()) {
                    Verdict::Admit(headers) => Now::Admit(headers, self.client_key(&checks)),
                    Verdict::Refuse(response) => Now::Refuse(response),
                }
            }
            None => Now::Later(checks, default_quotas),
        }
    }
}

/// The refusal of a request some of whose checks were refused: every
/// refusing policy, and the key and limit of the first.
fn quota_exceeded(
    checks: &[Check],
    decisions: &[Decision],
    retry_after: Duration,
) -> RateLimitRefusal {
    let mut refusing = checks
        .iter()
        .zip(decisions)
        .filter(|(_, decision)| !decision.allowed);
    let (first_check, first_decision) = refusing
        .next()
        .expect("a retry_after comes from a refusing decision");
    let mut policies = vec![first_check.policy.clone()];
    policies.extend(refusing.map(|(check, _)| check.policy.clone()));
    RateLimitRefusal::QuotaExceeded {
        policies,
        key: first_check.key,
        retry_after,
        limit: first_decision.limit,
    }
}

/// An IP policy on a server that gives requests no peer address (plain
/// `axum::serve` without `ConnectInfo`) counts every client in one bucket:
/// one client can then exhaust everyone's quota. That is a deployment
/// mistake, not traffic: say so once per process, at ERROR, with the fix.
fn warn_no_peer_once(policy: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::error!(
            policy,
            "rate limiting by IP, but requests carry no peer address: every client shares one bucket. \
             Serve with tower_harden::serve (or Harden::serve), or with axum's \
             into_make_service_with_connect_info::<SocketAddr>()"
        );
    });
}

fn decision_metric(outcome: &'static str) {
    crate::telemetry::metrics::increment(
        crate::telemetry::metrics::names::RATE_LIMITING_REQUESTS,
        &[(
            crate::telemetry::metrics::names::RATE_LIMITING_RESULT,
            outcome,
        )],
        1,
    );
}
