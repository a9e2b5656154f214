//! The shards of the store: maps keyed by hash output, their locks, and
//! the pass that drops idle keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::super::KeyHash;

/// Passes the `u64` through: the keys are already keyed hash output,
/// uniformly distributed and unknown to clients, so hashing them again
/// (SipHash) would only cost time.
#[derive(Default)]
pub(super) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

pub(super) type ShardMap = HashMap<u64, AtomicU64, BuildHasherDefault<PassThroughHasher>>;

pub(super) struct Shard {
    pub(super) map: ShardMap,
    pub(super) capacity: usize,
    /// No key of this shard is idle before this time (the earliest TAT seen
    /// by the last pass); 0 when unknown.
    pub(super) next_idle_at: u64,
}

/// A shard on its own cache line(s), so neighbouring locks do not contend.
#[repr(align(128))]
pub(super) struct PaddedShard(pub(super) RwLock<Shard>);

/// One pass over a full shard: drops its idle keys (except those in
/// `keep`) and records the earliest TAT among the survivors. Returns the
/// number of keys dropped and the live key nearest to idle (not in `keep`).
pub(super) fn sweep(shard: &mut Shard, now: u64, keep: &[u64]) -> (usize, Option<u64>) {
    let before = shard.map.len();
    let mut earliest = u64::MAX;
    let mut nearest: Option<(u64, u64)> = None;
    shard.map.retain(|&key, tat| {
        let tat = *tat.get_mut();
        let kept = keep.contains(&key);
        if tat <= now && !kept {
            return false;
        }
        earliest = earliest.min(tat);
        let nearer = match nearest {
            Some((_, nearest_tat)) => tat < nearest_tat,
            None => true,
        };
        if !kept && nearer {
            nearest = Some((key, tat));
        }
        true
    });
    shard.next_idle_at = earliest;
    (before - shard.map.len(), nearest.map(|(key, _)| key))
}

/// The write-locked shards of one multi-check call.
pub(super) struct LockedShards<'a> {
    /// The indices of the locked shards, ascending.
    order: Vec<usize>,
    guards: Vec<RwLockWriteGuard<'a, Shard>>,
}

impl<'a> LockedShards<'a> {
    /// Write-locks every shard of `located`, in ascending order (no
    /// deadlock with another multi-check), so that no other call reads or
    /// writes these keys between the decisions and the commit.
    pub(super) fn lock(shards: &'a [PaddedShard], located: &[(u64, usize)]) -> Self {
        let mut order: Vec<usize> = located.iter().map(|&(_, shard)| shard).collect();
        order.sort_unstable();
        order.dedup();
        let guards = order.iter().map(|&index| write(&shards[index].0)).collect();
        Self { order, guards }
    }

    #[inline]
    fn position(&self, index: usize) -> usize {
        self.order
            .binary_search(&index)
            .expect("every shard of the checks is locked")
    }

    #[inline]
    pub(super) fn get(&self, index: usize) -> &Shard {
        &self.guards[self.position(index)]
    }

    #[inline]
    pub(super) fn shard(&mut self, index: usize) -> &mut Shard {
        let position = self.position(index);
        &mut self.guards[position]
    }
}

/// The map key and the shard selector of `(policy, key)`: two independent
/// halves of the key hash, each mixed with the policy so that policies never
/// share a state.
#[inline]
pub(super) fn locate(policy: &str, key: &KeyHash) -> (u64, u64) {
    let policy_mix = fnv1a(policy.as_bytes());
    let bytes = key.as_bytes();
    let low = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let high = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
    (low ^ policy_mix, high ^ policy_mix.rotate_left(29))
}

#[inline]
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[inline]
pub(super) fn read(lock: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    // Nothing panics while holding a shard lock; if something ever did, the
    // shard's data (integers) is still consistent.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[inline]
pub(super) fn write(lock: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
