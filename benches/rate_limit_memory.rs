//! Bytes per key at 1,000,000 keys: our `MemoryStore` beside governor's
//! keyed `RateLimiter` (its `DashMap` state store), measured with a counting
//! global allocator (live heap bytes after inserting, divided by keys).
//!
//! Then the cost of a new key when the store is full of live keys (every
//! insert must evict): nanoseconds per insert into a full `MemoryStore`
//! (mean, and the slowest of each 1,000), beside governor's keyed
//! `RateLimiter` inserting the same new keys (it has no cap, so it never
//! evicts: the cost of an insert with nothing to evict).
//!
//! Run: `cargo bench --bench rate_limit_memory`. Prints two tables.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{Quota as GovernorQuota, RateLimiter};
use tower_harden::rate_limit::{KeyHash, KeyHasher, MemoryStore, Quota};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: u32 = 1_000_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

fn main() {
    let hasher = KeyHasher::from_secret(b"bench");
    let policy: Arc<str> = Arc::from("per-ip");
    // Computed before measuring: the layer hashes each request's key on the
    // fly and keeps nothing of it.
    let keys: Vec<KeyHash> = (0..KEYS).map(|n| hasher.ip(ip(n))).collect();
    let quota = Quota::per_minute(10).unwrap();

    println!("| store | max_keys | keys stored | heap bytes | bytes per key |");
    println!("|---|---|---|---|---|");
    for max_keys in [KEYS as usize, 2 * KEYS as usize] {
        let before = live();
        let store = MemoryStore::new(max_keys);
        for key in &keys {
            store.check_one(&policy, key, quota, 1);
        }
        let bytes = live() - before;
        let stored = store.len();
        println!(
            "| tower-harden MemoryStore | {max_keys} | {stored} | {bytes} | {:.1} |",
            bytes as f64 / stored as f64
        );
        drop(store);
    }

    let before = live();
    let governor = RateLimiter::keyed(
        GovernorQuota::with_period(Duration::from_secs(6))
            .unwrap()
            .allow_burst(NonZeroU32::new(10).unwrap()),
    );
    for n in 0..KEYS {
        let _ = governor.check_key(&ip(n));
    }
    let bytes = live() - before;
    let stored = governor.len();
    println!(
        "| governor keyed (IpAddr) | unbounded | {stored} | {bytes} | {:.1} |",
        bytes as f64 / stored as f64
    );

    eviction_cost(&hasher, &policy);
}

/// Keys in the full store of the eviction table, and new keys timed.
const FULL_KEYS: u32 = 100_000;
const NEW_KEYS: u32 = 300_000;

fn eviction_cost(hasher: &KeyHasher, policy: &Arc<str>) {
    // Live for a minute: nothing goes idle while the table is measured.
    let quota = Quota::per_minute(10).unwrap();
    let old: Vec<KeyHash> = (0..FULL_KEYS).map(|n| hasher.ip(ip(n))).collect();
    let new: Vec<KeyHash> = (FULL_KEYS..FULL_KEYS + NEW_KEYS)
        .map(|n| hasher.ip(ip(n)))
        .collect();
    println!();
    println!("| new key into a full store | keys | ns per insert (mean) | slowest of 1,000 (mean over batches, ns) | evictions |");
    println!("|---|---|---|---|---|");
    let store = MemoryStore::new(FULL_KEYS as usize);
    for key in &old {
        store.check_one(policy, key, quota, 1);
    }
    let (mean, slowest) = time_inserts(&new, |key| {
        store.check_one(policy, key, quota, 1);
    });
    println!(
        "| tower-harden MemoryStore (full, evicts) | {FULL_KEYS} | {mean:.0} | {slowest:.0} | {} |",
        store.evictions()
    );
    let governor = RateLimiter::keyed(
        GovernorQuota::with_period(Duration::from_secs(6))
            .unwrap()
            .allow_burst(NonZeroU32::new(10).unwrap()),
    );
    for n in 0..FULL_KEYS {
        let _ = governor.check_key(&ip(n));
    }
    let new_ips: Vec<IpAddr> = (FULL_KEYS..FULL_KEYS + NEW_KEYS).map(ip).collect();
    let mut index = 0;
    let (mean, slowest) = time_inserts(&new, |_| {
        let _ = governor.check_key(&new_ips[index]);
        index += 1;
    });
    println!(
        "| governor keyed (grows, never evicts) | {FULL_KEYS} + new | {mean:.0} | {slowest:.0} | 0 |"
    );
}

/// Mean nanoseconds per call, and the mean over batches of 1,000 of the
/// slowest call of each batch.
fn time_inserts(keys: &[KeyHash], mut insert: impl FnMut(&KeyHash)) -> (f64, f64) {
    let started = Instant::now();
    let mut slowest_sum = 0u128;
    let mut batches = 0u128;
    for batch in keys.chunks(1_000) {
        let mut slowest = 0;
        for key in batch {
            let one = Instant::now();
            insert(key);
            slowest = slowest.max(one.elapsed().as_nanos());
        }
        slowest_sum += slowest;
        batches += 1;
    }
    let total = started.elapsed().as_nanos() as f64;
    (
        total / keys.len() as f64,
        slowest_sum as f64 / batches as f64,
    )
}
