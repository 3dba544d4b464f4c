//! The service over real HTTP on 127.0.0.1: predictions equal local Fhe, keys survive a
//! restart (disk) and are shared by replicas (a real Redis server), bad input gets JSON
//! errors while the server keeps serving, back-pressure, timeouts, shutdown, and a bounded
//! load test.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use fhe_nn::fhe::{CompressedSample, EncryptedSample};
use fhe_nn::FheOptions;
use fhe_nn_client::api::fingerprint_hex;
use fhe_nn_client::{Client, ClientError};
use fhe_nn_server::{
    shipped, Access, DiskStore, KeyStore, MemoryStore, RedisStore, RunningServer, ServerConfig,
    Tls, TlsError, Tokens,
};

#[test]
fn a_prediction_through_the_service_equals_the_local_fhe_prediction() {
    let compiled = digits();
    let server = start(
        Arc::new(MemoryStore::default()),
        small_config(),
        &[("digits", compiled)],
    );
    let client = Client::new(&server.url()).unwrap();

    let models = client.models().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, "digits");
    assert_eq!(
        models[0].fingerprint,
        fingerprint_hex(&compiled.fingerprint())
    );
    assert_eq!(models[0].lookups, compiled.lookups());

    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let receipt = client.upload_key(&evaluation_key).unwrap();
    assert_eq!(receipt.model, "digits");
    assert_eq!(receipt.key_id.len(), 64);
    // Uploading the same key again gives the same id (content hash).
    assert_eq!(
        client.upload_key(&evaluation_key).unwrap().key_id,
        receipt.key_id
    );

    let clear = compiled
        .classify(test_images().view(), fhe_nn::Mode::Clear)
        .unwrap();
    let mut agree = 0;
    for (row, &expected) in clear.iter().enumerate().take(4) {
        let sample = encrypt(&client_key, row);
        let remote = client.predict("digits", &receipt.key_id, &sample).unwrap();
        let local = local_fhe(compiled, &evaluation_key, &sample);
        // Bootstrapping is deterministic: the same ciphertexts, bit for bit.
        assert_eq!(remote.to_bytes().unwrap(), local.to_bytes().unwrap());
        let scores = client_key.decrypt(&remote).unwrap();
        assert_eq!(scores, client_key.decrypt(&local).unwrap());
        let class = fhe_nn::argmax(&scores);
        agree += usize::from(class == expected);
    }
    assert!(
        agree >= 3,
        "only {agree} of 4 encrypted predictions equal Clear's"
    );

    let metrics = client.metrics().unwrap();
    assert!(
        metrics
            .contains("fhe_nn_requests_total{route=\"/models/{name}/predict\",status=\"200\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("fhe_nn_lookups_total {}", 4 * compiled.lookups())),
        "{metrics}"
    );
    assert!(metrics.contains("fhe_nn_keys_cached 1"), "{metrics}");
    server.shutdown().unwrap();
}

#[test]
fn keys_survive_a_restart_with_the_disk_store() {
    let compiled = digits();
    let dir = std::env::temp_dir().join(format!("fhe-nn-server-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = start(
        Arc::new(DiskStore::open(&dir).unwrap()),
        small_config(),
        &[("digits", compiled)],
    );
    let client = Client::new(&first.url()).unwrap();
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let receipt = client.upload_key(&evaluation_key).unwrap();
    let sample = encrypt(&client_key, 5);
    let before = client.predict("digits", &receipt.key_id, &sample).unwrap();
    first.shutdown().unwrap();

    // A new process would start with an empty cache: only the directory remembers the key.
    // It serves the model from the compiled file the first one wrote (its tables built
    // again), under the same fingerprint, so the key made for the first is accepted.
    let models = std::env::temp_dir().join(format!("fhe-nn-compiled-{}", std::process::id()));
    std::fs::create_dir_all(&models).unwrap();
    let file = models.join("digits.fhenn");
    std::fs::write(&file, compiled.to_bytes().unwrap()).unwrap();
    let entry = format!("digits={}", file.display());
    let (name, reloaded) = shipped::load(&entry, &FheOptions::default()).unwrap();
    assert_eq!(name, "digits");
    assert_eq!(reloaded.fingerprint(), compiled.fingerprint());
    let second = start(
        Arc::new(DiskStore::open(&dir).unwrap()),
        small_config(),
        &[("digits", &reloaded)],
    );
    let client = Client::new(&second.url()).unwrap();
    let after = client.predict("digits", &receipt.key_id, &sample).unwrap();
    assert_eq!(before.to_bytes().unwrap(), after.to_bytes().unwrap());
    let metrics = client.metrics().unwrap();
    assert!(
        metrics.contains("fhe_nn_keys_decompressed_total 1"),
        "{metrics}"
    );
    second.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&models);
}

#[test]
fn tenants_need_tokens_and_see_only_their_own_keys_and_models() {
    let tokens = Tokens::parse(
        "alice alice-token-0123456789\n\
         bob bob-token-0123456789 digits\n\
         carol carol-token-0123456789 digits-wide",
    )
    .unwrap();
    let config = ServerConfig {
        access: Access::Tokens(Arc::new(tokens)),
        tenant_keys: 1,
        ..small_config()
    };
    let store = Arc::new(MemoryStore::default());
    let server = start(
        store.clone(),
        config,
        &[("digits", digits()), ("digits-wide", digits_wide())],
    );
    let nobody = Client::new(&server.url()).unwrap().with_busy_retries(0);
    let as_tenant = |token: &str| nobody.clone().with_token(token);
    let (alice, bob, carol) = (
        as_tenant("alice-token-0123456789"),
        as_tenant("bob-token-0123456789"),
        as_tenant("carol-token-0123456789"),
    );
    // No token, or an unknown one: 401 everywhere but /health (and /metrics).
    let unauthorized = (401, "unauthorized".to_string());
    assert_eq!(api_code(nobody.models()), unauthorized);
    assert_eq!(
        api_code(as_tenant("mallory-token-0123456789").model("digits")),
        unauthorized
    );
    assert_eq!(nobody.health().unwrap().status, "ok");
    // A tenant limited to some models sees only those; the others are 403.
    let names =
        |c: &Client| -> Vec<String> { c.models().unwrap().into_iter().map(|m| m.name).collect() };
    assert_eq!(names(&alice), ["digits", "digits-wide"]);
    assert_eq!(names(&bob), ["digits"]);
    assert_eq!(
        api_code(bob.model("digits-wide")),
        (403, "forbidden".into())
    );

    // Alice's key serves Alice; to Bob its id is unknown.
    let (alice_key, alice_eval) = keys_from_server(&alice, "digits");
    let receipt = alice.upload_key(&alice_eval).unwrap();
    assert_eq!(api_code(nobody.upload_key(&alice_eval)), unauthorized);
    let sample = encrypt(&alice_key, 5);
    let output = alice.predict("digits", &receipt.key_id, &sample).unwrap();
    let local = local_fhe(digits(), &alice_eval, &sample);
    assert_eq!(output.to_bytes().unwrap(), local.to_bytes().unwrap());
    assert_eq!(
        api_code(bob.predict("digits", &receipt.key_id, &sample)),
        (404, "unknown_key".into())
    );
    // Carol may not upload a key for a model she may not use.
    assert_eq!(
        api_code(carol.upload_key(&alice_eval)),
        (403, "forbidden".into())
    );
    // Alice holds her limit of one key: a second is refused (and not stored), the first
    // uploaded again is renewed.
    let (_, second) = keys_from_server(&alice, "digits");
    assert_eq!(
        api_code(alice.upload_key(&second)),
        (429, "key_quota".into())
    );
    assert_eq!(store.usage("").unwrap().keys, 1);
    assert_eq!(
        alice.upload_key(&alice_eval).unwrap().key_id,
        receipt.key_id
    );
    // Bob's copy of the same bytes is his own (his namespace, his quota).
    let bobs = bob.upload_key(&alice_eval).unwrap();
    assert_eq!(bobs.key_id, receipt.key_id);
    assert_eq!(store.usage("").unwrap().keys, 2);
    server.shutdown().unwrap();
}

#[test]
fn the_service_speaks_tls_with_a_certificate_the_test_makes() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (certificate, key) = (made.cert.pem(), made.key_pair.serialize_pem());
    let tls = Tls::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();
    let config = ServerConfig {
        tls: Some(tls),
        header_timeout: Duration::from_secs(1),
        ..small_config()
    };
    let server = start(
        Arc::new(MemoryStore::default()),
        config,
        &[("digits", digits())],
    );
    assert!(server.url().starts_with("https://"));
    let port = server.addr().port();
    let url = format!("https://localhost:{port}");
    // A prediction over TLS equals the local one.
    let client = Client::with_ca_pem(&url, certificate.as_bytes()).unwrap();
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    let sample = encrypt(&client_key, 2);
    let output = client.predict("digits", &key_id, &sample).unwrap();
    let local = local_fhe(digits(), &evaluation_key, &sample);
    assert_eq!(output.to_bytes().unwrap(), local.to_bytes().unwrap());
    // A client that does not trust the certificate, and plain HTTP to the TLS port, fail
    // in the transport, and the message says why.
    for (refused, why) in [
        (Client::new(&url).unwrap(), "certificate"),
        (
            Client::new(&format!("http://127.0.0.1:{port}")).unwrap(),
            "error sending request",
        ),
    ] {
        let error = refused.health().unwrap_err();
        assert!(matches!(error, ClientError::Transport { .. }), "{error}");
        assert!(error.to_string().contains(why), "{error}");
    }
    // A connection that never finishes its handshake is dropped at the header timeout,
    // while the others are served.
    let start_time = Instant::now();
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    assert_eq!(client.health().unwrap().status, "ok");
    let (_, closed) = read_until_closed(&mut stalled, start_time, Duration::from_secs(10));
    let closed = closed.expect("the stalled handshake was not dropped");
    assert!(closed < Duration::from_secs(5), "dropped after {closed:?}");
    server.shutdown().unwrap();
    // Broken PEM is a named error.
    assert!(matches!(
        Tls::from_pem(b"no certificate", key.as_bytes()),
        Err(TlsError::Pem { .. })
    ));
    assert!(matches!(
        Tls::from_pem(certificate.as_bytes(), b"no key"),
        Err(TlsError::Pem { .. })
    ));
}

#[test]
fn byte_quotas_answer_429_and_a_full_store_507() {
    let client_for = |config: ServerConfig| {
        let store = Arc::new(MemoryStore::default());
        let server = start(store.clone(), config, &[("digits", digits())]);
        let client = Client::new(&server.url()).unwrap().with_busy_retries(0);
        (server, client, store)
    };
    let (server, client, store) = client_for(ServerConfig {
        tenant_bytes: 1 << 20,
        ..small_config()
    });
    let (_, key) = keys_from_server(&client, "digits");
    assert!(key.to_bytes().unwrap().len() > 1 << 20);
    assert_eq!(
        api_code(client.upload_key(&key)),
        (429, "byte_quota".into())
    );
    assert_eq!(store.usage("").unwrap().keys, 0);
    server.shutdown().unwrap();
    let (server, client, store) = client_for(ServerConfig {
        store_bytes: 1 << 20,
        ..small_config()
    });
    assert_eq!(
        api_code(client.upload_key(&key)),
        (507, "store_full".into())
    );
    assert_eq!(store.usage("").unwrap().keys, 0);
    server.shutdown().unwrap();
}

#[test]
fn two_replicas_share_keys_through_redis() {
    let redis = Redis::start();
    let compiled = digits();
    let replica = || {
        start(
            Arc::new(RedisStore::open(&redis.url).unwrap()),
            small_config(),
            &[("digits", compiled)],
        )
    };
    let (a, b) = (replica(), replica());
    let (client_a, client_b) = (
        Client::new(&a.url()).unwrap(),
        Client::new(&b.url()).unwrap(),
    );
    let (client_key, evaluation_key) = keys_from_server(&client_a, "digits");
    let receipt = client_a.upload_key(&evaluation_key).unwrap();

    let sample = encrypt(&client_key, 7);
    let from_b = client_b
        .predict("digits", &receipt.key_id, &sample)
        .unwrap();
    let local = local_fhe(compiled, &evaluation_key, &sample);
    assert_eq!(from_b.to_bytes().unwrap(), local.to_bytes().unwrap());
    assert!(client_b
        .metrics()
        .unwrap()
        .contains("fhe_nn_keys_decompressed_total 1"));
    let health = client_a.health().unwrap();
    assert_eq!(
        (health.status.as_str(), health.store.as_str()),
        ("ok", "ok")
    );

    // A key deleted from Redis stops working on the replica that keeps it decompressed, at
    // its next request.
    let (other_key, other_eval) = keys_from_server(&client_a, "digits");
    let other = client_a.upload_key(&other_eval).unwrap();
    let other_sample = encrypt(&other_key, 3);
    client_b
        .predict("digits", &other.key_id, &other_sample)
        .unwrap();
    // What the quotas count: both keys, at their uploaded size.
    let usage = RedisStore::open(&redis.url).unwrap().usage("").unwrap();
    let sizes = [&evaluation_key, &other_eval].map(|k| k.to_bytes().unwrap().len() as u64);
    assert_eq!((usage.keys, usage.bytes), (2, sizes[0] + sizes[1]));
    let mut connection = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    // Stored under the (anonymous) tenant's namespace: `fhe-nn:key:<tenant>-<id>`.
    let names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("fhe-nn:key:*-{}", other.key_id))
        .query(&mut connection)
        .unwrap();
    assert_eq!(names.len(), 1);
    redis::cmd("DEL")
        .arg(&names[0])
        .query::<u64>(&mut connection)
        .unwrap();
    let (status, code) = api_code(client_b.predict("digits", &other.key_id, &other_sample));
    assert_eq!((status, code.as_str()), (404, "unknown_key"));

    // Redis goes away: `/health` says so, and neither a prediction (a cached key cannot be
    // checked against the store) nor an upload is served: both are refused as
    // `store_unavailable` (not `busy`).
    drop(redis);
    let health = client_b.health().unwrap();
    assert_eq!(
        (health.status.as_str(), health.store.as_str()),
        ("degraded", "unavailable")
    );
    let (status, code) = api_code(client_b.predict("digits", &receipt.key_id, &sample));
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    let (status, code) = api_code(client_a.upload_key(&evaluation_key));
    assert_eq!((status, code.as_str()), (503, "store_unavailable"));
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn bad_input_gets_json_errors_and_the_server_keeps_serving() {
    let (compiled, wide) = (digits(), digits_wide());
    assert_ne!(compiled.fingerprint(), wide.fingerprint());
    let server = start(
        Arc::new(MemoryStore::default()),
        small_config(),
        &[("digits", compiled), ("digits-wide", wide)],
    );
    let client = Client::new(&server.url()).unwrap();
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    let (wide_client_key, wide_key) = keys_from_server(&client, "digits-wide");
    let wide_key_id = client.upload_key(&wide_key).unwrap().key_id;
    let sample = encrypt(&client_key, 0).to_bytes().unwrap();

    let predict = |model: &str, id: &str, body: Vec<u8>| client.predict_bytes(model, id, body);
    let unknown = "ab".repeat(32);
    assert_eq!(
        api_code(predict("digits", &unknown, sample.clone())),
        (404, "unknown_key".into())
    );
    assert_eq!(
        api_code(predict("digits", "../../etc/passwd", sample.clone())),
        (400, "bad_key_id".into())
    );
    assert_eq!(
        api_code(predict("nope", &key_id, sample.clone())),
        (404, "unknown_model".into())
    );
    // Another model's key.
    assert_eq!(
        api_code(predict("digits", &wide_key_id, sample.clone())),
        (409, "wrong_model".into())
    );
    // A sample made for another model, with that model's key.
    let wide_sample = wide_client_key
        .encrypt_compressed(test_images().row(0))
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(
        api_code(predict("digits", &key_id, wide_sample)),
        (409, "wrong_model".into())
    );
    // A sample encrypted under another key of the same model.
    let (other_key, _) = compiled.keygen().unwrap();
    let foreign = other_key
        .encrypt_compressed(test_images().row(0))
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(
        api_code(predict("digits", &key_id, foreign)),
        (409, "wrong_key".into())
    );
    // Truncated, garbage, oversized samples.
    assert_eq!(
        api_code(predict(
            "digits",
            &key_id,
            sample[..sample.len() / 2].to_vec()
        )),
        (400, "invalid_sample".into())
    );
    assert_eq!(
        api_code(predict("digits", &key_id, b"garbage".to_vec())),
        (400, "invalid_sample".into())
    );
    let limit = compiled.max_compressed_sample_bytes() as usize;
    assert_eq!(
        api_code(predict("digits", &key_id, vec![0u8; limit + 1])),
        (413, "too_large".into())
    );
    // Keys: truncated, garbage, oversized.
    let key_bytes = evaluation_key.to_bytes().unwrap();
    assert_eq!(
        api_code(client.upload_key_bytes(key_bytes[..key_bytes.len() - 9].to_vec())),
        (400, "invalid_key".into())
    );
    assert_eq!(
        api_code(client.upload_key_bytes(b"garbage".to_vec())),
        (400, "invalid_key".into())
    );
    let key_limit = compiled
        .max_evaluation_key_bytes()
        .max(wide.max_evaluation_key_bytes()) as usize;
    assert_eq!(
        api_code(client.upload_key_bytes(vec![0u8; key_limit + 1])),
        (413, "too_large".into())
    );
    // A missing key id and an unknown route.
    let http = reqwest_free_post(&server, "/models/digits/predict");
    assert!(http.starts_with("HTTP/1.1 400"), "{http}");
    assert!(http.contains("\"code\":\"missing_key_id\""), "{http}");

    // Still serving.
    let output = client
        .predict("digits", &key_id, &encrypt(&client_key, 0))
        .unwrap();
    assert_eq!(client_key.decrypt(&output).unwrap().len(), 10);
    assert_eq!(client.health().unwrap().status, "ok");
    server.shutdown().unwrap();
}

/// A raw HTTP/1.1 POST with an empty body and no key id; returns the whole answer.
fn reqwest_free_post(server: &RunningServer, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.addr()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Starts a prediction on another thread and waits until the server is working on it.
fn in_flight_prediction(
    client: &Client,
    key_id: &str,
    sample: CompressedSample,
) -> thread::JoinHandle<Result<EncryptedSample, ClientError>> {
    let (background, key_id) = (client.clone(), key_id.to_string());
    let handle = thread::spawn(move || background.predict("digits", &key_id, &sample));
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.health().unwrap().in_flight == 0 {
        assert!(Instant::now() < deadline, "the prediction never started");
        thread::sleep(Duration::from_millis(2));
    }
    handle
}

#[test]
fn a_full_queue_answers_busy_and_shutdown_finishes_in_flight_work() {
    let config = ServerConfig {
        workers: 1,
        queue: 0,
        ..ServerConfig::default()
    };
    let (server, client, client_key, key_id) = serving_digits_with_a_key(config);

    let running = in_flight_prediction(&client, &key_id, encrypt(&client_key, 1));
    match client.predict("digits", &key_id, &encrypt(&client_key, 2)) {
        Err(ClientError::Busy { attempts: 1 }) => {}
        other => panic!("expected 503 busy while the only worker is taken, got {other:?}"),
    }
    running
        .join()
        .unwrap()
        .expect("the admitted prediction succeeds");

    // Shutdown while a prediction runs: it is finished and answered.
    let running = in_flight_prediction(&client, &key_id, encrypt(&client_key, 3));
    server.shutdown().unwrap();
    let output = running
        .join()
        .unwrap()
        .expect("in-flight work finishes during shutdown");
    assert_eq!(client_key.decrypt(&output).unwrap().len(), 10);
}

#[test]
fn a_request_past_its_timeout_is_answered_504() {
    let compiled = digits();
    let config = ServerConfig {
        workers: 1,
        queue: 4,
        request_timeout: Duration::from_millis(1),
        ..ServerConfig::default()
    };
    // Keys are uploaded through a server without the tight timeout, sharing the store.
    let store: Arc<dyn KeyStore> = Arc::new(MemoryStore::default());
    let uploader = start(store.clone(), small_config(), &[("digits", compiled)]);
    let client = Client::new(&uploader.url()).unwrap();
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    uploader.shutdown().unwrap();

    let server = start(store, config, &[("digits", compiled)]);
    let client = Client::new(&server.url()).unwrap();
    let result = client.predict("digits", &key_id, &encrypt(&client_key, 0));
    assert_eq!(api_code(result), (504, "timeout".into()));
    assert_eq!(client.health().unwrap().status, "ok");
    server.shutdown().unwrap();
}

#[test]
fn a_bounded_load_test_loses_no_request_and_returns_no_wrong_answer() {
    const CLIENTS: usize = 6;
    const REQUESTS: usize = 3;
    let compiled = digits();
    // Fewer places than clients: some requests are refused busy and retried.
    let config = ServerConfig {
        workers: 2,
        queue: 2,
        ..ServerConfig::default()
    };
    let server = start(
        Arc::new(MemoryStore::default()),
        config,
        &[("digits", compiled)],
    );
    let client = Client::new(&server.url()).unwrap().with_busy_retries(100);
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    let samples: Vec<CompressedSample> = (0..CLIENTS * REQUESTS)
        .map(|i| encrypt(&client_key, i))
        .collect();
    let expected: Vec<Vec<u8>> = samples
        .iter()
        .map(|s| local_fhe(compiled, &evaluation_key, s).to_bytes().unwrap())
        .collect();
    let (samples, expected) = (Arc::new(samples), Arc::new(expected));

    let workers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, key_id, samples, expected) = (
                client.clone(),
                key_id.clone(),
                samples.clone(),
                expected.clone(),
            );
            thread::spawn(move || {
                for r in 0..REQUESTS {
                    let i = c * REQUESTS + r;
                    let output = client
                        .predict("digits", &key_id, &samples[i])
                        .expect("request lost");
                    assert_eq!(
                        output.to_bytes().unwrap(),
                        expected[i],
                        "wrong answer for sample {i}"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let metrics = client.metrics().unwrap();
    let served = format!(
        "fhe_nn_requests_total{{route=\"/models/{{name}}/predict\",status=\"200\"}} {}",
        CLIENTS * REQUESTS
    );
    assert!(metrics.contains(&served), "{metrics}");
    assert!(metrics.contains("fhe_nn_queue_depth 0"), "{metrics}");
    let busy = metrics
        .lines()
        .find(|l| {
            l.starts_with("fhe_nn_requests_total{route=\"/models/{name}/predict\",status=\"503\"}")
        })
        .unwrap_or("no 503");
    eprintln!(
        "load test: {} requests served; refused busy and retried: {busy}",
        CLIENTS * REQUESTS
    );
    server.shutdown().unwrap();
}

/// Opens a raw connection and writes `bytes`.
fn raw_connection(server: &RunningServer, bytes: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream.write_all(bytes.as_bytes()).unwrap();
    stream
}

/// Reads until the server closes `stream` or `limit` passes; returns what it sent and when
/// it closed (`None`: still open at `limit`).
fn read_until_closed(
    stream: &mut std::net::TcpStream,
    start: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while start.elapsed() < limit {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&answer).into(),
                    Some(start.elapsed()),
                )
            }
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&answer).into(),
                    Some(start.elapsed()),
                )
            }
        }
    }
    (String::from_utf8_lossy(&answer).into(), None)
}

#[test]
fn slow_and_idle_clients_are_dropped_at_their_timeouts_while_others_are_served() {
    use std::io::Write;
    let timeout = Duration::from_secs(1);
    let config = ServerConfig {
        workers: 1,
        queue: 1,
        header_timeout: timeout,
        body_timeout: timeout,
        key_uploads: 1,
        ..ServerConfig::default()
    };
    let (server, client, client_key, key_id) = serving_digits_with_a_key(config);
    let start = Instant::now();
    // 20 clients trickling their headers one byte every 200 ms, and 5 idle connections.
    let mut trickling: Vec<_> = (0..20)
        .map(|_| raw_connection(&server, "POST /keys HTTP/1.1\r\nHo"))
        .collect();
    let idle: Vec<_> = (0..5).map(|_| raw_connection(&server, "")).collect();
    let closed_at = thread::spawn(move || {
        let mut closed = Vec::new();
        for mut stream in idle {
            closed.push(read_until_closed(&mut stream, start, Duration::from_secs(5)).1);
        }
        closed
    });
    let mut open = trickling.len();
    while open > 0 && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(200));
        // A connection is gone once the server closed it (or answered): a read that does
        // not block.
        trickling.retain_mut(|s| {
            let _ = s.write_all(b"s");
            s.set_nonblocking(true).unwrap();
            let mut probe = [0u8; 1];
            let waiting = matches!(std::io::Read::read(s, &mut probe),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            waiting
        });
        open = trickling.len();
        // Meanwhile an honest client is served.
        assert_eq!(client.health().unwrap().status, "ok");
    }
    assert_eq!(open, 0, "{open} trickling connections still open after 5 s");
    let idle_closed = closed_at.join().unwrap();
    for closed in &idle_closed {
        let closed = closed.expect("an idle connection stayed open for 5 s");
        assert!(closed < timeout + Duration::from_secs(2), "{closed:?}");
    }
    eprintln!(
        "trickling headers closed by {:?}; idle connections closed at {idle_closed:?}",
        start.elapsed()
    );

    // A body that stalls: 408 body_timeout once its time is up.
    let started = Instant::now();
    let mut stalled = raw_connection(
        &server,
        "POST /keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
    );
    let (answer, closed) = read_until_closed(&mut stalled, started, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        closed.is_some_and(|c| c < timeout + Duration::from_secs(2)),
        "{closed:?}"
    );

    // One key upload reads its body at a time: a second is refused before its body.
    let mut uploading = raw_connection(
        &server,
        "POST /keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
    );
    thread::sleep(Duration::from_millis(100));
    let mut second = raw_connection(
        &server,
        "POST /keys HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n",
    );
    let (answer, _) = read_until_closed(&mut second, Instant::now(), Duration::from_millis(800));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("busy"), "{answer}");
    let (answer, _) = read_until_closed(&mut uploading, Instant::now(), Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // And predictions still work.
    let output = client
        .predict("digits", &key_id, &encrypt(&client_key, 0))
        .unwrap();
    assert_eq!(client_key.decrypt(&output).unwrap().len(), 10);
    server.shutdown().unwrap();
}
