//! The service's JSON bodies, shared by the server and the client. Keys and ciphertexts
//! travel as binary bodies (`application/octet-stream`); everything else is JSON.

use base64::Engine;
use serde::{Deserialize, Serialize};

use fhe_nn::fhe::ClientSpec;
use fhe_nn::{CompiledModel, Fingerprint};

/// Header that carries the evaluation key's id on `POST /models/{name}/predict`.
pub const KEY_ID_HEADER: &str = "x-fhe-nn-key-id";

/// A served model as `GET /models` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The name it is served under.
    pub name: String,
    /// The compiled model's SHA3-256 fingerprint, in hexadecimal.
    pub fingerprint: String,
    /// The layers, as the DSL spells them.
    pub architecture: String,
    /// The parameter set the model was compiled for.
    pub parameters: ParametersInfo,
    /// Lookups (programmable bootstraps) per inference.
    pub lookups: usize,
    /// Values per input sample.
    pub input_features: usize,
    /// Values per output.
    pub output_features: usize,
    /// Largest evaluation key the server accepts for this model (bytes).
    pub max_evaluation_key_bytes: u64,
}

/// One model in full, as `GET /models/{name}` gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDetail {
    #[serde(flatten)]
    pub summary: ModelSummary,
    /// The serialized [`ClientSpec`], base64: all a client needs to generate keys, encrypt
    /// and decrypt (no weights).
    pub client_spec: String,
}

impl ModelDetail {
    /// Decodes the client spec.
    pub fn client_spec(&self) -> Result<ClientSpec, WireError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.client_spec)
            .map_err(|e| WireError(format!("client spec is not base64: {e}")))?;
        Ok(ClientSpec::from_bytes(&bytes)?)
    }
}

/// `GET /models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelSummary>,
}

/// The cryptographic parameters of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParametersInfo {
    /// TFHE-rs's name of a vetted set, or the optimizer's description of a custom one.
    pub name: String,
    /// Bits a lookup is indexed by.
    pub precision: u32,
    /// LWE dimension `n`.
    pub lwe_dimension: usize,
    /// GLWE dimension `k`.
    pub glwe_dimension: usize,
    /// Polynomial size `N`.
    pub polynomial_size: usize,
}

/// `POST /keys`: where an uploaded evaluation key was stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyReceipt {
    /// SHA3-256 of the uploaded bytes, hexadecimal: pass it to `predict`.
    pub key_id: String,
    /// The model the key was made for.
    pub model: String,
    /// When the server forgets the key (seconds since the Unix epoch).
    pub expires_at: u64,
}

/// Every error the service answers, with the HTTP status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `unknown_key`, `wrong_model`, `too_large`, `busy`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while the server accepts work and its key store answers, `degraded` while the
    /// store does not (uploads and predictions with keys not in memory fail with
    /// `store_unavailable`), `draining` during shutdown.
    pub status: String,
    pub models: usize,
    /// Requests admitted and not finished (running and waiting).
    pub in_flight: usize,
    /// `ok`, or `unavailable` while the key store does not answer.
    #[serde(default)]
    pub store: String,
}

/// A wire value that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

impl From<fhe_nn::fhe::FheError> for WireError {
    fn from(e: fhe_nn::fhe::FheError) -> Self {
        WireError(e.to_string())
    }
}

/// A fingerprint in full hexadecimal.
pub fn fingerprint_hex(fingerprint: &Fingerprint) -> String {
    hex(&fingerprint.0)
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ModelSummary {
    /// The summary of `compiled` served as `name`.
    pub fn of(name: &str, compiled: &CompiledModel) -> ModelSummary {
        let set = compiled.parameters();
        let shape = set.shape();
        ModelSummary {
            name: name.to_string(),
            fingerprint: fingerprint_hex(&compiled.fingerprint()),
            architecture: compiled.architecture().signature(),
            parameters: ParametersInfo {
                name: set.name().to_string(),
                precision: set.precision(),
                lwe_dimension: shape.lwe_dimension,
                glwe_dimension: shape.glwe_dimension,
                polynomial_size: shape.polynomial_size,
            },
            lookups: compiled.lookups(),
            input_features: compiled.input_features(),
            output_features: compiled.output_features(),
            max_evaluation_key_bytes: compiled.max_evaluation_key_bytes(),
        }
    }
}

impl ModelDetail {
    /// The full description of `compiled` served as `name`.
    pub fn of(name: &str, compiled: &CompiledModel) -> Result<ModelDetail, WireError> {
        let spec = compiled.client_spec().to_bytes()?;
        Ok(ModelDetail {
            summary: ModelSummary::of(name, compiled),
            client_spec: base64::engine::general_purpose::STANDARD.encode(spec),
        })
    }
}
