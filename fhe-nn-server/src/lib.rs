//! An HTTP service for encrypted inference with fhe-nn.
//!
//! Register compiled models, pick a key store, serve:
//!
//! ```no_run
//! # fn demo(compiled: fhe_nn::CompiledModel) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fhe_nn_server::{DiskStore, ServerConfig, Service};
//!
//! let mut service = Service::new(Arc::new(DiskStore::open("keys")?), ServerConfig::default());
//! service.register("digits", compiled)?;
//! let running = service.spawn("127.0.0.1:8080")?; // or `service.serve(listener, shutdown).await`
//! println!("serving on {}", running.url());
//! running.wait()?;
//! # Ok(()) }
//! ```
//!
//! Routes: `GET /models`, `GET /models/{name}` (with the client spec), `POST /keys` (a
//! compressed evaluation key → its id), `POST /models/{name}/predict` (header
//! `x-fhe-nn-key-id`, body: a compressed encrypted sample → the encrypted output),
//! `GET /health`, `GET /metrics`. Errors are JSON `{code, message}`.
//!
//! Callers are tenants named by bearer tokens ([`Access::Tokens`]; `GET /health` and `GET
//! /metrics` need none), or all one anonymous tenant ([`Access::Anonymous`]). A tenant's keys
//! live in a namespace of its own in the store (another tenant's key id is unknown to it),
//! within [`ServerConfig::tenant_keys`] and [`ServerConfig::tenant_bytes`], and the store
//! within [`ServerConfig::store_bytes`].
//!
//! Encrypted work (key checks, decompression, inference) runs on tokio's blocking threads,
//! at most [`ServerConfig::workers`] at once, never on the async executor; at most
//! [`ServerConfig::queue`] more requests wait, and beyond that the service answers `503 busy`
//! with `Retry-After`. A request is admitted before its body is read (and a key upload also
//! takes one of [`ServerConfig::key_uploads`] permits), so bodies held in memory are bounded
//! by the permits; headers and bodies that arrive slower than
//! [`ServerConfig::header_timeout`] and [`ServerConfig::body_timeout`] close the connection or
//! get `408`. Shutdown stops accepting connections and finishes in-flight work.

mod access;
mod cache;
mod connections;
mod error;
mod metrics;
mod routes;
pub mod shipped;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fhe_nn::CompiledModel;

pub use access::{Access, AccessError, Tenant, Tokens, ANONYMOUS, MIN_TOKEN_LEN};
pub use cache::{KeyCache, ReadyKey};
pub use error::ServiceError;
pub use store::{DiskStore, KeyStore, MemoryStore, RedisStore, StoreError, Usage};
pub use tls::{Tls, TlsError};

/// Limits and sizes of the service.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Encrypted requests worked on at once (each inference also spreads its lookups over
    /// all cores). Default: the number of cores.
    pub workers: usize,
    /// Admitted requests that may wait for a worker; more get `503 busy`. Default: 4 per
    /// worker.
    pub queue: usize,
    /// Longest a request may wait and run before it is answered `504 timeout`.
    pub request_timeout: Duration,
    /// How long an uploaded evaluation key is kept.
    pub key_ttl: Duration,
    /// Bytes of decompressed evaluation keys kept in memory (least recently used out).
    pub cache_bytes: u64,
    /// How often the key store's expired keys are collected (the disk store; Redis expires
    /// keys itself).
    pub collect_every: Duration,
    /// Longest a client may take to send a request's headers; a kept-alive connection idle
    /// that long is closed too.
    pub header_timeout: Duration,
    /// Longest a client may take to send a request's body (`408 body_timeout`).
    pub body_timeout: Duration,
    /// Key uploads read at once (each up to the largest evaluation key a served model
    /// takes); more are answered `503 busy` before their body is read.
    pub key_uploads: usize,
    /// Who may call the service. Default: [`Access::Anonymous`] (the `fhe-nn-server`
    /// command asks for tokens or an explicit `--allow-anonymous`).
    pub access: Access,
    /// Evaluation keys one tenant may hold at once (`429 key_quota` beyond).
    pub tenant_keys: u64,
    /// Bytes of evaluation keys one tenant may hold at once (`429 byte_quota` beyond).
    pub tenant_bytes: u64,
    /// Bytes of evaluation keys the whole store may hold (`507 store_full` beyond).
    pub store_bytes: u64,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<Tls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        ServerConfig {
            workers: cores,
            queue: 4 * cores,
            request_timeout: Duration::from_secs(300),
            key_ttl: Duration::from_secs(24 * 3600),
            cache_bytes: 4 << 30,
            collect_every: Duration::from_secs(600),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            key_uploads: cores,
            access: Access::Anonymous,
            tenant_keys: 16,
            tenant_bytes: 4 << 30,
            store_bytes: 64 << 30,
            tls: None,
        }
    }
}

/// A service under construction: models and a key store.
pub struct Service {
    models: BTreeMap<String, CompiledModel>,
    store: Arc<dyn KeyStore>,
    config: ServerConfig,
}

impl Service {
    /// A service with no model yet, keeping keys in `store`.
    pub fn new(store: Arc<dyn KeyStore>, config: ServerConfig) -> Service {
        Service {
            models: BTreeMap::new(),
            store,
            config,
        }
    }

    /// Serves `compiled` (a [`CompiledModel`] or a typed `Compiled<N>`) under `name`
    /// (letters, digits, `-` and `_`).
    pub fn register(
        &mut self,
        name: &str,
        compiled: impl Into<CompiledModel>,
    ) -> Result<&mut Service, ServiceError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ServiceError::BadModelName(name.to_string()));
        }
        if self.models.contains_key(name) {
            return Err(ServiceError::DuplicateModel(name.to_string()));
        }
        self.models.insert(name.to_string(), compiled.into());
        Ok(self)
    }

    /// The axum router of the service (to nest in a larger application).
    pub fn router(self) -> Result<axum::Router, ServiceError> {
        Ok(routes::router(routes::State::new(
            self.models,
            self.store,
            self.config,
        )?))
    }

    /// Serves on `listener` until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let collector = tokio::spawn(collect_expired(
            self.store.clone(),
            self.config.collect_every,
        ));
        let header_timeout = self.config.header_timeout;
        let tls = self.config.tls.clone();
        let state = routes::State::new(self.models, self.store, self.config)?;
        let draining = state.clone();
        let app = routes::router(state);
        connections::serve(listener, app, header_timeout, tls, async move {
            shutdown.await;
            draining.start_draining();
        })
        .await;
        collector.abort();
        Ok(())
    }

    /// Serves on `addr` (port 0: any free port) from a runtime of its own on a background
    /// thread; for tests, benchmarks and programs that are not async.
    pub fn spawn(self, addr: &str) -> Result<RunningServer, ServiceError> {
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ServiceError::Internal(format!("runtime: {e}")))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| ServiceError::Internal(format!("cannot listen on {addr}: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(self.serve(listener, async {
                let _ = stopped.await;
            }))
        });
        Ok(RunningServer {
            scheme,
            addr: local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Collects the store's expired keys every `every`, on the blocking pool.
async fn collect_expired(store: std::sync::Arc<dyn KeyStore>, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
    ticks.tick().await; // the first tick is immediate; opening the store collected already
    loop {
        ticks.tick().await;
        let store = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.collect_expired()).await {
            eprintln!("fhe-nn-server: collecting expired keys: {e}");
        }
    }
}

/// A service running on a background thread; dropping it shuts it down.
pub struct RunningServer {
    scheme: &'static str,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServiceError>>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ip:port` (`https://` with TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops accepting connections, finishes in-flight requests, and returns.
    pub fn shutdown(mut self) -> Result<(), ServiceError> {
        self.stop_and_join()
    }

    /// Blocks until the server stops by itself (it does not, unless it fails).
    pub fn wait(mut self) -> Result<(), ServiceError> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| ServiceError::Internal("server thread panicked".into()))?,
            None => Ok(()),
        }
    }

    fn stop_and_join(&mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| ServiceError::Internal("server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Request timeout in whole seconds, for messages.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}
