//! A blocking HTTP client of the service.

use std::time::Duration;

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::StatusCode;

use fhe_nn::fhe::{CompressedSample, EncryptedSample, EvaluationKey, FheError};

use crate::api::{
    ApiError, Health, KeyReceipt, ModelDetail, ModelList, ModelSummary, WireError, KEY_ID_HEADER,
};

/// The largest JSON answer read (a model's details with its client spec are a few kB).
pub const MAX_JSON_RESPONSE: u64 = 16 << 20;
/// The largest encrypted output read (a model with 1,000 outputs at N = 4096: 33 MB).
pub const MAX_OUTPUT_RESPONSE: u64 = 256 << 20;
/// The largest error or metrics text read.
const MAX_TEXT_RESPONSE: u64 = 4 << 20;

/// What a call to the service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request to {url} failed: {}", with_causes(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("server answered {status} `{code}`: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("server still busy after {attempts} attempts")]
    Busy { attempts: u32 },
    #[error(transparent)]
    Fhe(#[from] FheError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("unexpected response from {url}: {message}")]
    Protocol { url: String, message: String },
}

impl ClientError {
    /// The service's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one server. Cheap to clone; safe to share between threads.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: Http,
    busy_retries: u32,
    token: Option<Token>,
}

/// A bearer token, never shown by `Debug`.
#[derive(Clone)]
struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Client {
    /// A client of the server at `base_url` (e.g. `http://127.0.0.1:8080`). Requests have no
    /// overall timeout (keys of large models take a while to upload; the server bounds its
    /// own work), and a `503 busy` is retried up to 8 times after the server's `Retry-After`.
    pub fn new(base_url: &str) -> Result<Client, ClientError> {
        Client::build(base_url, None)
    }

    /// A client of an HTTPS server whose certificate is signed by the certificate authority
    /// `ca_pem` (PEM; a self-signed server certificate is its own authority), besides the
    /// usual web authorities.
    pub fn with_ca_pem(base_url: &str, ca_pem: &[u8]) -> Result<Client, ClientError> {
        Client::build(base_url, Some(ca_pem))
    }

    fn build(base_url: &str, ca_pem: Option<&[u8]>) -> Result<Client, ClientError> {
        let transport = |source| ClientError::Transport {
            url: base_url.to_string(),
            source,
        };
        let mut builder = Http::builder();
        if let Some(pem) = ca_pem {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(pem).map_err(transport)?);
        }
        let http = builder
            .timeout(None)
            .connect_timeout(Duration::from_secs(10))
            // Drop idle connections before the server's header timeout (10 s by default)
            // closes them, so that a request never goes out on one being closed.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(transport)?;
        Ok(Client {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            busy_retries: 8,
            token: None,
        })
    }

    /// Sends `Authorization: Bearer token` with every request (a server with tenants answers
    /// `401 unauthorized` without it).
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(Token(token.to_string()));
        self
    }

    /// How many times a `503 busy` answer is retried (0: never).
    pub fn with_busy_retries(mut self, retries: u32) -> Client {
        self.busy_retries = retries;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /models`.
    pub fn models(&self) -> Result<Vec<ModelSummary>, ClientError> {
        let url = self.url("/models");
        let list: ModelList = self.json(&url, || self.http.get(&url))?;
        Ok(list.models)
    }

    /// `GET /models/{name}`: the model with its client spec.
    pub fn model(&self, name: &str) -> Result<ModelDetail, ClientError> {
        let url = self.url(&format!("/models/{name}"));
        self.json(&url, || self.http.get(&url))
    }

    /// `POST /keys`: uploads a compressed evaluation key; the receipt holds its id.
    pub fn upload_key(&self, key: &EvaluationKey) -> Result<KeyReceipt, ClientError> {
        self.upload_key_bytes(key.to_bytes()?)
    }

    /// `POST /keys` with already serialized bytes.
    pub fn upload_key_bytes(&self, bytes: Vec<u8>) -> Result<KeyReceipt, ClientError> {
        let url = self.url("/keys");
        self.json(&url, || {
            self.http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
        })
    }

    /// `POST /models/{name}/predict`: runs the model on an encrypted sample under the key
    /// `key_id` and returns the encrypted output (decrypt it with the client key).
    pub fn predict(
        &self,
        model: &str,
        key_id: &str,
        sample: &CompressedSample,
    ) -> Result<EncryptedSample, ClientError> {
        let bytes = self.predict_bytes(model, key_id, sample.to_bytes()?)?;
        Ok(EncryptedSample::from_bytes(&bytes)?)
    }

    /// `POST /models/{name}/predict` with an already serialized compressed sample.
    pub fn predict_bytes(
        &self,
        model: &str,
        key_id: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&format!("/models/{model}/predict"));
        let response = self.send(&url, || {
            self.http
                .post(&url)
                .header(KEY_ID_HEADER, key_id)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
        })?;
        read_capped(&url, response, MAX_OUTPUT_RESPONSE)
    }

    /// `GET /health`.
    pub fn health(&self) -> Result<Health, ClientError> {
        let url = self.url("/health");
        self.json(&url, || self.http.get(&url))
    }

    /// `GET /metrics`: Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url("/metrics");
        let response = self.send(&url, || self.http.get(&url))?;
        let bytes = read_capped(&url, response, MAX_TEXT_RESPONSE)?;
        String::from_utf8(bytes).map_err(|e| ClientError::Protocol {
            url,
            message: format!("metrics are not UTF-8: {e}"),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(url, request)?;
        let bytes = read_capped(url, response, MAX_JSON_RESPONSE)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            message: format!("cannot decode JSON: {e}"),
        })
    }

    /// Sends a request, retrying `503 busy` after `Retry-After` (a 503 without the service's
    /// JSON body, from a proxy, counts as busy too); any other non-2xx answer, a `503
    /// store_unavailable` included, becomes [`ClientError::Api`].
    fn send(
        &self,
        url: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut builder = request();
            if let Some(Token(token)) = &self.token {
                builder = builder.bearer_auth(token);
            }
            let response = builder.send().map_err(|source| ClientError::Transport {
                url: url.to_string(),
                source,
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let text = read_capped(url, response, MAX_TEXT_RESPONSE)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            let parsed = serde_json::from_str::<ApiError>(&text).ok();
            let busy = parsed.as_ref().is_none_or(|e| e.code == "busy");
            if status == StatusCode::SERVICE_UNAVAILABLE && busy {
                if attempts > self.busy_retries {
                    return Err(ClientError::Busy { attempts });
                }
                let wait = retry_after.unwrap_or(1).min(30);
                std::thread::sleep(Duration::from_secs(wait));
                continue;
            }
            let error = parsed.unwrap_or(ApiError {
                code: "http".to_string(),
                message: text,
            });
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            });
        }
    }
}

/// `error` and the causes under it, `: `-separated (reqwest's own message leaves them out:
/// "error sending request" hides a refused connection or a certificate the client does not
/// trust).
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

/// The body of `response`, refused past `cap` bytes (by its declared length before reading,
/// or once more arrived): a server cannot make the client hold more.
fn read_capped(url: &str, response: Response, cap: u64) -> Result<Vec<u8>, ClientError> {
    use std::io::Read;
    let too_large = |size: String| ClientError::Protocol {
        url: url.to_string(),
        message: format!("response of {size} bytes exceeds the client's limit of {cap}"),
    };
    if let Some(declared) = response.content_length().filter(|&n| n > cap) {
        return Err(too_large(declared.to_string()));
    }
    let mut bytes = Vec::new();
    response
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            message: format!("cannot read the response: {e}"),
        })?;
    if bytes.len() as u64 > cap {
        return Err(too_large(format!("more than {cap}")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot server on 127.0.0.1 that answers the first request with `answer`.
    fn answering(answer: &'static [u8]) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(answer);
            }
        });
        url
    }

    #[test]
    fn answers_past_the_client_limits_are_refused() {
        // Declared larger than the limit: refused before reading.
        let url = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{}");
        let error = Client::new(&url).unwrap().health().unwrap_err();
        assert!(
            matches!(&error, ClientError::Protocol { message, .. } if message.contains("exceeds")),
            "{error}"
        );
        // A well-sized answer still decodes (and a wrong one is a protocol error, not a panic).
        let url = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        let error = Client::new(&url).unwrap().health().unwrap_err();
        assert!(
            matches!(&error, ClientError::Protocol { message, .. } if message.contains("JSON")),
            "{error}"
        );
    }
}
