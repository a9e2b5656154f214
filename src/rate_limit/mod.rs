//! Keyed rate limiting: exact under concurrency, memory bounded whatever
//! keys arrive.
//!
//! | piece | what it does |
//! |---|---|
//! | [`Quota`], [`Clock`] | GCRA, the algorithm over integer nanoseconds, shared by every backend |
//! | [`RateLimitStore`] | what the layer asks of a backend: one call per request, all policies at once, all or nothing |
//! | [`MemoryStore`] | the bounded in-process store: hard `max_keys`, lossless eviction of idle keys |
//! | [`KeySource`], [`TrustedProxies`], [`KeyHasher`] | who a request counts against; raw keys are never stored |
//! | [`headers`] | `RateLimit-Policy`, `RateLimit`, `Retry-After` |
//! | [`RedisStore`] (feature `redis`; behaviour and defaults in [`redis`]) | one limit shared by many instances: GCRA in one Lua script per request, bounded latency, a stated failure policy, a local deny cache |
//! | [`RateLimitLayer`] | named policies, per-key quotas, shadow mode, 429 `quota-exceeded` |
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_harden::rate_limit::{Policy, RateLimitLayer, TrustedProxies, DEFAULT_MAX_KEYS};
//!
//! // 50 requests/s per client IP, burst 100; clients connect directly, so
//! // no proxy is trusted and X-Forwarded-For is ignored.
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         RateLimitLayer::in_memory(DEFAULT_MAX_KEYS)
//!             .policy(Policy::per_client_ip(TrustedProxies::new())),
//!     );
//! // Serve with `into_make_service_with_connect_info::<SocketAddr>()` so
//! // the layer sees each connection's peer address.
//! ```

mod client_ip;
mod error;
mod forwarded;
mod gcra;
pub mod headers;
mod key;
mod layer;
mod policy;
mod service;
mod shared;
mod store;

pub use client_ip::{ClientIpError, IpGrouping, ProxyHeader, TrustedProxies, DEFAULT_MAX_HOPS};
pub use error::RateLimitRefusal;
pub use gcra::{Clock, Decision, ManualClock, MonotonicClock, Quota, QuotaError};
pub use key::{CustomKeyFn, KeyHasher, KeySource, Principal, RequestHead};
pub use layer::RateLimitLayer;
pub use policy::{
    MissingKey, Policy, QuotaResolver, StoreFailure, DEFAULT_BURST, DEFAULT_MAX_KEYS,
    DEFAULT_RATE_PER_SECOND,
};
pub use service::{RateLimit, RateLimitFuture};
pub use store::any::{AnyStore, CustomStore};
pub use store::memory::{MemoryStore, OverflowPolicy};
#[cfg(feature = "redis")]
pub use store::redis;
#[cfg(feature = "redis")]
pub use store::redis::builder::{RedisStoreBuilder, RedisStoreError};
#[cfg(feature = "redis")]
pub use store::redis::fallback::LocalFallback;
#[cfg(feature = "redis")]
pub use store::redis::stats::RedisStoreStats;
#[cfg(feature = "redis")]
pub use store::redis::store::RedisStore;
pub use store::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
