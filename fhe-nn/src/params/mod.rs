//! Parameters: the 128-bit-secure TFHE parameter sets (TFHE-rs's vetted sets and fhe-nn's
//! custom ones), the security rule every set is held to, the noise formulas, the cost model,
//! and the optimizer that picks the cheapest set meeting a model's error targets. Knows the
//! model (its demand), nothing of compilation or of keys.

pub mod cost;
pub(crate) mod noise;
pub(crate) mod optimizer;
pub mod security;
mod sets;

pub(crate) use sets::with_pbs;
pub use sets::{vetted, InputKey, ParameterSet, Shape, PRECISIONS};
