//! Network architectures of fhe-nn and their bit-width analysis.
//!
//! Both the `fhe_net!` macro (at compile time) and the `fhe-nn` runtime (at load time)
//! depend on this crate, so the bit-width arithmetic exists once and the two checks can never
//! disagree. Use it through `fhe_nn::arch`.

pub mod activation;
pub mod analysis;
pub mod error;
pub mod geometry;
pub mod layer;
pub mod limits;
pub mod range;
