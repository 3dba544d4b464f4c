//! The service's errors and the JSON answers they become.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use fhe_nn::fhe::FheError;
use fhe_nn::format::DecodeError;
use fhe_nn_client::api::ApiError;

use crate::store::StoreError;

/// Everything a request can fail with; each maps to one status and one stable code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no model named `{0}` is served")]
    UnknownModel(String),
    #[error(
        "no evaluation key with id `{0}` (never uploaded, or expired): upload it with POST /keys"
    )]
    UnknownKey(String),
    #[error("`{0}` is not a key id (64 hexadecimal digits)")]
    BadKeyId(String),
    #[error("missing header `{0}` with the evaluation key's id")]
    MissingKeyId(&'static str),
    #[error(
        "the evaluation key was made for a model this server does not serve (fingerprint {0})"
    )]
    KeyForNoModel(String),
    #[error("key `{key_id}` was made for model `{key_model}`, not for `{model}`")]
    KeyForOtherModel {
        key_id: String,
        key_model: String,
        model: String,
    },
    #[error("body exceeds the limit of {limit} bytes{}", .size.map(|s| format!(" ({s} bytes)")).unwrap_or_default())]
    TooLarge { size: Option<u64>, limit: u64 },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    #[error("invalid evaluation key: {0}")]
    InvalidKey(#[source] FheError),
    #[error("invalid encrypted sample: {0}")]
    InvalidSample(#[source] FheError),
    #[error("the sample was encrypted under another key than `{0}`")]
    ForeignSample(String),
    #[error("busy: {queued} requests are queued; retry in {retry_after} s")]
    Busy { queued: usize, retry_after: u64 },
    #[error("the request did not finish within {0} s")]
    Timeout(u64),
    #[error("key store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("`{0}` is not a valid model name (letters, digits, `-`, `_`)")]
    BadModelName(String),
    #[error("a model named `{0}` is already registered")]
    DuplicateModel(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("authentication needed: {0} (send `Authorization: Bearer TOKEN`)")]
    Unauthorized(&'static str),
    #[error("tenant `{tenant}` may not use model `{model}`")]
    Forbidden { tenant: String, model: String },
    #[error("tenant `{tenant}` holds {keys} evaluation keys, its limit: wait for one to expire")]
    KeyQuota { tenant: String, keys: u64 },
    #[error("tenant `{tenant}` holds {bytes} bytes of keys; this key ({size} bytes) would pass its limit of {limit}")]
    ByteQuota {
        tenant: String,
        bytes: u64,
        size: u64,
        limit: u64,
    },
    #[error("the key store holds {bytes} bytes; this key ({size} bytes) would pass its limit of {limit}")]
    StoreFull { bytes: u64, size: u64, limit: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The HTTP status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ServiceError::*;
        match self {
            UnknownModel(_) => (StatusCode::NOT_FOUND, "unknown_model"),
            UnknownKey(_) => (StatusCode::NOT_FOUND, "unknown_key"),
            BadKeyId(_) => (StatusCode::BAD_REQUEST, "bad_key_id"),
            MissingKeyId(_) => (StatusCode::BAD_REQUEST, "missing_key_id"),
            KeyForNoModel(_) => (StatusCode::UNPROCESSABLE_ENTITY, "key_for_no_model"),
            KeyForOtherModel { .. } => (StatusCode::CONFLICT, "wrong_model"),
            TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Body(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            InvalidKey(FheError::Insecure(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "insecure_parameters")
            }
            InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
            InvalidSample(FheError::WrongModel { .. }) => (StatusCode::CONFLICT, "wrong_model"),
            InvalidSample(_) => (StatusCode::BAD_REQUEST, "invalid_sample"),
            ForeignSample(_) => (StatusCode::CONFLICT, "wrong_key"),
            Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            BadModelName(_) => (StatusCode::BAD_REQUEST, "bad_model_name"),
            DuplicateModel(_) => (StatusCode::CONFLICT, "duplicate_model"),
            NoRoute(_) => (StatusCode::NOT_FOUND, "not_found"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            KeyQuota { .. } => (StatusCode::TOO_MANY_REQUESTS, "key_quota"),
            ByteQuota { .. } => (StatusCode::TOO_MANY_REQUESTS, "byte_quota"),
            StoreFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Sorts an error of reading an uploaded sample: size, origin or content.
    pub fn from_sample(error: FheError, key_id: &str) -> ServiceError {
        match error {
            FheError::Format(DecodeError::TooLarge { size, limit }) => ServiceError::TooLarge {
                size: Some(size),
                limit,
            },
            FheError::WrongKey { .. } => ServiceError::ForeignSample(key_id.to_string()),
            other => ServiceError::InvalidSample(other),
        }
    }

    /// Sorts an error of reading an uploaded evaluation key.
    pub fn from_key(error: FheError) -> ServiceError {
        match error {
            FheError::Format(DecodeError::TooLarge { size, limit }) => ServiceError::TooLarge {
                size: Some(size),
                limit,
            },
            other => ServiceError::InvalidKey(other),
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ApiError {
            code: code.to_string(),
            message: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let ServiceError::Busy { retry_after, .. } = self {
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if let ServiceError::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fhe-nn\""),
            );
        }
        if let ServiceError::Store(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
