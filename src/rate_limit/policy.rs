//! Named policies: a key source, a quota, and what to do without a key or
//! without a store.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;

use super::client_ip::TrustedProxies;
use super::gcra::Quota;
use super::key::{KeySource, RequestHead};

/// Default sustained rate of [`Policy::per_client_ip`]: 50 requests per
/// second per client.
pub const DEFAULT_RATE_PER_SECOND: u32 = 50;
/// Default burst of [`Policy::per_client_ip`]: 100 requests at once.
pub const DEFAULT_BURST: u32 = 100;
/// Default cap on keys of the layer's [`MemoryStore`](super::MemoryStore)
/// ([`RateLimitLayer::in_memory`](super::RateLimitLayer::in_memory)): 100,000 keys, a few MiB.
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
    pub(super) name: Arc<str>,
    pub(super) quota: Quota,
    pub(super) key: KeySource,
    pub(super) resolver: Option<QuotaResolver>,
    pub(super) missing_key: MissingKey,
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
    /// Fail open: admit the request without rate-limit headers, and log a
    /// warning (at most every 10 s). The default: a rate limiter should not
    /// take the service down with it. (`on_store_failure = "open"`.)
    #[default]
    Open,
    /// Fail closed: refuse with 503 `service-unavailable`.
    /// (`on_store_failure = "closed"`.)
    Closed,
}
