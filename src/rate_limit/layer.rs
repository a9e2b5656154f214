//! The layer: a store, named policies, and how to answer.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tower_layer::Layer;

use super::key::KeyHasher;
use super::policy::{Policy, StoreFailure};
use super::service::RateLimit;
use super::shared::Shared;
use super::store::any::AnyStore;
use super::store::memory::MemoryStore;
use super::store::RateLimitStore;

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
/// [`StoreFailure::Open`].
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
    store: Arc<St>,
    policies: Arc<[Policy]>,
    hasher: KeyHasher,
    shadow: bool,
    legacy_headers: bool,
    store_failure: StoreFailure,
    publish_client_key: bool,
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
            publish_client_key: self.publish_client_key,
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
    /// (see [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS) for a starting point).
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
            publish_client_key: false,
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

    /// Puts the key of the first policy that keyed an admitted request
    /// into its extensions, as a [`ClientKey`](crate::context::ClientKey),
    /// for a later layer that counts per client (the in-flight limit per
    /// key). Default: off (an extension per request costs an allocation).
    pub fn publish_client_key(mut self, publish: bool) -> Self {
        self.publish_client_key = publish;
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

    /// What to do when the store fails. Default: [`StoreFailure::Open`].
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

impl<St: RateLimitStore> RateLimitLayer<St> {
    /// The same layer (policies, hasher, settings, store) over an
    /// [`AnyStore`], the store type of the [`Harden`](crate::Harden)
    /// preset: what [`Harden::rate_limit`](crate::Harden::rate_limit) does
    /// with a layer over any other store. A layer over an `AnyStore` is
    /// returned as it is.
    ///
    /// ```
    /// use tower_harden::rate_limit::{AnyStore, MemoryStore, RateLimitLayer};
    ///
    /// let layer: RateLimitLayer<AnyStore> =
    ///     RateLimitLayer::new(MemoryStore::new(10_000)).into_any_store();
    /// # drop(layer);
    /// ```
    pub fn into_any_store(self) -> RateLimitLayer<AnyStore> {
        use std::any::Any;
        let mut slot = Some(self);
        if let Some(layer) =
            (&mut slot as &mut dyn Any).downcast_mut::<Option<RateLimitLayer<AnyStore>>>()
        {
            return layer.take().expect("filled above");
        }
        let Self {
            store,
            policies,
            hasher,
            shadow,
            legacy_headers,
            store_failure,
            publish_client_key,
            built: _,
        } = slot.expect("filled above");
        let mut store = Some(store);
        let store = match (&mut store as &mut dyn Any).downcast_mut::<Option<Arc<MemoryStore>>>() {
            // An in-process store no one else holds keeps its own variant.
            Some(memory) => match Arc::try_unwrap(memory.take().expect("filled above")) {
                Ok(memory) => AnyStore::Memory(memory),
                Err(shared) => AnyStore::custom(shared),
            },
            None => AnyStore::custom(store.expect("filled above")),
        };
        RateLimitLayer {
            store: Arc::new(store),
            policies,
            hasher,
            shadow,
            legacy_headers,
            store_failure,
            publish_client_key,
            built: Arc::default(),
        }
    }
}

impl<S, St> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = self
            .built
            .get_or_init(|| {
                Arc::new(Shared::new(
                    self.store.clone(),
                    self.policies.clone(),
                    self.hasher.clone(),
                    self.shadow,
                    self.legacy_headers,
                    self.store_failure,
                    self.publish_client_key,
                ))
            })
            .clone();
        RateLimit::new(inner, shared)
    }
}
