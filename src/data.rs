//! Shared helpers of the examples, integration tests and benchmarks of `fhe-nn`: the data
//! sets (from the library) and the shipped models.

use std::path::{Path, PathBuf};

pub use fhe_nn::datasets::*;

/// The directory of the shipped models (`fhe-nn/data/`, embedded in the library too: see
/// [`fhe_nn::datasets::digits_seed_weights`]).
pub fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fhe-nn/data")
}
