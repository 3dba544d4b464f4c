//! Network architectures and their bit-width analysis.
//!
//! This module is dependency-free on purpose: the `fhe_net!` macro compiles the very same
//! files (through `#[path]`) so that the bit-width arithmetic exists once and the compile-time
//! checks and the load-time checks can never disagree.

pub mod activation;
pub mod analysis;
pub mod error;
pub mod layer;
pub mod limits;
pub mod range;
