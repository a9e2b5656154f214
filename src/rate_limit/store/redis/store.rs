//! The store itself: one script call per request, within a timeout,
//! behind the breaker, the deny cache and the fallback.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{ErrorKind, ServerErrorKind, Value};

use super::super::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
use super::breaker::{Breaker, Ticket};
use super::deny_cache::DenyCache;
use super::fallback::Fallback;
use super::reply::{merge_replies, parse_decisions, script_values, CallReply};
use super::script::{calls_for, redis_key, ScriptCall, GCRA_SCRIPT};
use super::stats::{bump, Counters, RedisStoreStats};
use crate::rate_limit::gcra::{Clock, MonotonicClock};

/// The Redis [`RateLimitStore`]: GCRA in one Lua script per request, a
/// timeout per call, a circuit breaker, a local deny cache and an optional
/// local fallback. See the [module docs](crate::rate_limit::redis).
///
/// Cloning is cheap and clones share everything (connection, counters,
/// caches).
pub struct RedisStore<C = ConnectionManager> {
    pub(super) inner: Arc<Inner<C>>,
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

/// What every clone of a [`RedisStore`] shares.
pub(super) struct Inner<C> {
    pub(super) connection: C,
    pub(super) script_hash: String,
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) cluster: bool,
    pub(super) clock: MonotonicClock,
    pub(super) breaker: Arc<Breaker>,
    pub(super) deny_cache: DenyCache,
    pub(super) fallback: Option<Fallback>,
    pub(super) counters: Counters,
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
        self.inner.deny_cache.len()
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

    /// What the store answers while Redis is not asked or failed: the
    /// fallback's decisions, or the error with when the breaker will let
    /// Redis be asked again.
    fn degraded_answer(
        &self,
        checks: &[Check],
        error: StoreError,
        now: u64,
    ) -> Result<Decisions, StoreError> {
        match &self.inner.fallback {
            Some(fallback) => {
                bump(&self.inner.counters.fallback_decisions);
                Ok(fallback.decide(checks))
            }
            None => Err(error.with_retry_after(self.inner.breaker.retry_after(now))),
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
        let reply =
            match tokio::time::timeout(self.timeout, self.send(&mut connection, &call)).await {
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
        script_values(reply, call.keys.len()).inspect_err(|_| bump(&self.counters.redis_failures))
    }

    /// `EVALSHA`, then `EVAL` if Redis lost the script.
    async fn send(&self, connection: &mut C, call: &ScriptCall) -> redis::RedisResult<Value> {
        let reply = call
            .command("EVALSHA", &self.script_hash)
            .query_async::<Value>(connection)
            .await;
        match reply {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                bump(&self.counters.script_reloads);
                call.command("EVAL", GCRA_SCRIPT)
                    .query_async::<Value>(connection)
                    .await
            }
            other => other,
        }
    }
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
            let answer = self.degraded_answer(
                checks,
                StoreError::unavailable("Redis is cooling down"),
                sent_at,
            );
            return Box::pin(std::future::ready(answer));
        };
        let calls = calls_for(&self.inner.prefix, self.inner.cluster, checks);
        Box::pin(
            self.clone()
                .decide_remotely(calls, checks.to_vec(), ticket, sent_at),
        )
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        let now = self.inner.clock.now_nanos();
        if let Some(decisions) = self.inner.deny_cache.lookup(checks, now) {
            bump(&self.inner.counters.deny_cache_hits);
            return Some(Ok(decisions));
        }
        if self.inner.breaker.is_cooling_down(now) {
            bump(&self.inner.counters.short_circuited);
            return Some(self.degraded_answer(
                checks,
                StoreError::unavailable("Redis is cooling down"),
                now,
            ));
        }
        None
    }
}

impl<C> RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The asynchronous part of [`check`](RateLimitStore::check): the
    /// script calls, then what their answer teaches the breaker and the
    /// deny cache.
    async fn decide_remotely(
        self,
        calls: Vec<(Vec<usize>, ScriptCall)>,
        checks: Vec<Check>,
        ticket: Ticket,
        sent_at: u64,
    ) -> Result<Decisions, StoreError> {
        match self.run_calls(calls, &checks).await {
            Ok(decisions) => {
                ticket.succeeded();
                if !decisions.allowed() {
                    self.inner
                        .deny_cache
                        .remember(&checks, decisions.as_slice(), sent_at);
                }
                Ok(decisions)
            }
            Err(error) => {
                let now = self.inner.clock.now_nanos();
                ticket.failed(now, &error);
                self.degraded_answer(&checks, error, now)
            }
        }
    }

    /// The decisions of the script calls of one request.
    async fn run_calls(
        &self,
        calls: Vec<(Vec<usize>, ScriptCall)>,
        checks: &[Check],
    ) -> Result<Decisions, StoreError> {
        if calls.len() == 1 {
            let (_, call) = calls.into_iter().next().expect("one call");
            let values = self.inner.clone().run(call).await?;
            return parse_decisions(&values, checks);
        }
        // One call per key, all in flight together on the multiplexed
        // connection.
        let replies: Vec<CallReply> =
            futures_util::future::join_all(calls.into_iter().map(|(indices, call)| {
                let inner = self.inner.clone();
                async move { (indices, inner.run(call).await) }
            }))
            .await;
        merge_replies(replies, checks)
    }
}
