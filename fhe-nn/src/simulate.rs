//! Simulate mode: the Clear integer pipeline with, before every lookup, the noise FHE would
//! have there (input noise scaled by the neuron's weight 2-norm, plus keyswitch and modulus
//! switch, from the chosen parameters), then the position the bootstrap would read (modulo
//! `2N`, negated on the second half, a wrapping table's centre added back), then the table.
//! Seeded and reproducible. The overflow detector reports readings that leave a table's
//! reach.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::clear::{accumulate, gather, rows_to_array};
use crate::error::InputError;
use crate::model::QuantModel;
use crate::params::noise::NoiseModel;
use crate::rng::SplitMix64;

/// The noise standard deviation before every lookup (in table positions) and on every
/// output (in output units), per neuron, for one compiled model: computed once
/// ([`CompiledModel::simulation_noise`](crate::CompiledModel::simulation_noise)) and reused
/// for every simulated sample.
#[derive(Clone, Debug)]
pub struct SimulationNoise {
    layers: Vec<Vec<f64>>,
}

/// A lookup whose noisy reading left its table's reach (beyond the margins, or onto the
/// negated copy of a wrapping table's transition): a failure, expected at most at the
/// lookup's p_error rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow {
    /// Declared index of the layer whose quantizer forms the lookup.
    pub layer: usize,
    /// The neuron.
    pub neuron: usize,
    /// How many times, over the simulated samples.
    pub count: usize,
}

impl QuantModel {
    /// The noise Simulate injects under `noise`.
    pub(crate) fn simulation_noise(&self, noise: &NoiseModel) -> SimulationNoise {
        let noise = *noise;
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(k, stage)| {
                let fresh = k == 0;
                let (variance, scale): (Box<dyn Fn(f64) -> f64>, f64) = match &stage.lookup {
                    // A table position is 2^-(r+1) of the torus.
                    Some(l) => (
                        Box::new(move |n| noise.lookup_variance(n, fresh)),
                        2f64.powi(l.encoding.precision() as i32 + 1),
                    ),
                    // Only the output layer has no lookup: its sums, of the last lookup
                    // layer's bootstraps (or of the inputs), are what the client decrypts.
                    None => (
                        Box::new(move |n| noise.output_variance(n, fresh)),
                        2f64.powi(self.output_encoding_bits() as i32),
                    ),
                };
                (0..stage.out_features)
                    .map(|j| variance(stage.effective_norm2_squared(j)).sqrt() * scale)
                    .collect()
            })
            .collect();
        SimulationNoise { layers }
    }

    /// Simulated inference of one sample; `on_overflow(layer, neuron)` hears of every
    /// reading that wrapped around its table, `on_lookup(stage, differs)` of every lookup and
    /// whether its output differs from the noise-free table's on the same accumulator.
    pub(crate) fn simulate_with(
        &self,
        scales: &SimulationNoise,
        input: &[i64],
        rng: &mut SplitMix64,
        mut on_overflow: impl FnMut(usize, usize),
        mut on_lookup: impl FnMut(usize, bool),
    ) -> Vec<Vec<i64>> {
        let mut trace: Vec<Vec<i64>> = Vec::with_capacity(2 * self.layers.len());
        for (k, (stage, sigmas)) in self.layers.iter().zip(&scales.layers).enumerate() {
            let acc = accumulate(stage, &gather(stage, input, &trace));
            match &stage.lookup {
                Some(lookup) => {
                    let e = lookup.encoding;
                    let unit = 2f64.powi(e.shift);
                    let stage_index = k;
                    let x: Vec<i64> = acc
                        .iter()
                        .zip(sigmas)
                        .enumerate()
                        .map(|(j, (&a, &sigma))| {
                            if let Some(fixed) = stage.fixed_output(j) {
                                // No bootstrap: no noise.
                                return fixed;
                            }
                            let g = lookup.groups[stage.group(j)];
                            let phase = ((a + g.offset) * g.multiplier) as f64 / unit
                                + rng.normal() * sigma;
                            let k = phase.round() as i64;
                            let group = stage.group(j);
                            let (low, high) = lookup.reach(group);
                            if !(low..=high).contains(&k) {
                                on_overflow(lookup.layer, j);
                            }
                            let out = lookup.bootstrap_output(group, k);
                            let table = &lookup.tables[group];
                            on_lookup(stage_index, out != table.get(g.index(&e, a)));
                            out
                        })
                        .collect();
                    trace.push(acc);
                    trace.push(x);
                }
                None => {
                    let noisy = acc
                        .iter()
                        .zip(sigmas)
                        .map(|(&a, &sigma)| a + (rng.normal() * sigma).round() as i64)
                        .collect();
                    trace.push(noisy);
                }
            }
        }
        trace
    }

    /// Simulated inference of one quantized sample under `noise`; the trace has the layout
    /// of [`clear_trace`](Self::clear_trace).
    pub(crate) fn simulate_trace(
        &self,
        noise: &SimulationNoise,
        input: &[i64],
        rng: &mut SplitMix64,
    ) -> Result<Vec<Vec<i64>>, InputError> {
        self.check_quantized_sample(input)?;
        Ok(self.simulate_with(noise, input, rng, |_, _| {}, |_, _| {}))
    }

    /// The overflow detector: simulates a batch of quantized inputs and reports every lookup
    /// whose noisy reading left its table's range, with how often.
    pub(crate) fn simulate_overflows(
        &self,
        scales: &SimulationNoise,
        inputs: ArrayView2<i64>,
        seed: u64,
    ) -> Result<Vec<Overflow>, InputError> {
        self.check_quantized_inputs(inputs)?;
        let mut found: Vec<Overflow> = Vec::new();
        for i in 0..inputs.nrows() {
            let mut rng = sample_rng(seed, i);
            self.simulate_with(
                scales,
                &inputs.row(i).to_vec(),
                &mut rng,
                |layer, neuron| match found
                    .iter_mut()
                    .find(|o| o.layer == layer && o.neuron == neuron)
                {
                    Some(o) => o.count += 1,
                    None => found.push(Overflow {
                        layer,
                        neuron,
                        count: 1,
                    }),
                },
                |_, _| {},
            );
        }
        found.sort_by_key(|o| (o.layer, o.neuron));
        Ok(found)
    }

    /// Simulated integer inference of a batch (rows), in parallel; sample `i` draws its noise
    /// from a generator seeded with `seed` and `i`, so results do not depend on threads.
    pub(crate) fn simulate_int_batch(
        &self,
        scales: &SimulationNoise,
        inputs: ArrayView2<i64>,
        seed: u64,
    ) -> Result<Array2<i64>, InputError> {
        self.check_quantized_inputs(inputs)?;
        let rows: Vec<Vec<i64>> = (0..inputs.nrows())
            .into_par_iter()
            .map(|i| {
                let mut rng = sample_rng(seed, i);
                self.simulate_with(
                    scales,
                    &inputs.row(i).to_vec(),
                    &mut rng,
                    |_, _| {},
                    |_, _| {},
                )
                .pop()
                .unwrap_or_default()
            })
            .collect();
        Ok(rows_to_array(rows, self.output_features()))
    }
}

/// The generator of sample `i` of a batch seeded with `seed`.
pub(crate) fn sample_rng(seed: u64, i: usize) -> SplitMix64 {
    SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
