//! How a compiled model's fingerprint is computed: a SHA3-256 digest of its canonical
//! definition (architecture, weights, input range, parameters), of the encodings its clients
//! use and, for models compiled by format 7 on, of its plan (the error figures), so that
//! nothing a compiled model's file holds can change without changing the fingerprint.

use sha3::{Digest, Sha3_256};

use super::FhePlan;
pub use crate::format::Fingerprint;
use crate::model::QuantModel;

/// The fingerprint of a compiled model: its canonical `definition` (architecture, source
/// tensors, input range, parameter set; see `compile::artifact`), the encodings its clients
/// rely on as `tables` compile them, and `plan` where the fingerprint covers it (`None`:
/// a model written by format 6, whose fingerprint left the plan out). Byte encodings, never
/// `Debug` text: renaming a Rust field changes nothing.
pub(crate) fn of(definition: &[u8], tables: &QuantModel, plan: Option<&FhePlan>) -> Fingerprint {
    let client = super::artifact::client_view(tables);
    let mut hash = Sha3_256::new();
    let plan_json = plan.map(|p| serde_json::to_vec(p).expect("a plan serializes to JSON"));
    let parts: Vec<&[u8]> = match &plan_json {
        Some(json) => {
            hash.update(b"fhe-nn compiled model v3\0");
            vec![definition, &client, json]
        }
        None => {
            hash.update(b"fhe-nn compiled model v2\0");
            vec![definition, &client]
        }
    };
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    Fingerprint(hash.finalize().into())
}
