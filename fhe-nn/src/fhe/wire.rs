//! The checked envelope around every serialized key and ciphertext: magic, format version,
//! payload kind, key id, model fingerprint, length and checksum, then the payload written by
//! TFHE-rs's safe serialization (its own header, the type's name and versioned data) and
//! read back with a size limit.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize, safe_serialize};
use tfhe::{Unversionize, Versionize};

use super::FheError;
use crate::compile::Fingerprint;

const MAGIC: &[u8; 5] = b"FHENN";
/// Version of the serialized formats (3: payloads through `tfhe::safe_serialization`; 4:
/// the client spec's input scaling factor whole, any integer, instead of its log2; 5: the
/// last lookup layer's own bootstrap decomposition in parameter sets and evaluation keys; 6:
/// the key of the outputs in client specs).
pub const FORMAT_VERSION: u16 = 6;
const HEADER: usize = 5 + 2 + 1 + 8 + 32 + 8 + 8;

/// What a serialized blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    ClientKey = 1,
    EvaluationKey = 2,
    Ciphertexts = 3,
    CompressedCiphertexts = 4,
    ClientSpec = 5,
    CompiledModel = 6,
}

impl Kind {
    fn name(byte: u8) -> &'static str {
        match byte {
            1 => "client key",
            2 => "evaluation key",
            3 => "ciphertexts",
            4 => "compressed ciphertexts",
            5 => "client spec",
            6 => "compiled model",
            _ => "unknown",
        }
    }
}

/// FNV-1a, 64 bits: detects truncation and corruption (not an authenticity check).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Serializes `value` into an envelope.
pub fn seal<T: Serialize + Versionize + Named>(
    kind: Kind,
    key_id: u64,
    fingerprint: Fingerprint,
    value: &T,
) -> Result<Vec<u8>, FheError> {
    let mut payload = Vec::new();
    safe_serialize(value, &mut payload, u64::MAX).map_err(|e| FheError::Decode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&key_id.to_le_bytes());
    out.extend_from_slice(&fingerprint.0);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks an envelope and deserializes its payload (at most `limit` bytes); returns the key id
/// and the model fingerprint with it.
pub fn open<T: DeserializeOwned + Unversionize + Named>(
    bytes: &[u8],
    kind: Kind,
    limit: u64,
) -> Result<(u64, Fingerprint, T), FheError> {
    if !bytes.starts_with(MAGIC) {
        return Err(FheError::NotFheNn);
    }
    if bytes.len() < HEADER {
        return Err(FheError::Truncated {
            expected: HEADER as u64,
            found: bytes.len() as u64,
        });
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = u16::from_le_bytes([bytes[5], bytes[6]]);
    if version != FORMAT_VERSION {
        return Err(FheError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if bytes[7] != kind as u8 {
        return Err(FheError::WrongKind {
            expected: Kind::name(kind as u8),
            found: Kind::name(bytes[7]),
        });
    }
    let key_id = u64_at(8);
    let fingerprint = Fingerprint(bytes[16..48].try_into().expect("32 bytes"));
    let len = u64_at(48);
    let sum = u64_at(56);
    let payload = &bytes[HEADER..];
    if len > limit {
        return Err(FheError::TooLarge { size: len, limit });
    }
    if payload.len() as u64 != len {
        return Err(FheError::Truncated {
            expected: HEADER as u64 + len,
            found: bytes.len() as u64,
        });
    }
    if checksum(payload) != sum {
        return Err(FheError::Checksum);
    }
    // The payload is all in memory and `len <= limit`: no field can need more bytes than
    // remain, so a hostile length prefix fails before anything is allocated for it.
    let value = safe_deserialize(payload, len).map_err(FheError::Decode)?;
    Ok((key_id, fingerprint, value))
}
