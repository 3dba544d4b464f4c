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

/// Held by every test of this binary: they run one at a time, so that resident memory
/// measures one test's server, and the replica processes have the cores to themselves.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident memory of this process (server and clients), from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

#[test]
fn a_flood_of_key_uploads_stays_within_the_quotas() {
    let _serial = one_at_a_time();
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
    // Work: a refused upload costs no decompression (the quota is checked first); only
    // uploads that passed it while another was being stored may (at most key_uploads − 1).
    let metrics = client.metrics().unwrap();
    let decompressions: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fhe_nn_keys_decompressed_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("keys decompressed in /metrics");
    assert!(
        (2..=3).contains(&decompressions),
        "{decompressions} decompressions"
    );
    // Memory: at most `key_uploads` bodies and their decompressions at once, the two keys
    // kept decompressed, the clients' copies of the 8 bodies in flight, and 128 MB the
    // allocator may keep.
    let cached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fhe_nn_key_cache_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the key cache's size in /metrics");
    let decompressed = cached / 2;
    let bound =
        2 * (key_bytes + decompressed) + cached + 2 * UPLOADS as u64 * key_bytes + (128 << 20);
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
fn stalled_key_uploads_hold_at_most_the_upload_permits_in_memory() {
    let _serial = one_at_a_time();
    // 40 connections each send all but 100 kB of a declared 20 MB key, then stall (the
    // issue's measurement: +735 MB before uploads were admitted before their body).
    const CONNECTIONS: usize = 40;
    const DECLARED: usize = 20 << 20;
    let config = ServerConfig {
        key_uploads: 2,
        body_timeout: Duration::from_secs(3),
        ..small_config()
    };
    let server = start(
        Arc::new(MemoryStore::default()),
        config,
        &[("digits", digits())],
    );
    let body = vec![7u8; DECLARED - 100_000];
    let before = resident_bytes();
    let mut stalled = Vec::new();
    for _ in 0..CONNECTIONS {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
        let head = format!("POST /keys HTTP/1.1\r\nHost: x\r\nContent-Length: {DECLARED}\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        // A refused upload's body is read and dropped: the write completes either way.
        stream.write_all(&body).unwrap();
        stalled.push(stream);
    }
    thread::sleep(Duration::from_millis(500));
    let during = resident_bytes();
    // Two bodies held (the permits), the others dropped as they arrive; the client's own
    // buffer is in `before`.
    let bound = 2 * DECLARED as u64 + (64 << 20);
    if let (Some(before), Some(during)) = (before, during) {
        let grown = during.saturating_sub(before);
        eprintln!(
            "{CONNECTIONS} stalled uploads: resident memory +{} MB (bound {} MB)",
            grown >> 20,
            bound >> 20
        );
        assert!(grown <= bound, "grew {grown} bytes, bound {bound}");
    }
    // Meanwhile the service answers, and every stalled upload gets its answer: 503 busy
    // for the refused, 408 body_timeout for the two that were read.
    assert_eq!(
        Client::new(&server.url()).unwrap().health().unwrap().status,
        "ok"
    );
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for mut stream in stalled {
        use std::io::Read;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut head = [0u8; 12];
        let status = match stream.read_exact(&mut head) {
            Ok(()) => String::from_utf8_lossy(&head[9..12]).into_owned(),
            Err(e) => format!("no answer: {e}"),
        };
        *answers.entry(status).or_default() += 1;
    }
    assert_eq!(answers.get("503"), Some(&(CONNECTIONS - 2)), "{answers:?}");
    assert_eq!(answers.get("408"), Some(&2), "{answers:?}");
    server.shutdown().unwrap();
}

#[test]
fn redis_killed_and_restarted_mid_run_loses_no_key() {
    let _serial = one_at_a_time();
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

/// Counts a load thread as finished when dropped (also when it panics).
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_replica_killed_during_a_load_leaves_every_request_answered_by_the_other() {
    let _serial = one_at_a_time();
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
    // Each replica's own answer to every sample, before the load. (Each process times
    // TFHE-rs's FFT plans when it starts, and another plan rounds the bootstraps' products
    // differently: within the noise Simulate models, but enough to move a lookup that sits
    // at a table step. So answers are compared with the answering process's own.)
    let own_answers = |client: &Client| -> Vec<Vec<u8>> {
        samples
            .iter()
            .map(|s| {
                client
                    .predict("digits", &key_id, s)
                    .unwrap()
                    .to_bytes()
                    .unwrap()
            })
            .collect()
    };
    let expected = [own_answers(&clients[0]), own_answers(&clients[1])];
    let (answered, failed_over) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let finished = AtomicUsize::new(0);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (clients, samples, expected) = (&clients, &samples, &expected);
            let (answered, failed_over, key_id) = (&answered, &failed_over, &key_id);
            let finished = &finished;
            scope.spawn(move || {
                let _done = Finished(finished);
                for k in 0..PER_THREAD {
                    let i = t * PER_THREAD + k;
                    // Alternate replicas, as a load balancer would; on a transport error
                    // (the replica is gone) send the same request to the other.
                    let first = i % 2;
                    let (by, output) = match clients[first].predict("digits", key_id, &samples[i]) {
                        Ok(output) => (first, output),
                        Err(ClientError::Transport { .. }) => {
                            failed_over.fetch_add(1, Ordering::SeqCst);
                            let output = clients[1 - first]
                                .predict("digits", key_id, &samples[i])
                                .expect("the other replica answers");
                            (1 - first, output)
                        }
                        Err(e) => panic!("request {i}: {e}"),
                    };
                    assert_eq!(
                        output.to_bytes().unwrap(),
                        expected[by][i],
                        "request {i} answered by replica {by}"
                    );
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Kill the first replica once the load is under way.
        let start = Instant::now();
        while answered.load(Ordering::SeqCst) < 2 && finished.load(Ordering::SeqCst) < THREADS {
            assert!(start.elapsed() < Duration::from_secs(300), "no answer");
            thread::sleep(Duration::from_millis(20));
        }
        replicas[0].kill();
    });
    assert_eq!(answered.load(Ordering::SeqCst), THREADS * PER_THREAD);
    let failed_over = failed_over.load(Ordering::SeqCst);
    eprintln!(
        "replica killed: {} requests answered, {failed_over} of them by the other replica \
         after a transport error",
        THREADS * PER_THREAD
    );
    assert!(failed_over > 0);
    assert_eq!(clients[1].health().unwrap().status, "ok");
}
