use super::memory::MemoryStore;
#[cfg(feature = "redis")]
use super::redis::store::RedisStore;
use super::{Check, Decisions, RateLimitStore, StoreError};
#[cfg(feature = "redis")]
use redis::cluster_async::ClusterConnection;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A store chosen at run time, from configuration: in process, Redis, or
/// any other [`RateLimitStore`]. What [`Harden`](crate::Harden) uses, so one
/// layer type serves every backend.
///
/// ```
/// use tower_harden::rate_limit::{AnyStore, MemoryStore, RateLimitLayer};
///
/// let store = AnyStore::from(MemoryStore::new(10_000));
/// let layer = RateLimitLayer::new(store);
/// # drop(layer);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyStore {
    /// The bounded in-process store.
    Memory(MemoryStore),
    /// The Redis store over one Redis (feature `redis`).
    #[cfg(feature = "redis")]
    Redis(RedisStore),
    /// The Redis store over a Redis Cluster (feature `redis`, see
    /// [`RedisStoreBuilder::connect_cluster`](crate::rate_limit::RedisStoreBuilder::connect_cluster)).
    #[cfg(feature = "redis")]
    RedisCluster(RedisStore<ClusterConnection>),
    /// Any other store ([`AnyStore::custom`]).
    Custom(CustomStore),
}

impl AnyStore {
    /// Any store, behind one type: its decisions made at once
    /// ([`RateLimitStore::try_check_now`]) go through as they are; its
    /// futures are boxed.
    pub fn custom<St: RateLimitStore>(store: St) -> Self {
        Self::Custom(CustomStore(Arc::new(store)))
    }
}

/// A [`RateLimitStore`] of any type, in an [`AnyStore`].
#[derive(Clone)]
pub struct CustomStore(Arc<dyn ErasedStore>);

impl fmt::Debug for CustomStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomStore")
    }
}

type BoxedCheck = Pin<Box<dyn Future<Output = Result<Decisions, StoreError>> + Send>>;

/// [`RateLimitStore`] without its future type, so any store fits one box.
trait ErasedStore: Send + Sync + 'static {
    fn boxed_check(&self, checks: &[Check]) -> BoxedCheck;
    fn check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>>;
}

impl<St: RateLimitStore> ErasedStore for St {
    fn boxed_check(&self, checks: &[Check]) -> BoxedCheck {
        Box::pin(RateLimitStore::check(self, checks))
    }

    fn check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        RateLimitStore::try_check_now(self, checks)
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(store: MemoryStore) -> Self {
        Self::Memory(store)
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore> for AnyStore {
    fn from(store: RedisStore) -> Self {
        Self::Redis(store)
    }
}

#[cfg(feature = "redis")]
impl From<RedisStore<ClusterConnection>> for AnyStore {
    fn from(store: RedisStore<ClusterConnection>) -> Self {
        Self::RedisCluster(store)
    }
}

impl RateLimitStore for AnyStore {
    #[cfg(feature = "redis")]
    type Future = futures_util::future::Either<
        futures_util::future::Either<
            <MemoryStore as RateLimitStore>::Future,
            <RedisStore as RateLimitStore>::Future,
        >,
        BoxedCheck,
    >;
    #[cfg(not(feature = "redis"))]
    type Future = futures_util::future::Either<<MemoryStore as RateLimitStore>::Future, BoxedCheck>;

    fn check(&self, checks: &[Check]) -> Self::Future {
        use futures_util::future::Either::{Left, Right};
        match self {
            #[cfg(feature = "redis")]
            Self::Memory(store) => Left(Left(store.check(checks))),
            #[cfg(not(feature = "redis"))]
            Self::Memory(store) => Left(store.check(checks)),
            #[cfg(feature = "redis")]
            Self::Redis(store) => Left(Right(store.check(checks))),
            // Every connection type's store answers with the same boxed
            // future.
            #[cfg(feature = "redis")]
            Self::RedisCluster(store) => Left(Right(store.check(checks))),
            Self::Custom(store) => Right(store.0.boxed_check(checks)),
        }
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        match self {
            Self::Memory(store) => store.try_check_now(checks),
            #[cfg(feature = "redis")]
            Self::Redis(store) => store.try_check_now(checks),
            #[cfg(feature = "redis")]
            Self::RedisCluster(store) => store.try_check_now(checks),
            Self::Custom(store) => store.0.check_now(checks),
        }
    }
}
