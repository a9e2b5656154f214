//! Requests in flight per client key: one client cannot hold every slot
//! with slow requests.
//!
//! The key is the [`ClientKey`] an earlier layer (the rate limiter, for its
//! first policy) put into the request's extensions; a request without one
//! is not counted here. Counted per instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::context::ClientKey;

/// Shards of the count map: requests of different clients rarely wait for
/// one another's lock.
const SHARDS: usize = 16;

/// The count of requests in flight of each client key that has any: an
/// entry is removed when its count falls to zero, so the map holds at most
/// as many entries as there are requests in flight.
#[derive(Debug)]
pub(crate) struct PerKey {
    max: usize,
    shards: Box<[Mutex<HashMap<ClientKey, usize>>]>,
}

impl PerKey {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<HashMap<ClientKey, usize>> {
        // The key is a keyed hash already: any byte of it is uniform.
        &self.shards[usize::from(key.0[0]) % SHARDS]
    }

    /// A slot for `key`, or the count in flight if it has none free.
    pub(crate) fn acquire(self: &Arc<Self>, key: ClientKey) -> Result<KeyPermit, usize> {
        let mut counts = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(*count);
        }
        *count += 1;
        Ok(KeyPermit {
            per_key: self.clone(),
            key,
        })
    }

    fn release(&self, key: &ClientKey) {
        let mut counts = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(key);
            }
        }
    }

    /// Client keys with requests in flight.
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }
}

/// A client's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct KeyPermit {
    per_key: Arc<PerKey>,
    key: ClientKey,
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        self.per_key.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey([n; 16])
    }

    #[test]
    fn at_most_max_per_key_and_entries_leave_at_zero() {
        let per_key = Arc::new(PerKey::new(2));
        let a1 = per_key.acquire(key(1)).unwrap();
        let a2 = per_key.acquire(key(1)).unwrap();
        assert_eq!(per_key.acquire(key(1)).unwrap_err(), 2);
        // Another client is not held back.
        let b = per_key.acquire(key(2)).unwrap();
        assert_eq!(per_key.keys(), 2);
        drop(a1);
        let a3 = per_key.acquire(key(1)).unwrap();
        drop((a2, a3, b));
        assert_eq!(per_key.keys(), 0);
    }

    #[test]
    fn many_clients_leave_no_entry_behind() {
        let per_key = Arc::new(PerKey::new(1));
        for n in 0..=255u8 {
            let permit = per_key.acquire(key(n)).unwrap();
            assert!(per_key.acquire(key(n)).is_err());
            drop(permit);
        }
        assert_eq!(per_key.keys(), 0);
    }
}
