//! The identity of a compiled model (a SHA3-256 digest, computed by the compile step):
//! client specs, keys and ciphertexts carry it, and a server refuses those made for another
//! model or another compile.

/// A compiled model's identity (SHA3-256).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, tfhe::Versionize,
)]
#[versionize(FingerprintVersions)]
pub struct Fingerprint(pub [u8; 32]);

super::versions::versioned!(pub Fingerprint, FingerprintVersions, "fhe_nn::Fingerprint");

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
