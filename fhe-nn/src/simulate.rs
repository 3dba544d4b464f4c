//! Simulate mode: the Clear integer pipeline with, before every lookup, the noise FHE would
//! have there (input noise scaled by the neuron's weight 2-norm, plus keyswitch and modulus
//! switch, from the chosen parameters), then the box the bootstrap would read (with the
//! negacyclic wrap-around), then the table. Seeded and reproducible.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::clear::{accumulate, rows_to_array};
use crate::error::InputError;
use crate::fhe::{FhePlan, NoiseModel};
use crate::model::QuantModel;
use crate::rng::SplitMix64;

impl QuantModel {
    /// Simulated inference of one quantized sample under `plan`'s noise; the trace has the
    /// layout of [`clear_trace`](Self::clear_trace).
    pub fn simulate_trace(
        &self,
        plan: &FhePlan,
        input: &[i64],
        rng: &mut SplitMix64,
    ) -> Vec<Vec<i64>> {
        let noise = NoiseModel::new(&plan.set);
        let mut trace = Vec::with_capacity(2 * self.layers.len());
        let mut x = input.to_vec();
        for (k, stage) in self.layers.iter().enumerate() {
            let fresh = k == 0;
            let acc = accumulate(stage, &x);
            let norms: Vec<f64> = (0..stage.out_features)
                .map(|j| stage.row(j).iter().map(|&w| (w * w) as f64).sum())
                .collect();
            match &stage.lookup {
                Some(lookup) => {
                    let e = lookup.encoding;
                    let r = e.precision();
                    let boxes = 1i64 << r;
                    // Noise in units of one box: a box is 2^-(r+1) of the torus.
                    let scale = 2f64.powi(r as i32 + 1);
                    x = acc
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| {
                            let sigma = noise.lookup_variance(norms[j], fresh).sqrt();
                            let phase = (a + e.offset) as f64 / 2f64.powi(e.shift)
                                + rng.normal() * sigma * scale;
                            let k = (phase.round() as i64).rem_euclid(2 * boxes);
                            let table = &lookup.tables[j];
                            if k < boxes {
                                table.get(k)
                            } else {
                                -table.get(k - boxes)
                            }
                        })
                        .collect();
                    trace.push(acc);
                    trace.push(x.clone());
                }
                None => {
                    let scale = 2f64.powi(self.output_encoding_bits() as i32 + 1);
                    let noisy = acc
                        .iter()
                        .enumerate()
                        .map(|(j, &a)| {
                            a + (rng.normal()
                                * noise.output_variance(norms[j], fresh).sqrt()
                                * scale)
                                .round() as i64
                        })
                        .collect();
                    trace.push(noisy);
                }
            }
        }
        trace
    }

    /// Simulated integer inference of a batch (rows), in parallel; sample `i` draws its noise
    /// from a generator seeded with `seed` and `i`, so results do not depend on threads.
    pub fn simulate_int_batch(
        &self,
        plan: &FhePlan,
        inputs: ArrayView2<i64>,
        seed: u64,
    ) -> Result<Array2<i64>, InputError> {
        self.check_quantized_inputs(inputs)?;
        let rows: Vec<Vec<i64>> = (0..inputs.nrows())
            .into_par_iter()
            .map(|i| {
                let mut rng =
                    SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                self.simulate_trace(plan, &inputs.row(i).to_vec(), &mut rng)
                    .pop()
                    .unwrap_or_default()
            })
            .collect();
        Ok(rows_to_array(rows, self.output_features()))
    }

    /// Simulated inference of real inputs: de-quantized outputs.
    pub fn predict_simulate(
        &self,
        plan: &FhePlan,
        inputs: ArrayView2<f64>,
        seed: u64,
    ) -> Result<Array2<f64>, InputError> {
        let q = self.quantize_inputs(inputs)?;
        let ints = self.simulate_int_batch(plan, q.view(), seed)?;
        Ok(self.dequantize_batch(ints.view()))
    }
}
