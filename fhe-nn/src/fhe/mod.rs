//! Fhe mode on TFHE-rs: parameter choice from noise, keys, encrypted inference, and the
//! checked serialized formats that let client and server be separate processes.

mod keys;
mod params;
mod plan;
mod server;
mod wire;

pub use keys::{generate_keys, ClientKey, ClientSpec, EvaluationKey};
pub use params::{vetted, ParameterSet, PRECISIONS};
pub use plan::{
    failure_probability, half_box, log2, FheOptions, FhePlan, LookupNoise, NoiseModel, PlanError,
    DEFAULT_P_ERROR, DEFAULT_ROUNDED_PRECISION,
};
pub use server::{CompressedSample, EncryptedSample, FheServer};
pub use wire::FORMAT_VERSION;

/// Errors of keys, ciphertexts and encrypted inference.
#[derive(Debug, thiserror::Error)]
pub enum FheError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Input(#[from] crate::InputError),
    #[error("not an fhe-nn serialized object (bad magic bytes)")]
    NotFheNn,
    #[error("serialized format version {found}; this build reads version {supported}")]
    Version { found: u16, supported: u16 },
    #[error("expected serialized {expected}, found {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("truncated data: expected {expected} bytes, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("serialized payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("checksum mismatch: the data was corrupted or tampered with")]
    Checksum,
    #[error("cannot decode payload: {0}")]
    Decode(String),
    #[error("ciphertexts belong to key {found:#018x}, not to this key ({expected:#018x})")]
    WrongKey { expected: u64, found: u64 },
    #[error("wrong ciphertext shape: {0}")]
    Shape(String),
    #[error("the evaluation key is for {key}-bit lookups but the model needs {model}-bit ones; plan the model and generate keys from that plan")]
    PrecisionMismatch { key: u32, model: u32 },
}
