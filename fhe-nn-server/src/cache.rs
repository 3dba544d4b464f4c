//! Decompressed evaluation keys (ready servers) kept in memory under a byte cap, least
//! recently used first out.

use std::collections::HashMap;
use std::sync::Arc;

use fhe_nn::fhe::FheServer;

/// A decompressed evaluation key, ready to run the model it was made for.
pub struct ReadyKey {
    /// The name of that model.
    pub model: String,
    pub server: FheServer,
}

/// An LRU cache of values by key id, each with its size in bytes; the service keeps
/// [`ReadyKey`]s in it.
pub struct KeyCache<V = ReadyKey> {
    capacity: u64,
    used: u64,
    clock: u64,
    entries: HashMap<String, Entry<V>>,
}

struct Entry<V> {
    key: Arc<V>,
    bytes: u64,
    last_used: u64,
}

impl<V> KeyCache<V> {
    /// An empty cache that holds at most `capacity` bytes of keys.
    pub fn new(capacity: u64) -> KeyCache<V> {
        KeyCache {
            capacity,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The ready server of `key_id`, marked as just used.
    pub fn get(&mut self, key_id: &str) -> Option<Arc<V>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key_id).map(|entry| {
            entry.last_used = clock;
            entry.key.clone()
        })
    }

    /// Forgets `key_id` (its key was deleted or expired in the store).
    pub fn remove(&mut self, key_id: &str) {
        if let Some(entry) = self.entries.remove(key_id) {
            self.used -= entry.bytes;
        }
    }

    /// Keeps `key` (of `bytes` bytes) under `key_id`, evicting the least recently used keys
    /// until it fits. A key larger than the whole cache is not kept.
    pub fn insert(&mut self, key_id: &str, key: Arc<V>, bytes: u64) {
        if bytes > self.capacity || self.entries.contains_key(key_id) {
            return;
        }
        while self.used + bytes > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(entry) = self.entries.remove(&oldest) {
                self.used -= entry.bytes;
            }
        }
        self.clock += 1;
        self.used += bytes;
        self.entries.insert(
            key_id.to_string(),
            Entry {
                key,
                bytes,
                last_used: self.clock,
            },
        );
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_key_goes_first_and_the_cap_holds() {
        let mut cache = KeyCache::new(10);
        cache.insert("a", Arc::new(1), 4);
        cache.insert("b", Arc::new(2), 4);
        assert_eq!(cache.get("a").as_deref(), Some(&1)); // b is now the oldest
        cache.insert("c", Arc::new(3), 4);
        assert!(cache.get("b").is_none());
        assert_eq!((cache.len(), cache.bytes()), (2, 8));
        assert_eq!(cache.get("c").as_deref(), Some(&3));
        // Larger than the whole cache: not kept, nothing evicted.
        cache.insert("huge", Arc::new(4), 11);
        assert!(cache.get("huge").is_none());
        assert_eq!(cache.len(), 2);
        // Evicts as many as needed.
        cache.insert("d", Arc::new(5), 9);
        assert_eq!((cache.len(), cache.bytes()), (1, 9));
    }
}
