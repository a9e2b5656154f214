//! The shards of the store: hash tables keyed by hash output, their locks,
//! and the clock hand that makes room in a full shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::super::KeyHash;

/// Occupied entries a full shard looks at to make room for one new key:
/// the work of an insert into a full shard is bounded by this, whatever the
/// shard's size (about a thousand keys).
pub(super) const EVICTION_SCAN: usize = 16;
/// Buckets (occupied or not) the hand moves over at most for one new key:
/// a table is at most 7/8 full, so this finds `EVICTION_SCAN` occupied
/// ones unless the shard is nearly empty.
const EVICTION_SCAN_BUCKETS: usize = 4 * EVICTION_SCAN;

/// A shard: `(map key, TAT)` entries in a hash table. The map keys are
/// already keyed hash output, uniformly distributed and unknown to
/// clients, so they are their own hash (hashing them again would only cost
/// time).
pub(super) struct Shard {
    table: HashTable<(u64, AtomicU64)>,
    pub(super) capacity: usize,
    /// The clock hand: the bucket where the next look for room starts.
    hand: usize,
}

/// What one look for room found.
pub(super) struct Room {
    /// Idle keys dropped.
    pub(super) freed: usize,
    /// The bucket of the live key nearest to idle among those looked at,
    /// and its TAT.
    pub(super) nearest: Option<(usize, u64)>,
    /// Entries looked at.
    pub(super) examined: usize,
}

impl Shard {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            table: HashTable::new(),
            capacity,
            hand: 0,
        }
    }

    #[inline]
    pub(super) fn get(&self, key: u64) -> Option<&AtomicU64> {
        self.table
            .find(key, |entry| entry.0 == key)
            .map(|entry| &entry.1)
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Inserts a key known to be absent.
    #[inline]
    pub(super) fn insert(&mut self, key: u64, tat: u64) {
        self.table
            .insert_unique(key, (key, AtomicU64::new(tat)), |entry| entry.0);
    }

    /// Drops the entry in `bucket` (found by [`look_for_room`]).
    pub(super) fn remove_bucket(&mut self, bucket: usize) {
        if let Ok(entry) = self.table.get_bucket_entry(bucket) {
            entry.remove();
        }
    }

    /// Moves the clock hand over the next [`EVICTION_SCAN`] entries (at
    /// most [`EVICTION_SCAN_BUCKETS`] buckets), dropping the idle ones
    /// (except those in `keep`), and notes the live one nearest to idle. A
    /// key whose TAT has passed equals an absent key, so dropping it changes
    /// no decision. Bounded work, whatever the shard's size: successive
    /// calls go round the whole shard, so an idle key is found within
    /// `capacity / EVICTION_SCAN` calls.
    pub(super) fn look_for_room(&mut self, now: u64, keep: &[u64]) -> Room {
        let buckets = self.table.num_buckets();
        let mut room = Room {
            freed: 0,
            nearest: None,
            examined: 0,
        };
        if buckets == 0 {
            return room;
        }
        let mut bucket = self.hand % buckets;
        for _ in 0..EVICTION_SCAN_BUCKETS.min(buckets) {
            let current = bucket;
            bucket = (bucket + 1) % buckets;
            let Some((key, tat)) = self.table.get_bucket(current) else {
                continue;
            };
            let (key, tat) = (*key, tat.load(Ordering::Acquire));
            room.examined += 1;
            if keep.contains(&key) {
                continue;
            }
            if tat <= now {
                self.remove_bucket(current);
                room.freed += 1;
            } else if room.nearest.is_none_or(|(_, nearest)| tat < nearest) {
                room.nearest = Some((current, tat));
            }
            if room.examined == EVICTION_SCAN {
                break;
            }
        }
        self.hand = bucket;
        room
    }
}

/// A shard on its own cache line(s), so neighbouring locks do not contend.
#[repr(align(128))]
pub(super) struct PaddedShard(pub(super) RwLock<Shard>);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// However large the shard, one look for room examines at most
    /// `EVICTION_SCAN` entries, and successive looks go round it: every
    /// idle key is dropped within `len / EVICTION_SCAN` looks or so.
    #[test]
    fn looking_for_room_is_bounded_and_goes_round() {
        let mut shard = Shard::new(100_000);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..100_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Every tenth key idle at 1_000, the rest live until 10_000 + n.
            shard.insert(rng, if n % 10 == 0 { 500 } else { 10_000 + n });
        }
        let mut looks = 0;
        let mut freed = 0;
        while freed < 10_000 {
            let room = shard.look_for_room(1_000, &[]);
            assert!(room.examined <= EVICTION_SCAN);
            if room.freed == 0 {
                assert!(room.nearest.is_some_and(|(_, tat)| tat > 1_000));
            }
            freed += room.freed;
            looks += 1;
            assert!(
                looks <= 2 * 100_000 / EVICTION_SCAN,
                "the hand went round: {looks}"
            );
        }
        assert_eq!(shard.len(), 90_000);
        // The nearest live key among those looked at is the one removed.
        let room = shard.look_for_room(1_000, &[]);
        let (bucket, _) = room.nearest.unwrap();
        shard.remove_bucket(bucket);
        assert_eq!(shard.len(), 89_999);
    }
}
