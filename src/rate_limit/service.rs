use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Extensions, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::error::RateLimitRefusal;
use super::headers::RateLimitHeaders;
use super::key::RequestHead;
use super::layer::{MissingKey, Policy, Shared, StoreFailure};
use super::memory::MemoryStore;
use super::store::{Check, Decisions, RateLimitStore, StoreError};
use crate::error::{Problem, ProblemOr};

/// The service of [`RateLimitLayer`](super::RateLimitLayer).
///
/// The inner service must be `Clone` for stores that answer asynchronously
/// (the checked request is handed to the instance that was polled ready,
/// and a clone takes its place); the in-process store answers in `call`,
/// and the inner service is then called directly.
pub struct RateLimit<S, St = MemoryStore> {
    inner: S,
    shared: Arc<Shared<St>>,
    /// The admitted request's headers while the inner service is called:
    /// see `call`.
    parked_headers: Option<RateLimitHeaders>,
}

impl<S, St> RateLimit<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self {
            inner,
            shared,
            parked_headers: None,
        }
    }

    inner_service_accessors!();

    /// The store.
    pub fn store(&self) -> &Arc<St> {
        &self.shared.store
    }
}

impl<S: Clone, St> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            parked_headers: None,
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for RateLimit<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policies", &self.shared.policies)
            .field("shadow", &self.shared.shadow)
            .finish_non_exhaustive()
    }
}

/// The checks of one request: inline for the common single policy, so a
/// request costs no allocation for them.
enum CheckList {
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

enum Verdict<B> {
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
    fn conclude<B>(
        &self,
        result: Result<Decisions, StoreError>,
        checks: &[Check],
        default_quotas: bool,
        request: &Extensions,
    ) -> Verdict<B> {
        let decisions = match result {
            Ok(decisions) => decisions,
            Err(error) => {
                decision_metric("store_failed");
                if self.shadow || self.store_failure == StoreFailure::Allow {
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
                return Verdict::Refuse(Problem::refuse(
                    RateLimitRefusal::StoreUnavailable { source: error },
                    request,
                ));
            }
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
            decision_metric("admitted");
            return Verdict::Admit(Some(headers));
        };
        let mut refusing = checks
            .iter()
            .zip(decisions.as_slice())
            .filter(|(_, decision)| !decision.allowed);
        let (first_check, first_decision) = refusing
            .next()
            .expect("a retry_after comes from a refusing decision");
        let mut policies = vec![first_check.policy.clone()];
        policies.extend(refusing.map(|(check, _)| check.policy.clone()));
        let refusal = RateLimitRefusal::QuotaExceeded {
            policies,
            key: first_check.key,
            retry_after,
            limit: first_decision.limit,
        };
        if self.shadow {
            decision_metric("shadow_refused");
            self.log_shadow(&refusal);
            return Verdict::Admit(Some(headers));
        }
        decision_metric("refused");
        let mut response = Problem::refuse(refusal, request);
        headers
            .with_retry_after(retry_after)
            .apply(response.headers_mut());
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

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: RateLimitStore,
{
    type Response = Response<ProblemOr<ResBody>>;
    type Error = S::Error;
    type Future = RateLimitFuture<S, St, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let headers = match self.shared.decide_now(&request) {
            Now::Admit(headers) => headers,
            Now::Refuse(response) => return RateLimitFuture::refused(response),
            Now::Later(checks, default_quotas) => {
                return self.check_later(request, checks, default_quotas)
            }
        };
        // The inner future is most of this one's size. The compiler builds
        // it in place in the returned value, instead of copying it there
        // twice (some hundreds of bytes, per request), only if nothing that
        // needs dropping is alive across the inner `call`, where a panic
        // would have to drop it. So the headers wait in the service, which
        // drops them if the inner `call` panics (nothing leaks).
        self.parked_headers = headers;
        let future = self.inner.call(request);
        RateLimitFuture {
            state: State::Inner { future },
            headers: self.parked_headers.take(),
        }
    }
}

/// What `call` learned before calling the inner service.
enum Now<B> {
    Admit(Option<RateLimitHeaders>),
    Refuse(Response<ProblemOr<B>>),
    /// The store answers asynchronously.
    Later(CheckList, bool),
}

impl<St: RateLimitStore> Shared<St> {
    fn decide_now<ReqBody, B>(&self, request: &Request<ReqBody>) -> Now<B> {
        let (checks, default_quotas) = match self.prepare(&RequestHead::of(request)) {
            Prepared::Checks(checks, default_quotas) => (checks, default_quotas),
            Prepared::Unchecked => return Now::Admit(None),
            Prepared::Refused(refusal) => {
                return Now::Refuse(Problem::refuse(refusal, request.extensions()))
            }
        };
        match self.store.try_check_now(&checks) {
            Some(result) => {
                match self.conclude(result, &checks, default_quotas, request.extensions()) {
                    Verdict::Admit(headers) => Now::Admit(headers),
                    Verdict::Refuse(response) => Now::Refuse(response),
                }
            }
            None => Now::Later(checks, default_quotas),
        }
    }
}

impl<S, St> RateLimit<S, St> {
    /// The future of a request whose store answers asynchronously.
    fn check_later<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        checks: CheckList,
        default_quotas: bool,
    ) -> RateLimitFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>> + Clone,
        St: RateLimitStore,
    {
        let check = self.shared.store.check(&checks);
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        RateLimitFuture {
            state: State::Checking {
                check,
                pending: Some(Box::new(Pending {
                    request,
                    inner,
                    shared: self.shared.clone(),
                    checks,
                    default_quotas,
                })),
            },
            headers: None,
        }
    }
}

/// What a request waiting for an asynchronous store holds on to.
struct Pending<S, St, ReqBody> {
    request: Request<ReqBody>,
    inner: S,
    shared: Arc<Shared<St>>,
    checks: CheckList,
    default_quotas: bool,
}

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct RateLimitFuture<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: RateLimitStore,
    {
        #[pin]
        state: State<S, St, ReqBody, ResBody>,
        // Beside the state rather than in it: see `RateLimit::call`.
        headers: Option<RateLimitHeaders>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>>,
        St: RateLimitStore,
    {
        Checking {
            #[pin]
            check: St::Future,
            // Boxed: only asynchronous stores need it, and it is large.
            pending: Option<Box<Pending<S, St, ReqBody>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Refused {
            response: Option<Response<ProblemOr<ResBody>>>,
        },
    }
}

impl<S, St, ReqBody, ResBody> RateLimitFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>>,
    St: RateLimitStore,
{
    fn refused(response: Response<ProblemOr<ResBody>>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
            headers: None,
        }
    }
}

impl<S, St, ReqBody, ResBody> Future for RateLimitFuture<S, St, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: RateLimitStore,
{
    type Output = Result<Response<ProblemOr<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, pending } => {
                    let result = ready!(check.poll(cx));
                    let pending = *pending
                        .take()
                        .expect("RateLimitFuture polled after completion");
                    let Pending {
                        request,
                        mut inner,
                        shared,
                        checks,
                        default_quotas,
                    } = pending;
                    let next = match shared.conclude(
                        result,
                        &checks,
                        default_quotas,
                        request.extensions(),
                    ) {
                        Verdict::Admit(headers) => {
                            *this.headers = headers;
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                        Verdict::Refuse(response) => State::Refused {
                            response: Some(response),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    let mut response = response.map(ProblemOr::inner);
                    if let Some(headers) = this.headers.take() {
                        headers.apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Refused { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("RateLimitFuture polled after completion")));
                }
            }
        }
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
        crate::telemetry::metrics::names::RATE_LIMIT_DECISIONS,
        &[("outcome", outcome)],
        1,
    );
}
