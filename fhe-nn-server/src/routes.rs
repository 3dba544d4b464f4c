//! The routes, the shared state, and the admission of encrypted work.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request};
use axum::http::{header, HeaderMap};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use sha3::{Digest, Sha3_256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use fhe_nn::fhe::EvaluationKey;
use fhe_nn::{CompiledModel, Fingerprint};
use fhe_nn_client::api::{
    fingerprint_hex, hex, Health, KeyReceipt, ModelDetail, ModelList, ModelSummary, KEY_ID_HEADER,
};

use crate::access::{Refusal, Tenant};
use crate::cache::{KeyCache, ReadyKey};
use crate::error::ServiceError;
use crate::metrics::{Gauges, Metrics};
use crate::store::{expiry, KeyStore};
use crate::{whole_seconds, ServerConfig};

/// A model as served.
struct Served {
    compiled: CompiledModel,
    detail: ModelDetail,
}

/// What every request sees.
pub(crate) struct Shared {
    models: BTreeMap<String, Served>,
    by_fingerprint: HashMap<Fingerprint, String>,
    store: Arc<dyn KeyStore>,
    cache: Mutex<KeyCache>,
    /// Permits for admitted requests: workers plus queue.
    admission: Arc<Semaphore>,
    /// Permits for requests being worked on.
    workers: Arc<Semaphore>,
    /// Permits for key uploads being read.
    key_uploads: Arc<Semaphore>,
    waiting: AtomicUsize,
    running: AtomicUsize,
    draining: AtomicBool,
    metrics: Metrics,
    config: ServerConfig,
    key_limit: u64,
    /// Held while an upload checks the quotas and stores its key, so that two uploads of
    /// one replica cannot both pass a limit only one fits in.
    quota: Mutex<()>,
}

/// The shared state, cheap to clone.
#[derive(Clone)]
pub(crate) struct State(Arc<Shared>);

impl State {
    pub(crate) fn new(
        models: BTreeMap<String, CompiledModel>,
        store: Arc<dyn KeyStore>,
        config: ServerConfig,
    ) -> Result<State, ServiceError> {
        if config.workers == 0 {
            return Err(ServiceError::Internal("workers must be at least 1".into()));
        }
        let mut served = BTreeMap::new();
        let mut by_fingerprint = HashMap::new();
        for (name, compiled) in models {
            let detail = ModelDetail::of(&name, &compiled)
                .map_err(|e| ServiceError::Internal(format!("model `{name}`: {e}")))?;
            by_fingerprint.insert(compiled.fingerprint(), name.clone());
            served.insert(name, Served { compiled, detail });
        }
        let key_limit = served
            .values()
            .map(|m| m.compiled.max_evaluation_key_bytes())
            .max()
            .unwrap_or(0);
        Ok(State(Arc::new(Shared {
            models: served,
            by_fingerprint,
            store,
            cache: Mutex::new(KeyCache::new(config.cache_bytes)),
            admission: Arc::new(Semaphore::new(config.workers + config.queue)),
            workers: Arc::new(Semaphore::new(config.workers)),
            key_uploads: Arc::new(Semaphore::new(config.key_uploads.max(1))),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            metrics: Metrics::default(),
            config,
            key_limit,
            quota: Mutex::new(()),
        })))
    }

    pub(crate) fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    fn model(&self, name: &str) -> Result<&Served, ServiceError> {
        self.0
            .models
            .get(name)
            .ok_or_else(|| ServiceError::UnknownModel(name.to_string()))
    }

    /// The tenant the request's headers authenticate (`401 unauthorized` otherwise).
    fn tenant(&self, headers: &HeaderMap) -> Result<Tenant, ServiceError> {
        self.0
            .config
            .access
            .tenant(headers)
            .map_err(|Refusal::Unauthenticated(why)| ServiceError::Unauthorized(why))
    }

    /// The tenant, if it may use model `model` (`403 forbidden` otherwise; `404` for a model
    /// not served).
    fn tenant_for(&self, headers: &HeaderMap, model: &str) -> Result<Tenant, ServiceError> {
        let tenant = self.tenant(headers)?;
        self.model(model)?;
        check_model(&tenant, model)?;
        Ok(tenant)
    }

    /// Whether `tenant` may store `size` more bytes under `store_id`: a key it holds already
    /// is stored again (its expiry renewed); a new one must fit the tenant's key and byte
    /// limits and the store's. Exact when called with the quota lock held.
    fn check_quota(&self, tenant: &Tenant, store_id: &str, size: u64) -> Result<(), ServiceError> {
        let shared = &self.0;
        if shared.store.contains(store_id)? {
            return Ok(());
        }
        let own = shared.store.usage(&format!("{}-", tenant.namespace()))?;
        if own.keys >= shared.config.tenant_keys {
            return Err(ServiceError::KeyQuota {
                tenant: tenant.name().to_string(),
                keys: own.keys,
            });
        }
        if own.bytes + size > shared.config.tenant_bytes {
            return Err(ServiceError::ByteQuota {
                tenant: tenant.name().to_string(),
                bytes: own.bytes,
                size,
                limit: shared.config.tenant_bytes,
            });
        }
        let all = shared.store.usage("")?;
        if all.bytes + size > shared.config.store_bytes {
            return Err(ServiceError::StoreFull {
                bytes: all.bytes,
                size,
                limit: shared.config.store_bytes,
            });
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.0.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request (one of the workers' and the queue's permits), or refuses it at once
    /// (`503 busy`): before its body is read, so that bodies held in memory are bounded.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        self.0
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.busy())
    }

    /// The body of `request`, at most `limit` bytes (`413 too_large`, from the declared length
    /// before anything is kept), arriving within the body timeout (`408 body_timeout`).
    async fn read_body(&self, request: Request, limit: u64) -> Result<Bytes, ServiceError> {
        if let Some(size) = declared_length(&request).filter(|&size| size > limit) {
            // A body at most twice the limit is read and dropped, so that its client reads
            // the answer; a larger one is not read at all.
            if size <= limit.saturating_mul(2) {
                self.drain(request, size);
            }
            return Err(ServiceError::TooLarge {
                size: Some(size),
                limit,
            });
        }
        let timeout = self.0.config.body_timeout;
        let reading = axum::body::to_bytes(request.into_body(), body_limit(limit));
        match tokio::time::timeout(timeout, reading).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                let inner = e.into_inner();
                if inner.is::<http_body_util::LengthLimitError>() {
                    Err(ServiceError::TooLarge { size: None, limit })
                } else {
                    Err(ServiceError::Body(inner.to_string()))
                }
            }
            Err(_) => Err(ServiceError::BodyTimeout(whole_seconds(timeout))),
        }
    }

    /// `refused`, for a request refused before its body was read, answered at once while a
    /// task of its own reads and drops the body (nothing kept; at most `limit` bytes, within
    /// the body timeout), so that a client still sending it reads the answer instead of a
    /// broken connection. A body declared larger than `limit` is not read.
    fn refuse_unread(&self, request: Request, limit: u64, refused: ServiceError) -> ServiceError {
        if declared_length(&request).is_none_or(|size| size <= limit) {
            self.drain(request, limit);
        }
        refused
    }

    /// Reads and drops `request`'s body (at most `limit` bytes, within the body timeout) on a
    /// task of its own.
    fn drain(&self, request: Request, limit: u64) {
        let mut body = request.into_body();
        let drain = async move {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > limit {
                    break;
                }
            }
        };
        tokio::spawn(tokio::time::timeout(self.0.config.body_timeout, drain));
    }

    /// Runs `work` on the blocking pool once a worker is free, within the request timeout,
    /// holding the admission permit `admitted`.
    async fn run_admitted<T: Send + 'static>(
        &self,
        admitted: OwnedSemaphorePermit,
        work: impl FnOnce(&State) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let shared = &self.0;
        let deadline = tokio::time::Instant::now() + shared.config.request_timeout;
        let timeout = || ServiceError::Timeout(whole_seconds(shared.config.request_timeout));
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let worker =
            tokio::time::timeout_at(deadline, shared.workers.clone().acquire_owned()).await;
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        let worker = worker
            .map_err(|_| timeout())?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let state = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, worker);
            let _running = Running::start(&state.0.running);
            work(&state)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ServiceError::Internal(format!("worker: {e}"))),
            Err(_) => Err(timeout()),
        }
    }

    /// The `503 busy` answer, with a wait estimated from the queue and mean inference time.
    fn busy(&self) -> ServiceError {
        let shared = &self.0;
        let queued = shared.waiting.load(Ordering::SeqCst) + shared.running.load(Ordering::SeqCst);
        let mean = shared.metrics.mean_inference_seconds().unwrap_or(1.0);
        let wait = (queued as f64 * mean / shared.config.workers as f64).ceil() as u64;
        ServiceError::Busy {
            queued,
            retry_after: wait.clamp(1, 60),
        }
    }

    /// The ready key `key_id` of `tenant` for `model`: from the cache, or read from the
    /// store, checked and decompressed (on the blocking pool).
    fn ready_key(
        &self,
        tenant: &Tenant,
        key_id: &str,
        model: &str,
    ) -> Result<Arc<ReadyKey>, ServiceError> {
        let store_id = tenant.store_id(key_id);
        let cached = self.cache().get(&store_id);
        let ready = match cached {
            // A key kept in memory serves only while the store still holds it: one deleted
            // or expired there stops working here at the next request.
            Some(_) if !self.0.store.contains(&store_id)? => {
                self.cache().remove(&store_id);
                return Err(ServiceError::UnknownKey(key_id.to_string()));
            }
            Some(ready) => ready,
            None => {
                let bytes = self
                    .0
                    .store
                    .get(&store_id)?
                    .ok_or_else(|| ServiceError::UnknownKey(key_id.to_string()))?;
                let key = EvaluationKey::from_bytes(&bytes).map_err(ServiceError::from_key)?;
                let ready = self.prepare(key)?;
                self.remember(&store_id, &ready);
                ready
            }
        };
        if ready.model != model {
            return Err(ServiceError::KeyForOtherModel {
                key_id: key_id.to_string(),
                key_model: ready.model.clone(),
                model: model.to_string(),
            });
        }
        Ok(ready)
    }

    /// Decompresses `key` for the model it was made for: every check a key goes through.
    fn prepare(&self, key: EvaluationKey) -> Result<Arc<ReadyKey>, ServiceError> {
        let name = self.model_of(&key.fingerprint())?;
        let compiled = &self.model(&name)?.compiled;
        let server = compiled.server(key).map_err(ServiceError::from_key)?;
        let ready = Arc::new(ReadyKey {
            model: name,
            server,
        });
        self.0.metrics.key_decompressed();
        Ok(ready)
    }

    /// Keeps a decompressed key in the cache under its store id.
    fn remember(&self, store_id: &str, ready: &Arc<ReadyKey>) {
        let bytes = ready.server.key_bytes();
        self.cache().insert(store_id, ready.clone(), bytes);
    }

    fn model_of(&self, fingerprint: &Fingerprint) -> Result<String, ServiceError> {
        self.0
            .by_fingerprint
            .get(fingerprint)
            .cloned()
            .ok_or_else(|| ServiceError::KeyForNoModel(fingerprint_hex(fingerprint)))
    }
}

/// The body length `request` declares (`Content-Length`), if any.
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// `403 forbidden` unless `tenant` may use `model`.
fn check_model(tenant: &Tenant, model: &str) -> Result<(), ServiceError> {
    if tenant.may_use(model) {
        Ok(())
    } else {
        Err(ServiceError::Forbidden {
            tenant: tenant.name().to_string(),
            model: model.to_string(),
        })
    }
}

/// Counts a request as running while alive (also when the work panics).
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn start(counter: &'a AtomicUsize) -> Running<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Running(counter)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) fn router(state: State) -> Router {
    // The handlers read bodies themselves (`State::read_body`), once admitted, within what
    // their model can need.
    Router::new()
        .route("/models", get(list_models))
        .route("/models/{name}", get(show_model))
        .route("/keys", post(upload_key))
        .route("/models/{name}/predict", post(predict))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

fn body_limit(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// Records every request's route, status and latency.
async fn track(
    axum::extract::State(state): axum::extract::State<State>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    let response = next.run(request).await;
    state.0.metrics.request(
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> ServiceError {
    ServiceError::NoRoute(format!("{method} {}", uri.path()))
}

async fn list_models(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
) -> Result<Json<ModelList>, ServiceError> {
    let tenant = state.tenant(&headers)?;
    let models: Vec<ModelSummary> = state
        .0
        .models
        .iter()
        .filter(|(name, _)| tenant.may_use(name))
        .map(|(_, m)| m.detail.summary.clone())
        .collect();
    Ok(Json(ModelList { models }))
}

async fn show_model(
    axum::extract::State(state): axum::extract::State<State>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ModelDetail>, ServiceError> {
    state.tenant_for(&headers, &name)?;
    Ok(Json(state.model(&name)?.detail.clone()))
}

async fn upload_key(
    axum::extract::State(state): axum::extract::State<State>,
    request: Request,
) -> Result<Json<KeyReceipt>, ServiceError> {
    // Authenticated, then admitted with one of the key-upload permits, before the body is
    // read into memory.
    let limit = state.0.key_limit;
    let before_body: Result<_, ServiceError> = (|| {
        let tenant = state.tenant(request.headers())?;
        let admitted = state.admit()?;
        let uploading = state
            .0
            .key_uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| state.busy())?;
        Ok((tenant, admitted, uploading))
    })();
    let (tenant, admitted, _uploading) = match before_body {
        Ok(admitted) => admitted,
        Err(refused) => return Err(state.refuse_unread(request, limit, refused)),
    };
    let bytes = state.read_body(request, limit).await?;
    state
        .run_admitted(admitted, move |state| {
            let key_id = hex(&Sha3_256::digest(&bytes));
            let store_id = tenant.store_id(&key_id);
            // A tenant past its quota is refused before its key costs a decompression (and
            // checked again below, under the lock, before the key is stored).
            state.check_quota(&tenant, &store_id, bytes.len() as u64)?;
            let key = EvaluationKey::from_bytes(&bytes).map_err(ServiceError::from_key)?;
            let model = state.model_of(&key.fingerprint())?;
            check_model(&tenant, &model)?;
            let limit = state.model(&model)?.compiled.max_evaluation_key_bytes();
            if bytes.len() as u64 > limit {
                return Err(ServiceError::TooLarge {
                    size: Some(bytes.len() as u64),
                    limit,
                });
            }
            // Decompressed (every check passed) before anything is stored, and kept, so
            // that the first prediction does not wait for it.
            let ready = state.prepare(key)?;
            let ttl = state.0.config.key_ttl;
            {
                let _quota = state.0.quota.lock().unwrap_or_else(|e| e.into_inner());
                state.check_quota(&tenant, &store_id, bytes.len() as u64)?;
                state.0.store.put(&store_id, &bytes, ttl)?;
            }
            state.remember(&store_id, &ready);
            Ok(KeyReceipt {
                key_id,
                model,
                expires_at: expiry(ttl),
            })
        })
        .await
        .map(Json)
}

/// The key id header: 64 hexadecimal digits.
fn key_id(headers: &HeaderMap) -> Result<String, ServiceError> {
    let value = headers
        .get(KEY_ID_HEADER)
        .ok_or(ServiceError::MissingKeyId(KEY_ID_HEADER))?;
    let text = value
        .to_str()
        .map_err(|_| ServiceError::BadKeyId(format!("{value:?}")))?;
    let id = text.trim().to_ascii_lowercase();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ServiceError::BadKeyId(text.chars().take(80).collect()));
    }
    Ok(id)
}

async fn predict(
    axum::extract::State(state): axum::extract::State<State>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ServiceError> {
    let limit = state.model(&name)?.compiled.max_compressed_sample_bytes();
    let before_body: Result<_, ServiceError> = (|| {
        let tenant = state.tenant_for(request.headers(), &name)?;
        let key_id = key_id(request.headers())?;
        Ok((tenant, key_id, state.admit()?))
    })();
    let (tenant, key_id, admitted) = match before_body {
        Ok(admitted) => admitted,
        Err(refused) => return Err(state.refuse_unread(request, limit, refused)),
    };
    let bytes = state.read_body(request, limit).await?;
    let output = state
        .run_admitted(admitted, move |state| {
            let ready = state.ready_key(&tenant, &key_id, &name)?;
            let input = ready
                .server
                .read_compressed(&bytes)
                .map_err(|e| ServiceError::from_sample(e, &key_id))?;
            let start = Instant::now();
            let output = ready
                .server
                .run(&input)
                .map_err(|e| ServiceError::from_sample(e, &key_id))?;
            state
                .0
                .metrics
                .inference(ready.server.lookups(), start.elapsed().as_secs_f64());
            output
                .to_bytes()
                .map_err(|e| ServiceError::Internal(format!("cannot serialize the output: {e}")))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], output).into_response())
}

async fn health(axum::extract::State(state): axum::extract::State<State>) -> Json<Health> {
    let shared = &state.0;
    let store = shared.store.clone();
    // The store's check blocks (a Redis PING, bounded by its timeout).
    let store_ok = tokio::task::spawn_blocking(move || store.check().is_ok())
        .await
        .unwrap_or(false);
    let status = if shared.draining.load(Ordering::SeqCst) {
        "draining"
    } else if !store_ok {
        "degraded"
    } else {
        "ok"
    };
    Json(Health {
        status: status.to_string(),
        models: shared.models.len(),
        in_flight: shared.waiting.load(Ordering::SeqCst) + shared.running.load(Ordering::SeqCst),
        store: if store_ok { "ok" } else { "unavailable" }.to_string(),
    })
}

async fn metrics(axum::extract::State(state): axum::extract::State<State>) -> Response {
    let shared = &state.0;
    let (keys_cached, key_cache_bytes) = {
        let cache = state.cache();
        (cache.len(), cache.bytes())
    };
    let text = shared.metrics.render(&Gauges {
        keys_cached,
        key_cache_bytes,
        queue_depth: shared.waiting.load(Ordering::SeqCst),
        running: shared.running.load(Ordering::SeqCst),
    });
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
