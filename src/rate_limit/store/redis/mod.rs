//! The Redis store (feature `redis`): one limit shared by every instance of
//! a service, with a stated policy for when Redis is slow or down.
//!
//! The store is [`RedisStore`], built with [`RedisStoreBuilder`]; this
//! module holds the builder's defaults and the script, and describes how
//! the store behaves.
//!
//! # One script call per request
//!
//! Every check of a request travels in one `EVALSHA` of a Lua script
//! (`gcra.lua`, beside this file) that runs the arithmetic of
//! [`Quota::decide`] on the server, all or nothing, with the server's clock
//! (`TIME`), so instances whose clocks disagree still agree on the limit.
//! Times are integer nanoseconds, as in [`Quota::decide`]: the script
//! and the in-process store make the same decisions (the tests compare them
//! on the same inputs). When Redis has lost the script (`SCRIPT FLUSH`, a
//! restart, a fail-over) the store sends it once with `EVAL`, which loads
//! it again.
//!
//! # Keys
//!
//! `prefix:{key-hash}:policy`, where `key-hash` is the 32 hex digits of the
//! [`KeyHash`] (never the raw key). Each key holds one TAT and expires
//! (`PX`) the moment that TAT passes, when its state is idle and therefore
//! means nothing: Redis memory is bounded by the keys active right now.
//!
//! The braces are a Redis Cluster hash tag: every policy of one key lives in
//! one slot. A request whose checks have different keys (per-IP and a global
//! policy) makes one script call with all of them on a single Redis (the
//! default); on a cluster ([`RedisStoreBuilder::connect_cluster`], or
//! [`RedisStoreBuilder::cluster`] with a connection of your own) it makes one
//! call per key instead, sent together over the multiplexed connection
//! (still one round trip of latency), because a cluster refuses a script
//! whose keys span two slots. The trade-off: across those calls the decision
//! is no longer all or nothing. A request refused by one key's policy may
//! still have consumed its other keys' quota (a per-IP refusal counts
//! against the global bucket); the error only ever makes the limit stricter,
//! never looser.
//!
//! # Redis Cluster
//!
//! [`RedisStoreBuilder::connect_cluster`] builds the cluster connection:
//! each call goes to the primary of its key's slot, `MOVED` and `ASK` are
//! followed and the slot map is refreshed after a fail-over, all within the
//! call's timeout. Each node is sent the script once (`EVALSHA`, `NOSCRIPT`,
//! `EVAL`). The failure policy, the breaker and the deny cache are those of
//! one Redis; the breaker is one for the whole cluster, so while one
//! primary's slots fail, requests for every slot get the failure policy
//! until the cool-down ends. Replication is asynchronous: a primary that
//! dies before its replica has its last writes takes them along, and those
//! keys start over (at most one burst each, once).
//!
//! # Bounded latency
//!
//! One multiplexed connection ([`ConnectionManager`], which reconnects by
//! itself; on a cluster, one per node) carries every call; each call is bounded by its own
//! [`timeout`](crate::rate_limit::RedisStoreBuilder::timeout) (default
//! [`DEFAULT_TIMEOUT`], 50 ms), connection set-up included. A slow or dead
//! Redis adds at most that to a request.
//!
//! # When Redis fails
//!
//! A timeout, a connection error or an error reply is a failure. What the
//! request gets then is the failure policy, chosen in configuration:
//!
//! | policy | configured with | a request while Redis fails |
//! |---|---|---|
//! | fail open (the default) | [`StoreFailure::Open`](crate::rate_limit::StoreFailure::Open) on the layer | admitted, no rate-limit headers |
//! | fail closed | [`StoreFailure::Closed`](crate::rate_limit::StoreFailure::Closed) on the layer | 503 `service-unavailable` |
//! | local fallback | [`RedisStoreBuilder::fallback`] | decided by an in-process store with a share of each quota |
//!
//! Fail closed answers 503 and not 429 on purpose: the client exceeded no
//! quota, the server cannot check it; a 429 would tell well-behaved clients
//! to slow down for a fault of ours and would pollute the quota metrics.
//!
//! After [`failure_threshold`](crate::rate_limit::RedisStoreBuilder::failure_threshold)
//! consecutive failures (default 3) the store stops calling Redis for a
//! [`cool_down`](crate::rate_limit::RedisStoreBuilder::cool_down) (default 1 s): every request
//! gets the failure policy at once, without waiting for a timeout, and Redis
//! is not hammered while it recovers. After the cool-down one request probes
//! Redis (the others keep the failure policy); its success closes the
//! circuit, its failure starts another cool-down. Each switch
//! (healthy → degraded, degraded → healthy) is logged once (`warn` and
//! `info`) and counted ([`RedisStore::stats`]).
//!
//! # Local deny cache
//!
//! A key that Redis refused with a retry-after `t` is refused locally until
//! `t`, without a round trip. Under GCRA this loses no accuracy: other
//! instances can only push the key's TAT later, never earlier, so the key
//! cannot be admitted before `t`. The deadline is measured from the moment
//! the call was sent (before Redis decided), so the cache never refuses
//! longer than Redis would. The cache holds at most
//! [`deny_cache_max_keys`](crate::rate_limit::RedisStoreBuilder::deny_cache_max_keys) keys
//! (default 10,000); when full, it drops expired entries (at most one pass
//! per 100 ms) and otherwise simply does not cache (a refusal then costs a
//! round trip, as without the cache).
//!
//! [`RedisStore`]: crate::rate_limit::RedisStore
//! [`RedisStore::stats`]: crate::rate_limit::RedisStore::stats
//! [`RedisStoreBuilder`]: crate::rate_limit::RedisStoreBuilder
//! [`RedisStoreBuilder::cluster`]: crate::rate_limit::RedisStoreBuilder::cluster
//! [`RedisStoreBuilder::connect_cluster`]: crate::rate_limit::RedisStoreBuilder::connect_cluster
//! [`RedisStoreBuilder::fallback`]: crate::rate_limit::RedisStoreBuilder::fallback
//! [`Quota::decide`]: crate::rate_limit::Quota::decide
//! [`KeyHash`]: crate::rate_limit::KeyHash
//! [`ConnectionManager`]: redis::aio::ConnectionManager

mod breaker;
pub(in crate::rate_limit) mod builder;
mod deny_cache;
pub(in crate::rate_limit) mod fallback;
mod reply;
mod script;
pub(in crate::rate_limit) mod stats;
pub(in crate::rate_limit) mod store;

pub use builder::{
    DEFAULT_COOL_DOWN, DEFAULT_DENY_CACHE_MAX_KEYS, DEFAULT_FAILURE_THRESHOLD, DEFAULT_PREFIX,
    DEFAULT_TIMEOUT,
};
pub use script::GCRA_SCRIPT;
