//! Faults and abuse on loopback, bounded in count and time: a flood of key uploads past the
//! quotas, Redis killed and restarted mid-run, and one of two replica processes killed
//! during a load. Every answer is either a named refusal or equal to local Fhe.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fhe_nn_client::{Client, ClientError};
use fhe_nn_server::{KeyStore, MemoryStore, RedisStore, ServerConfig};

/// Resident memory of this process (server and clients), from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

#[test]
fn a_flood_of_key_uploads_stays_within_the_quotas() {
    const UPLOADS: usize = 8;
    let store = Arc::new(MemoryStore::default());
    let config = ServerConfig {
        tenant_keys: 2,
        key_uploads: 2,
        ..small_config()
    };
    let server = start(store.clone(), config, &[("digits", digits())]);
    let client = Client::new(&server.url()).unwrap();
    let keys: Vec<Vec<u8>> = (0..UPLOADS)
        .map(|_| keys_from_server(&client, "digits").1.to_bytes().unwrap())
        .collect();
    let key_bytes = keys[0].len() as u64;
    let before = resident_bytes();
    let answers: Vec<Result<String, (u16, String)>> = thread::scope(|scope| {
        let uploads: Vec<_> = keys
            .iter()
            .map(|key| {
                let client = client.clone();
                scope.spawn(move || match client.upload_key_bytes(key.clone()) {
                    Ok(receipt) => Ok(receipt.key_id),
                    Err(e) => Err(api_code(Err::<(), _>(e))),
                })
            })
            .collect();
        uploads.into_iter().map(|u| u.join().unwrap()).collect()
    });
    let after = resident_bytes();
    // Two keys kept, every other upload refused by name; the store holds exactly those two.
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(accepted, 2, "{answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(refused, &(429, "key_quota".to_string()));
    }
    let usage = store.usage("").unwrap();
    assert_eq!((usage.keys, usage.bytes), (2, 2 * key_bytes));
    // Memory: at most `key_uploads` bodies and their decompressions at once, the two keys
    // kept decompressed, and the clients' copies of the 8 bodies in flight.
    let metrics = client.metrics().unwrap();
    let cached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fhe_nn_key_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the key cache's size in /metrics");
    let decompressed = cached / 2;
    let bound = 2 * (key_bytes + decompressed) + cached + 2 * UPLOADS as u64 * key_bytes;
    if let (Some(before), Some(after)) = (before, after) {
        let grown = after.saturating_sub(before);
        eprintln!(
            "flood: resident memory +{} MB (bound {} MB; key {} MB, decompressed {} MB)",
            grown >> 20,
            bound >> 20,
            key_bytes >> 20,
            decompressed >> 20
        );
        assert!(grown <= bound, "grew {grown} bytes, bound {bound}");
    }
    server.shutdown().unwrap();
}

#[test]
fn redis_killed_and_restarted_mid_run_loses_no_key() {
    let dir = std::env::temp_dir().join(format!("fhe-nn-chaos-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = Redis::start_persistent(&dir);
    let url = redis.url.clone();
    let store = || Arc::new(RedisStore::open(&url).unwrap());
    let server = start(store(), small_config(), &[("digits", digits())]);
    let client = Client::new(&server.url()).unwrap().with_busy_retries(0);
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    let sample = encrypt(&client_key, 4);
    let expected = local_fhe(digits(), &evaluation_key, &sample)
        .to_bytes()
        .unwrap();
    let predict = |client: &Client| {
        client
            .predict("digits", &key_id, &sample)
            .map(|o| o.to_bytes().unwrap())
    };
    assert_eq!(predict(&client).unwrap(), expected);

    // Redis dies: refused by name, and the health says so.
    redis.stop();
    assert_eq!(
        api_code(predict(&client)),
        (503, "store_unavailable".to_string())
    );
    assert_eq!(client.health().unwrap().store, "unavailable");

    // Redis comes back with what it had appended: the same server recovers, and a fresh
    // replica (nothing cached) reads the key from it.
    redis.restart();
    assert_eq!(client.health().unwrap().status, "ok");
    assert_eq!(predict(&client).unwrap(), expected);
    let fresh = start(store(), small_config(), &[("digits", digits())]);
    assert_eq!(
        predict(&Client::new(&fresh.url()).unwrap()).unwrap(),
        expected
    );
    fresh.shutdown().unwrap();
    server.shutdown().unwrap();
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `fhe-nn-server` process serving digits with its keys in Redis; killed on drop.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn launch(redis: &str) -> Replica {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_fhe-nn-server"))
            .args(["--models", "digits", "--allow-anonymous", "--workers", "1"])
            .args(["--redis", redis, "--addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fhe-nn-server");
        Replica {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until it answers `/health` (it compiles the model first).
    fn wait_ready(&self, limit: Duration) {
        let client = Client::new(&self.url).unwrap();
        let start = Instant::now();
        while client.health().is_err() {
            assert!(start.elapsed() < limit, "{} did not start", self.url);
            thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_replica_killed_during_a_load_leaves_every_request_answered_by_the_other() {
    const THREADS: usize = 3;
    const PER_THREAD: usize = 4;
    let redis = Redis::start();
    let mut replicas = [Replica::launch(&redis.url), Replica::launch(&redis.url)];
    for replica in &replicas {
        replica.wait_ready(Duration::from_secs(300));
    }
    let clients: Vec<Client> = replicas
        .iter()
        .map(|r| Client::new(&r.url).unwrap())
        .collect();
    let (client_key, evaluation_key) = keys_from_server(&clients[0], "digits");
    let key_id = clients[0].upload_key(&evaluation_key).unwrap().key_id;
    let samples: Vec<_> = (0..THREADS * PER_THREAD)
        .map(|row| encrypt(&client_key, row))
        .collect();
    let expected: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| local_fhe(digits(), &evaluation_key, s).to_bytes().unwrap())
        .collect();
    let (answered, failed_over) = (AtomicUsize::new(0), AtomicUsize::new(0));
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (clients, samples, expected) = (&clients, &samples, &expected);
            let (answered, failed_over, key_id) = (&answered, &failed_over, &key_id);
            scope.spawn(move || {
                for k in 0..PER_THREAD {
                    let i = t * PER_THREAD + k;
                    // Alternate replicas, as a load balancer would; on a transport error
                    // (the replica is gone) send the same request to the other.
                    let first = i % 2;
                    let output = match clients[first].predict("digits", key_id, &samples[i]) {
                        Ok(output) => output,
                        Err(ClientError::Transport { .. }) => {
                            failed_over.fetch_add(1, Ordering::SeqCst);
                            clients[1 - first]
                                .predict("digits", key_id, &samples[i])
                                .expect("the other replica answers")
                        }
                        Err(e) => panic!("request {i}: {e}"),
                    };
                    assert_eq!(output.to_bytes().unwrap(), expected[i], "request {i}");
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Kill the first replica once the load is under way.
        let start = Instant::now();
        while answered.load(Ordering::SeqCst) < 2 {
            assert!(start.elapsed() < Duration::from_secs(300), "no answer");
            thread::sleep(Duration::from_millis(20));
        }
        replicas[0].kill();
    });
    assert_eq!(answered.load(Ordering::SeqCst), THREADS * PER_THREAD);
    assert!(failed_over.load(Ordering::SeqCst) > 0);
    assert_eq!(clients[1].health().unwrap().status, "ok");
}
