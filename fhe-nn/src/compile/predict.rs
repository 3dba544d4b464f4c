//! The three modes side by side on a compiled model: same inputs, same outputs.

use ndarray::{Array2, ArrayView2, Axis};

use super::CompiledModel;
use crate::clear::rows_to_array;
use crate::fhe::{ClientKey, ClientSpec, EvaluationKey, FheError, FheServer};
use crate::rng::SplitMix64;
use crate::simulate::{Overflow, SimulationNoise};
use crate::InputError;

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
    /// Runs a batch of real inputs (one sample per row): de-quantized outputs.
    pub fn predict(&self, inputs: ArrayView2<f64>, mode: Mode) -> Result<Array2<f64>, FheError> {
        let q = self.quantize(inputs)?;
        let out = self.predict_int(q.view(), mode)?;
        Ok(self.tables().dequantize_batch(out.view())?)
    }

    /// Runs a batch of quantized inputs: the output layer's integer accumulators.
    pub fn predict_int(
        &self,
        inputs: ArrayView2<i64>,
        mode: Mode,
    ) -> Result<Array2<i64>, FheError> {
        let model = self.tables();
        match mode {
            Mode::Clear => Ok(model.clear_int_batch(inputs)?),
            Mode::Simulate { seed } => Ok(model.simulate_int_batch(&self.noise, inputs, seed)?),
            Mode::Fhe => {
                model.check_quantized_inputs(inputs)?;
                let (client, key) = self.keygen()?;
                let server = self.server(key)?;
                let rows = inputs
                    .axis_iter(Axis(0))
                    .map(|row| {
                        let sample = client.encrypt_quantized(&row.to_vec())?;
                        client.decrypt_int(&server.run(&sample)?)
                    })
                    .collect::<Result<Vec<_>, FheError>>()?;
                Ok(rows_to_array(rows, self.output_features()))
            }
        }
    }

    /// Clear inference of one quantized sample: the output layer's integer accumulators.
    pub fn clear_int(&self, input: &[i64]) -> Result<Vec<i64>, InputError> {
        self.tables().clear_int(input)
    }

    /// Predicted class (argmax of the outputs) of each sample.
    pub fn classify(&self, inputs: ArrayView2<f64>, mode: Mode) -> Result<Vec<usize>, FheError> {
        Ok(crate::argmax_rows(self.predict(inputs, mode)?.view()))
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

    /// What a client needs to generate keys, encrypt and decrypt: no weights.
    pub fn client_spec(&self) -> ClientSpec {
        ClientSpec::new(self)
    }

    /// Generates a fresh key pair (client side; the evaluation key goes to the server).
    pub fn keygen(&self) -> Result<(ClientKey, EvaluationKey), FheError> {
        self.client_spec().keygen()
    }

    /// Largest serialized (compressed) evaluation key this model's parameters can need
    /// (bytes): the bootstrapping keys' bodies (`n · (k+1) · levels · N` words each) and the
    /// keyswitching key's (`k·N · levels` words), with framing.
    pub fn max_evaluation_key_bytes(&self) -> u64 {
        let p = &self.parameters().params;
        let (n, k, big_n) = (
            p.lwe_dimension.0 as u64,
            p.glwe_dimension.0 as u64,
            p.polynomial_size.0 as u64,
        );
        let last_levels = match self.parameters().last_layer_pbs {
            Some((_, levels)) => levels as u64,
            None => 0,
        };
        let bootstrap = n * (k + 1) * (p.pbs_level.0 as u64 + last_levels) * big_n * 8;
        let keyswitch = k * big_n * p.ks_level.0 as u64 * 8;
        (bootstrap + keyswitch) * 11 / 10 + (1 << 20)
    }

    /// Reads an uploaded evaluation key for this model: its length is checked against what
    /// these parameters can need before anything is decoded, then its conformance and its
    /// fingerprint.
    pub fn read_evaluation_key(&self, bytes: &[u8]) -> Result<EvaluationKey, FheError> {
        crate::fhe::check_upload_size(bytes, self.max_evaluation_key_bytes())?;
        let key = EvaluationKey::from_bytes(bytes)?;
        crate::fhe::check_model(self.fingerprint(), key.fingerprint())?;
        Ok(key)
    }

    /// Per lookup layer of one traced encrypted inference ([`FheServer::run_traced`] of the
    /// quantized `input`): how many lookups gave another output than Clear's table on the
    /// accumulator of the inputs Fhe actually had, and how many there were. What
    /// [`simulate_disagreement`](Self::simulate_disagreement) predicts, measured.
    pub fn lookup_differences(
        &self,
        client: &ClientKey,
        input: &[i64],
        trace: &[crate::fhe::EncryptedSample],
    ) -> Result<Vec<(usize, usize)>, FheError> {
        let mut inputs = input.to_vec();
        let mut found = Vec::new();
        for (k, stage) in self.layers().iter().enumerate() {
            let Some(lookup) = stage.lookup() else {
                continue;
            };
            let layer = trace.get(k).ok_or_else(|| {
                FheError::Shape(format!(
                    "a trace of {} layers, the model has more",
                    trace.len()
                ))
            })?;
            let delta = self.input_delta(k + 1);
            let outputs = layer
                .ciphertexts()
                .iter()
                .map(|c| client.decrypt_value(c, delta))
                .collect::<Result<Vec<i64>, _>>()?;
            let differ = outputs
                .iter()
                .enumerate()
                .filter(|&(j, &got)| {
                    got != lookup.read(stage.group(j), stage.accumulate_one(j, &inputs))
                })
                .count();
            found.push((differ, outputs.len()));
            inputs = outputs;
        }
        Ok(found)
    }

    /// Largest serialized compressed encrypted sample this model accepts (bytes), as
    /// [`FheServer::max_compressed_bytes`] checks it: a bound for upload limits set before
    /// any key is at hand.
    pub fn max_compressed_sample_bytes(&self) -> u64 {
        crate::fhe::max_compressed_sample_bytes(self.input_features())
    }

    /// The server for this compiled model and an evaluation key made for it.
    pub fn server(&self, key: EvaluationKey) -> Result<FheServer, FheError> {
        FheServer::new(self, key)
    }
}
