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

/// An LRU cache of ready keys by key id.
pub struct KeyCache {
    capacity: u64,
    used: u64,
    clock: u64,
    entries: HashMap<String, Entry>,
}

struct Entry {
    key: Arc<ReadyKey>,
    bytes: u64,
    last_used: u64,
}

impl KeyCache {
    /// An empty cache that holds at most `capacity` bytes of keys.
    pub fn new(capacity: u64) -> KeyCache {
        KeyCache {
            capacity,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The ready server of `key_id`, marked as just used.
    pub fn get(&mut self, key_id: &str) -> Option<Arc<ReadyKey>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key_id).map(|entry| {
            entry.last_used = clock;
            entry.key.clone()
        })
    }

    /// Keeps `key` under `key_id`, evicting the least recently used keys until it fits.
    /// A key larger than the whole cache is not kept.
    pub fn insert(&mut self, key_id: &str, key: Arc<ReadyKey>) {
        let bytes = key.server.key_bytes();
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
