//! Building a [`RedisStore`]: settings, their defaults, their checks.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::RedisError;

use super::breaker::Breaker;
use super::deny_cache::DenyCache;
use super::fallback::{Fallback, LocalFallback};
use super::script::GCRA_SCRIPT;
use super::stats::Counters;
use super::store::{Inner, RedisStore};
use crate::rate_limit::gcra::MonotonicClock;

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
    /// A cluster was asked for without any node URL.
    #[error("a Redis Cluster needs at least one node URL")]
    NoClusterNodes,
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
    /// Cluster (see the [module docs](crate::rate_limit::redis) for what that costs). Default:
    /// off (a single Redis, or a cluster where each request's checks share
    /// one key); [`connect_cluster`](Self::connect_cluster) turns it on.
    ///
    /// Only needed with a cluster connection of your own, passed to
    /// [`with_connection`](Self::with_connection).
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

    /// A store over a Redis Cluster, reached through any of `nodes`
    /// (`redis://[user:password@]host:port`; `rediss://` needs the redis
    /// crate's TLS features, see below). Turns on
    /// [`cluster`](Self::cluster).
    ///
    /// The connection ([`ClusterConnection`]) learns the slot map from the
    /// first node that answers and sends each script call to the primary
    /// of its key's slot. It follows `MOVED` and `ASK` (a slot being
    /// migrated), and after a fail-over (a node unreachable, or `MOVED` to
    /// the promoted replica) it refreshes the slot map by itself. Every
    /// call stays bounded by the [`timeout`](Self::timeout), redirections
    /// and retries included; a call that runs out of it is a failure like
    /// any other (failure policy, breaker). The script is loaded per node:
    /// a node that lacks it (a promoted replica after `SCRIPT FLUSH`, a
    /// node added later) gets it once with `EVAL`.
    ///
    /// Users and passwords (Redis ACLs) go in each URL, the same in every
    /// URL (the connection refuses nodes with different ones). The user
    /// needs the script, the commands it calls and the slot map: `~prefix:*
    /// +evalsha +eval +get +set +time +cluster|slots +cluster|shards +ping`
    /// (and `+hello +auth`, as the tests' user). For TLS, use `rediss://` URLs and enable
    /// one of the redis crate's TLS features (`tokio-rustls-comp` or
    /// `tokio-native-tls-comp`) in your own `Cargo.toml`; this crate does
    /// not enable one.
    ///
    /// Does not wait for the cluster: as with
    /// [`connect`](Self::connect), a service starts while the cluster is
    /// down and applies its failure policy until it answers. Must be called
    /// within a Tokio runtime.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), tower_harden::rate_limit::RedisStoreError> {
    /// use tower_harden::rate_limit::RedisStore;
    ///
    /// let store = RedisStore::builder().connect_cluster([
    ///     "redis://limiter:secret@10.0.0.1:6379",
    ///     "redis://limiter:secret@10.0.0.2:6379",
    ///     "redis://limiter:secret@10.0.0.3:6379",
    /// ])?;
    /// # let _ = store; Ok(()) }
    /// ```
    pub fn connect_cluster<I, U>(
        mut self,
        nodes: I,
    ) -> Result<RedisStore<ClusterConnection>, RedisStoreError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        self.validate()?;
        let nodes: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().trim().to_owned())
            .filter(|node| !node.is_empty())
            .collect();
        if nodes.is_empty() {
            return Err(RedisStoreError::NoClusterNodes);
        }
        let client = ClusterClient::builder(nodes)
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout)
            // Redirections (MOVED, ASK) and reconnections are retried within
            // the store's timeout; the waits between retries are short so
            // that a retry fits in it. Six, not three: at the handover of a
            // migrating slot a call can bounce between the two nodes a few
            // times (with three, about one call in 250 failed in the slot
            // migration test; with six, none in ten runs).
            .overall_response_timeout(Some(self.timeout))
            .retries(6)
            .min_retry_wait(1)
            .max_retry_wait(self.timeout.as_millis().max(1) as u64)
            .build()
            .map_err(RedisStoreError::InvalidUrl)?;
        let connection = client.get_pending_async_connection_with_config(
            ClusterConfig::new()
                .set_connection_timeout(self.timeout)
                .set_response_timeout(self.timeout),
        );
        self.cluster = true;
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
            if !(fallback.share() > 0.0 && fallback.share() <= 1.0) {
                return Err(RedisStoreError::InvalidShare(fallback.share()));
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
                fallback: self.fallback.map(Fallback::new),
                counters: Counters::default(),
            }),
        }
    }
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
