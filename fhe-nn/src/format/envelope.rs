//! The checked envelope around every serialized key, ciphertext, client spec and compiled
//! model: magic, format version, payload kind, key id, model fingerprint, length and
//! checksum, then the payload written by TFHE-rs's safe serialization (its own header, the
//! type's name and versioned data) and read back with a size limit.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tfhe::named::Named;
use tfhe::safe_serialization::{safe_deserialize, safe_serialize};
use tfhe::{Unversionize, Versionize};

use super::{EncodeError, Fingerprint};

const MAGIC: &[u8; 5] = b"FHENN";
/// The format version this build writes (the table in [`format`](mod@crate::format) says what each
/// changed).
pub const FORMAT_VERSION: u16 = 7;
/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u16 = 6;
const HEADER: usize = 5 + 2 + 1 + 8 + 32 + 8 + 8;

/// What a serialized blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    ClientKey = 1,
    EvaluationKey = 2,
    Ciphertexts = 3,
    CompressedCiphertexts = 4,
    ClientSpec = 5,
    CompiledModel = 6,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::ClientKey,
        Kind::EvaluationKey,
        Kind::Ciphertexts,
        Kind::CompressedCiphertexts,
        Kind::ClientSpec,
        Kind::CompiledModel,
    ];

    /// What the kind is called in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ClientKey => "client key",
            Kind::EvaluationKey => "evaluation key",
            Kind::Ciphertexts => "ciphertexts",
            Kind::CompressedCiphertexts => "compressed ciphertexts",
            Kind::ClientSpec => "client spec",
            Kind::CompiledModel => "compiled model",
        }
    }

    fn name_of_byte(byte: u8) -> &'static str {
        Kind::ALL
            .into_iter()
            .find(|&k| k as u8 == byte)
            .map_or("unknown", Kind::name)
    }
}

/// Why serialized bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an fhe-nn serialized object (bad magic bytes)")]
    NotFheNn,
    #[error("serialized format version {found}; this build reads versions {oldest} to {newest}")]
    Version {
        found: u16,
        oldest: u16,
        newest: u16,
    },
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
    #[error("cannot decode the {kind} payload: {reason}")]
    Payload { kind: &'static str, reason: String },
    #[error(
        "the {kind}'s content does not match its fingerprint: it was altered after it was written"
    )]
    Altered { kind: &'static str },
    #[error("the envelope's and the {kind}'s own {field} differ")]
    EnvelopeMismatch {
        kind: &'static str,
        field: &'static str,
    },
}

/// FNV-1a, 64 bits: detects truncation and corruption (not an authenticity check).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Serializes `value` into an envelope of the current version.
pub(crate) fn seal<T: Serialize + Versionize + Named>(
    kind: Kind,
    key_id: u64,
    fingerprint: Fingerprint,
    value: &T,
) -> Result<Vec<u8>, EncodeError> {
    let mut payload = Vec::new();
    safe_serialize(value, &mut payload, u64::MAX).map_err(|e| EncodeError {
        what: kind.name(),
        reason: e.to_string(),
    })?;
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

/// An envelope read back.
pub(crate) struct Opened<T> {
    pub key_id: u64,
    pub fingerprint: Fingerprint,
    /// The payload, upgraded to this build's layout.
    pub value: T,
}

/// Refuses bytes longer than `limit`, before anything is decoded.
pub(crate) fn check_size(bytes: &[u8], limit: u64) -> Result<(), DecodeError> {
    let size = bytes.len() as u64;
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    Ok(())
}

/// Checks an envelope of any readable version and deserializes its payload (at most `limit`
/// bytes), upgrading it to this build's layout.
pub(crate) fn open<T: DeserializeOwned + Unversionize + Named>(
    bytes: &[u8],
    kind: Kind,
    limit: u64,
) -> Result<Opened<T>, DecodeError> {
    if !bytes.starts_with(MAGIC) {
        return Err(DecodeError::NotFheNn);
    }
    if bytes.len() < HEADER {
        return Err(DecodeError::Truncated {
            expected: HEADER as u64,
            found: bytes.len() as u64,
        });
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = u16::from_le_bytes([bytes[5], bytes[6]]);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(DecodeError::Version {
            found: version,
            oldest: OLDEST_READABLE_VERSION,
            newest: FORMAT_VERSION,
        });
    }
    if bytes[7] != kind as u8 {
        return Err(DecodeError::WrongKind {
            expected: kind.name(),
            found: Kind::name_of_byte(bytes[7]),
        });
    }
    let key_id = u64_at(8);
    let fingerprint = Fingerprint(bytes[16..48].try_into().expect("32 bytes"));
    let len = u64_at(48);
    let sum = u64_at(56);
    let payload = &bytes[HEADER..];
    if len > limit {
        return Err(DecodeError::TooLarge { size: len, limit });
    }
    if payload.len() as u64 != len {
        return Err(DecodeError::Truncated {
            expected: HEADER as u64 + len,
            found: bytes.len() as u64,
        });
    }
    if checksum(payload) != sum {
        return Err(DecodeError::Checksum);
    }
    // The payload is all in memory and `len <= limit`: no field can need more bytes than
    // remain, so a hostile length prefix fails before anything is allocated for it.
    let value = safe_deserialize(payload, len).map_err(|reason| DecodeError::Payload {
        kind: kind.name(),
        reason,
    })?;
    Ok(Opened {
        key_id,
        fingerprint,
        value,
    })
}
