//! Where uploaded evaluation keys live: in memory, in a directory that survives restarts, or
//! in Redis, which several replicas share. Stores hold the compressed key bytes as uploaded;
//! ids are content hashes, so a key is never overwritten by a different one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A store that fails.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A key-value store of evaluation keys with expiry. Calls block: the service runs them on
/// its blocking pool.
pub trait KeyStore: Send + Sync {
    /// Stores `bytes` under `id` until `ttl` has passed.
    fn put(&self, id: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// The bytes under `id`, if present and not expired.
    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// What the store is, for logs (never a credential).
    fn describe(&self) -> String;
    /// Whether the store answers now (for `/health`).
    fn check(&self) -> Result<(), StoreError>;
    /// Whether `id` is stored and not expired, without reading its bytes: a key kept
    /// decompressed in a replica's memory serves only while this holds.
    fn contains(&self, id: &str) -> Result<bool, StoreError>;
    /// How many keys whose id starts with `prefix` (all: `""`) are stored and not expired,
    /// and their bytes: what quotas count.
    fn usage(&self, prefix: &str) -> Result<Usage, StoreError>;
    /// Removes the keys whose time is up; returns how many. Stores that expire keys
    /// themselves (Redis) have nothing to do.
    fn collect_expired(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Keys and bytes held (see [`KeyStore::usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub keys: u64,
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.keys += 1;
        self.bytes += bytes;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the Unix epoch at which something stored now with `ttl` expires.
pub fn expiry(ttl: Duration) -> u64 {
    now().saturating_add(ttl.as_secs())
}

/// Keys in process memory: lost on restart, not shared. For tests and single-shot use.
#[derive(Default)]
pub struct MemoryStore {
    keys: Mutex<HashMap<String, (u64, Vec<u8>)>>,
}

impl KeyStore for MemoryStore {
    fn put(&self, id: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let t = now();
        keys.retain(|_, (expires, _)| *expires > t);
        keys.insert(id.to_string(), (expiry(ttl), bytes.to_vec()));
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys
            .get(id)
            .filter(|(expires, _)| *expires > now())
            .map(|(_, bytes)| bytes.clone()))
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        Ok(keys.get(id).is_some_and(|(expires, _)| *expires > now()))
    }

    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let t = now();
        let mut usage = Usage::default();
        for (id, (expires, bytes)) in keys.iter() {
            if id.starts_with(prefix) && *expires > t {
                usage.add(bytes.len() as u64);
            }
        }
        Ok(usage)
    }
}

/// Keys as files in a directory: `<id>.key` holds the bytes, `<id>.expires` the expiry
/// (seconds since the epoch). Writes go to a temporary file renamed into place, so a crash
/// never leaves a half-written key under its id.
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// A store in `dir`, created if missing; expired keys and the temporary files of writes
    /// a crash interrupted are removed now.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DiskStore, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = DiskStore { dir };
        for name in store.file_names()? {
            if name.contains(".tmp") {
                let _ = std::fs::remove_file(store.dir.join(&name));
            }
        }
        store.collect_expired()?;
        Ok(store)
    }

    fn file_names(&self) -> Result<Vec<String>, StoreError> {
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        std::fs::read_dir(&self.dir)
            .map_err(io)?
            .map(|entry| {
                Ok(entry
                    .map_err(io)?
                    .file_name()
                    .to_string_lossy()
                    .into_owned())
            })
            .collect()
    }

    /// Writes `bytes` to a temporary file of its own (process and call unique, so concurrent
    /// uploads of one key never share it), flushes it to disk, then renames it into place.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(io)
    }
}

impl KeyStore for DiskStore {
    fn put(&self, id: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.write_atomically(&self.dir.join(format!("{id}.key")), bytes)?;
        self.write_atomically(
            &self.dir.join(format!("{id}.expires")),
            expiry(ttl).to_string().as_bytes(),
        )
    }

    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let expires_path = self.dir.join(format!("{id}.expires"));
        let expires = match std::fs::read_to_string(&expires_path) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: expires_path,
                    source,
                })
            }
        };
        let key_path = self.dir.join(format!("{id}.key"));
        if expires <= now() {
            // Expired: forget it (another replica may have removed it already).
            let _ = std::fs::remove_file(&key_path);
            let _ = std::fs::remove_file(&expires_path);
            return Ok(None);
        }
        match std::fs::read(&key_path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: key_path,
                source,
            }),
        }
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn contains(&self, id: &str) -> Result<bool, StoreError> {
        let expires = std::fs::read_to_string(self.dir.join(format!("{id}.expires")))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        Ok(expires.is_some_and(|e| e > now()) && self.dir.join(format!("{id}.key")).exists())
    }

    fn check(&self) -> Result<(), StoreError> {
        std::fs::read_dir(&self.dir)
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })
    }

    fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        let mut usage = Usage::default();
        for name in self.file_names()? {
            let Some(id) = name
                .strip_suffix(".key")
                .filter(|id| id.starts_with(prefix))
            else {
                continue;
            };
            if !self.contains(id)? {
                continue;
            }
            // A key removed between the listing and here counts for nothing.
            if let Ok(meta) = std::fs::metadata(self.dir.join(&name)) {
                usage.add(meta.len());
            }
        }
        Ok(usage)
    }

    fn collect_expired(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for name in self.file_names()? {
            let Some(id) = name.strip_suffix(".expires") else {
                continue;
            };
            let expires = std::fs::read_to_string(self.dir.join(&name))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if expires <= now() {
                let _ = std::fs::remove_file(self.dir.join(format!("{id}.key")));
                let _ = std::fs::remove_file(self.dir.join(&name));
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Keys in Redis under `fhe-nn:key:<id>`, with Redis's own expiry: the store that several
/// replicas share.
pub struct RedisStore {
    client: redis::Client,
    /// The URL without its credentials, for logs.
    url: String,
}

/// Seconds a Redis connection, command or reply may take before the store counts as
/// unavailable (a stalled Redis must not hold a worker).
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// `url` with any user name and password replaced by `***`: what may appear in a log.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

impl RedisStore {
    /// A store on the Redis server at `url` (`redis://host:port/db`); checks that it answers.
    pub fn open(url: &str) -> Result<RedisStore, StoreError> {
        let store = RedisStore {
            client: redis::Client::open(url)?,
            url: without_credentials(url),
        };
        redis::cmd("PING").query::<String>(&mut store.connection()?)?;
        Ok(store)
    }

    /// A connection whose connect, writes and reads each time out after [`REDIS_TIMEOUT`].
    fn connection(&self) -> Result<redis::Connection, StoreError> {
        let connection = self.client.get_connection_with_timeout(REDIS_TIMEOUT)?;
        connection.set_read_timeout(Some(REDIS_TIMEOUT))?;
        connection.set_write_timeout(Some(REDIS_TIMEOUT))?;
        Ok(connection)
    }
}

impl KeyStore for RedisStore {
    fn put(&self, id: &str, bytes: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        redis::cmd("SET")
            .arg(format!("fhe-nn:key:{id}"))
            .arg(bytes)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query::<()>(&mut connection)?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut connection = self.connection()?;
        Ok(redis::cmd("GET")
            .arg(format!("fhe-nn:key:{id}"))
            .query::<Option<Vec<u8>>>(&mut connection)?)
    }

    fn describe(&self) -> String {
        format!("Redis at {}", self.url)
    }

    fn contains(&self, id: &str) -> Result<bool, StoreError> {
        Ok(redis::cmd("EXISTS")
            .arg(format!("fhe-nn:key:{id}"))
            .query::<u64>(&mut self.connection()?)?
            > 0)
    }

    fn check(&self) -> Result<(), StoreError> {
        redis::cmd("PING").query::<String>(&mut self.connection()?)?;
        Ok(())
    }

    fn usage(&self, prefix: &str) -> Result<Usage, StoreError> {
        // Ids and prefixes are hexadecimal and `-`: nothing in them is a glob character.
        debug_assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        let mut connection = self.connection()?;
        let mut usage = Usage::default();
        let mut cursor = 0u64;
        loop {
            let (next, names): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("fhe-nn:key:{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query(&mut connection)?;
            if !names.is_empty() {
                let mut lengths = redis::pipe();
                for name in &names {
                    lengths.cmd("STRLEN").arg(name);
                }
                // An expired key's length is 0: it counts for nothing.
                let lengths: Vec<u64> = lengths.query(&mut connection)?;
                for bytes in lengths.into_iter().filter(|&b| b > 0) {
                    usage.add(bytes);
                }
            }
            if next == 0 {
                return Ok(usage);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_store_keeps_keys_until_they_expire() {
        let dir = std::env::temp_dir().join(format!("fhe-nn-store-{}", std::process::id()));
        let store = DiskStore::open(&dir).unwrap();
        store
            .put("k1", b"key bytes", Duration::from_secs(3600))
            .unwrap();
        store.put("k2", b"short", Duration::from_secs(0)).unwrap();
        // A second handle on the directory (a restarted process) sees the same keys.
        let reopened = DiskStore::open(&dir).unwrap();
        assert_eq!(
            reopened.get("k1").unwrap().as_deref(),
            Some(&b"key bytes"[..])
        );
        assert_eq!(reopened.get("k2").unwrap(), None);
        assert!(!dir.join("k2.key").exists(), "expired keys are removed");
        assert_eq!(reopened.get("never").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expired_keys_are_collected_without_being_read() {
        let dir = std::env::temp_dir().join(format!("fhe-nn-store-gc-{}", std::process::id()));
        let store = DiskStore::open(&dir).unwrap();
        store
            .put("old", b"expired", Duration::from_secs(0))
            .unwrap();
        store
            .put("new", b"kept", Duration::from_secs(3600))
            .unwrap();
        std::fs::write(dir.join("crashed.key.tmp7-3"), b"half").unwrap();
        assert_eq!(store.collect_expired().unwrap(), 1);
        assert!(!dir.join("old.key").exists() && !dir.join("old.expires").exists());
        assert!(dir.join("new.key").exists());
        // Reopening (a restart) collects too, and removes interrupted writes.
        store
            .put("old2", b"expired", Duration::from_secs(0))
            .unwrap();
        let reopened = DiskStore::open(&dir).unwrap();
        assert!(!dir.join("old2.key").exists());
        assert!(!dir.join("crashed.key.tmp7-3").exists());
        assert_eq!(reopened.get("new").unwrap().as_deref(), Some(&b"kept"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_writes_of_one_key_never_share_a_temporary_file() {
        let dir = std::env::temp_dir().join(format!("fhe-nn-store-race-{}", std::process::id()));
        let store = std::sync::Arc::new(DiskStore::open(&dir).unwrap());
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let (store, bytes) = (store.clone(), bytes.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        store.put("same", &bytes, Duration::from_secs(60)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(store.get("same").unwrap().as_deref(), Some(&bytes[..]));
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "temporary files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn logs_never_see_redis_credentials() {
        assert_eq!(
            without_credentials("redis://user:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            without_credentials("rediss://:p@ss@host/2"),
            "rediss://***@host/2"
        );
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(without_credentials("not a url"), "not a url");
    }

    #[test]
    fn the_memory_store_forgets_expired_keys() {
        let store = MemoryStore::default();
        store.put("a", b"1", Duration::from_secs(3600)).unwrap();
        store.put("b", b"2", Duration::from_secs(0)).unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get("b").unwrap(), None);
    }

    /// Usage by prefix counts live keys only, in every store.
    fn counts_usage_by_prefix(store: &dyn KeyStore) {
        let hour = Duration::from_secs(3600);
        store.put("aa-1", b"12345", hour).unwrap();
        store.put("aa-2", b"123", hour).unwrap();
        store.put("bb-1", b"1234567", hour).unwrap();
        store
            .put("aa-3", b"expired", Duration::from_secs(0))
            .unwrap();
        assert_eq!(store.usage("aa-").unwrap(), Usage { keys: 2, bytes: 8 });
        assert_eq!(store.usage("bb-").unwrap(), Usage { keys: 1, bytes: 7 });
        assert_eq!(store.usage("cc-").unwrap(), Usage::default());
        assert_eq!(store.usage("").unwrap(), Usage { keys: 3, bytes: 15 });
    }

    #[test]
    fn usage_counts_live_keys_by_prefix() {
        counts_usage_by_prefix(&MemoryStore::default());
        let dir = std::env::temp_dir().join(format!("fhe-nn-store-usage-{}", std::process::id()));
        counts_usage_by_prefix(&DiskStore::open(&dir).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
