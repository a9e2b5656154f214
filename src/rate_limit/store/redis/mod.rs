//! The Redis store (feature `redis`): one limit shared by every instance of
//! a service, with a stated policy for when Redis is slow or down.
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
//! default); with [`RedisStoreBuilder::cluster`] it makes one call per key
//! instead, sent together over the multiplexed connection (still one round
//! trip of latency), because a cluster refuses a script whose keys span two
//! slots. The trade-off: across those calls the decision is no longer all
//! or nothing. A request refused by one key's policy may still have consumed
//! its other keys' quota (a per-IP refusal counts against the global bucket);
//! the error only ever makes the limit stricter, never looser.
//!
//! # Bounded latency
//!
//! One multiplexed connection ([`ConnectionManager`], which reconnects by
//! itself) carries every call; each call is bounded by its own
//! [`timeout`](RedisStoreBuilder::timeout) (default
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
//! | fail open (the default) | [`StoreFailure::Allow`](crate::rate_limit::StoreFailure::Allow) on the layer | admitted, no rate-limit headers |
//! | fail closed | [`StoreFailure::Refuse`](crate::rate_limit::StoreFailure::Refuse) on the layer | 503 `service-unavailable` |
//! | local fallback | [`RedisStoreBuilder::fallback`] | decided by an in-process store with a share of each quota |
//!
//! Fail closed answers 503 and not 429 on purpose: the client exceeded no
//! quota, the server cannot check it; a 429 would tell well-behaved clients
//! to slow down for a fault of ours and would pollute the quota metrics.
//!
//! After [`failure_threshold`](RedisStoreBuilder::failure_threshold)
//! consecutive failures (default 3) the store stops calling Redis for a
//! [`cool_down`](RedisStoreBuilder::cool_down) (default 1 s): every request
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
//! [`deny_cache_max_keys`](RedisStoreBuilder::deny_cache_max_keys) keys
//! (default 10,000); when full, it drops expired entries (at most one pass
//! per 100 ms) and otherwise simply does not cache (a refusal then costs a
//! round trip, as without the cache).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::memory::MemoryStore;
use super::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
use crate::rate_limit::gcra::{Clock, Decision, MonotonicClock, Quota};

/// The GCRA script the store runs (Lua, for `EVAL`/`EVALSHA`).
pub const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// Default bound on one Redis call, connection set-up included: 50 ms.
/// A same-datacenter Redis answers in well under a millisecond; 50 ms
/// absorbs a fork for a snapshot or a busy moment, and is small next to a
/// request's own budget.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default consecutive failures after which the store stops calling Redis: 3.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default pause before Redis is probed again: 1 s.
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(1);
/// Default cap on keys in the local deny cache: 10,000 (about a MiB).
pub const DEFAULT_DENY_CACHE_MAX_KEYS: usize = 10_000;
/// Default key prefix: `"rl"`.
pub const DEFAULT_PREFIX: &str = "rl";

/// Longest key prefix accepted.
const MAX_PREFIX: usize = 64;
/// At most one pass over a full deny cache per this many nanoseconds.
const DENY_SWEEP_INTERVAL_NS: u64 = 100_000_000;

/// Why a [`RedisStore`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL is not a Redis URL.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
    /// The prefix is empty, longer than 64 bytes, or contains a brace,
    /// whitespace or a control character (a brace would break the hash tag
    /// that keeps one key's policies in one cluster slot).
    #[error("invalid Redis key prefix (1 to 64 printable ASCII characters, no braces)")]
    InvalidPrefix,
    /// The fallback share is not in `(0, 1]`.
    #[error("the fallback share of the quota must be in (0, 1], got {0}")]
    InvalidShare(f64),
    /// The timeout or the cool-down is zero.
    #[error("the Redis timeout and cool-down must be non-zero")]
    ZeroDuration,
}

/// The in-process store a [`RedisStore`] decides with while Redis fails.
///
/// Each instance then enforces `share` of every quota on its own (rate and
/// burst, the burst rounded up to at least 1): with `n` instances behind a
/// load balancer, a share of `1/n` keeps the total near the shared limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFallback {
    share: f64,
    max_keys: usize,
}

impl LocalFallback {
    /// `share` of each quota (in `(0, 1]`), in a [`MemoryStore`] of at most
    /// `max_keys` keys.
    pub fn new(share: f64, max_keys: usize) -> Self {
        Self { share, max_keys }
    }

    /// The share of each quota.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The quota an instance enforces alone.
    pub fn scale(&self, quota: Quota) -> Quota {
        scale_quota(quota, self.share)
    }
}

fn scale_quota(quota: Quota, share: f64) -> Quota {
    let interval = (quota.emission_interval_nanos() as f64 / share).min(u64::MAX as f64) as u64;
    let burst = (f64::from(quota.burst()) * share).ceil().max(1.0) as u32;
    Quota::with_period(Duration::from_nanos(interval.max(1)))
        .and_then(|scaled| scaled.with_burst(burst))
        .unwrap_or(quota)
}

/// Counters of a [`RedisStore`], for metrics. All count since the store
/// was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStoreStats {
    /// Script calls sent to Redis (one per request, or one per key with
    /// [`RedisStoreBuilder::cluster`]).
    pub redis_calls: u64,
    /// Calls that failed (timeouts included).
    pub redis_failures: u64,
    /// Calls that hit the store's timeout.
    pub redis_timeouts: u64,
    /// Times Redis had lost the script and it was sent again.
    pub script_reloads: u64,
    /// Requests answered without calling Redis because the store was
    /// degraded (cool-down).
    pub short_circuited: u64,
    /// Requests refused by the local deny cache, without a round trip.
    pub deny_cache_hits: u64,
    /// Requests decided by the local fallback store.
    pub fallback_decisions: u64,
    /// Switches from healthy to degraded.
    pub degradations: u64,
    /// Switches from degraded back to healthy.
    pub recoveries: u64,
}

/// Builds a [`RedisStore`]; every setting has a default.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_harden::rate_limit::RedisStoreError> {
/// use std::time::Duration;
/// use tower_harden::rate_limit::{LocalFallback, RedisStore};
///
/// let store = RedisStore::builder()
///     .prefix("myapp:rl")
///     .timeout(Duration::from_millis(20))
///     // Four instances: each enforces a quarter of the limit on its own
///     // while Redis is down.
///     .fallback(LocalFallback::new(0.25, 100_000))
///     .connect("redis://127.0.0.1:6379")
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    prefix: String,
    timeout: Duration,
    failure_threshold: u32,
    cool_down: Duration,
    deny_cache_max_keys: usize,
    fallback: Option<LocalFallback>,
    cluster: bool,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            cool_down: DEFAULT_COOL_DOWN,
            deny_cache_max_keys: DEFAULT_DENY_CACHE_MAX_KEYS,
            fallback: None,
            cluster: false,
        }
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key (`prefix:{key-hash}:policy`), so that several
    /// services can share one Redis. Default: [`DEFAULT_PREFIX`]. 1 to 64
    /// printable ASCII characters without braces or spaces.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// The bound on one Redis call, connection set-up included. Default:
    /// [`DEFAULT_TIMEOUT`] (50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failures after which the store stops calling Redis for a
    /// cool-down (at least 1). Default: [`DEFAULT_FAILURE_THRESHOLD`] (3).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures.max(1);
        self
    }

    /// How long the store leaves Redis alone after it degraded, before one
    /// request probes it. Default: [`DEFAULT_COOL_DOWN`] (1 s).
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }

    /// The most keys the local deny cache holds; 0 turns it off. Default:
    /// [`DEFAULT_DENY_CACHE_MAX_KEYS`] (10,000).
    pub fn deny_cache_max_keys(mut self, max_keys: usize) -> Self {
        self.deny_cache_max_keys = max_keys;
        self
    }

    /// Decides with an in-process store while Redis fails, instead of
    /// handing the failure to the layer's
    /// [`StoreFailure`](crate::rate_limit::StoreFailure). Default: none.
    pub fn fallback(mut self, fallback: LocalFallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// One script call per key instead of one per request, for Redis
    /// Cluster (see the [module docs](self) for what that costs). Default:
    /// off (a single Redis, or a cluster where each request's checks share
    /// one key).
    ///
    /// A cluster also needs a cluster-aware connection, which routes each
    /// call to the node of its key's slot: build one with the redis crate's
    /// `cluster-async` feature (enable it in your own `Cargo.toml`) and
    /// pass it to [`with_connection`](Self::with_connection).
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// A store over one multiplexed [`ConnectionManager`] to `url`
    /// (`redis://[user:password@]host:port[/db]`, `rediss://` needs the
    /// redis crate's TLS features).
    ///
    /// Does not wait for Redis: a service starts while Redis is down and
    /// applies its failure policy until Redis answers. Must be called within
    /// a Tokio runtime (the connection's driver is spawned on it).
    pub async fn connect(self, url: &str) -> Result<RedisStore, RedisStoreError> {
        self.connect_lazy(url)
    }

    /// As [`RedisStoreBuilder::connect`], without `async`: nothing here
    /// waits for Redis. Must be called within a Tokio runtime.
    pub fn connect_lazy(self, url: &str) -> Result<RedisStore, RedisStoreError> {
        self.validate()?;
        let client = redis::Client::open(url).map_err(RedisStoreError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // The store's own timeout bounds every call; the manager should
            // not queue calls behind a long series of reconnection attempts.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(self.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(RedisStoreError::InvalidUrl)?;
        Ok(self.build(connection))
    }

    /// A store over a connection of your own: any cloneable
    /// [`ConnectionLike`] (a cluster connection, a connection with TLS or
    /// other settings). The connection is expected to reconnect by itself.
    pub fn with_connection<C>(self, connection: C) -> Result<RedisStore<C>, RedisStoreError>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        self.validate()?;
        Ok(self.build(connection))
    }

    fn validate(&self) -> Result<(), RedisStoreError> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= MAX_PREFIX
            && self
                .prefix
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'{' && byte != b'}');
        if !prefix_ok {
            return Err(RedisStoreError::InvalidPrefix);
        }
        if let Some(fallback) = self.fallback {
            if !(fallback.share > 0.0 && fallback.share <= 1.0) {
                return Err(RedisStoreError::InvalidShare(fallback.share));
            }
        }
        if self.timeout.is_zero() || self.cool_down.is_zero() {
            return Err(RedisStoreError::ZeroDuration);
        }
        Ok(())
    }

    fn build<C>(self, connection: C) -> RedisStore<C> {
        let script = redis::Script::new(GCRA_SCRIPT);
        RedisStore {
            inner: Arc::new(Inner {
                connection,
                script_hash: script.get_hash().to_owned(),
                prefix: self.prefix,
                timeout: self.timeout,
                cluster: self.cluster,
                clock: MonotonicClock::new(),
                breaker: Arc::new(Breaker::new(
                    self.failure_threshold,
                    self.cool_down,
                    if self.fallback.is_some() {
                        "meanwhile the local fallback store decides"
                    } else {
                        "meanwhile requests get the layer's store-failure policy"
                    },
                )),
                deny_cache: DenyCache::new(self.deny_cache_max_keys),
                fallback: self.fallback.map(|fallback| Fallback {
                    share: fallback.share,
                    store: MemoryStore::new(fallback.max_keys),
                }),
                counters: Counters::default(),
            }),
        }
    }
}

/// The Redis [`RateLimitStore`]: GCRA in one Lua script per request, a
/// timeout per call, a circuit breaker, a local deny cache and an optional
/// local fallback. See the [module docs](self).
///
/// Cloning is cheap and clones share everything (connection, counters,
/// caches).
pub struct RedisStore<C = ConnectionManager> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for RedisStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> std::fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("cluster", &self.inner.cluster)
            .field("degraded", &self.is_degraded())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    connection: C,
    script_hash: String,
    prefix: String,
    timeout: Duration,
    cluster: bool,
    clock: MonotonicClock,
    breaker: Arc<Breaker>,
    deny_cache: DenyCache,
    fallback: Option<Fallback>,
    counters: Counters,
}

struct Fallback {
    share: f64,
    store: MemoryStore,
}

#[derive(Default)]
struct Counters {
    redis_calls: AtomicU64,
    redis_failures: AtomicU64,
    redis_timeouts: AtomicU64,
    script_reloads: AtomicU64,
    short_circuited: AtomicU64,
    deny_cache_hits: AtomicU64,
    fallback_decisions: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl RedisStore {
    /// A builder with every default (see [`RedisStoreBuilder`]).
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// A store with every default over `url` (see
    /// [`RedisStoreBuilder::connect`]).
    pub async fn connect(url: &str) -> Result<Self, RedisStoreError> {
        Self::builder().connect(url).await
    }
}

impl<C> RedisStore<C> {
    /// The counters (see [`RedisStoreStats`]).
    pub fn stats(&self) -> RedisStoreStats {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisStoreStats {
            redis_calls: load(&counters.redis_calls),
            redis_failures: load(&counters.redis_failures),
            redis_timeouts: load(&counters.redis_timeouts),
            script_reloads: load(&counters.script_reloads),
            short_circuited: load(&counters.short_circuited),
            deny_cache_hits: load(&counters.deny_cache_hits),
            fallback_decisions: load(&counters.fallback_decisions),
            degradations: load(&self.inner.breaker.degradations),
            recoveries: load(&self.inner.breaker.recoveries),
        }
    }

    /// Whether the store is degraded: Redis failed repeatedly and is left
    /// alone (or being probed).
    pub fn is_degraded(&self) -> bool {
        self.inner.breaker.open_until.load(Ordering::Acquire) != 0
    }

    /// The SHA1 of [`GCRA_SCRIPT`], as `EVALSHA` wants it.
    pub fn script_hash(&self) -> &str {
        &self.inner.script_hash
    }

    /// The Redis key of `(policy, key)`: `prefix:{key-hash}:policy`.
    pub fn redis_key(&self, policy: &str, key: &KeyHash) -> String {
        redis_key(&self.inner.prefix, policy, key)
    }

    /// Keys in the local deny cache now (expired ones included until
    /// dropped).
    pub fn deny_cache_len(&self) -> usize {
        self.inner.deny_cache.entries.len()
    }
}

fn redis_key(prefix: &str, policy: &str, key: &KeyHash) -> String {
    let mut text = String::with_capacity(prefix.len() + policy.len() + 38);
    text.push_str(prefix);
    text.push_str(":{");
    text.push_str(&key.to_hex());
    text.push_str("}:");
    text.push_str(policy);
    text
}

/// The arguments of one script call.
struct ScriptCall {
    keys: Vec<String>,
    args: Vec<String>,
}

impl ScriptCall {
    fn new(prefix: &str, checks: &[&Check], now_override: Option<u64>) -> Self {
        let mut keys = Vec::with_capacity(checks.len());
        let mut args = Vec::with_capacity(1 + 3 * checks.len());
        args.push(match now_override {
            Some(now) => format!("{now:010}"),
            None => "0".to_owned(),
        });
        for check in checks {
            keys.push(redis_key(prefix, &check.policy, &check.key));
            let interval = check.quota.emission_interval_nanos();
            args.push(interval.to_string());
            args.push(check.quota.tolerance_nanos().to_string());
            args.push(interval.saturating_mul(u64::from(check.cost)).to_string());
        }
        Self { keys, args }
    }

    fn command(&self, name: &str, script: &str) -> redis::Cmd {
        let mut command = redis::cmd(name);
        command.arg(script).arg(self.keys.len());
        for key in &self.keys {
            command.arg(key);
        }
        for arg in &self.args {
            command.arg(arg);
        }
        command
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<Decisions, StoreError>> + Send>>;

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Decides `checks` at a fixed time (nanoseconds since the Unix epoch)
    /// instead of Redis `TIME`, bypassing the breaker, the deny cache and
    /// the fallback: for tests that compare the script with
    /// [`Quota::decide`].
    #[doc(hidden)]
    pub async fn check_at(
        &self,
        checks: &[Check],
        now_unix_nanos: u64,
    ) -> Result<Decisions, StoreError> {
        let refs: Vec<&Check> = checks.iter().collect();
        let call = ScriptCall::new(&self.inner.prefix, &refs, Some(now_unix_nanos));
        let inner = self.inner.clone();
        let values = inner.run(call).await?;
        parse_decisions(&values, checks)
    }

    fn calls_for(&self, checks: &[Check]) -> Vec<(Vec<usize>, ScriptCall)> {
        let prefix = &self.inner.prefix;
        if !self.inner.cluster || checks.iter().all(|check| check.key == checks[0].key) {
            let refs: Vec<&Check> = checks.iter().collect();
            return vec![(
                (0..checks.len()).collect(),
                ScriptCall::new(prefix, &refs, None),
            )];
        }
        let mut groups: Vec<(KeyHash, Vec<usize>)> = Vec::new();
        for (index, check) in checks.iter().enumerate() {
            match groups.iter_mut().find(|(key, _)| *key == check.key) {
                Some((_, indices)) => indices.push(index),
                None => groups.push((check.key, vec![index])),
            }
        }
        groups
            .into_iter()
            .map(|(_, indices)| {
                let refs: Vec<&Check> = indices.iter().map(|&index| &checks[index]).collect();
                let call = ScriptCall::new(prefix, &refs, None);
                (indices, call)
            })
            .collect()
    }

    /// What the store answers while Redis is not asked or failed.
    fn degraded_answer(
        &self,
        checks: &[Check],
        error: StoreError,
    ) -> Result<Decisions, StoreError> {
        match &self.inner.fallback {
            Some(fallback) => {
                bump(&self.inner.counters.fallback_decisions);
                let scaled: Vec<Check> = checks
                    .iter()
                    .map(|check| Check {
                        quota: scale_quota(check.quota, fallback.share),
                        ..check.clone()
                    })
                    .collect();
                Ok(fallback.store.decide(&scaled))
            }
            None => Err(error),
        }
    }
}

impl<C> Inner<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// One script call within the timeout; `EVAL` once if Redis lost the
    /// script.
    async fn run(self: Arc<Self>, call: ScriptCall) -> Result<Vec<Value>, StoreError> {
        bump(&self.counters.redis_calls);
        let mut connection = self.connection.clone();
        let attempt = async {
            let reply = call
                .command("EVALSHA", &self.script_hash)
                .query_async::<Value>(&mut connection)
                .await;
            match reply {
                Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    bump(&self.counters.script_reloads);
                    call.command("EVAL", GCRA_SCRIPT)
                        .query_async::<Value>(&mut connection)
                        .await
                }
                other => other,
            }
        };
        let reply = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                bump(&self.counters.redis_failures);
                if error.is_timeout() {
                    bump(&self.counters.redis_timeouts);
                }
                return Err(StoreError::unavailable(format!("Redis: {error}")));
            }
            Err(_) => {
                bump(&self.counters.redis_failures);
                bump(&self.counters.redis_timeouts);
                return Err(StoreError::unavailable(format!(
                    "Redis did not answer within {:?}",
                    self.timeout
                )));
            }
        };
        match reply {
            Value::Array(values) if values.len() == call.keys.len() * 5 => Ok(values),
            other => {
                bump(&self.counters.redis_failures);
                Err(StoreError::InvalidReply {
                    reason: Arc::from(format!(
                        "the rate-limit script answered {}",
                        describe(&other)
                    )),
                })
            }
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Array(values) => format!("an array of {} values", values.len()),
        other => {
            let text = format!("{other:?}");
            text.chars().take(80).collect()
        }
    }
}

fn parse_decisions(values: &[Value], checks: &[Check]) -> Result<Decisions, StoreError> {
    let mut decisions = Vec::with_capacity(checks.len());
    for (check, fields) in checks.iter().zip(values.chunks_exact(5)) {
        decisions.push(parse_decision(check, fields)?);
    }
    Ok(match decisions.len() {
        1 => Decisions::one(decisions[0]),
        _ => Decisions::new(decisions),
    })
}

fn parse_decision(check: &Check, fields: &[Value]) -> Result<Decision, StoreError> {
    let invalid = || StoreError::InvalidReply {
        reason: Arc::from("the rate-limit script answered a value that is not a number"),
    };
    let number = |value: &Value| -> Result<u64, StoreError> {
        match value {
            Value::Int(number) => Ok(u64::try_from(*number).unwrap_or(0)),
            Value::BulkString(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(invalid),
            _ => Err(invalid()),
        }
    };
    Ok(Decision {
        allowed: number(&fields[0])? == 1,
        limit: check.quota.burst(),
        remaining: u32::try_from(number(&fields[1])?).unwrap_or(u32::MAX),
        reset_after_ns: number(&fields[2])?,
        retry_after_ns: number(&fields[3])?,
        new_tat: number(&fields[4])?,
    })
}

impl<C> RateLimitStore for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Future = CheckFuture;

    fn check(&self, checks: &[Check]) -> Self::Future {
        if let Some(answer) = self.try_check_now(checks) {
            return Box::pin(std::future::ready(answer));
        }
        let sent_at = self.inner.clock.now_nanos();
        let Some(ticket) = self.inner.breaker.admit(sent_at) else {
            bump(&self.inner.counters.short_circuited);
            let answer =
                self.degraded_answer(checks, StoreError::unavailable("Redis is cooling down"));
            return Box::pin(std::future::ready(answer));
        };
        let calls = self.calls_for(checks);
        let checks = checks.to_vec();
        let store = self.clone();
        Box::pin(async move {
            let result = if calls.len() == 1 {
                let (_, call) = calls.into_iter().next().expect("one call");
                match store.inner.clone().run(call).await {
                    Ok(values) => parse_decisions(&values, &checks),
                    Err(error) => Err(error),
                }
            } else {
                // One call per key, all in flight together on the
                // multiplexed connection.
                let replies =
                    futures_util::future::join_all(calls.into_iter().map(|(indices, call)| {
                        let inner = store.inner.clone();
                        async move { (indices, inner.run(call).await) }
                    }))
                    .await;
                merge_replies(replies, &checks)
            };
            match result {
                Ok(decisions) => {
                    ticket.succeeded();
                    if !decisions.allowed() {
                        store
                            .inner
                            .deny_cache
                            .remember(&checks, decisions.as_slice(), sent_at);
                    }
                    Ok(decisions)
                }
                Err(error) => {
                    let now = store.inner.clock.now_nanos();
                    ticket.failed(now, &error);
                    store.degraded_answer(&checks, error)
                }
            }
        })
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        let now = self.inner.clock.now_nanos();
        if let Some(decisions) = self.inner.deny_cache.lookup(checks, now) {
            bump(&self.inner.counters.deny_cache_hits);
            return Some(Ok(decisions));
        }
        if self.inner.breaker.is_cooling_down(now) {
            bump(&self.inner.counters.short_circuited);
            return Some(
                self.degraded_answer(checks, StoreError::unavailable("Redis is cooling down")),
            );
        }
        None
    }
}

/// The reply of one call of a split request, with the positions of its
/// checks in the request.
type CallReply = (Vec<usize>, Result<Vec<Value>, StoreError>);

fn merge_replies(replies: Vec<CallReply>, checks: &[Check]) -> Result<Decisions, StoreError> {
    let mut decisions: Vec<Option<Decision>> = vec![None; checks.len()];
    for (indices, reply) in replies {
        let values = reply?;
        for (position, &index) in indices.iter().enumerate() {
            let fields = &values[position * 5..position * 5 + 5];
            decisions[index] = Some(parse_decision(&checks[index], fields)?);
        }
    }
    Ok(Decisions::new(
        decisions
            .into_iter()
            .map(|decision| decision.expect("every check belongs to one call"))
            .collect(),
    ))
}

/// The circuit breaker: healthy (`open_until == 0`) or degraded until
/// `open_until` (local nanoseconds, at least 1), then probed by one request.
struct Breaker {
    threshold: u32,
    cool_down_ns: u64,
    /// What requests get while degraded, for the log.
    degraded_policy: &'static str,
    consecutive_failures: AtomicU32,
    open_until: AtomicU64,
    probing: AtomicBool,
    degradations: AtomicU64,
    recoveries: AtomicU64,
}

/// The right to call Redis. A probe's ticket hands the probe back if its
/// request is dropped before Redis answered, so a cancelled probe never
/// leaves the store degraded for good.
struct Ticket {
    breaker: Arc<Breaker>,
    probe: bool,
}

impl Breaker {
    fn new(threshold: u32, cool_down: Duration, degraded_policy: &'static str) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down_ns: u64::try_from(cool_down.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            degraded_policy,
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            degradations: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
        }
    }

    /// Whether requests must not call Redis now (degraded, and the cool-down
    /// is not over or another request is probing).
    fn is_cooling_down(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        until != 0 && (now < until || self.probing.load(Ordering::Acquire))
    }

    /// A ticket to call Redis, or `None` if the request must not.
    fn admit(self: &Arc<Self>, now: u64) -> Option<Ticket> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(Ticket {
                breaker: self.clone(),
                probe: false,
            });
        }
        if now < until {
            return None;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Ticket {
                breaker: self.clone(),
                probe: true,
            })
    }
}

fn redis_metric(kind: &'static str) {
    crate::telemetry::metrics::increment(
        crate::telemetry::metrics::names::REDIS_FAILURES,
        &[("kind", kind)],
        1,
    );
}

impl Ticket {
    fn succeeded(mut self) {
        let breaker = &self.breaker;
        breaker.consecutive_failures.store(0, Ordering::Relaxed);
        // Only the probe closes the circuit: a late answer to a call sent
        // before Redis went down says nothing about Redis now.
        if self.probe && breaker.open_until.swap(0, Ordering::AcqRel) != 0 {
            breaker.recoveries.fetch_add(1, Ordering::Relaxed);
            redis_metric("recovered");
            tracing::info!("Redis rate-limit store recovered: deciding with Redis again");
        }
        self.release_probe();
    }

    fn failed(mut self, now: u64, error: &StoreError) {
        let breaker = &self.breaker;
        let failures = breaker.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        redis_metric("call");
        let reopen_at = now.saturating_add(breaker.cool_down_ns).max(1);
        if self.probe {
            // Still down: another cool-down, no new log line (the switch to
            // degraded was logged once).
            breaker.open_until.store(reopen_at, Ordering::Release);
        } else if failures >= breaker.threshold
            && breaker
                .open_until
                .compare_exchange(0, reopen_at, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            breaker.degradations.fetch_add(1, Ordering::Relaxed);
            redis_metric("degraded");
            tracing::warn!(
                error = %error,
                reason = ?error,
                consecutive_failures = failures,
                cool_down_ms = breaker.cool_down_ns / 1_000_000,
                "Redis rate-limit store degraded: Redis is left alone during the cool-down, then probed; {}",
                breaker.degraded_policy
            );
        }
        self.release_probe();
    }

    fn release_probe(&mut self) {
        if std::mem::take(&mut self.probe) {
            self.breaker.probing.store(false, Ordering::Release);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release_probe();
    }
}

/// The local deny cache (see the module docs).
struct DenyCache {
    max_keys: usize,
    entries: DashMap<(Arc<str>, KeyHash), DenyEntry>,
    next_sweep_at: AtomicU64,
}

/// What one refusal taught: every check of the refused request, as it
/// stood.
#[derive(Clone)]
struct DenyEntry {
    /// Local nanoseconds until which the key is refused.
    until: u64,
    snapshot: Arc<[Seen]>,
}

#[derive(Clone)]
struct Seen {
    policy: Arc<str>,
    key: KeyHash,
    quota: Quota,
    cost: u32,
    remaining: u32,
    /// Local nanoseconds when the key's bucket is full again.
    reset_at: u64,
    /// Local nanoseconds until which this check is refused (0: admitted).
    refused_until: u64,
}

impl DenyCache {
    fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            entries: DashMap::new(),
            next_sweep_at: AtomicU64::new(0),
        }
    }

    /// The decisions of a request one of whose keys is known to be refused
    /// now, if the cache knows every check of it.
    fn lookup(&self, checks: &[Check], now: u64) -> Option<Decisions> {
        if self.max_keys == 0 || self.entries.is_empty() {
            return None;
        }
        let entry = checks.iter().find_map(|check| {
            let entry = self.entries.get(&(check.policy.clone(), check.key))?;
            (entry.until > now).then(|| entry.clone())
        })?;
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            let seen = entry.snapshot.iter().find(|seen| {
                seen.key == check.key && seen.policy == check.policy && seen.quota == check.quota
            })?;
            let refused = seen.refused_until > now && check.cost >= seen.cost;
            if !refused && seen.refused_until > now {
                // A cheaper request than the refused one: Redis must decide.
                return None;
            }
            decisions.push(Decision {
                allowed: !refused,
                limit: check.quota.burst(),
                remaining: seen.remaining,
                reset_after_ns: seen.reset_at.saturating_sub(now),
                retry_after_ns: if refused { seen.refused_until - now } else { 0 },
                new_tat: 0,
            });
        }
        if decisions.iter().all(|decision| decision.allowed) {
            return None;
        }
        Some(match decisions.len() {
            1 => Decisions::one(decisions[0]),
            _ => Decisions::new(decisions),
        })
    }

    /// Remembers a refusal decided by Redis for a call sent at `sent_at`.
    fn remember(&self, checks: &[Check], decisions: &[Decision], sent_at: u64) {
        if self.max_keys == 0 {
            return;
        }
        let snapshot: Arc<[Seen]> = checks
            .iter()
            .zip(decisions)
            .map(|(check, decision)| Seen {
                policy: check.policy.clone(),
                key: check.key,
                quota: check.quota,
                cost: check.cost,
                remaining: decision.remaining,
                reset_at: sent_at.saturating_add(decision.reset_after_ns),
                refused_until: if decision.allowed {
                    0
                } else {
                    sent_at.saturating_add(decision.retry_after_ns)
                },
            })
            .collect();
        for seen in snapshot.iter().filter(|seen| seen.refused_until != 0) {
            if self.entries.len() >= self.max_keys && !self.make_room(sent_at) {
                return;
            }
            self.entries.insert(
                (seen.policy.clone(), seen.key),
                DenyEntry {
                    until: seen.refused_until,
                    snapshot: snapshot.clone(),
                },
            );
        }
    }

    /// Drops expired entries, at most once per sweep interval.
    fn make_room(&self, now: u64) -> bool {
        let next = self.next_sweep_at.load(Ordering::Relaxed);
        if now < next
            || self
                .next_sweep_at
                .compare_exchange(
                    next,
                    now.saturating_add(DENY_SWEEP_INTERVAL_NS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        self.entries.retain(|_, entry| entry.until > now);
        self.entries.len() < self.max_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> StoreError {
        StoreError::unavailable("test")
    }

    #[test]
    fn the_breaker_opens_after_the_threshold_probes_once_and_recovers() {
        let breaker = Arc::new(Breaker::new(3, Duration::from_nanos(100), "test"));
        for now in [1, 2] {
            breaker.admit(now).unwrap().failed(now, &error());
            assert!(!breaker.is_cooling_down(now));
        }
        breaker.admit(3).unwrap().failed(3, &error());
        assert!(breaker.is_cooling_down(3));
        assert_eq!(breaker.degradations.load(Ordering::Relaxed), 1);
        assert!(breaker.admit(102).is_none(), "cool-down until 103");
        // After the cool-down: one probe, and only one.
        let probe = breaker.admit(103).expect("a probe");
        assert!(breaker.admit(103).is_none());
        assert!(breaker.is_cooling_down(150), "a probe is in flight");
        probe.failed(150, &error());
        assert_eq!(
            breaker.degradations.load(Ordering::Relaxed),
            1,
            "logged once"
        );
        assert!(breaker.admit(249).is_none(), "a new cool-down until 250");
        // A dropped probe (a cancelled request) gives the probe back.
        drop(breaker.admit(250).expect("a probe"));
        let probe = breaker.admit(251).expect("the probe was given back");
        probe.succeeded();
        assert!(!breaker.is_cooling_down(251));
        assert_eq!(breaker.recoveries.load(Ordering::Relaxed), 1);
        // Healthy again: failures count from zero.
        breaker.admit(260).unwrap().failed(260, &error());
        assert!(!breaker.is_cooling_down(260));
        // A late success of a call sent before the circuit opened does not
        // close it.
        let early = breaker.admit(270).unwrap();
        for now in [271, 272] {
            breaker.admit(now).unwrap().failed(now, &error());
        }
        assert!(breaker.is_cooling_down(272));
        early.succeeded();
        assert!(breaker.is_cooling_down(273), "still degraded");
        assert_eq!(breaker.recoveries.load(Ordering::Relaxed), 1);
    }

    fn check(policy: &str, key: u8, cost: u32) -> Check {
        Check {
            policy: Arc::from(policy),
            key: KeyHash([key; 16]),
            quota: Quota::with_period(Duration::from_nanos(10))
                .unwrap()
                .with_burst(5)
                .unwrap(),
            cost,
        }
    }

    fn decision(allowed: bool, retry_after_ns: u64) -> Decision {
        Decision {
            allowed,
            limit: 5,
            remaining: if allowed { 3 } else { 0 },
            reset_after_ns: 50,
            retry_after_ns,
            new_tat: 0,
        }
    }

    #[test]
    fn the_deny_cache_refuses_until_the_retry_instant_and_no_longer() {
        let cache = DenyCache::new(10);
        let checks = [check("per-ip", 1, 1), check("global", 2, 1)];
        cache.remember(&checks, &[decision(false, 100), decision(true, 0)], 1_000);
        let local = cache.lookup(&checks, 1_040).expect("refused locally");
        assert!(!local.allowed());
        assert_eq!(local.as_slice()[0].retry_after_ns, 60);
        assert_eq!(local.as_slice()[0].reset_after_ns, 10);
        assert!(local.as_slice()[1].allowed);
        assert!(cache.lookup(&checks, 1_100).is_none(), "due: Redis decides");
        // A check the refusal did not see, or a cheaper request: Redis decides.
        let more = [check("per-ip", 1, 1), check("login", 2, 1)];
        assert!(cache.lookup(&more, 1_040).is_none());
        assert!(cache.lookup(&[check("per-ip", 1, 0)], 1_040).is_none());
        assert!(cache.lookup(&[check("per-ip", 3, 1)], 1_040).is_none());
    }

    #[test]
    fn the_deny_cache_stays_within_its_bound() {
        let cache = DenyCache::new(8);
        for key in 0..100u8 {
            let now = u64::from(key) * 1_000_000;
            cache.remember(&[check("per-ip", key, 1)], &[decision(false, 1_000)], now);
            assert!(cache.entries.len() <= 8);
        }
        let off = DenyCache::new(0);
        off.remember(&[check("per-ip", 1, 1)], &[decision(false, 1_000)], 0);
        assert!(off.entries.is_empty());
    }

    #[test]
    fn the_fallback_quota_is_a_share_of_rate_and_burst() {
        let quota = Quota::per_second(100).unwrap();
        let half = LocalFallback::new(0.5, 10).scale(quota);
        assert_eq!(half.burst(), 50);
        assert_eq!(half.emission_interval(), Duration::from_millis(20));
        let tiny = LocalFallback::new(0.001, 10).scale(quota);
        assert_eq!(tiny.burst(), 1, "at least one request");
    }
}
