use super::memory::MemoryStore;
#[cfg(feature = "redis")]
use super::redis::store::RedisStore;
use super::{Check, Decisions, RateLimitStore, StoreError};

/// A store chosen at run time, from configuration: in process or Redis.
/// What [`Harden`](crate::Harden) uses, so one layer type serves either
/// backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyStore {
    /// The bounded in-process store.
    Memory(MemoryStore),
    /// The Redis store (feature `redis`).
    #[cfg(feature = "redis")]
    Redis(RedisStore),
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

impl RateLimitStore for AnyStore {
    #[cfg(feature = "redis")]
    type Future = futures_util::future::Either<
        <MemoryStore as RateLimitStore>::Future,
        <RedisStore as RateLimitStore>::Future,
    >;
    #[cfg(not(feature = "redis"))]
    type Future = <MemoryStore as RateLimitStore>::Future;

    fn check(&self, checks: &[Check]) -> Self::Future {
        match self {
            #[cfg(feature = "redis")]
            Self::Memory(store) => futures_util::future::Either::Left(store.check(checks)),
            #[cfg(not(feature = "redis"))]
            Self::Memory(store) => store.check(checks),
            #[cfg(feature = "redis")]
            Self::Redis(store) => futures_util::future::Either::Right(store.check(checks)),
        }
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        match self {
            Self::Memory(store) => store.try_check_now(checks),
            #[cfg(feature = "redis")]
            Self::Redis(store) => store.try_check_now(checks),
        }
    }
}
