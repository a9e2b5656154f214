use std::fmt;
use std::sync::{Arc, OnceLock};

use http::StatusCode;
use tower_layer::Layer;

use super::gcra::{Clock, MonotonicClock, Quota};
use super::headers::{policy_header_value, StatePrefixes};
use super::key::{KeyHasher, KeySource, RequestHead, TrustedProxies};
use super::memory::MemoryStore;
use super::service::RateLimit;
use super::store::{Check, KeyHash};
use crate::telemetry::LogThrottle;

/// Default sustained rate of [`Policy::per_client_ip`]: 50 requests per
/// second per client.
pub const DEFAULT_RATE_PER_SECOND: u32 = 50;
/// Default burst of [`Policy::per_client_ip`]: 100 requests at once.
pub const DEFAULT_BURST: u32 = 100;
/// Default cap on keys of the layer's [`MemoryStore`]
/// ([`RateLimitLayer::in_memory`]): 100,000 keys, a few MiB.
pub const DEFAULT_MAX_KEYS: usize = 100_000;
/// The longest policy name; longer names are cut.
const MAX_POLICY_NAME: usize = 64;

/// A closure giving a request's quota (premium API keys, plans); `None`
/// means the policy's own quota.
pub type QuotaResolver = Arc<dyn Fn(&RequestHead<'_>) -> Option<Quota> + Send + Sync>;

/// What a policy does with a request that has no usable key (no peer
/// address, no API key header, a trusted proxy's garbage entry...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Count it against one bucket shared by every keyless request of the
    /// policy (an anonymous tier). The default. A warning is logged (at most
    /// every 10 s), since for IP policies it usually means a server without
    /// `ConnectInfo`.
    #[default]
    SharedBucket,
    /// Refuse it with this 4xx status and an `invalid-input` problem
    /// (a status outside 400..=499 becomes 400).
    Refuse(StatusCode),
}

/// One named rate-limit policy: a key source, a quota, and what to do
/// without a key.
///
/// ```
/// use http::HeaderName;
/// use tower_harden::rate_limit::{KeySource, Policy, Quota};
///
/// let premium = Quota::per_second(100).unwrap();
/// let policy = Policy::new(
///     "api-key",
///     Quota::per_second(5).unwrap(),
///     KeySource::header(HeaderName::from_static("x-api-key")),
/// )
/// .quota_resolver(move |head| {
///     let key = head.headers.get("x-api-key")?;
///     key.as_bytes().starts_with(b"premium_").then_some(premium)
/// });
/// assert_eq!(policy.name(), "api-key");
/// ```
#[derive(Clone)]
pub struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) key: KeySource,
    pub(crate) resolver: Option<QuotaResolver>,
    pub(crate) missing_key: MissingKey,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("quota", &self.quota)
            .field("key", &self.key)
            .field("resolver", &self.resolver.is_some())
            .field("missing_key", &self.missing_key)
            .finish()
    }
}

impl Policy {
    /// A policy named `name`. The name appears in headers, problems and
    /// logs: characters other than ASCII letters, digits, `-`, `_` and `.`
    /// become `_`, and it is cut at 64 characters.
    pub fn new(name: &str, quota: Quota, key: KeySource) -> Self {
        let name: String = name
            .chars()
            .take(MAX_POLICY_NAME)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            name: Arc::from(name),
            quota,
            key,
            resolver: None,
            missing_key: MissingKey::default(),
        }
    }

    /// `"per-ip"`: [`DEFAULT_RATE_PER_SECOND`] requests per second, burst
    /// [`DEFAULT_BURST`], keyed by the client IP behind `proxies` (pass
    /// `TrustedProxies::new()` when clients connect directly: forwarding
    /// headers are then ignored), IPv6 grouped by /64.
    pub fn per_client_ip(proxies: TrustedProxies) -> Self {
        let quota = Quota::per_second(DEFAULT_RATE_PER_SECOND)
            .and_then(|quota| quota.with_burst(DEFAULT_BURST))
            .expect("the default quota is valid");
        Self::new("per-ip", quota, KeySource::client_ip(proxies))
    }

    /// A policy with one bucket for all requests.
    pub fn global(name: &str, quota: Quota) -> Self {
        Self::new(name, quota, KeySource::Global)
    }

    /// Gives some requests another quota. Default: none (every key gets the
    /// policy's quota).
    pub fn quota_resolver<F>(mut self, resolver: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<Quota> + Send + Sync + 'static,
    {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// What to do without a usable key. Default:
    /// [`MissingKey::SharedBucket`].
    pub fn on_missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = match missing_key {
            MissingKey::Refuse(status) if !status.is_client_error() => {
                MissingKey::Refuse(StatusCode::BAD_REQUEST)
            }
            other => other,
        };
        self
    }

    /// The (sanitized) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The default quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

/// What the layer does when the store fails ([`StoreError`](super::StoreError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoreFailure {
    /// Admit the request without rate-limit headers, and log a warning (at
    /// most every 10 s). The default: a rate limiter should not take the
    /// service down with it.
    #[default]
    Allow,
    /// Refuse with 503 `service-unavailable`.
    Refuse,
}

/// Keyed rate limiting for any `Service<http::Request<B>>`.
///
/// Each request is checked against every [`Policy`] in one store call; if
/// any policy refuses, none consumes quota and the answer is 429
/// `quota-exceeded` listing the violated policies, with `Retry-After`.
/// Every checked response carries `RateLimit-Policy` and `RateLimit`
/// (see [`headers`](super::headers)).
///
/// State lives in the store (an `Arc`), shared by every clone of the
/// service and by every layer built over the same store: axum's
/// per-request clones all count against the same buckets.
///
/// Defaults: no policies (add them with [`policy`](Self::policy)), a
/// per-process random [`KeyHasher`], not shadow, no legacy headers,
/// [`StoreFailure::Allow`].
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_harden::rate_limit::{Policy, Quota, RateLimitLayer, TrustedProxies};
///
/// let limits = RateLimitLayer::in_memory(100_000)
///     .policy(Policy::per_client_ip(TrustedProxies::new()))
///     .policy(Policy::global("global", Quota::per_second(2_000).unwrap()));
/// let login_limit = RateLimitLayer::with_store(limits.store().clone())
///     .policy(Policy::new(
///         "login",
///         Quota::per_minute(5).unwrap(),
///         tower_harden::rate_limit::KeySource::peer_ip(),
///     ));
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .route("/login", get(|| async { "welcome" }).layer(login_limit))
///     .layer(limits);
/// ```
pub struct RateLimitLayer<St = MemoryStore> {
    pub(crate) store: Arc<St>,
    pub(crate) policies: Arc<[Policy]>,
    pub(crate) hasher: KeyHasher,
    pub(crate) shadow: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) store_failure: StoreFailure,
    /// What every service this layer makes shares, built at the first
    /// `layer()` call: axum calls `layer()` once per route, and the routes
    /// must share one set of log throttles (a warning "at most every 10 s"
    /// must not come once per route). Every builder method starts a new one.
    built: Arc<OnceLock<Arc<Shared<St>>>>,
}

impl<St> Clone for RateLimitLayer<St> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            policies: self.policies.clone(),
            hasher: self.hasher.clone(),
            shadow: self.shadow,
            legacy_headers: self.legacy_headers,
            store_failure: self.store_failure,
            built: self.built.clone(),
        }
    }
}

impl<St> fmt::Debug for RateLimitLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("policies", &self.policies)
            .field("shadow", &self.shadow)
            .field("legacy_headers", &self.legacy_headers)
            .field("store_failure", &self.store_failure)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer<MemoryStore> {
    /// A layer over a new [`MemoryStore`] of at most `max_keys` keys
    /// (see [`DEFAULT_MAX_KEYS`] for a starting point).
    pub fn in_memory(max_keys: usize) -> Self {
        Self::new(MemoryStore::new(max_keys))
    }
}

impl<St> RateLimitLayer<St> {
    /// A layer over `store`.
    pub fn new(store: St) -> Self {
        Self::with_store(Arc::new(store))
    }

    /// A layer over a store shared with other layers (per-route policies).
    pub fn with_store(store: Arc<St>) -> Self {
        Self {
            store,
            policies: Arc::from(Vec::new()),
            hasher: KeyHasher::default(),
            shadow: false,
            legacy_headers: false,
            store_failure: StoreFailure::default(),
            built: Arc::default(),
        }
    }

    /// Adds a policy. Policies are checked in the order added; their
    /// headers list in that order.
    pub fn policy(mut self, policy: Policy) -> Self {
        let mut policies = self.policies.to_vec();
        policies.push(policy);
        self.policies = Arc::from(policies);
        self.built = Arc::default();
        self
    }

    /// The hasher of keys. Default: [`KeyHasher::default`], one random
    /// secret per process (shared by every layer of the process). Processes
    /// sharing a network store need [`KeyHasher::from_secret`].
    pub fn key_hasher(mut self, hasher: KeyHasher) -> Self {
        self.hasher = hasher;
        self.built = Arc::default();
        self
    }

    /// Shadow mode: decide and count as usual, log would-be refusals (at
    /// most one event per second, with the number left out), refuse
    /// nothing. Refused checks consume no quota, so shadow mode admits
    /// exactly what enforcing would, plus the would-be refusals. Default:
    /// off.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self.built = Arc::default();
        self
    }

    /// Adds `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` for the most constrained policy. Default: off.
    pub fn legacy_headers(mut self, legacy: bool) -> Self {
        self.legacy_headers = legacy;
        self.built = Arc::default();
        self
    }

    /// What to do when the store fails. Default: [`StoreFailure::Allow`].
    pub fn on_store_failure(mut self, failure: StoreFailure) -> Self {
        self.store_failure = failure;
        self.built = Arc::default();
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<St> {
        &self.store
    }

    /// The policies, in order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
}

impl<S, St> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = self
            .built
            .get_or_init(|| Arc::new(Shared::from_layer(self)))
            .clone();
        RateLimit::new(inner, shared)
    }
}

/// What every clone of a [`RateLimit`] service shares.
pub(crate) struct Shared<St> {
    pub(crate) store: Arc<St>,
    pub(crate) policies: Arc<[Policy]>,
    pub(crate) hasher: KeyHasher,
    pub(crate) shadow: bool,
    pub(crate) legacy_headers: bool,
    pub(crate) store_failure: StoreFailure,
    pub(crate) clock: MonotonicClock,
    /// `RateLimit-Policy` for requests checked by every policy at its own
    /// quota.
    pub(crate) default_policy_value: Option<http::HeaderValue>,
    /// The fixed text of each policy's `RateLimit` item.
    pub(crate) state_prefixes: StatePrefixes,
    pub(crate) shadow_log: LogThrottle,
    pub(crate) missing_key_log: LogThrottle,
    pub(crate) store_error_log: LogThrottle,
}

impl<St> Shared<St> {
    fn from_layer(layer: &RateLimitLayer<St>) -> Self {
        Self {
            store: layer.store.clone(),
            policies: layer.policies.clone(),
            hasher: layer.hasher.clone(),
            shadow: layer.shadow,
            legacy_headers: layer.legacy_headers,
            store_failure: layer.store_failure,
            clock: MonotonicClock::new(),
            default_policy_value: policy_header_value(
                &layer
                    .policies
                    .iter()
                    .map(|policy| Check {
                        policy: policy.name.clone(),
                        key: KeyHash([0; 16]),
                        quota: policy.quota,
                        cost: 1,
                    })
                    .collect::<Vec<_>>(),
            ),
            state_prefixes: StatePrefixes::new(layer.policies.iter().map(|policy| &*policy.name)),
            shadow_log: LogThrottle::new(1_000_000_000),
            missing_key_log: LogThrottle::new(10_000_000_000),
            store_error_log: LogThrottle::new(10_000_000_000),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        self.clock.now_nanos()
    }
}
