//! The fingerprint of a compiled model: a SHA3-256 digest of its canonical definition
//! (architecture, weights, input range, parameters) and of the encodings its clients use.
//! Client specs, keys and ciphertexts carry it; the server refuses those made for another
//! model or another compile.

use sha3::{Digest, Sha3_256};

use crate::model::QuantModel;

/// A compiled model's identity (SHA3-256).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, tfhe::Versionize,
)]
#[versionize(FingerprintVersions)]
pub struct Fingerprint(pub [u8; 32]);

crate::versioned::versioned!(pub Fingerprint, FingerprintVersions, "fhe_nn::Fingerprint");

impl Fingerprint {
    /// The fingerprint of a compiled model: its canonical `definition` (architecture, source
    /// tensors, input range, parameter set; see `compile::artifact`) and the encodings its
    /// clients rely on, as `tables` compile them. Byte encodings, never `Debug` text: renaming
    /// a Rust field changes nothing.
    pub(crate) fn of(definition: &[u8], tables: &QuantModel) -> Fingerprint {
        let client = super::artifact::client_view(tables);
        let mut hash = Sha3_256::new();
        hash.update(b"fhe-nn compiled model v2\0");
        for part in [definition, &client] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
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
