//! # fhe-nn
//!
//! Neural-network inference on encrypted data with TFHE, declared with a compile-time
//! checked DSL. See the repository README for the grammar, the modes and the examples.

pub mod arch;
mod architecture;
mod clear;
mod error;
pub mod fhe;
pub mod model;
pub mod rng;
mod simulate;
pub mod tensors;
pub mod train;

pub use architecture::{ArchErrors, Architecture, Network, Report};
pub use clear::argmax_rows;
pub use error::{InputError, LoadError};
pub use fhe_nn_macros::fhe_net;
pub use model::QuantModel;
pub use simulate::Overflow;
