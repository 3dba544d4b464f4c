//! Every byte format fhe-nn writes, in one place: the envelope around each serialized key,
//! ciphertext, client spec and compiled model (`envelope`), the versions of the types
//! inside it (`versions`: TFHE-rs's `Versionize`), the fingerprint that binds them to a
//! compiled model, and the errors of writing and reading them.
//!
//! # Compatibility
//!
//! A file written by a release is read by every later release; reading never trusts what it
//! reads (sizes, checksums, parameter sets rebuilt by fhe-nn's rule).
//!
//! - The envelope's version ([`FORMAT_VERSION`]) says which release wrote a file. A build reads
//!   every version from [`OLDEST_READABLE_VERSION`] to its own and refuses newer ones by name
//!   (`DecodeError::Version`), so an old build never misreads a new file.
//! - A payload type that changes keeps its old layout as a type of its own (`FooV0`), gains a
//!   variant in its versions enum (`V0(FooV0)`, `V1(Foo)`) and an `Upgrade` from the old
//!   layout to the new one; the envelope's version goes up by one.
//! - `tests/fixtures/compat/vN/` keeps what the release of version N wrote (a compiled model,
//!   a client spec, a client key, ciphertexts); `tests/compat.rs` loads every one of them.
//!
//! | version | change |
//! |---|---|
//! | 6 | the oldest read: the key of the outputs in client specs |
//! | 7 | a compiled model's fingerprint covers its plan (files of version 6, and what is written again from them, keep theirs, which leaves their plan uncovered) |
//!
//! A compiled model's definition (architecture, weights, input range, set) is a canonical
//! byte encoding inside its file (`compile::artifact`, its own version word 1): a change to
//! it is a new compiled-model file layout whose upgrade reads the old encoding.

pub(crate) mod envelope;
mod fingerprint;
pub(crate) mod versions;

pub use envelope::{DecodeError, FORMAT_VERSION, OLDEST_READABLE_VERSION};
pub use fingerprint::Fingerprint;

/// Why a value could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot serialize {what}: {reason}")]
pub struct EncodeError {
    /// What was being written.
    pub what: &'static str,
    /// The serializer's message.
    pub reason: String,
}
