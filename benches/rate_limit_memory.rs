//! Bytes per key at 1,000,000 keys: our `MemoryStore` beside governor's
//! keyed `RateLimiter` (its `DashMap` state store), measured with a counting
//! global allocator (live heap bytes after inserting, divided by keys).
//!
//! Run: `cargo bench --bench rate_limit_memory`. Prints a table; there is
//! nothing to time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
}
