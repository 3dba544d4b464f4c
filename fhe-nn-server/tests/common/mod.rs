//! What the service's test binaries share: the shipped digits model compiled once, a server
//! on loopback, keys made from the published spec, local Fhe to compare with, and a real
//! `redis-server`.
#![allow(dead_code)] // each test binary uses a part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use fhe_nn::fhe::{ClientKey, CompressedSample, EncryptedSample, EvaluationKey};
use fhe_nn::{CompiledModel, FheOptions};
use fhe_nn_client::{Client, ClientError};
use fhe_nn_server::{
    shipped, KeyStore, MemoryStore, RedisStore, RunningServer, ServerConfig, Service,
};

/// The shipped digits model, compiled once per test binary.
pub fn digits() -> &'static CompiledModel {
    static MODEL: OnceLock<CompiledModel> = OnceLock::new();
    MODEL.get_or_init(|| shipped::compile("digits", &FheOptions::default()).expect("compile"))
}

/// The same weights without the input restriction: another compiled model (another
/// fingerprint) with the same shape.
pub fn digits_wide() -> &'static CompiledModel {
    static MODEL: OnceLock<CompiledModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let weights = fhe_nn::datasets::digits_seed_weights().expect("weights");
        let model = shipped::Seed::from_tensors(&weights).expect("load");
        let calibration = fhe_nn::datasets::digits().expect("digits").train.images;
        model
            .compile(calibration.view(), &FheOptions::default())
            .expect("compile")
            .into()
    })
}

pub fn test_images() -> fhe_nn::ndarray::Array2<f64> {
    fhe_nn::datasets::digits().expect("digits").test.images
}

pub fn start(
    store: Arc<dyn KeyStore>,
    config: ServerConfig,
    models: &[(&str, &CompiledModel)],
) -> RunningServer {
    let mut service = Service::new(store, config);
    for (name, compiled) in models {
        service
            .register(name, (*compiled).clone())
            .expect("register");
    }
    service.spawn("127.0.0.1:0").expect("spawn")
}

pub fn small_config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        queue: 8,
        ..ServerConfig::default()
    }
}

/// The digits model served from memory under `config`, a client that does not retry
/// `busy`, and a client key whose evaluation key is uploaded (with its id).
pub fn serving_digits_with_a_key(
    config: ServerConfig,
) -> (RunningServer, Client, ClientKey, String) {
    let server = start(
        Arc::new(MemoryStore::default()),
        config,
        &[("digits", digits())],
    );
    let client = Client::new(&server.url()).unwrap().with_busy_retries(0);
    let (client_key, evaluation_key) = keys_from_server(&client, "digits");
    let key_id = client.upload_key(&evaluation_key).unwrap().key_id;
    (server, client, client_key, key_id)
}

/// Keys for `model` made from the client spec the server publishes.
pub fn keys_from_server(client: &Client, model: &str) -> (ClientKey, EvaluationKey) {
    let detail = client.model(model).expect("GET /models/{name}");
    detail
        .client_spec()
        .expect("spec")
        .keygen()
        .expect("keygen")
}

pub fn encrypt(key: &ClientKey, row: usize) -> CompressedSample {
    key.encrypt_compressed(test_images().row(row))
        .expect("encrypt")
}

/// What the model computes locally on the same ciphertext with the same key.
pub fn local_fhe(
    compiled: &CompiledModel,
    key: &EvaluationKey,
    sample: &CompressedSample,
) -> EncryptedSample {
    let server = compiled.server(key.clone()).expect("server");
    server
        .run(&server.decompress(sample).expect("decompress"))
        .expect("run")
}

pub fn api_code(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert!(!message.is_empty(), "error `{code}` without a message");
            (status, code)
        }
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A `redis-server` on a free loopback port, stopped on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    port: u16,
    /// Where it appends every write (a restart then keeps the keys); `None`: memory only.
    dir: Option<PathBuf>,
}

impl Redis {
    /// A Redis that keeps nothing on disk.
    pub fn start() -> Redis {
        Redis::launch(free_port(), None)
    }

    /// A Redis that appends every write to a file in `dir` (synced at once), so that
    /// [`restart`](Self::restart) finds every key again.
    pub fn start_persistent(dir: &Path) -> Redis {
        Redis::launch(free_port(), Some(dir.to_path_buf()))
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        *self = Redis::launch(self.port, self.dir.clone());
    }

    fn launch(port: u16, dir: Option<PathBuf>) -> Redis {
        let program =
            std::env::var("FHE_NN_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]
        .map(String::from)
        .to_vec();
        match &dir {
            Some(dir) => args.extend(
                ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
                    .map(String::from)
                    .into_iter()
                    .chain([dir.display().to_string()]),
            ),
            None => args.extend(["--appendonly", "no"].map(String::from)),
        }
        let child = Command::new(&program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{program}` ({e}): install Redis (Debian: apt-get install redis-server; scripts/test.sh does it) or set FHE_NN_REDIS_SERVER")
            });
        let url = format!("redis://127.0.0.1:{port}/0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while RedisStore::open(&url).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Redis {
            child,
            url,
            port,
            dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port no one listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
