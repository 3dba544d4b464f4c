//! The fingerprint of a compiled model: a SHA3-256 digest of its architecture, weights,
//! tables and parameters. Client specs, keys and ciphertexts carry it; the server refuses
//! those made for another model or another compile.

use sha3::{Digest, Sha3_256};

use crate::model::QuantModel;
use crate::params::ParameterSet;

/// A compiled model's identity (SHA3-256).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, tfhe::Versionize,
)]
#[versionize(FingerprintVersions)]
pub struct Fingerprint(pub [u8; 32]);

crate::versioned::versioned!(pub Fingerprint, FingerprintVersions, "fhe_nn::Fingerprint");

impl Fingerprint {
    /// The fingerprint of `tables` (a model with its compiled tables) under `set`.
    pub(crate) fn of(tables: &QuantModel, set: &ParameterSet) -> Fingerprint {
        let mut hash = Sha3_256::new();
        hash.update(b"fhe-nn compiled model v1\0");
        hash.update(crate::model::architecture_signature(tables.architecture()).as_bytes());
        // `Debug` prints every field, floats in shortest round-trip form: a stable encoding
        // of the weights, scales, encodings and tables.
        hash.update(format!("{:?}", tables.input_stage()).as_bytes());
        for stage in tables.layers() {
            hash.update(format!("{stage:?}").as_bytes());
        }
        hash.update(format!("{:?}", tables.output_activations()).as_bytes());
        hash.update(format!("{set:?}").as_bytes());
        Fingerprint(hash.finalize().into())
    }
}

impl std::fmt::Display for Fingerprint {
    /// The first 8 bytes in hexadecimal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}
