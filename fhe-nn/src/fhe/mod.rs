//! The runtime: client and evaluation keys, key generation, encrypted inference on the
//! server, and the checked serialized formats that let client and server be separate processes.

pub mod bootstrap;
mod compiled;
mod keygen;
mod keys;
mod secrets;
mod server;

#[cfg(all(test, feature = "datasets"))]
mod trust_tests;
#[cfg(all(test, feature = "datasets"))]
mod white_box_tests;

pub use crate::format::FORMAT_VERSION;
pub use compiled::COMPILED_MODEL_LIMIT;
pub use keys::{ClientKey, ClientSpec, EvaluationKey};
pub(crate) use server::max_compressed_sample_bytes;
pub use server::{CompressedSample, EncryptedSample, FheServer};

use crate::compile::Fingerprint;

/// Errors of keys, ciphertexts and encrypted inference.
#[derive(Debug, thiserror::Error)]
pub enum FheError {
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error("parameter set: {0}")]
    Insecure(#[from] crate::params::security::SecurityError),
    #[error(transparent)]
    Input(#[from] crate::error::InputError),
    /// Bytes refused by the format layer (envelope, version, size, checksum, payload).
    #[error(transparent)]
    Format(#[from] crate::format::DecodeError),
    #[error(transparent)]
    Encode(#[from] crate::format::EncodeError),
    /// A decoded value that fhe-nn cannot use (an unknown activation, inconsistent fields).
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("{key}: {why}")]
    BadSecret { key: &'static str, why: String },
    #[error("ciphertexts belong to key {found:#018x}, not to this key ({expected:#018x})")]
    WrongKey { expected: u64, found: u64 },
    #[error("wrong ciphertext shape: {0}")]
    Shape(String),
    #[error("made for compiled model {found}, not for this one ({expected}): generate keys from this compiled model's client spec")]
    WrongModel {
        expected: Fingerprint,
        found: Fingerprint,
    },
    #[error("not the model's output: {count} ciphertexts of LWE size {lwe_size}, where the model outputs {expected_count} of LWE size {expected_lwe_size}")]
    NotModelOutput {
        count: usize,
        lwe_size: usize,
        expected_count: usize,
        expected_lwe_size: usize,
    },
    #[error("the evaluation key uses parameters `{key}`, the compiled model `{model}`")]
    ParameterMismatch { key: String, model: String },
}

/// Refuses an upload longer than `limit` bytes, before anything is decoded.
pub(crate) fn check_upload_size(bytes: &[u8], limit: u64) -> Result<(), FheError> {
    Ok(crate::format::envelope::check_size(bytes, limit)?)
}

/// Refuses what was made for another compiled model.
pub(crate) fn check_model(expected: Fingerprint, found: Fingerprint) -> Result<(), FheError> {
    if found != expected {
        return Err(FheError::WrongModel { expected, found });
    }
    Ok(())
}
