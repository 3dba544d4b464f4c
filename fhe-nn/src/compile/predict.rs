//! Clear and Simulate on a compiled model (the runtime adds Fhe: `fhe::compiled`).

use ndarray::{Array2, ArrayView2};

use super::CompiledModel;
use crate::error::InputError;
use crate::rng::SplitMix64;
use crate::simulate::{Overflow, SimulationNoise};

/// Simulate's prediction for one sample (see [`CompiledModel::simulate_disagreement`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SampleDisagreement {
    /// Probability that the sample's prediction differs from Clear's.
    pub prediction: f64,
    /// Per lookup layer: mean and variance of the number of lookups that differ from Clear.
    pub lookups: Vec<(f64, f64)>,
}

/// How [`CompiledModel::predict`] runs the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Integer inference with the compiled tables, without noise (Concrete ML's `disable`).
    Clear,
    /// Clear with the noise of the chosen parameters before every lookup, reproducible from
    /// `seed` (Concrete ML's `simulate`).
    Simulate { seed: u64 },
    /// Real encrypted inference in this process: fresh keys, encrypt, run, decrypt (Concrete
    /// ML's `execute`; for tests and demos: a service separates the client from the server,
    /// see [`CompiledModel::keygen`]).
    Fhe,
}

impl CompiledModel {
    /// Clear or Simulate of a batch of quantized inputs: the output layer's integer
    /// accumulators; `None` for Fhe, which needs keys (the runtime's
    /// [`predict_int`](Self::predict_int) runs all three).
    pub(crate) fn predict_int_without_keys(
        &self,
        inputs: ArrayView2<i64>,
        mode: Mode,
    ) -> Result<Option<Array2<i64>>, InputError> {
        let model = self.tables();
        match mode {
            Mode::Clear => model.clear_int_batch(inputs).map(Some),
            Mode::Simulate { seed } => model
                .simulate_int_batch(&self.noise, inputs, seed)
                .map(Some),
            Mode::Fhe => Ok(None),
        }
    }

    /// Clear inference of one quantized sample: the output layer's integer accumulators.
    pub fn clear_int(&self, input: &[i64]) -> Result<Vec<i64>, InputError> {
        self.tables().clear_int(input)
    }

    /// Quantizes a batch of real inputs with the input quantizer.
    pub fn quantize(&self, inputs: ArrayView2<f64>) -> Result<Array2<i64>, InputError> {
        self.tables().quantize_inputs(inputs)
    }

    /// De-quantizes a batch of output accumulators (with the trailing activations).
    pub fn dequantize(&self, outputs: ArrayView2<i64>) -> Result<Array2<f64>, InputError> {
        self.tables().dequantize_batch(outputs)
    }

    /// Clear inference of one quantized sample with every layer's values: `trace[2k]` holds
    /// layer k's accumulators, `trace[2k+1]` the integers its lookup produces.
    pub fn clear_trace(&self, input: &[i64]) -> Result<Vec<Vec<i64>>, InputError> {
        self.tables().clear_trace(input)
    }

    /// Simulated inference of one quantized sample, laid out as [`clear_trace`](Self::clear_trace).
    pub fn simulate_trace(
        &self,
        noise: &SimulationNoise,
        input: &[i64],
        rng: &mut SplitMix64,
    ) -> Result<Vec<Vec<i64>>, InputError> {
        self.tables().simulate_trace(noise, input, rng)
    }

    /// The overflow detector: simulates a batch of quantized inputs and reports every lookup
    /// whose noisy reading left its table's range, with how often.
    pub fn simulate_overflows(
        &self,
        inputs: ArrayView2<i64>,
        seed: u64,
    ) -> Result<Vec<Overflow>, InputError> {
        self.tables().simulate_overflows(&self.noise, inputs, seed)
    }

    /// What Simulate predicts for these quantized inputs, sample by sample, from `runs`
    /// simulations of each: the probability that its prediction differs from Clear's, and
    /// per lookup layer the mean and variance of the number of lookups whose output differs
    /// from Clear's table on the same accumulator. Compare with Fhe on the same samples
    /// (the sample is the statistical unit: errors within one sample are correlated).
    pub fn simulate_disagreement(
        &self,
        inputs: ArrayView2<i64>,
        runs: usize,
        seed: u64,
    ) -> Result<Vec<SampleDisagreement>, InputError> {
        let model = self.tables();
        model.check_quantized_inputs(inputs)?;
        let clear = super::figures::clear_predictions(model, inputs);
        let sim = super::figures::simulate(model, &self.noise, inputs, &[&clear], runs, seed);
        let lookup_layers: Vec<usize> = model
            .layers()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lookup.is_some())
            .map(|(k, _)| k)
            .collect();
        Ok(sim
            .flips
            .into_iter()
            .zip(sim.counts)
            .map(|(f, c)| SampleDisagreement {
                prediction: f[0],
                lookups: lookup_layers.iter().map(|&k| c[k]).collect(),
            })
            .collect())
    }
}
