//! # fhe-nn
//!
//! Neural-network inference on encrypted data with TFHE, declared with a compile-time
//! checked DSL. See the repository README for the grammar, the modes and the examples.
//!
//! ```
//! use fhe_nn::tensors::{Tensor, TensorFile};
//! use fhe_nn::{fhe_net, FheOptions, Mode, QuantModel};
//!
//! // Checked at compile time: 4 unsigned 2-bit inputs × 2-bit weights: ±12, 5 bits.
//! fhe_net! {
//!     struct Tiny<QuantIdentity(2, unsigned), QuantLinear(4, 2, w = 2), ReLU,
//!                 QuantIdentity(2, unsigned), QuantLinear(2, 2, w = 2)>
//! }
//! assert_eq!(Tiny::LOOKUPS, 2);
//! assert_eq!(Tiny::ACCUMULATOR_BITS[1], Some(5));
//!
//! // Integer weights and scales, as a QAT exporter writes them.
//! let mut weights = TensorFile::default();
//! let scalar = |v: f64| Tensor::float(vec![], vec![v]);
//! weights.tensors.insert("layers.0.scale".into(), scalar(1.0));
//! weights.tensors.insert("layers.1.weight".into(), Tensor::int(vec![2, 4], vec![1, 1, 0, -1, 0, 1, -1, 1]));
//! weights.tensors.insert("layers.1.weight_scale".into(), scalar(1.0));
//! weights.tensors.insert("layers.1.bias".into(), Tensor::float(vec![2], vec![0.0, 0.5]));
//! weights.tensors.insert("layers.3.scale".into(), scalar(1.0));
//! weights.tensors.insert("layers.4.weight".into(), Tensor::int(vec![2, 2], vec![1, -1, -1, 1]));
//! weights.tensors.insert("layers.4.weight_scale".into(), scalar(0.5));
//! weights.tensors.insert("layers.4.bias".into(), Tensor::float(vec![2], vec![0.0, 0.0]));
//! let model = QuantModel::from_tensors(Tiny::architecture(), &weights)?;
//!
//! // Compile (cheapest parameters meeting p_error = 2^-40), then the three modes.
//! let inputs = ndarray::array![[3.0, 1.0, 0.0, 2.0], [0.0, 2.0, 1.0, 1.0]];
//! let compiled = model.compile(inputs.view(), &FheOptions::default())?;
//! let clear = compiled.predict(inputs.view(), Mode::Clear)?;
//! assert_eq!(compiled.predict(inputs.view(), Mode::Simulate { seed: 1 })?, clear);
//! assert_eq!(compiled.predict(inputs.view(), Mode::Fhe)?, clear);
//!
//! // Client and server apart: the client needs only the spec (no weights).
//! let (client, evaluation_key) = compiled.client_spec().keygen()?;
//! let server = compiled.server(evaluation_key)?;
//! let output = server.run(&client.encrypt(inputs.row(0))?)?;
//! assert_eq!(client.decrypt(&output)?, clear.row(0).to_vec());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The public surface
//!
//! What the README, the examples, `fhe-nn-server` and `fhe-nn-client` use; everything else is
//! crate-private.
//!
//! - At the root: [`fhe_net!`], [`Architecture`] and its [`Report`], [`QuantModel`] (load,
//!   Clear, compile), [`CompiledModel`] with [`FheOptions`] and [`Mode`], the typed API
//!   ([`Model`], [`Compiled`], [`Network`], [`Sample`]) and the error enums.
//! - [`arch`]: layers and the bit-width analysis (the crate the macro shares).
//! - [`tensors`]: weight files (safetensors, npz). [`train`]: the QAT trainer. [`onnx`]:
//!   Brevitas/QONNX import.
//! - [`compile`]: the plan and its error figures ([`FhePlan`], [`compile::LookupFigures`]).
//! - [`params`]: parameter sets ([`params::vetted`], [`params::ParameterSet`]), the security
//!   rule ([`params::security::check`]) and the fitted cost model ([`params::cost`]).
//! - [`format`](mod@format): the format version, the versions still read, and the errors of reading and
//!   writing bytes ([`format::DecodeError`], [`format::EncodeError`]).
//! - [`fhe`]: client and server apart ([`fhe::ClientSpec`], [`fhe::ClientKey`],
//!   [`fhe::EvaluationKey`], [`fhe::FheServer`], the ciphertext formats) and one raw
//!   bootstrap for benchmarks ([`fhe::bootstrap::bootstrap`]).
//! - [`datasets`] (feature `datasets`): the shipped networks, weights and data; [`rng`]: the
//!   seeded generator the examples and tests sample with.

pub use fhe_nn_arch as arch;
// The networks this crate declares with `fhe_net!` (in `datasets`) name it `::fhe_nn`.
extern crate self as fhe_nn;
mod architecture;
mod clear;
pub mod compile;
#[cfg(feature = "datasets")]
pub mod datasets;
mod error;
pub mod fhe;
pub mod format;
mod model;
mod npz;
pub mod onnx;
pub mod params;
pub mod rng;
mod simulate;
pub mod tensors;
pub mod train;
mod typed;

pub use architecture::{ArchErrors, Architecture, Report};
pub use clear::{argmax, argmax_rows};
pub use compile::{
    CheaperSet, CompileError, CompiledModel, Estimate, FheOptions, FhePlan, Fingerprint, Mode,
    ParameterChoice, DEFAULT_MAX_DISAGREEMENT, DEFAULT_P_ERROR, STRICT_P_ERROR,
};
pub use error::{InputError, LoadError};
pub use fhe_nn_macros::fhe_net;
pub use model::QuantModel;
/// The `ndarray` version fhe-nn's batch APIs take and return.
pub use ndarray;
pub use simulate::{Overflow, SimulationNoise};
pub use typed::{Compiled, Model, Network, Sample};

/// What the code `fhe_net!` generates reaches (not a public API).
#[doc(hidden)]
pub mod __private {
    pub use crate::arch;
    pub use crate::tensors::TensorFile;
    pub use crate::typed::{Model, Network};
    pub use crate::{Architecture, LoadError, Report};
}
