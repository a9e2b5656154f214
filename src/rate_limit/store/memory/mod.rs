//! The in-process store: sharded, with a hard cap on keys and lossless
//! eviction of idle keys.
//!
//! # Why not governor's keyed store, and why not a plain `DashMap`
//!
//! governor's keyed `RateLimiter` keeps a `DashMap<K, state>` that grows
//! with every key ever seen until someone calls `retain_recent`, a scan of
//! the whole map; it cannot enforce a hard cap on keys. So this store runs
//! its own GCRA ([`Quota::decide`](crate::rate_limit::Quota::decide)) over `u64` TATs.
//!
//! It does not use `DashMap` either, although it has the same shape (a
//! power-of-two array of `RwLock<HashMap>` shards, read locks plus an atomic
//! compare-and-swap for the hot path, as governor does): the public
//! `DashMap` API cannot (a) evict inside a shard under the same lock as the
//! insert that needs the room, which the hard cap requires, nor (b) lock the
//! shards of several keys in a fixed order, which exact all-or-nothing
//! decisions across policies require; its `raw-api` feature exposes
//! hashbrown's unstable `RawTable`. Owning the shards makes both simple.
//!
//! # Memory bound
//!
//! Each shard holds at most its share of `max_keys` (the shares add up to
//! exactly `max_keys`), so `len()` never exceeds `max_keys`. An entry is a
//! `u64` key (the first half of the [`KeyHash`] mixed with the policy) and a
//! `u64` TAT: 16 bytes plus hashbrown's control byte and load factor.
//!
//! # Eviction
//!
//! A key whose TAT is at or before now is indistinguishable from an absent
//! key ([`Quota::decide`](crate::rate_limit::Quota::decide)), so dropping it changes no decision. When a
//! new key arrives in a full shard, the shard's clock hand moves over the
//! next 16 entries of its hash table (bucket order, which is hash order:
//! effectively a random sample), drops the idle ones, and notes the live one
//! nearest to idle. The work of an insert into a full shard is bounded by
//! that, whatever `max_keys` (it used to be a pass over the whole shard,
//! about a thousand entries, under its write lock; see `benches/README.md`).
//! The hand goes round, so an idle key is found within `capacity / 16`
//! inserts; the table's own occasional in-place rehash (of its tombstones)
//! is hashbrown's, amortized O(1).
//!
//! # Overflow: a shard full of live keys
//!
//! See [`OverflowPolicy`]. Each overflow is counted
//! ([`overflows`](MemoryStore::overflows)) and logged with `tracing::warn!`
//! at most once every 10 seconds, with the counts since the last warning.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use super::{Check, Decisions, KeyHash, RateLimitStore, StoreError};
use crate::rate_limit::gcra::{Clock, Decision, MonotonicClock, Quota};
use crate::telemetry::LogThrottle;

mod shard;

use shard::{locate, read, write, LockedShards, PaddedShard, Shard};

/// Entries per shard the store aims at: small enough that a pass over one
/// shard (on insert into a full shard) costs a few microseconds.
const TARGET_KEYS_PER_SHARD: usize = 1024;
/// The most shards, whatever `max_keys`.
const MAX_SHARDS: usize = 4096;
/// Shards for small stores, to spread lock contention across threads.
const MIN_SHARDS: usize = 16;
/// At most one overflow warning per this many nanoseconds.
const WARN_INTERVAL_NS: u64 = 10_000_000_000;

/// What the store does with a new key when the key's shard is full of live
/// keys (no idle key to drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Drop the key nearest to idle (the smallest TAT) among the 16 the
    /// shard's clock hand looks at, to make room. That key's client gets a
    /// fresh bucket before its own has drained: it may be admitted up to
    /// `TAT - now` early. New clients are never locked out by a flood of
    /// keys. Bounded work per overflow. The default.
    #[default]
    EvictNearestIdle,
    /// Refuse the request of a key the store cannot track, with a
    /// `retry_after` of the time until the nearest-to-idle key the shard's
    /// clock hand looked at goes idle (an idle key elsewhere in the shard
    /// is found by a later insert: the hand goes round).
    /// Existing keys keep exact state; new clients are refused while the
    /// store is full.
    RefuseNewKeys,
}

/// The bounded in-process [`RateLimitStore`].
///
/// ```
/// use tower_harden::rate_limit::{MemoryStore, OverflowPolicy};
///
/// let store = MemoryStore::new(100_000).overflow_policy(OverflowPolicy::RefuseNewKeys);
/// assert_eq!(store.max_keys(), 100_000);
/// assert_eq!(store.len(), 0);
/// ```
pub struct MemoryStore<C = MonotonicClock> {
    shards: Box<[PaddedShard]>,
    shard_mask: u64,
    max_keys: usize,
    clock: C,
    overflow_policy: OverflowPolicy,
    evictions: AtomicU64,
    overflows: AtomicU64,
    overflow_log: LogThrottle,
}

impl<C> std::fmt::Debug for MemoryStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.max_keys)
            .field("shards", &self.shards.len())
            .field("overflow_policy", &self.overflow_policy)
            .field("evictions", &self.evictions.load(Ordering::Relaxed))
            .field("overflows", &self.overflows.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MemoryStore<MonotonicClock> {
    /// A store of at most `max_keys` keys (at least 1), with the default
    /// clock and [`OverflowPolicy::EvictNearestIdle`].
    pub fn new(max_keys: usize) -> Self {
        Self::with_clock(max_keys, MonotonicClock::new())
    }
}

impl<C: Clock> MemoryStore<C> {
    /// A store of at most `max_keys` keys (at least 1) reading time from
    /// `clock`.
    pub fn with_clock(max_keys: usize, clock: C) -> Self {
        let max_keys = max_keys.max(1);
        let wanted = (max_keys / TARGET_KEYS_PER_SHARD).next_power_of_two();
        // Never more shards than keys, so that no shard has a capacity of 0.
        let largest_fitting = 1usize << (usize::BITS - 1 - max_keys.leading_zeros());
        let shard_count = wanted.clamp(MIN_SHARDS, MAX_SHARDS).min(largest_fitting);
        let base = max_keys / shard_count;
        let extra = max_keys % shard_count;
        let shards = (0..shard_count)
            .map(|index| PaddedShard(RwLock::new(Shard::new(base + usize::from(index < extra)))))
            .collect();
        Self {
            shards,
            shard_mask: shard_count as u64 - 1,
            max_keys,
            clock,
            overflow_policy: OverflowPolicy::default(),
            evictions: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            overflow_log: LogThrottle::new(WARN_INTERVAL_NS),
        }
    }

    /// What to do with a new key when its shard is full of live keys.
    /// Default: [`OverflowPolicy::EvictNearestIdle`].
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.overflow_policy = policy;
        self
    }

    /// The cap on stored keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys stored now (idle ones included until they are dropped). Takes
    /// each shard's lock in turn: for metrics, not for the request path.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(&shard.0).len()).sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Idle keys dropped so far (losslessly), plus live keys dropped by
    /// [`OverflowPolicy::EvictNearestIdle`].
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Times a new key met a shard full of live keys.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Decides one check (the common case), exactly as
    /// [`RateLimitStore::check`] with one element, without a future.
    pub fn check_one(&self, policy: &str, key: &KeyHash, quota: Quota, cost: u32) -> Decision {
        let (map_key, shard_index) = locate(policy, key);
        let now = self.clock.now_nanos();
        let shard = &self.shards[(shard_index & self.shard_mask) as usize].0;
        {
            let guard = read(shard);
            if let Some(tat) = guard.get(map_key) {
                return decide_atomically(tat, quota, now, cost);
            }
        }
        let mut guard = write(shard);
        if let Some(tat) = guard.get(map_key) {
            // Inserted by another thread between the two locks.
            return decide_atomically(tat, quota, now, cost);
        }
        let decision = quota.decide(0, now, cost);
        if !decision.allowed {
            return decision;
        }
        match self.make_room(&mut guard, now, &[]) {
            Ok(()) => {
                guard.insert(map_key, decision.new_tat);
                decision
            }
            Err(retry_after_ns) => full_refusal(quota, retry_after_ns),
        }
    }

    /// Decides one request against all its checks, all or nothing.
    pub fn decide(&self, checks: &[Check]) -> Decisions {
        match checks {
            [one] => Decisions::one(self.check_one(&one.policy, &one.key, one.quota, one.cost)),
            many => self.check_many(many),
        }
    }

    fn check_many(&self, checks: &[Check]) -> Decisions {
        let now = self.clock.now_nanos();
        let located: Vec<(u64, usize)> = checks
            .iter()
            .map(|check| {
                let (map_key, shard_index) = locate(&check.policy, &check.key);
                (map_key, (shard_index & self.shard_mask) as usize)
            })
            .collect();
        let mut locked = LockedShards::lock(&self.shards, &located);
        let Tentative {
            mut decisions,
            writes,
            before,
        } = Tentative::decide(&locked, checks, &located, now);
        if decisions.iter().any(|decision| !decision.allowed) {
            // Nothing is consumed: the admitting policies report their
            // state as it is.
            for ((decision, check), tat) in decisions.iter_mut().zip(checks).zip(before) {
                if decision.allowed {
                    *decision = check.quota.decide(tat, now, 0);
                }
            }
            return Decisions::new(decisions);
        }
        if let Err((position, retry_after_ns)) = self.make_room_for_new(&mut locked, &located, now)
        {
            decisions[position] = full_refusal(checks[position].quota, retry_after_ns);
            return Decisions::new(decisions);
        }
        for &(shard, map_key, new_tat) in &writes {
            if let Some(tat) = locked.shard(shard).get(map_key) {
                tat.store(new_tat, Ordering::Release);
            }
        }
        Decisions::new(decisions)
    }

    /// Makes room for the keys of a multi-check call that are new to the
    /// store, holding each one's place with a TAT of 0, which means exactly
    /// the same as absence: if a later key finds no room, nothing needs
    /// undoing. `Err` carries the position of the check that found no room
    /// and its retry-after.
    fn make_room_for_new(
        &self,
        locked: &mut LockedShards<'_>,
        located: &[(u64, usize)],
        now: u64,
    ) -> Result<(), (usize, u64)> {
        let involved: Vec<u64> = located.iter().map(|&(map_key, _)| map_key).collect();
        for (position, &(map_key, shard)) in located.iter().enumerate() {
            let guard = locked.shard(shard);
            if guard.get(map_key).is_some() {
                continue;
            }
            self.make_room(guard, now, &involved)
                .map_err(|retry_after_ns| (position, retry_after_ns))?;
            guard.insert(map_key, 0);
        }
        Ok(())
    }

    /// Makes room for one more key in a write-locked shard: bounded work
    /// (the shard's clock hand looks at [`shard::EVICTION_SCAN`] entries),
    /// whatever the shard's size. `Err` carries the nanoseconds until the
    /// nearest-to-idle key looked at goes idle, when the policy refuses new
    /// keys. Keys in `keep` (those of the call in progress) are never
    /// dropped.
    fn make_room(&self, shard: &mut Shard, now: u64, keep: &[u64]) -> Result<(), u64> {
        if shard.len() < shard.capacity {
            return Ok(());
        }
        let room = shard.look_for_room(now, keep);
        if room.freed > 0 {
            self.evictions
                .fetch_add(room.freed as u64, Ordering::Relaxed);
            eviction_metric(room.freed as u64);
            return Ok(());
        }
        self.overflows.fetch_add(1, Ordering::Relaxed);
        self.warn_overflow(now);
        match (self.overflow_policy, room.nearest) {
            (OverflowPolicy::EvictNearestIdle, Some((bucket, _))) => {
                shard.remove_bucket(bucket);
                self.evictions.fetch_add(1, Ordering::Relaxed);
                eviction_metric(1);
                Ok(())
            }
            (OverflowPolicy::RefuseNewKeys, Some((_, tat))) => Err(tat.saturating_sub(now).max(1)),
            // Every key looked at belongs to the call in progress (a shard
            // smaller than the keys of one request).
            (_, None) => Err(1),
        }
    }

    fn warn_overflow(&self, now: u64) {
        // Every overflow comes here: the ones the throttle suppressed, plus
        // this one, are the overflows since the last warning.
        let Some(suppressed) = self.overflow_log.allow(now) else {
            return;
        };
        tracing::warn!(
            max_keys = self.max_keys,
            overflows_since_last_warning = suppressed + 1,
            overflows_total = self.overflows(),
            policy = ?self.overflow_policy,
            "rate-limit store is full of live keys; raise max_keys if this is not an attack"
        );
    }
}

impl<C: Clock> RateLimitStore for MemoryStore<C> {
    type Future = Ready<Result<Decisions, StoreError>>;

    fn check(&self, checks: &[Check]) -> Self::Future {
        ready(Ok(self.decide(checks)))
    }

    fn try_check_now(&self, checks: &[Check]) -> Option<Result<Decisions, StoreError>> {
        Some(Ok(self.decide(checks)))
    }
}

/// A GCRA step on a shared TAT: compare-and-swap until the decision was
/// made on the value it replaces. A refusal writes nothing.
fn decide_atomically(tat: &AtomicU64, quota: Quota, now: u64, cost: u32) -> Decision {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let decision = quota.decide(current, now, cost);
        if !decision.allowed {
            return decision;
        }
        match tat.compare_exchange_weak(
            current,
            decision.new_tat,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

/// The refusal of a key the store cannot track (a full shard under
/// [`OverflowPolicy::RefuseNewKeys`]).
fn full_refusal(quota: Quota, retry_after_ns: u64) -> Decision {
    Decision {
        allowed: false,
        limit: quota.burst(),
        remaining: 0,
        reset_after_ns: retry_after_ns,
        retry_after_ns,
        new_tat: 0,
    }
}

/// The decisions of a multi-check call before anything is written.
struct Tentative {
    decisions: Vec<Decision>,
    /// `(shard, map key, new TAT)` of each admitting check, in order.
    writes: Vec<(usize, u64, u64)>,
    /// Each check's TAT before the call.
    before: Vec<u64>,
}

impl Tentative {
    /// Decides every check against the current state; the same key twice
    /// in one call sees its own earlier (tentative) consumption.
    fn decide(
        locked: &LockedShards<'_>,
        checks: &[Check],
        located: &[(u64, usize)],
        now: u64,
    ) -> Self {
        let mut writes: Vec<(usize, u64, u64)> = Vec::with_capacity(checks.len());
        let mut decisions = Vec::with_capacity(checks.len());
        let mut before = Vec::with_capacity(checks.len());
        for (check, &(map_key, shard)) in checks.iter().zip(located) {
            let stored = writes
                .iter()
                .rev()
                .find(|&&(s, k, _)| s == shard && k == map_key)
                .map(|&(_, _, tat)| tat)
                .or_else(|| {
                    locked
                        .get(shard)
                        .get(map_key)
                        .map(|tat| tat.load(Ordering::Acquire))
                });
            before.push(stored.unwrap_or(0));
            let decision = check.quota.decide(stored.unwrap_or(0), now, check.cost);
            if decision.allowed {
                writes.push((shard, map_key, decision.new_tat));
            }
            decisions.push(decision);
        }
        Self {
            decisions,
            writes,
            before,
        }
    }
}

fn eviction_metric(evicted: u64) {
    crate::telemetry::metrics::increment(
        crate::telemetry::metrics::names::RATE_LIMITING_EVICTIONS,
        &[],
        evicted,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::rate_limit::gcra::{Clock, ManualClock};

    fn key(n: u64) -> KeyHash {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        bytes[8..].copy_from_slice(&n.wrapping_mul(0xc2b2_ae3d_27d4_eb4f).to_le_bytes());
        KeyHash(bytes)
    }

    fn check(policy: &str, n: u64, quota: Quota) -> Check {
        Check {
            policy: Arc::from(policy),
            key: key(n),
            quota,
            cost: 1,
        }
    }

    fn run(store: &MemoryStore<ManualClock>, checks: &[Check]) -> Decisions {
        futures_util::FutureExt::now_or_never(store.check(checks))
            .expect("ready")
            .expect("no store error")
    }

    #[test]
    fn all_or_nothing_across_policies() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(100, clock.clone());
        let loose = Quota::per_second(10).unwrap();
        let tight = Quota::per_second(1).unwrap();
        let both = [check("ip", 1, loose), check("global", 1, tight)];
        assert!(run(&store, &both).allowed());
        let refused = run(&store, &both);
        assert!(!refused.allowed());
        assert!(refused.as_slice()[0].allowed);
        assert!(!refused.as_slice()[1].allowed);
        // The refused call consumed nothing on the loose policy: 9 left.
        let loose_only = run(&store, &[check("ip", 1, loose)]);
        assert_eq!(loose_only.as_slice()[0].remaining, 8);
        clock.advance(Duration::from_secs(1));
        assert!(run(&store, &both).allowed());
    }

    /// The in-process store reads only its monotonic clock: a wall-clock
    /// step cannot reach it (an injected clock told to go back stays put),
    /// so a refusal waits one interval, never the size of a step.
    #[test]
    fn a_clock_step_does_not_reach_the_in_process_store() {
        let clock = ManualClock::new();
        let hour = Duration::from_secs(3600);
        clock.advance(hour * 10);
        let store = MemoryStore::with_clock(100, clock.clone());
        let quota = Quota::per_second(5).unwrap().with_burst(5).unwrap();
        for _ in 0..5 {
            assert!(run(&store, &[check("ip", 1, quota)]).allowed());
        }
        clock.set_nanos(clock.now_nanos() - hour.as_nanos() as u64);
        let refused = run(&store, &[check("ip", 1, quota)]);
        assert!(!refused.allowed());
        assert_eq!(refused.retry_after(), Some(Duration::from_millis(200)));
        clock.advance(Duration::from_millis(200));
        assert!(run(&store, &[check("ip", 1, quota)]).allowed());
    }

    #[test]
    fn policies_do_not_share_state() {
        let store = MemoryStore::with_clock(100, ManualClock::new());
        let quota = Quota::per_second(1).unwrap();
        assert!(run(&store, &[check("a", 1, quota)]).allowed());
        assert!(run(&store, &[check("b", 1, quota)]).allowed());
        assert!(!run(&store, &[check("a", 1, quota)]).allowed());
    }

    #[test]
    fn full_store_drops_idle_keys_first() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(16, clock.clone());
        let quota = Quota::per_second(1).unwrap();
        for n in 0..1000 {
            run(&store, &[check("p", n, quota)]);
            assert!(store.len() <= 16);
            clock.advance(Duration::from_millis(1));
        }
        assert!(store.evictions() > 0);
    }

    #[test]
    fn refuse_new_keys_keeps_live_state() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(16, clock.clone())
            .overflow_policy(OverflowPolicy::RefuseNewKeys);
        let quota = Quota::per_minute(1).unwrap();
        let mut admitted = 0;
        for n in 0..100 {
            if run(&store, &[check("p", n, quota)]).allowed() {
                admitted += 1;
            }
        }
        assert_eq!(store.len(), 16);
        assert!(admitted <= 16);
        assert_eq!(store.overflows(), 100 - admitted);
        clock.advance(Duration::from_secs(60));
        assert!(run(&store, &[check("p", 5000, quota)]).allowed());
    }
}
